"""Wall time and peak resident memory of every stage of the pipeline, as `dvc repro` runs them.

Runs each stage's `cmd` from dvc.yaml in pipeline order, in this checkout,
as a child process, and reports its wall time and peak RSS (ru_maxrss of the
child). The stages rewrite their outputs; with the same inputs they write the
same bytes, so `dvc status` stays clean afterwards if it was clean before --
the script checks that too and says so.

Run it from the repository root inside the venv, after `dvc repro`:
    python bench/stage_times.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stage_order(dvc_yaml: dict) -> list[tuple[str, str]]:
    """Stages in dependency order (dvc.yaml lists them so; checked by `dvc dag` elsewhere)."""
    return [(name, stage["cmd"]) for name, stage in dvc_yaml["stages"].items()]


def run_stage(cmd: str) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one stage command."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, shell=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed:\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports kB


def dvc_status() -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc), "status"], cwd=REPO, capture_output=True, text=True, env=env).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "stage_times.json",
                        help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    clean_before = "up to date" in dvc_status()
    rows = []
    for name, cmd in stage_order(yaml.safe_load((REPO / "dvc.yaml").read_text())):
        seconds, rss = run_stage(cmd)
        rows.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_mb": round(rss / 2**20)})
        print(f"{name:<15} {seconds:7.1f} s  {rss / 2**20:7.0f} MB", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':<15} {total:7.1f} s  {max(r['peak_rss_mb'] for r in rows):7.0f} MB (largest stage)")
    clean_after = "up to date" in dvc_status()
    print(f"dvc status {'clean' if clean_after else 'NOT clean'} afterwards (same inputs, same bytes)"
          if clean_before else "dvc status was not clean before: run `dvc repro` first to check determinism")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"stages": rows, "total_seconds": round(total, 2), "cpu_threads": os.cpu_count(),
                                    "status_clean_after": clean_after}, indent=2) + "\n")
    return 0 if (clean_after or not clean_before) else 1


if __name__ == "__main__":
    sys.exit(main())
