"""Benchmark: bf16 against fp32 on this machine -- the training step and the test-time forward, each against its floor.

The same data as bench/bench_train_step.py (10 videos x 150 and x 3000
proposals, D = 2048, 20 classes) and bench/bench_infer.py (210 videos,
30,718 proposals). For each precision, timed in the same run, alternating
(so that a change in the machine's load hits every figure alike):
- the project's training step, `tspnet.train.train_step` (under
  base.precision bf16: bfloat16 autocast, bfloat16 pooled cache; weights,
  Adam and losses in float32), and the test-time forward,
  `tspnet.train.predict`;
- the floor: the same matrix products as plain `torch.mm` calls, in float32
  or on bfloat16 operands (bench/common.py: `matmul_floor`).

Reported: each step and forward over its own precision's floor (target for
bf16: <= 1.3x), the bf16 speed-up over fp32 (target >= 2.5x) next to the
speed-up of the floors themselves (what the hardware gives the matrix
products: a step at its floor in both precisions cannot beat it), wall and
CPU seconds. Accuracy, reported and checked: bf16's per-video losses and
head outputs against fp32 from the same weights (max relative difference,
tolerance 5e-2: bfloat16 keeps 8 bits of mantissa); exit code 1 beyond it.
On a CPU without native bfloat16 the bf16 half is skipped, with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_step  # noqa: E402
import common  # noqa: E402

from tspnet import precision  # noqa: E402
from tspnet.model import ProposalHeads, TSPNet  # noqa: E402
from tspnet.params import load_params  # noqa: E402
from tspnet.train import batch_rows, build_optimizer, label_tensors, pooled_features, predict, train_step  # noqa: E402

FLOOR_TARGET = 1.3
SPEEDUP_TARGET = 2.5
TOLERANCE = common.TOLERANCES["bf16"]
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10, help="videos per training batch (default: %(default)s)")
    parser.add_argument("--per-video", type=int, nargs="+", default=[150, 3000],
                        help="proposals per training video, one configuration each (default: %(default)s)")
    parser.add_argument("--infer-videos", type=int, default=210, help="videos of the test split (default: %(default)s)")
    parser.add_argument("--infer-per-video", type=int, default=150,
                        help="mean proposals per test video (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension D (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps below 1000 proposals per video")
    parser.add_argument("--large-repeats", type=int, default=1, help="timed steps from 1000 proposals per video")
    parser.add_argument("--infer-repeats", type=int, default=1, help="timed forwards over the test split")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


def alternating(functions: dict[str, Callable], device: torch.device, repeats: int, warmup: int
                ) -> tuple[dict[str, common.Timing], dict[str, Any]]:
    """Each function `warmup` times untimed, then `repeats` rounds of one timed call of each, in turn.

    Returns the timings and each function's last result.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    timings = {name: common.Timing([], []) for name in functions}
    last = {}
    for _ in range(repeats):
        for name, fn in functions.items():
            timing, last[name] = common.measure(fn, device, 1, warmup=0)
            timings[name].seconds += timing.seconds
            timings[name].cpu_seconds += timing.cpu_seconds
    return timings, last


def figures(timings: dict[str, common.Timing], flops: float) -> dict:
    """Medians, ratios to the floors and bf16 speed-ups from `timings` keyed `<what>_<precision>`."""
    out = {name: timing.to_json() for name, timing in timings.items()}
    for p in PRECISIONS:
        if f"floor_{p}" in timings:
            work = timings[f"work_{p}"]
            out[f"{p}_over_floor"] = work.median / timings[f"floor_{p}"].median
            out[f"{p}_gflops"] = flops / work.median / 1e9
            out[f"{p}_floor_gflops"] = flops / timings[f"floor_{p}"].median / 1e9
    if "work_bf16" in timings:
        for what in ("work", "floor"):
            out[f"{what}_speedup"] = timings[f"{what}_fp32"].median / timings[f"{what}_bf16"].median
            out[f"{what}_speedup_cpu_time"] = timings[f"{what}_fp32"].cpu_median / timings[f"{what}_bf16"].cpu_median
    return out


