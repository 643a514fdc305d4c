"""Benchmark: LACP's optimal sequence search (tspnet.lacp.search) against its loop oracle.

One search pass = seeds (LACP.md 3.2) and pseudo labels (3.3) for every
training video, as LACP runs it every 10 iterations. Two sizes:
- `synthetic`: the default synthetic dataset's shape: 200 videos of 62-187
  snippets (40-120 s), 5 classes, 1-2 classes and 2-6 instances of 2.5-10 s per video;
- `thumos14`: THUMOS14's shape: 200 videos with THUMOS14-like lengths (lognormal,
  median about 155 s = 242 snippets, 9 s to 28 min), 20 classes, 1-2 classes and
  3-30 instances of 1.5-12 s per video.

Inputs (stated, not a trained model): the CAS a partly trained LACP network
gives, modelled as sigmoids of per-snippet logits: +`signal` inside the
video's instances of a class (else -`signal`) for that class, the opposite for
the background column, plus Gaussian noise smoothed over 3 snippets; then the
fused CAS Q. One point per instance, at its middle (+-1 snippet). A randomly
initialised network gives Q near 0.25 everywhere, with no background above
0.95, which is not what the search sees during training.

Both implementations run on the same inputs; the pseudo labels must be
identical. Printed: seconds per pass for each, the ratio, and seconds per pass
per 200 videos (to compare with the network's forward+backward time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, cpu_model, finish, thumos_like_lengths  # noqa: E402  (puts this checkout first)
from tests.reference.lacp_search_loop import search_pseudo_labels_loop  # noqa: E402
from tspnet.lacp.search import SearchConfig, search_pseudo_labels  # noqa: E402

SIZES = {
    # name: classes, classes per video, instances per video, instance seconds
    "synthetic": dict(classes=5, classes_per_video=(1, 2), instances=(2, 6), instance_s=(2.5, 10.0)),
    "thumos14": dict(classes=20, classes_per_video=(1, 2), instances=(3, 30), instance_s=(1.5, 12.0)),
}
SNIPPETS_PER_SECOND = 25 / 16


def video_lengths(rng: np.random.Generator, size: str, videos: int) -> np.ndarray:
    if size == "synthetic":
        return (rng.uniform(40, 120, videos) * SNIPPETS_PER_SECOND).astype(np.int64)
    return thumos_like_lengths(rng, videos)


def make_video(rng: np.random.Generator, length: int, spec: dict, signal: float, noise: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(fused CAS [T, C+1] float32, points [T, C]) of one video, as the module docstring says."""
    classes = spec["classes"]
    own = rng.choice(classes, size=int(rng.integers(spec["classes_per_video"][0], spec["classes_per_video"][1] + 1)),
                     replace=False)
    inside = np.zeros((length, classes), dtype=bool)
    points = np.zeros((length, classes), dtype=np.float32)
    for _ in range(int(rng.integers(spec["instances"][0], spec["instances"][1] + 1))):
        size = max(1, int(rng.uniform(*spec["instance_s"]) * SNIPPETS_PER_SECOND))
        start = int(rng.integers(0, max(1, length - size + 1)))
        c = int(rng.choice(own))
        inside[start: start + size, c] = True
        middle = min(length - 1, max(0, start + size // 2 + int(rng.integers(-1, 2))))
        points[middle, c] = 1
    action = inside.any(axis=1)
    logits = np.concatenate([np.where(inside, signal, -signal), np.where(action, -signal, signal)[:, None]], axis=1)
    noisy = rng.normal(0.0, noise, logits.shape)
    kernel = np.ones(3) / 3
    smoothed = np.stack([np.convolve(noisy[:, j], kernel)[1: length + 1] for j in range(logits.shape[1])], axis=1)
    p = 1.0 / (1.0 + np.exp(-(logits + smoothed)))
    q = np.concatenate([p[:, :classes] * (1.0 - p[:, classes:]), p[:, classes:]], axis=1)
    return q.astype(np.float32), points


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--videos", type=int, default=200, help="videos per pass (default: %(default)s)")
    parser.add_argument("--oracle-videos", type=int, default=0,
                        help="run the oracle on the first N videos only (0 = all); the fast path is then also "
                             "timed on those N for the ratio")
    parser.add_argument("--repeats", type=int, default=3, help="fast-path passes; the median is reported")
    parser.add_argument("--signal", type=float, default=2.5)
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "lacp_search.json")
    return parser.parse_args()


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall seconds and this process's CPU seconds of each call (CPU time is less disturbed by other work on
    a shared machine; the search is single-threaded numpy)."""
    seconds, cpu_seconds, result = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return seconds, cpu_seconds, result


def main() -> int:
    args = parse_args()
    config = SearchConfig()
    results: dict = {"machine": {"cpu": cpu_model(), "numpy": np.__version__, "load_average_1min": os.getloadavg()[0]},
                     "config": vars(config), "sizes": {}}
    failed = False
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        lengths = video_lengths(rng, size, args.videos)
        videos = [make_video(rng, int(t), SIZES[size], args.signal, args.noise) for t in lengths]
        cas, points = [v[0] for v in videos], [v[1] for v in videos]
        fast_seconds, fast_cpu, fast = timed(lambda: search_pseudo_labels(cas, points, config), args.repeats)
        n = args.oracle_videos or len(videos)
        (oracle_seconds,), (oracle_cpu,), oracle = timed(
            lambda: search_pseudo_labels_loop(cas[:n], points[:n], config.budget, config.prune_threshold,
                                              config.outer_ratio, config.bkg_threshold, config.act_threshold), 1)
        subset_seconds = fast_seconds
        if n < len(videos):
            subset_seconds, _, _ = timed(lambda: search_pseudo_labels(cas[:n], points[:n], config), args.repeats)
        same = all(np.array_equal(a, b) for a, b in zip(fast[:n], oracle))
        decodes = sum(int(p.any(axis=0).sum()) for p in points)
        fast_median = float(np.median(fast_seconds))
        ratio = oracle_seconds / float(np.median(subset_seconds))
        row = {"videos": len(videos), "decodes": decodes, "snippets": int(lengths.sum()),
               "median_length": float(np.median(lengths)), "max_length": int(lengths.max()),
               "fast_s_per_pass": fast_median, "fast_runs_s": fast_seconds,
               "fast_cpu_s_per_pass": float(np.median(fast_cpu)), "oracle_cpu_s": oracle_cpu,
               "fast_s_per_pass_per_200_videos": fast_median * 200 / len(videos),
               "oracle_videos": n, "oracle_s": oracle_seconds, "fast_s_same_videos": float(np.median(subset_seconds)),
               "speedup": ratio, "identical": same}
        results["sizes"][size] = row
        print(f"{size}: {len(videos)} videos, {decodes} (video, class) decodes, T median {row['median_length']:.0f} "
              f"max {row['max_length']}")
        print(f"  fast search: {fast_median:.3f} s per pass ({row['fast_s_per_pass_per_200_videos']:.3f} s per "
              f"200 videos; median of {args.repeats}; {row['fast_cpu_s_per_pass']:.3f} s of CPU time)")
        print(f"  loop oracle: {oracle_seconds:.2f} s on {n} videos; fast on the same: "
              f"{row['fast_s_same_videos']:.4f} s; speed-up {ratio:.0f}x; pseudo labels identical: {same}")
        failed |= not same
    return finish("lacp_search", results, args.out, not failed, "the fast search differs from the loop oracle")


if __name__ == "__main__":
    sys.exit(main())
