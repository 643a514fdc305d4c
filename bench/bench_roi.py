"""Benchmark: the RoI pooling pass over a THUMOS14-sized test split, cache-sized blocks against one product per pass.

Data: as bench/bench_infer.py -- 210 videos with THUMOS14-like lengths,
random 2048-d features, lognormal proposal counts averaging 150 per video
(30,718 proposals).

Timed, in the same run, alternating, `--repeats` times each:
- project: `tspnet.train.pooled_features` (RoI Align as sparse products of a
  few MB of output each, contrast-pooled block by block into the cache);
- one product per pass: the previous implementation -- per 32 videos, the
  whole sparse weight matrix times the features for 64 MB of RoI output at a
  time, then contrast pooling of that output (`one_product_per_pass` below).

Agreement: the two caches must be equal bit for bit (float32), else exit
code 1 -- the fp32 pipeline's bytes must not change. Target, reported, never
failing the run: project at least 2x faster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tspnet.model import contrast_pool  # noqa: E402
from tspnet.params import load_params  # noqa: E402
from tspnet import roi  # noqa: E402
from tspnet.roi import RoiWeights  # noqa: E402
from tspnet.train import pooled_features  # noqa: E402

SPEEDUP_TARGET = 2.0
PASS_BYTES = 64 << 20  # the previous implementation's RoI output per product


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=210, help="videos in the split (default: %(default)s)")
    parser.add_argument("--per-video", type=int, default=150, help="mean proposals per video (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension D (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default: %(default)s)")
    parser.add_argument("--block-mb", type=float, default=None,
                        help="RoI output per sparse product in the project's path, MB (default: "
                             f"tspnet.roi.BLOCK_BYTES, {roi.BLOCK_BYTES / 2**20:g} MB)")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


def one_product_per_pass(dataset: common.MemoryDataset, proposals, bins: int, widen_ratio: float,
                         videos_per_chunk: int = 32) -> torch.Tensor:
    """The cache as the previous implementation built it: 64 MB of [rows, bins, D] per sparse product."""
    slices = proposals.video_slices()
    dim = dataset.info.feature_dim
    out = torch.empty((len(proposals), 3 * dim))
    segments = torch.from_numpy(proposals.segments)
    rows_per_pass = max(1, PASS_BYTES // (bins * dim * 4))
    for first in range(0, len(proposals.videos), videos_per_chunk):
        videos = proposals.videos[first:first + videos_per_chunk]
        rows = slice(slices[first].start, slices[first + len(videos) - 1].stop)
        store = dataset.feature_store("test", videos)
        for start in range(rows.start, rows.stop, rows_per_pass):
            part = slice(start, min(start + rows_per_pass, rows.stop))
            local = torch.from_numpy(proposals.video_index[part] - first)
            weights = RoiWeights(store.features, segments[part], store.offsets[local], store.lengths[local], bins,
                                 widen_ratio)
            out[part] = contrast_pool(weights.product(0, weights.count, store.features))  # one torch.sparse.mm
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.precision = "fp32"
    device, _ = common.setup(args)
    if device.type != "cpu":
        print("bench_roi.py compares CPU paths; on other devices RoI runs as one product per pass anyway",
              file=sys.stderr)
        return 2
    if args.block_mb is not None:
        roi.BLOCK_BYTES = int(args.block_mb * 2**20)
    params = load_params(args.params)
    bins, widen = int(params["train"]["roi_bins"]), float(params["train"]["widen_ratio"])
    split = common.synthetic_split(args.videos, args.per_video, args.dim, seed=args.seed, spread_counts=True)
    dataset = common.MemoryDataset(split)
    machine = common.machine(device)
    rows = len(split.proposals)
    print(f"RoI pooling pass on {device} ({machine['cpu']}, {torch.get_num_threads()} threads): {args.videos} "
          f"videos, {rows} proposals, D = {args.dim}, blocks of {roi.BLOCK_BYTES / 2**20:g} MB; median of "
          f"{args.repeats} alternating run(s)")

    project_runs, previous_runs = [], []
    for _ in range(args.repeats):  # alternating, so that a change in the machine's load hits both
        timing, cache = common.measure(lambda: pooled_features(dataset, "test", split.proposals, bins, widen, device,
                                                               show_progress=False), device, 1, warmup=0)
        project_runs.append(timing)
        timing, expected = common.measure(lambda: one_product_per_pass(dataset, split.proposals, bins, widen),
                                          device, 1, warmup=0)
        previous_runs.append(timing)
    project = common.Timing([t.seconds[0] for t in project_runs], [t.cpu_seconds[0] for t in project_runs])
    previous = common.Timing([t.seconds[0] for t in previous_runs], [t.cpu_seconds[0] for t in previous_runs])
    identical = torch.equal(cache, expected) and torch.equal(torch.signbit(cache), torch.signbit(expected))
    speedup = previous.median / project.median
    results = {
        "benchmark": "roi", "machine": machine, "videos": args.videos, "proposals": rows, "feature_dim": args.dim,
        "bins": bins, "block_bytes": roi.BLOCK_BYTES, "repeats": args.repeats, "bit_identical": identical,
        "project_pooled_features": project.to_json(), "one_product_per_pass": previous.to_json(),
        "speedup": speedup, "speedup_cpu_time": previous.cpu_median / project.cpu_median,
        "speedup_runs": [p / q for p, q in zip(previous.seconds, project.seconds)],
    }
    print(f"agreement: {'bit-identical' if identical else 'DIFFERENT'} pooled features ({rows} x {3 * args.dim})")
    print(f"{'':<44}{'seconds':>10}{'CPU s':>10}")
    print(f"{'project (cache-sized blocks, pooled at once)':<44}{project.median:>10.3f}{project.cpu_median:>10.3f}")
    print(f"{'one product per 64 MB pass (previous)':<44}{previous.median:>10.3f}{previous.cpu_median:>10.3f}")
    print(f"speed-up: {speedup:.2f}x wall (runs: {', '.join(f'{r:.2f}' for r in results['speedup_runs'])}), "
          f"{results['speedup_cpu_time']:.2f}x CPU time (target >= {SPEEDUP_TARGET}x: "
          f"{'met' if speedup >= SPEEDUP_TARGET else 'NOT MET'})")
    return common.finish(common.result_name("roi", device, "fp32"), results, args.out, identical,
                         "the blocked RoI pass changed the float32 pooled features")


if __name__ == "__main__":
    sys.exit(main())
