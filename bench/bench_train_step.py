"""Benchmark: one TSPNet training step, the project's batched step against the authors' per-video loop.

Data: 10 videos with THUMOS14-like lengths, random 2048-d features, 20
classes, points and proposals as a base locator gives them (lengths as in
P-MIL's THUMOS14 proposals); 150 proposals per video (what THUMOS14 base
locators give) and 3000 (train.max_proposals). Optimizer and loss settings
come from params.yaml (group `train`).

Timed, in the same run:
- project step: `tspnet.train.train_step` -- the batch's rows of the pooled
  feature cache, one forward over all of them, per-video mean losses,
  backward, Adam (what every training iteration runs);
- per-video loop: the authors' structure (tests/reference/model_loop.py): for
  each video, RoI features from its features, contrast pooling, the fusion
  layer and Conv1d heads, its loss; the mean over videos, backward, Adam;
- matmul floor: the step's own matrix products (same shapes, so the same
  FLOPs) as plain torch.mm calls;
- RoI features for the batch: `tspnet.train.pooled_features` (the project
  pays this once per training run) and per video (the authors, every step).

Agreement, with dropout off (eval mode) so both paths see the same network,
from the same initial weights: the per-video losses, the step's loss and the
pooled features (tolerance 1e-5 relative in fp32), and the step's gradients
as the optimizer receives them (norm-wise over all parameters, tolerance
1e-3 in fp32: float32 sums over 30,000 rows are that coarse -- at 3000
proposals per video each path is about 1e-4 from a float64 computation, and
they differ from each other by about as much; at 150 per video, 3e-7).
Exit code 1 when any of them differs by more. Timing targets are reported,
never fail the run: step within 1.3x of the floor, at least 1.5x faster than
the loop.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.reference.model_loop import Video, per_video_training_loss  # noqa: E402
from tspnet.losses import center_loss, per_video_mean, point_classification_loss  # noqa: E402
from tspnet.model import TSPNet, contrast_pool  # noqa: E402
from tspnet.params import load_params  # noqa: E402
from tspnet.precision import autocast, cache_dtype  # noqa: E402
from tspnet.train import (TrainConfig, batch_rows, build_optimizer, label_tensors, pooled_features,  # noqa: E402
                          train_step)

GRADIENT_TOLERANCES = {"fp32": 1e-3, "tf32": 1e-2, "bf16": 1e-1}
STEP_FLOOR_TARGET = 1.3
LOOP_SPEEDUP_TARGET = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10, help="videos per batch (default: %(default)s)")
    parser.add_argument("--per-video", type=int, nargs="+", default=[150, 3000],
                        help="proposals per video, one run each (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension D (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs below 1000 proposals per video")
    parser.add_argument("--large-repeats", type=int, default=1,
                        help="timed runs from 1000 proposals per video; the agreement step warms up")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


def train_config(params_path: Path) -> TrainConfig:
    params = load_params(params_path)
    return TrainConfig.from_params(params["train"], params["labels"])


def batch_videos(split: common.SyntheticSplit, rows, video_index, device: torch.device) -> list[Video]:
    """The batch as the per-video loop sees it: the same proposal rows, grouped by video."""
    segments = torch.from_numpy(split.proposals.segments)
    point_label = torch.from_numpy(split.labels.point_label)
    center_label = torch.from_numpy(split.labels.center_label).float()
    videos = []
    for position in range(int(video_index.max()) + 1):
        chosen = torch.from_numpy(rows[video_index == position])
        video = split.proposals.video_index[int(chosen[0])]
        videos.append(Video(split.features[video], segments[chosen], point_label[chosen], center_label[chosen]))
    return common.to_device(videos, device)


def project_video_losses(model: TSPNet, pooled: torch.Tensor, targets, rows, video_index, num_videos: int,
                         config: TrainConfig, bf16: bool) -> torch.Tensor:
    """[V] per-video loss of the batched path: one forward, then the library's per-video means."""
    rows_t = torch.from_numpy(rows).to(pooled.device)
    index = torch.from_numpy(video_index).to(pooled.device)
    with torch.no_grad(), autocast(pooled.device, bf16):
        heads = model(pooled[rows_t])
    classification = point_classification_loss(heads.cls.float(), heads.attention.float(), targets[0][rows_t])
    center = center_loss(heads.center.float(), targets[1][rows_t])
    return (config.cls_weight * per_video_mean(classification, index, num_videos)
            + config.center_weight * per_video_mean(center, index, num_videos))


def loop_video_losses(model: TSPNet, videos: list[Video], video_roi, config: TrainConfig, bf16: bool) -> torch.Tensor:
    """[V] per-video loss of the authors' loop (one video at a time)."""
    device = videos[0].features.device
    with torch.no_grad(), autocast(device, bf16):
        return torch.stack([per_video_training_loss(model, [video], video_roi, config.cls_weight,
                                                    config.center_weight)[0].float() for video in videos])


