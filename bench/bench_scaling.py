"""Benchmark: training-step time against proposals per video and against the feature dimension.

The project's step (`tspnet.train.train_step`: cached pooled features, one
batched forward, backward, Adam) over 10 videos, timed at 100 to 3000
proposals per video (D = 2048), and at D = 256 to 4096 (150 proposals per
video), each beside the matmul floor of the same matrix products (see
bench/common.py). The work grows linearly with the proposals and with the
square of D (every layer is D x D-sized), so the step time should be linear
in the proposals and linear in the FLOPs; the fits and R^2 are printed, and
both curves are plotted to bench/out/scaling.png.

Agreement: wherever a batch has at most --check-rows proposals, the per-video
losses of the batched forward are compared with the authors' per-video loop
(dropout off, tolerance 1e-5 relative in fp32); exit code 1 if any differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_step as train_bench  # noqa: E402
import common  # noqa: E402

from tspnet.model import TSPNet  # noqa: E402
from tspnet.precision import cache_dtype  # noqa: E402
from tspnet.train import batch_rows, build_optimizer, label_tensors, pooled_features, train_step  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--per-video", type=int, nargs="+", default=[100, 200, 500, 1000, 2000, 3000],
                        help="proposals per video of the first sweep (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=2048, help="D of the first sweep (default: %(default)s)")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096],
                        help="D of the second sweep (default: %(default)s)")
    parser.add_argument("--dims-per-video", type=int, default=150, help="proposals per video of the second sweep")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of batches up to --large-rows")
    parser.add_argument("--large-rows", type=int, default=5000,
                        help="batches above this many proposals: one timed run, no warm-up (default: %(default)s)")
    parser.add_argument("--check-rows", type=int, default=5000,
                        help="compare per-video losses with the loop up to this many proposals (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


def measure_point(args: argparse.Namespace, per_video: int, dim: int, device: torch.device, bf16: bool) -> dict:
    config = train_bench.train_config(args.params)
    split = common.synthetic_split(args.videos, per_video, dim, args.classes, seed=args.seed)
    slices = split.proposals.video_slices()
    generator = torch.Generator().manual_seed(args.seed)
    videos = list(range(args.videos))
    rows, video_index = batch_rows(videos, slices, config.max_proposals, generator)
    pooled = pooled_features(common.MemoryDataset(split), "train", split.proposals, config.roi_bins,
                             config.widen_ratio, device, show_progress=False, dtype=cache_dtype(bf16))
    torch.manual_seed(args.seed)
    model = TSPNet(dim, args.classes, config.dropout).to(device)
    optimizer = build_optimizer(model, config)
    targets = label_tensors(split.labels, device)
    point = {"proposals_per_video": per_video, "feature_dim": dim, "rows": int(len(rows))}

    if len(rows) <= args.check_rows:
        model.eval()
        losses = train_bench.project_video_losses(model, pooled, targets, rows, video_index, args.videos, config,
                                                  bf16)
        expected = train_bench.loop_video_losses(model, train_bench.batch_videos(split, rows, video_index, device),
                                                 common.per_video_roi(config.roi_bins, config.widen_ratio), config,
                                                 bf16)
        point["per_video_loss_max_rel_diff"] = common.elementwise_relative_difference(losses, expected)
        model.train()

    large = len(rows) > args.large_rows
    repeats, warmup = (1, 0) if large else (args.repeats, 1)
    step, _ = common.measure(lambda: train_step(model, optimizer, pooled, targets,
                                                *batch_rows(videos, slices, config.max_proposals, generator),
                                                args.videos, config, bf16), device, repeats, warmup)
    gemms = common.network_gemms(len(rows), dim, args.classes, backward=True)
    floor = common.matmul_floor(gemms, device, args.precision, repeats, warmup)
    point.update({"gemm_gflop": common.gemm_flops(gemms) / 1e9, "step": step.to_json(), "floor": floor.to_json(),
                  "step_s": step.median, "floor_s": floor.median, "step_over_floor": step.median / floor.median})
    return point


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least squares y = intercept + slope * x, with R^2."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    r2 = 1.0 - float((residual ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def print_sweep(title: str, points: list[dict], key: str) -> None:
    print(f"\n{title}")
    print(f"{key:>20}{'rows':>8}{'GFLOP':>9}{'step (s)':>10}{'floor (s)':>11}{'step/floor':>12}{'loss diff':>11}")
    for p in points:
        diff = p.get("per_video_loss_max_rel_diff")
        print(f"{p[key]:>20}{p['rows']:>8}{p['gemm_gflop']:>9.1f}{p['step_s']:>10.3f}{p['floor_s']:>11.3f}"
              f"{p['step_over_floor']:>12.2f}{'-' if diff is None else f'{diff:.1e}':>11}")


def plot(path: Path, rows_points: list[dict], rows_fit: dict, dim_points: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = np.array([p["rows"] for p in rows_points])
    left.plot(rows, [p["step_s"] for p in rows_points], "o-", label="project step")
    left.plot(rows, [p["floor_s"] for p in rows_points], "s--", label="matmul floor")
    left.plot(rows, rows_fit["intercept"] + rows_fit["slope"] * rows, ":", color="gray",
              label=f"linear fit (R$^2$ = {rows_fit['r2']:.4f})")
    left.set(xlabel=f"proposals per batch ({rows_points[0]['feature_dim']}-d features)", ylabel="seconds per step",
             title="vs proposals")
    left.legend()
    dims = [p["feature_dim"] for p in dim_points]
    right.loglog(dims, [p["step_s"] for p in dim_points], "o-", base=2, label="project step")
    right.loglog(dims, [p["floor_s"] for p in dim_points], "s--", base=2, label="matmul floor")
    right.set(xlabel=f"feature dimension D ({dim_points[0]['rows']} proposals)", ylabel="seconds per step",
              title="vs feature dimension")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, bf16 = common.setup(args)
    machine = common.machine(device)
    print(f"training-step scaling on {device} ({machine.get('gpu', machine['cpu'])}, {torch.get_num_threads()} "
          f"threads), precision {args.precision}, {args.videos} videos per batch")
    rows_points = [measure_point(args, n, args.dim, device, bf16) for n in args.per_video]
    dim_points = [measure_point(args, args.dims_per_video, d, device, bf16) for d in args.dims]

    rows = np.array([p["rows"] for p in rows_points], dtype=float)
    rows_fit = linear_fit(rows, np.array([p["step_s"] for p in rows_points]))
    dims = np.array([p["feature_dim"] for p in dim_points], dtype=float)
    dim_seconds = np.array([p["step_s"] for p in dim_points])
    flops_fit = linear_fit(np.array([p["gemm_gflop"] for p in dim_points]), dim_seconds)
    loglog_slope = float(np.polyfit(np.log(dims[-3:]), np.log(dim_seconds[-3:]), 1)[0])

    print_sweep(f"vs proposals per video (D = {args.dim})", rows_points, "proposals_per_video")
    print(f"linear fit: {rows_fit['slope'] * 1e6:.1f} s per million proposals + {rows_fit['intercept']:.3f} s, "
          f"R^2 = {rows_fit['r2']:.5f}")
    print_sweep(f"vs feature dimension ({args.dims_per_video} proposals per video)", dim_points, "feature_dim")
    print(f"step time vs GFLOP: {flops_fit['slope'] * 1e3:.2f} ms per GFLOP + {flops_fit['intercept']:.3f} s, "
          f"R^2 = {flops_fit['r2']:.5f}; log-log slope in D over the three largest D: {loglog_slope:.2f} "
          "(2 = quadratic, as the FLOPs)")

    checked = [p["per_video_loss_max_rel_diff"] for p in rows_points + dim_points if "per_video_loss_max_rel_diff" in p]
    tolerance = common.TOLERANCES[args.precision]
    agree = all(d <= tolerance for d in checked)
    name = common.result_name("scaling", device, args.precision)
    figure = args.out.with_suffix(".png") if args.out else common.OUT_DIR / f"{name}.png"
    plot(figure, rows_points, rows_fit, dim_points, f"TSPNet training step, {machine.get('gpu', machine['cpu'])}, "
                                                    f"{torch.get_num_threads()} threads, {args.precision}")
    results = {"benchmark": "scaling", "machine": machine, "precision": args.precision, "videos": args.videos,
               "vs_proposals": rows_points, "vs_proposals_fit": rows_fit, "vs_dim": dim_points,
               "vs_dim_flops_fit": flops_fit, "vs_dim_loglog_slope_top3": loglog_slope,
               "agreement": {"points_checked": len(checked), "max_rel_diff": max(checked, default=0.0),
                             "tolerance": tolerance, "agree": agree}}
    print(f"per-video losses checked at {len(checked)} points: max relative difference "
          f"{max(checked, default=0.0):.1e} (tolerance {tolerance:g}) -> {'AGREE' if agree else 'DIFFER'}")
    print(f"plot: {figure}")
    return common.finish(name, results, args.out, agree, "batched per-video losses differ from the loop")


if __name__ == "__main__":
    sys.exit(main())