def train_config_figures(args: argparse.Namespace, per_video: int, device: torch.device, precisions) -> dict:
    config = bench_train_step.train_config(args.params)
    split = common.synthetic_split(args.videos, per_video, args.dim, args.classes, seed=args.seed)
    slices = split.proposals.video_slices()
    rows, video_index = batch_rows(list(range(args.videos)), slices, config.max_proposals,
                                   torch.Generator().manual_seed(args.seed))
    targets = label_tensors(split.labels, device)
    large = per_video >= 1000
    repeats, warmup = (args.large_repeats, 0) if large else (args.repeats, 1)
    gemms = common.network_gemms(len(rows), args.dim, args.classes, backward=True)
    functions, losses = {}, {}
    for p in precisions:
        bf16 = precision.configure(p, device)
        pooled = pooled_features(common.MemoryDataset(split), "train", split.proposals, config.roi_bins,
                                 config.widen_ratio, device, show_progress=False, dtype=precision.cache_dtype(bf16))
        torch.manual_seed(args.seed)  # the same initial weights in both precisions
        model = TSPNet(args.dim, args.classes, config.dropout).to(device)
        optimizer = build_optimizer(model, config)
        model.eval()  # agreement with dropout off; this forward also warms the kernels up
        losses[p] = bench_train_step.project_video_losses(model, pooled, targets, rows, video_index, args.videos,
                                                          config, bf16)
        model.train()
        functions[f"work_{p}"] = (lambda model=model, optimizer=optimizer, pooled=pooled, bf16=bf16: train_step(
            model, optimizer, pooled, targets, rows, video_index, args.videos, config, bf16))
        functions[f"floor_{p}"] = common.floor_products(gemms, device, p)
    timings, _ = alternating(functions, device, repeats, warmup)
    result = {"videos": args.videos, "proposals_per_video": per_video, "rows": int(len(rows)),
              "gemm_gflop": common.gemm_flops(gemms) / 1e9, "repeats": repeats, "warmup": warmup,
              **figures(timings, common.gemm_flops(gemms))}
    if "bf16" in losses:
        result["bf16_per_video_loss_max_rel_diff"] = common.elementwise_relative_difference(losses["bf16"],
                                                                                           losses["fp32"])
    return result


def infer_figures(args: argparse.Namespace, device: torch.device, precisions) -> dict:
    params = load_params(args.params)
    bins, widen = int(params["train"]["roi_bins"]), float(params["train"]["widen_ratio"])
    batch = int(params["infer"]["batch_proposals"])
    split = common.synthetic_split(args.infer_videos, args.infer_per_video, args.dim, args.classes, seed=args.seed,
                                   spread_counts=True)
    rows = len(split.proposals)
    torch.manual_seed(args.seed)
    model = TSPNet(args.dim, args.classes).to(device).eval()
    gemms = [g for first in range(0, rows, batch)
             for g in common.network_gemms(min(batch, rows - first), args.dim, args.classes, backward=False)]
    functions = {}
    for p in precisions:
        bf16 = precision.configure(p, device)
        pooled = pooled_features(common.MemoryDataset(split), "test", split.proposals, bins, widen, device,
                                 show_progress=False, dtype=precision.cache_dtype(bf16))
        predict(model, pooled[:64], batch, bf16)  # warm-up
        functions[f"work_{p}"] = lambda pooled=pooled, bf16=bf16: predict(model, pooled, batch, bf16)
        functions[f"floor_{p}"] = common.floor_products(gemms, device, p)
    timings, heads = alternating(functions, device, args.infer_repeats, warmup=0)
    result = {"videos": args.infer_videos, "proposals": rows, "batch_proposals": batch,
              "gemm_gflop": common.gemm_flops(gemms) / 1e9, "repeats": args.infer_repeats,
              **figures(timings, common.gemm_flops(gemms))}
    if "work_bf16" in heads:
        result["bf16_heads_max_rel_diff"] = {name: common.relative_difference(getattr(heads["work_bf16"], name),
                                                                              getattr(heads["work_fp32"], name))
                                             for name in ProposalHeads._fields}
    return result