def loop_step(model: TSPNet, optimizer: torch.optim.Optimizer, videos: list[Video], video_roi,
              config: TrainConfig, bf16: bool) -> torch.Tensor:
    """The authors' training step: per-video RoI, forward and loss; mean over videos; backward; Adam."""
    optimizer.zero_grad()
    with autocast(videos[0].features.device, bf16):
        total = per_video_training_loss(model, videos, video_roi, config.cls_weight, config.center_weight)[0]
    total.float().backward()
    optimizer.step()
    return total


def step_with_gradients(optimizer: torch.optim.Optimizer, step) -> tuple[object, list[torch.Tensor]]:
    """Run `step()`; return its result and the gradients the optimizer applied (train_step frees them)."""
    applied: list[torch.Tensor] = []

    def capture(opt, args, kwargs) -> None:
        applied.extend(p.grad.detach().clone() for group in opt.param_groups for p in group["params"])

    handle = optimizer.register_step_pre_hook(capture)
    try:
        return step(), applied
    finally:
        handle.remove()


def gradient_differences(model: TSPNet, got: list[torch.Tensor], expected: list[torch.Tensor]) -> dict:
    """Norm-wise relative difference over all parameters, and the worst tensor (max |diff| / max |value|)."""
    flat_got = torch.cat([g.double().flatten() for g in got])
    flat_expected = torch.cat([e.double().flatten() for e in expected])
    per_tensor = {name: common.relative_difference(g, e)
                  for (name, _), g, e in zip(model.named_parameters(), got, expected)}
    worst = max(per_tensor, key=per_tensor.get)
    return {"gradient_normwise_rel_diff": float((flat_got - flat_expected).norm() / flat_expected.norm()),
            "gradient_worst_tensor": worst, "gradient_worst_tensor_max_rel_diff": per_tensor[worst]}


def run_config(args: argparse.Namespace, per_video: int, device: torch.device, bf16: bool) -> dict:
    config = train_config(args.params)
    split = common.synthetic_split(args.videos, per_video, args.dim, args.classes, seed=args.seed)
    slices = split.proposals.video_slices()
    generator = torch.Generator().manual_seed(args.seed)
    rows, video_index = batch_rows(list(range(args.videos)), slices, config.max_proposals, generator)
    videos = batch_videos(split, rows, video_index, device)
    video_roi = common.per_video_roi(config.roi_bins, config.widen_ratio)
    large = per_video >= 1000
    repeats, warmup = (args.large_repeats, 0) if large else (args.repeats, 1)

    # RoI features of the batch: once per training run (project) or every step (authors).
    dataset = common.MemoryDataset(split)
    roi_project, pooled = common.measure(
        lambda: pooled_features(dataset, "train", split.proposals, config.roi_bins, config.widen_ratio, device,
                                show_progress=False, dtype=cache_dtype(bf16)), device, 1, warmup=0)
    roi_loop, pooled_loop = common.measure(
        lambda: [contrast_pool(video_roi(v.features, v.proposals)) for v in videos], device, 1, warmup=0)
    pooled_diff = common.relative_difference(pooled[torch.from_numpy(rows).to(device)], torch.cat(pooled_loop))
    del pooled_loop

    # Same initial weights for both paths (the training loop's own construction).
    torch.manual_seed(args.seed)
    model = TSPNet(args.dim, args.classes, config.dropout).to(device)
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, config)
    # The authors' optimizer: plain Adam, same settings.
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    targets = label_tensors(split.labels, device)

    # Agreement with dropout off: per-video losses, then one step's gradients.
    model.eval()
    reference.eval()
    losses = project_video_losses(model, pooled, targets, rows, video_index, args.videos, config, bf16)
    reference_losses = loop_video_losses(reference, videos, video_roi, config, bf16)
    terms, applied = step_with_gradients(optimizer, lambda: train_step(
        model, optimizer, pooled, targets, rows, video_index, args.videos, config, bf16))
    reference_total, reference_applied = step_with_gradients(reference_optimizer, lambda: loop_step(
        reference, reference_optimizer, videos, video_roi, config, bf16))
    agreement = {
        "mode": "eval (dropout off), same initial weights",
        "per_video_loss_max_rel_diff": common.elementwise_relative_difference(losses, reference_losses),
        "step_loss_rel_diff": common.elementwise_relative_difference(terms.total.reshape(1),
                                                                      reference_total.reshape(1)),
        "pooled_features_max_rel_diff": pooled_diff,
        "tolerance": common.TOLERANCES[args.precision],
        **gradient_differences(model, applied, reference_applied),
        "gradient_tolerance": GRADIENT_TOLERANCES[args.precision],
    }

    # Timing in training mode (dropout on), as every iteration runs.
    model.train()
    reference.train()
    step_timing, _ = common.measure(
        lambda: train_step(model, optimizer, pooled, targets,
                           *batch_rows(list(range(args.videos)), slices, config.max_proposals, generator),
                           args.videos, config, bf16), device, repeats, warmup)
    loop_timing, _ = common.measure(lambda: loop_step(reference, reference_optimizer, videos, video_roi, config,
                                                      bf16), device, repeats, warmup)
    gemms = common.network_gemms(len(rows), args.dim, args.classes, backward=True)
    floor_timing = common.matmul_floor(gemms, device, args.precision, repeats, warmup)
    flops = common.gemm_flops(gemms)
    return {
        "videos": args.videos, "proposals_per_video": per_video, "rows": int(len(rows)), "feature_dim": args.dim,
        "classes": args.classes, "gemm_gflop": flops / 1e9, "repeats": repeats, "warmup": warmup,
        "agreement": agreement,
        "matmul_floor": floor_timing.to_json(), "project_step": step_timing.to_json(),
        "per_video_loop": loop_timing.to_json(),
        "roi_features_project_once": roi_project.to_json(), "roi_features_per_video": roi_loop.to_json(),
        "step_over_floor": step_timing.median / floor_timing.median,
        "loop_over_step": loop_timing.median / step_timing.median,
        "step_gflops": flops / step_timing.median / 1e9, "floor_gflops": flops / floor_timing.median / 1e9,
    }


