"""GPU check: the training-step and inference benchmarks on CUDA, in fp32, tf32 and bf16.

With CUDA: runs bench_train_step.py and bench_infer.py on the GPU once per
precision (params base.precision: fp32, tf32 = TF32 matmuls, bf16 = bfloat16
autocast), each against its per-video loop and matmul floor measured in the
same run, and counts the host synchronisations of one training step and of
one whole-split forward (torch.cuda.set_sync_debug_mode). Everything goes to
bench/out/gpu.json with torch.cuda.get_device_name(); each benchmark's own
JSON lies beside it (train_step_cuda_<precision>.json, ...).

Without CUDA: prints that it was skipped and exits 0.

Exit code 1 when a benchmark fails or its outputs disagree with the loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_infer  # noqa: E402
import bench_train_step  # noqa: E402
import common  # noqa: E402

from tspnet.model import TSPNet  # noqa: E402
from tspnet.train import (batch_rows, build_optimizer, label_tensors, pooled_features, predict,  # noqa: E402
                          train_step)

PRECISIONS = ("fp32", "tf32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="a CUDA device (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of small configurations")
    parser.add_argument("--large-repeats", type=int, default=5, help="timed runs of 3000 proposals per video")
    parser.add_argument("--out", type=Path, default=common.OUT_DIR / "gpu.json")
    return parser.parse_args(argv)


def count_syncs(fn) -> int:
    """Host synchronisations during `fn()`, as torch's sync debug mode reports them."""
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)


def host_syncs(device: torch.device, steps: int = 5) -> dict:
    """Syncs per training step (10 videos x 150 proposals) and per whole-split forward, fp32."""
    config = bench_train_step.train_config(common.REPO / "params.yaml")
    split = common.synthetic_split(10, 150, 2048, 20, seed=0)
    slices = split.proposals.video_slices()
    generator = torch.Generator().manual_seed(0)
    pooled = pooled_features(common.MemoryDataset(split), "train", split.proposals, config.roi_bins,
                             config.widen_ratio, device, show_progress=False)
    model = TSPNet(2048, 20, config.dropout).to(device)
    optimizer = build_optimizer(model, config)
    targets = label_tensors(split.labels, device)
    videos = list(range(10))

    def run_steps() -> None:
        for _ in range(steps):
            train_step(model, optimizer, pooled, targets, *batch_rows(videos, slices, config.max_proposals,
                                                                         generator), 10, config)

    run_steps()  # warm-up: lazy initialisation may synchronise once
    per_step = count_syncs(run_steps) / steps
    per_forward = count_syncs(lambda: predict(model, pooled))
    return {"syncs_per_train_step": per_step, "syncs_per_predict_call": per_forward,
            "expected": "from reading the code: 6 per training step (tspnet.losses.per_video_mean checks "
                        "video_index on the host: min, max, empty videos; 2 calls per step), none per video; "
                        "0 per predict call"}


def run_benchmark(module, name: str, precision: str, argv: list[str], out: Path) -> dict:
    """One benchmark's main() with `argv`; its JSON results, or the error it raised."""
    started = time.perf_counter()
    run = {"benchmark": name, "precision": precision}
    try:
        code = module.main(argv + ["--precision", precision, "--out", str(out)])
        result = json.loads(out.read_text()) if out.is_file() else {}
        return {**run, "exit_code": code, "wall_s": time.perf_counter() - started, "result": result}
    except Exception:  # one failing configuration must not hide the others' figures
        return {**run, "exit_code": 2, "wall_s": time.perf_counter() - started, "error": traceback.format_exc()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: skipped -- torch sees no CUDA device (nothing was measured)")
        return 0
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device)
    print(f"gpu_check on {gpu}")
    runs = []
    for precision in args.precisions:
        out = args.out.parent
        runs.append(run_benchmark(bench_train_step, "train_step", precision, [
            "--device", args.device, "--repeats", str(args.repeats), "--large-repeats", str(args.large_repeats)],
            out / f"train_step_cuda_{precision}.json"))
        runs.append(run_benchmark(bench_infer, "infer", precision, ["--device", args.device, "--repeats",
                                                                     str(args.repeats)],
                                  out / f"infer_cuda_{precision}.json"))
    try:
        syncs = host_syncs(device)
    except Exception:
        syncs = {"error": traceback.format_exc()}
    results = {"gpu": gpu, "device": str(device), "machine": common.machine(device), "runs": runs,
               "host_syncs": syncs}
    path = common.write_results("gpu", results, args.out)
    failed = [f"{r['benchmark']} ({r['precision']})" for r in runs if r["exit_code"] != 0]
    print(f"\nhost syncs: {syncs}")
    print(f"results: {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
