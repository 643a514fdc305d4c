"""Benchmark: the test-time forward over a whole split, batched across videos against the per-video loop.

Data: a THUMOS14-sized test split -- 210 videos with THUMOS14-like lengths,
random 2048-d features, 20 classes -- and proposals as a base locator gives
them: lognormal counts averaging 150 per video (P-MIL gives 4 to 1005, 150 on
average), lengths as in P-MIL's THUMOS14 proposals. The network has random
initial weights (speed and agreement do not depend on training).

Timed, in the same run:
- project: `tspnet.train.pooled_features` (RoI features and contrast pooling
  of every proposal, a few videos at a time) and `tspnet.train.predict` (eval
  forward, `infer.batch_proposals` rows per forward), as the infer stage runs;
- per-video loop: the authors' structure (tests/reference/model_loop.py): for
  each video, RoI features, contrast pooling, the fusion layer and Conv1d
  heads over its proposals;
- matmul floor: the forward's own matrix products (same shapes and FLOPs) as
  plain torch.mm calls.

Agreement: class logits, attention and center logits of every proposal
(max |difference| / max |value| per head, tolerance 1e-5 in fp32); exit
code 1 when they differ. Timing targets are reported, never fail the run:
forward within 1.3x of the floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.reference.model_loop import Video, authors_forward  # noqa: E402
from tspnet.model import ProposalHeads, TSPNet  # noqa: E402
from tspnet.params import load_params  # noqa: E402
from tspnet.precision import autocast, cache_dtype  # noqa: E402
from tspnet.train import pooled_features, predict  # noqa: E402

FLOOR_TARGET = 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=210, help="videos in the split (default: %(default)s)")
    parser.add_argument("--per-video", type=int, default=150, help="mean proposals per video (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension D (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each path (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


@torch.no_grad()
def per_video_loop(model: TSPNet, videos: list[Video], video_roi, bf16: bool) -> ProposalHeads:
    """The authors' test loop: RoI features and one forward per video; heads in proposal order."""
    parts = []
    for video in videos:
        if len(video.proposals) == 0:
            continue
        with autocast(video.features.device, bf16):
            cls, attention, center = authors_forward(model, video_roi(video.features, video.proposals).unsqueeze(0))
        parts.append((cls[0].T.float(), attention.reshape(-1).float(), center.reshape(-1).float()))
    return ProposalHeads(*(torch.cat(column) for column in zip(*parts)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, bf16 = common.setup(args)
    params = load_params(args.params)
    bins, widen = int(params["train"]["roi_bins"]), float(params["train"]["widen_ratio"])
    batch = int(params["infer"]["batch_proposals"])
    split = common.synthetic_split(args.videos, args.per_video, args.dim, args.classes, seed=args.seed,
                                   spread_counts=True)
    split.videos = common.to_device(split.videos, device)
    rows = len(split.proposals)
    torch.manual_seed(args.seed)
    model = TSPNet(args.dim, args.classes).to(device).eval()
    dataset = common.MemoryDataset(split)
    video_roi = common.per_video_roi(bins, widen)
    machine = common.machine(device)
    print(f"inference on {device} ({machine.get('gpu', machine['cpu'])}, {torch.get_num_threads()} threads), "
          f"precision {args.precision}")
    print(f"{args.videos} videos, {rows} proposals ({rows / args.videos:.0f} per video, "
          f"{split.proposals.counts().min()} to {split.proposals.counts().max()}), D = {args.dim}, "
          f"{args.classes} classes; median of {args.repeats} run(s)")

    # Warm up every kernel on a small slice, so that a single timed run is fair to both paths.
    per_video_loop(model, split.videos[:2], video_roi, bf16)
    predict(model, torch.zeros(64, 3 * args.dim, device=device), batch, bf16)

    pooled_timing, pooled = common.measure(
        lambda: pooled_features(dataset, "test", split.proposals, bins, widen, device, show_progress=False,
                                dtype=cache_dtype(bf16)),
        device, args.repeats, warmup=0)
    forward_timing, heads = common.measure(lambda: predict(model, pooled, batch, bf16), device, args.repeats,
                                           warmup=0)
    loop_timing, expected = common.measure(lambda: per_video_loop(model, split.videos, video_roi, bf16), device,
                                           args.repeats, warmup=0)
    gemms = [g for first in range(0, rows, batch)
             for g in common.network_gemms(min(batch, rows - first), args.dim, args.classes, backward=False)]
    floor_timing = common.matmul_floor(gemms, device, args.precision, args.repeats, warmup=1)

    differences = {name: common.relative_difference(getattr(heads, name), getattr(expected, name))
                   for name in ProposalHeads._fields}
    tolerance = common.TOLERANCES[args.precision]
    agree = max(differences.values()) <= tolerance
    project = pooled_timing.median + forward_timing.median
    flops = common.gemm_flops(gemms)
    results = {
        "benchmark": "infer", "machine": machine, "precision": args.precision, "videos": args.videos,
        "proposals": rows, "feature_dim": args.dim, "classes": args.classes, "batch_proposals": batch,
        "gemm_gflop": flops / 1e9, "repeats": args.repeats,
        "agreement": {"max_rel_diff": differences, "tolerance": tolerance, "agree": agree},
        "matmul_floor": floor_timing.to_json(), "project_pooled_features": pooled_timing.to_json(),
        "project_forward": forward_timing.to_json(), "project_total_s": project,
        "per_video_loop": loop_timing.to_json(),
        "forward_over_floor": forward_timing.median / floor_timing.median,
        "loop_over_project_total": loop_timing.median / project,
        "loop_over_project_forward": loop_timing.median / forward_timing.median,
        "proposals_per_second_project": rows / project,
    }
    print("agreement: " + ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
          + f" (max relative difference; tolerance {tolerance:g}) -> {'AGREE' if agree else 'DIFFER'}")
    print(f"{'':<38}{'seconds':>10}")
    for name, seconds, note in [
        ("matmul floor (forward GEMMs)", floor_timing.median, f"{flops / 1e9:.0f} GFLOP, "
                                                              f"{flops / floor_timing.median / 1e9:.0f} GFLOP/s"),
        ("project: RoI features (batched)", pooled_timing.median, ""),
        ("project: forward (batched)", forward_timing.median, f"{flops / forward_timing.median / 1e9:.0f} GFLOP/s"),
        ("project: total", project, f"{rows / project:.0f} proposals/s"),
        ("per-video loop (authors)", loop_timing.median, "RoI + forward, per video"),
    ]:
        print(f"{name:<38}{seconds:>10.3f}  {note}")
    floor_ok = results["forward_over_floor"] <= FLOOR_TARGET
    print(f"forward / floor: {results['forward_over_floor']:.2f} (target <= {FLOOR_TARGET}: "
          f"{'met' if floor_ok else 'NOT MET'}); per-video loop / project total: "
          f"{results['loop_over_project_total']:.2f}x; per-video loop / project forward: "
          f"{results['loop_over_project_forward']:.2f}x")
    return common.finish(common.result_name("infer", device, args.precision), results, args.out, agree,
                         "the batched forward differs from the per-video loop")


if __name__ == "__main__":
    sys.exit(main())