def agrees(result: dict) -> bool:
    a = result["agreement"]
    return (max(a["per_video_loss_max_rel_diff"], a["step_loss_rel_diff"], a["pooled_features_max_rel_diff"])
            <= a["tolerance"] and a["gradient_normwise_rel_diff"] <= a["gradient_tolerance"])


def print_result(r: dict) -> None:
    a = r["agreement"]
    print(f"\n{r['videos']} videos x {r['proposals_per_video']} proposals = {r['rows']} rows, D = {r['feature_dim']}, "
          f"{r['classes']} classes; {r['gemm_gflop']:.1f} GFLOP of matrix products per step; "
          f"median of {r['repeats']} run(s)")
    print(f"agreement ({a['mode']}): per-video loss {a['per_video_loss_max_rel_diff']:.1e}, step loss "
          f"{a['step_loss_rel_diff']:.1e}, pooled features {a['pooled_features_max_rel_diff']:.1e} (max relative "
          f"difference, tolerance {a['tolerance']:g}); gradients {a['gradient_normwise_rel_diff']:.1e} (norm-wise, "
          f"tolerance {a['gradient_tolerance']:g}; worst tensor {a['gradient_worst_tensor']} "
          f"{a['gradient_worst_tensor_max_rel_diff']:.1e}) -> {'AGREE' if agrees(r) else 'DIFFER'}")
    rows = [
        ("matmul floor (same GEMMs)", r["matmul_floor"]["median_s"], f"{r['floor_gflops']:.0f} GFLOP/s"),
        ("project step (cached, batched)", r["project_step"]["median_s"], f"{r['step_gflops']:.0f} GFLOP/s"),
        ("per-video loop (authors)", r["per_video_loop"]["median_s"], "incl. RoI every step"),
        ("RoI features, batched", r["roi_features_project_once"]["median_s"], "once per training run"),
        ("RoI features, per video", r["roi_features_per_video"]["median_s"], "in every loop step"),
    ]
    print(f"{'':<34}{'seconds':>10}")
    for name, seconds, note in rows:
        print(f"{name:<34}{seconds:>10.3f}  {note}")
    floor_ok = r["step_over_floor"] <= STEP_FLOOR_TARGET
    loop_ok = r["loop_over_step"] >= LOOP_SPEEDUP_TARGET
    print(f"project step / floor: {r['step_over_floor']:.2f} (target <= {STEP_FLOOR_TARGET}: "
          f"{'met' if floor_ok else 'NOT MET'}); per-video loop / project step: {r['loop_over_step']:.2f}x "
          f"(target >= {LOOP_SPEEDUP_TARGET}x: {'met' if loop_ok else 'NOT MET'})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, bf16 = common.setup(args)
    results = {"benchmark": "train_step", "machine": common.machine(device), "precision": args.precision,
               "configs": []}
    print(f"training step on {device} ({results['machine'].get('gpu', results['machine']['cpu'])}, "
          f"{torch.get_num_threads()} threads), precision {args.precision}")
    for per_video in args.per_video:
        result = run_config(args, per_video, device, bf16)
        results["configs"].append(result)
        print_result(result)
    results["agree"] = all(agrees(r) for r in results["configs"])
    return common.finish(common.result_name("train_step", device, args.precision), results, args.out,
                         results["agree"], "the batched step differs from the per-video loop")


if __name__ == "__main__":
    sys.exit(main())