def print_figures(title: str, r: dict, what: str) -> None:
    print(f"\n{title}; {r['gemm_gflop']:.0f} GFLOP of matrix products; median of {r['repeats']} alternating run(s)")
    print(f"{'':<24}{'seconds':>9}{'CPU s':>9}{'GFLOP/s':>9}  ratio")
    for p in PRECISIONS:
        if f"floor_{p}" not in r:
            continue
        floor, work = r[f"floor_{p}"], r[f"work_{p}"]
        print(f"{p + ' matmul floor':<24}{floor['median_s']:>9.3f}{floor['cpu_median_s']:>9.3f}"
              f"{r[f'{p}_floor_gflops']:>9.0f}")
        target = (f" (target <= {FLOOR_TARGET}: {'met' if r[f'{p}_over_floor'] <= FLOOR_TARGET else 'NOT MET'})"
                  if p == "bf16" else "")
        print(f"{p + ' ' + what:<24}{work['median_s']:>9.3f}{work['cpu_median_s']:>9.3f}{r[f'{p}_gflops']:>9.0f}"
              f"  {r[f'{p}_over_floor']:.2f}x its floor{target}")
    if "work_speedup" in r:
        met = "met" if r["work_speedup"] >= SPEEDUP_TARGET else "NOT MET"
        print(f"bf16 speed-up over fp32: {what} {r['work_speedup']:.2f}x (CPU time {r['work_speedup_cpu_time']:.2f}x; "
              f"target >= {SPEEDUP_TARGET}x: {met}); the floors themselves {r['floor_speedup']:.2f}x "
              f"(CPU time {r['floor_speedup_cpu_time']:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.precision = "fp32"
    device, _ = common.setup(args)
    precisions = list(PRECISIONS)
    skipped = None
    if not precision.native_bf16(device):
        precisions, skipped = ["fp32"], f"{device} has no native bfloat16 (base.precision bf16 is refused there)"
    machine = common.machine(device)
    print(f"precision on {device} ({machine.get('gpu', machine['cpu'])}, {torch.get_num_threads()} threads): "
          f"{', '.join(precisions)}" + (f"; bf16 skipped: {skipped}" if skipped else ""))
    results = {"benchmark": "precision", "machine": machine, "precisions": precisions, "bf16_skipped": skipped,
               "train_step": [], "infer": None}
    for per_video in args.per_video:
        r = train_config_figures(args, per_video, device, precisions)
        results["train_step"].append(r)
        print_figures(f"training step, {r['videos']} videos x {per_video} proposals = {r['rows']} rows", r, "step")
        if "bf16_per_video_loss_max_rel_diff" in r:
            print(f"bf16 vs fp32, same weights, dropout off: per-video loss "
                  f"{r['bf16_per_video_loss_max_rel_diff']:.1e} (max relative difference, tolerance {TOLERANCE:g})")
    r = infer_figures(args, device, precisions)
    results["infer"] = r
    print_figures(f"test-time forward, {r['videos']} videos, {r['proposals']} proposals", r, "forward")
    if "bf16_heads_max_rel_diff" in r:
        heads_text = ", ".join(f"{k} {v:.1e}" for k, v in r["bf16_heads_max_rel_diff"].items())
        print(f"bf16 vs fp32, same weights: {heads_text} (max |difference| / max |value|, tolerance {TOLERANCE:g})")
    precision.configure("fp32", device)
    differences = [c["bf16_per_video_loss_max_rel_diff"] for c in results["train_step"]
                   if "bf16_per_video_loss_max_rel_diff" in c]
    differences += list((r.get("bf16_heads_max_rel_diff") or {}).values())
    results["agree"] = all(d <= TOLERANCE for d in differences)
    return common.finish(common.result_name("precision", device, "fp32"), results, args.out, results["agree"],
                         "bf16 differs from fp32 by more than bfloat16's precision explains")


if __name__ == "__main__":
    sys.exit(main())
