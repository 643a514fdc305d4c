"""Benchmark: vectorised mAP (tspnet.evaluate) against the row-loop oracle, on real THUMOS14 files.

Evaluates the P-MIL base test proposals (31,587 predictions) against the
THUMOS14 test ground truth with both implementations, checks that every AP
agrees, and prints the seconds of each and their ratio (target: >= 50x).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.reference

from tests.reference.evaluate_loop import evaluate_loop  # noqa: E402
from tspnet.evaluate import (  # noqa: E402
    DEFAULT_TIOU_THRESHOLDS, evaluate_detections, format_table, load_ground_truth, load_results,
)


def parse_args() -> argparse.Namespace:
    data = REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground-truth", type=Path, default=data / "thumos14" / "gt.json")
    parser.add_argument("--predictions", type=Path, default=data / "proposals" / "pmil_base" / "test.json")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--repeats", type=int, default=5, help="fast-path runs; the best is reported")
    parser.add_argument("--min-speedup", type=float, default=50.0, help="fail below this ratio")
    return parser.parse_args()


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    args = parse_args()
    missing = [str(p) for p in (args.ground_truth, args.predictions) if not p.is_file()]
    if missing:
        print(f"bench_evaluate: input files not found: {', '.join(missing)} "
              "(the reference data lives in ../shared/data beside the dev checkout; pass --ground-truth and "
              "--predictions to use other files)", file=sys.stderr)
        return 2
    ground_truth = load_ground_truth(args.ground_truth, args.subset)
    predictions = load_results(args.predictions)
    thresholds = DEFAULT_TIOU_THRESHOLDS
    logging.disable(logging.WARNING)  # the ignored-prediction warning would repeat every run; the table counts them

    oracle_seconds, (classes, oracle_ap) = best_of(1, lambda: evaluate_loop(ground_truth, predictions, thresholds))
    fast_seconds, evaluation = best_of(args.repeats, lambda: evaluate_detections(ground_truth, predictions, thresholds))

    if classes != evaluation.classes:
        print(f"MISMATCH: classes differ: {classes} vs {evaluation.classes}", file=sys.stderr)
        return 1
    ap_diff = float(np.abs(evaluation.ap - oracle_ap).max())
    map_diff = float(np.abs(evaluation.mAP() - oracle_ap.mean(axis=1)).max())
    print(format_table(evaluation, f"{args.predictions.name} against {args.ground_truth.name} ({args.subset})"))
    print()
    print(f"{len(predictions)} predictions, {len(ground_truth.instances)} ground-truth instances, "
          f"{len(thresholds)} tIoU thresholds")
    print(f"{'implementation':<32}{'seconds':>10}")
    print(f"{'oracle (row loops, 1 run)':<32}{oracle_seconds:>10.3f}")
    print(f"{f'vectorised (best of {args.repeats})':<32}{fast_seconds:>10.4f}")
    ratio = oracle_seconds / fast_seconds
    print(f"speed-up: {ratio:.0f}x (target >= {args.min_speedup:g}x); max |AP diff| {ap_diff:.2e}, "
          f"max |mAP diff| {map_diff:.2e} (percent points)")
    if ap_diff > 1e-9:
        print("MISMATCH: the vectorised AP differs from the oracle", file=sys.stderr)
        return 1
    if ratio < args.min_speedup:
        print(f"TOO SLOW: {ratio:.1f}x < {args.min_speedup:g}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
