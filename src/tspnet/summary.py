"""Mean and spread of metrics over several runs (a seed sweep, say), from `dvc exp show` rows."""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable

import numpy as np
import pandas as pd

DEFAULT_METRICS = ("tspnet.avg_*", "base.avg_*", "gain.avg_*", "tspnet.map@0.5", "base.map@0.5",
                   "alignment.*")


def select_runs(rows: list[dict[str, Any]], names: Iterable[str]) -> list[dict[str, Any]]:
    """Rows of the named experiments (name or revision prefix); all experiments when no name is given.

    Without names the workspace and the baseline commits are left out: a sweep's
    spread is over its experiments.
    """
    names = list(names)
    if not names:
        return [r for r in rows if r.get("typ") not in ("baseline", None) and r.get("rev") != "workspace"]
    chosen = []
    for name in names:
        hits = [r for r in rows if name in (r.get("Experiment"), r.get("rev"))
                or str(r.get("rev", "")).startswith(name)]
        if not hits:
            raise KeyError(f"no experiment or revision {name!r} in `dvc exp show`")
        chosen.append(hits[0])
    return chosen


def summarize(runs: list[dict[str, Any]], patterns: Iterable[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """One row per metric matching `patterns`: n, mean, std (sample, ddof=1), min, max."""
    patterns = list(patterns)
    columns = []
    for run in runs:
        for key, value in run.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in columns and any(fnmatch.fnmatchcase(key, p) for p in patterns):
                columns.append(key)
    records = []
    for key in columns:
        values = np.array([run[key] for run in runs if isinstance(run.get(key), (int, float))], dtype=np.float64)
        records.append({"metric": key, "n": len(values), "mean": values.mean(),
                        "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                        "min": values.min(), "max": values.max()})
    return pd.DataFrame(records, columns=["metric", "n", "mean", "std", "min", "max"])


def format_summary(table: pd.DataFrame, runs: list[dict[str, Any]]) -> str:
    names = ", ".join(str(r.get("Experiment") or r.get("rev")) for r in runs)
    lines = [f"{len(runs)} run(s): {names}", f"{'metric':<26} {'n':>3} {'mean':>9} {'± std':>8} {'min':>9} {'max':>9}"]
    for row in table.itertuples(index=False):
        lines.append(f"{row.metric:<26} {row.n:>3} {row.mean:>9.3f} {row.std:>8.3f} {row.min:>9.3f} {row.max:>9.3f}")
    return "\n".join(lines)
