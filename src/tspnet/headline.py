"""The headline of a run: base locator, TSPNet and their gain, at every tIoU and on average.

`metrics/headline.json` is the one file dvc.yaml declares as DVC metrics, so
`dvc metrics show` and `dvc exp show` stay readable (about 120 columns): the
run's identity and the three averages over tIoU 0.1:0.7. Every other number
is in the stages' own metrics files (`dvc metrics show metrics/base.json`).
`format_headline` prints the full table from those files; `make repro` ends
with it (`python -m tspnet headline`), also when DVC skipped every stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tspnet.records import IDENTITY, merge_records, status_of

HEADLINE_METRICS = ("base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7")
# LACP's own figure (its NMS) when the run's locator is LACP; absent otherwise, never a stale number.
OPTIONAL_METRICS = ("lacp.avg_0.1_0.7",)
ROWS = (("base", "base locator"), ("tspnet", "TSPNet"), ("gain", "gain"))
OPTIONAL_ROWS = (("lacp", "LACP, its NMS"),)


def headline_record(run: dict[str, Any]) -> dict[str, Any]:
    """The DVC metrics of a run: its identity, the headline averages, and the status of what was not computed."""
    record = {key: run[key] for key in IDENTITY if key in run}
    record.update({key: run[key] for key in (*HEADLINE_METRICS, *OPTIONAL_METRICS) if key in run})
    for prefix, _ in ROWS:
        status = status_of(run, prefix)
        if status is not None:
            record[f"{prefix}.status"] = status
    return record


def read_run(metrics_dir: Path) -> dict[str, Any]:
    """Every metrics file of the workspace's run, merged (refused when they come from different runs)."""
    files = sorted(Path(metrics_dir).glob("*.json"))
    return merge_records({str(path): json.loads(path.read_text(encoding="utf-8")) for path in files})


def columns(run: dict[str, Any]) -> list[str]:
    """The base record's metric names after `base.`: map@t in tIoU order, then the averages."""
    names = [key[len("base."):] for key in run if key.startswith("base.map@") or key.startswith("base.avg_")]
    maps = sorted((n for n in names if n.startswith("map@")), key=lambda n: float(n[4:]))
    return maps + [n for n in names if n.startswith("avg_")]


def format_headline(run: dict[str, Any]) -> str:
    """The table `make repro` ends with: one row per method, one column per tIoU and average; Spearman."""
    names = columns(run)
    identity = ", ".join(f"{key[len('run.'):]} {run[key]}" for key in IDENTITY if key in run)
    headers = [f"@{n[4:]}" if n.startswith("map@") else n[4:].replace("_", ":") for n in names]
    width = max(7, *(len(h) + 1 for h in headers)) if headers else 7
    lines = [f"headline of the run ({identity or 'identity unknown'}), test split",
             f"{'mAP (%)':<14}" + "".join(f"{h:>{width}}" for h in headers)]
    optional = [(prefix, label) for prefix, label in OPTIONAL_ROWS if f"{prefix}.avg_0.1_0.7" in run]
    for prefix, label in (*optional, *ROWS):
        status = status_of(run, prefix)
        if status is not None:
            lines.append(f"{label:<14}  {status}")
            continue
        sign = "+" if prefix == "gain" else ""
        cells = [run.get(f"{prefix}.{n}") for n in names]
        lines.append(f"{label:<14}" + "".join(
            f"{'-':>{width}}" if v is None else f"{v:>{sign}{width}.2f}" for v in cells))
    status = status_of(run, "alignment")
    if status is not None:
        lines.append(f"Spearman (confidence vs best tIoU of each test proposal): {status}")
    elif "alignment.spearman_base" in run:
        lines.append("Spearman (confidence vs best tIoU of each test proposal): "
                     f"base {run['alignment.spearman_base']:.3f}, TSPNet {run['alignment.spearman_tspnet']:.3f}")
    return "\n".join(lines)
