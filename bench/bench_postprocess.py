"""Benchmark: inference post-processing, vectorised (tspnet.postprocess) against the authors' loops.

Data: the real P-MIL THUMOS14 test proposals (seconds -> snippets x 25/16,
rounded to 0.01 as the proposal import does) and THUMOS14's ambiguous
segments, from ../shared/data; where that folder is absent, a synthetic split
of the same shape (210 videos, clusters of overlapping proposals).

Stand-in model outputs, so that every step has real work to do: with q the
proposal's score min-max scaled over the split, its class probabilities are
(1 - q) / (C + 1) everywhere plus q on its own label, and attention = center
= 1. The aligned confidence of a proposal for its label then grows with the
base score (the scores "stand in for aligned confidence"), every class gets a
small positive score (ABA and soft-NMS run on all proposals of the video for
every kept class), and a video keeps the labels whose proposals are confident
enough on average (the class threshold 0.1 is crossed by some labels, not
others; the kept-class counts are printed). Scaling keeps the scores'
distinctness: no artificial ties.

Timed: `localize` + ambiguous filter (read_ambiguous, drop_ambiguous_mask,
Detections.select) against the per-video loop + the set-based filter; and
`base_detections` (soft-NMS of the base proposals per video and label)
against its loop. Both must give the same detections in the same order
(values to 1e-9; they are expected to be bit-identical). Median seconds of
the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.reference holds the loop versions

from tests.reference.postprocess_loop import (  # noqa: E402
    base_detections_loop,
    filter_segments_loop,
    localize_loop,
)
from tspnet.postprocess import (  # noqa: E402
    Detections,
    base_detections,
    drop_ambiguous_mask,
    localize,
    read_ambiguous,
)
from tspnet.units import round_proposal_snippets, seconds_to_snippets, snippets_per_second  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DEFAULT_PROPOSALS = SHARED / "proposals" / "pmil_base" / "test.json"
DEFAULT_AMBIGUOUS = SHARED / "thumos14" / "Ambiguous_test.txt"


def load_proposals(path: Path) -> tuple[list[str], list[dict]]:
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    videos = sorted(results)
    return videos, [dict(p, video=i) for i, video in enumerate(videos) for p in results[video]]


def synthetic_proposals(seed: int = 0) -> tuple[list[str], list[dict]]:
    """210 videos; per video a few actions, each with a cluster of overlapping proposals (0.64 s grid)."""
    rng = np.random.default_rng(seed)
    videos = [f"video_test_{i:07d}" for i in range(210)]
    rows = []
    for i in range(len(videos)):
        labels = rng.choice(20, size=int(rng.integers(1, 3)), replace=False)
        for _ in range(int(rng.integers(2, 12))):
            middle, label = rng.uniform(5, 200), int(rng.choice(labels))
            for _ in range(int(rng.integers(3, 40))):
                half = 0.64 * rng.integers(1, 15)
                start = max(0.0, 0.64 * round((middle - half + rng.normal(0, 1.5)) / 0.64))
                rows.append({"video": i, "label": f"class{label:02d}", "score": float(rng.uniform(-0.1, 1.2)),
                             "segment": [start, start + 2 * half]})
    return videos, rows


def synthetic_ambiguous(videos: list[str], seed: int = 1) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for video in rng.choice(videos, size=len(videos) // 2, replace=False):
        for _ in range(int(rng.integers(1, 4))):
            start = round(float(rng.uniform(0, 200)), 1)
            lines.append(f"{video}  {start} {start + round(float(rng.uniform(0.5, 6)), 1)}")
    return "\n".join(lines) + "\n"


def stand_in_outputs(labels: np.ndarray, scores: np.ndarray, classes: int):
    q = (scores - scores.min()) / (scores.max() - scores.min())
    probs = np.repeat(((1 - q) / (classes + 1))[:, None], classes + 1, axis=1)
    probs[np.arange(len(q)), labels] += q
    ones = np.ones(len(q))
    return probs, ones, ones


def median_seconds(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def compare(fast: Detections, loop: Detections) -> tuple[bool, float]:
    """(same videos, labels and order, largest absolute difference of start, end, score)."""
    same = len(fast) == len(loop) and np.array_equal(fast.video, loop.video) and np.array_equal(fast.label, loop.label)
    if not same:
        return False, float("inf")
    worst = 0.0
    for field in ("start", "end", "score") if len(fast) else ():
        worst = max(worst, float(np.max(np.abs(getattr(fast, field) - getattr(loop, field)))))
    return True, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proposals", type=Path, default=DEFAULT_PROPOSALS,
                        help="ActivityNet results JSON of base proposals, seconds (default: the P-MIL test set)")
    parser.add_argument("--ambiguous", type=Path, default=DEFAULT_AMBIGUOUS,
                        help="'video start end' lines, seconds (default: THUMOS14's Ambiguous_test.txt)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use a synthetic split (the default when the reference data is absent)")
    parser.add_argument("--feature-fps", type=float, default=25.0)
    parser.add_argument("--snippet-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="runs of the fast path (default: %(default)s)")
    parser.add_argument("--loop-repeats", type=int, default=3, help="runs of the loops (default: %(default)s)")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    if args.synthetic or not (args.proposals.is_file() and args.ambiguous.is_file()):
        videos, rows = synthetic_proposals()
        args.ambiguous = Path(tmp.name) / "ambiguous.txt"
        args.ambiguous.write_text(synthetic_ambiguous(videos), encoding="utf-8")
        source = "synthetic split (reference data absent or --synthetic)"
    else:
        videos, rows = load_proposals(args.proposals)
        source = str(args.proposals)
    names = sorted({p["label"] for p in rows})
    video_index = np.array([p["video"] for p in rows])
    labels = np.array([names.index(p["label"]) for p in rows])
    scores = np.array([p["score"] for p in rows], dtype=np.float64)
    seconds = np.array([p["segment"] for p in rows], dtype=np.float64)
    segments = round_proposal_snippets(seconds_to_snippets(seconds, args.feature_fps, args.snippet_frames))
    probs, attention, center = stand_in_outputs(labels, scores, len(names))
    sps = snippets_per_second(args.feature_fps, args.snippet_frames)
    video_names = np.array(videos)

    def fast_localize() -> Detections:
        detections = localize(video_index, segments, probs, attention, center)
        drop = drop_ambiguous_mask(video_names[detections.video], detections.start, detections.end,
                                   read_ambiguous(args.ambiguous), sps)
        return detections.select(~drop)

    def loop_localize() -> Detections:
        detections, _ = localize_loop(video_index, segments, probs, attention, center)
        drop = filter_segments_loop(
            video_names[detections.video], detections.start, detections.end, args.ambiguous, sps
        )
        return detections.select(~drop)

    runs = [
        ("localize + ambiguous filter", fast_localize, loop_localize),
        ("base_detections", lambda: base_detections(video_index, segments, labels, scores),
         lambda: base_detections_loop(video_index, segments, labels, scores)),
    ]
    print(f"{source}: {len(rows)} proposals, {len(videos)} videos, {len(names)} classes")
    print(f"{'step':<30}{'fast (s)':>10}{'loop (s)':>10}{'loop/fast':>11}  detections  agreement")
    agreed = True
    for name, fast_fn, loop_fn in runs:
        fast_s, fast = median_seconds(fast_fn, args.repeats)
        loop_s, loop = median_seconds(loop_fn, args.loop_repeats)
        same_order, worst = compare(fast, loop)
        ok = same_order and worst <= 1e-9
        agreed &= ok
        verdict = ("bit-identical" if worst == 0.0 else f"max |diff| {worst:.1e}") if same_order else "DIFFERENT ORDER"
        print(f"{name:<30}{fast_s:>10.4f}{loop_s:>10.4f}{loop_s / fast_s:>10.1f}x  {len(fast):>10}  {verdict}")
        if name.startswith("localize"):
            kept = localize(video_index, segments, probs, attention, center)
            per_video = np.bincount(np.unique(np.c_[kept.video, kept.label], axis=0)[:, 0])
            counts = np.bincount(per_video[per_video > 0])
            print(" " * 30 + "kept classes per video: "
                  + ", ".join(f"{k}: {c} videos" for k, c in enumerate(counts) if k and c)
                  + f"; dropped as ambiguous: {len(kept) - len(fast)}")
    tmp.cleanup()
    if not agreed:
        print("FAILED: fast and loop detections differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
