"""Shared pieces of the training and inference benchmarks: timing, data, the matmul floor, output.

Every benchmark runs the project's path and a straightforward one in the same
process on the same data. Timings are wall-clock seconds (on CUDA the device is
synchronised before the clock is read). The "floor" of a forward/backward is
the time plain `torch.mm` calls take for exactly the matrix products of that
forward/backward (same shapes, so the same FLOPs), measured in the same run:
nothing that multiplies these matrices can be much faster.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
# This checkout's tests.reference and tspnet, whatever the venv's editable install points at:
# a benchmark times the tree it sits in.
for _path in (REPO, REPO / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.reference.model_loop import Video  # noqa: E402
from tspnet.datasets import FeatureStore  # noqa: E402
from tspnet.labels import ProposalLabels, assign_labels  # noqa: E402
from tspnet.params import setup_torch, uses_bf16  # noqa: E402
from tspnet.proposals import Proposals  # noqa: E402
from tspnet.roi import roi_align  # noqa: E402

OUT_DIR = REPO / "bench" / "out"
SNIPPETS_PER_SECOND = 25 / 16
# Tolerances for "identical": relative to the reference's largest magnitude. TF32 and bfloat16
# keep 10 and 7 bits of mantissa in the products, so they are compared at that precision.
TOLERANCES = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 5e-2}


# ------------------------------------------------------------------------------ setup and output
def add_device_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=sorted(TOLERANCES),
                        help="params base.precision; tf32 applies on CUDA only, bf16 on CUDA and on CPUs with "
                             "native bfloat16 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default: bench/out/<name>.json)")


def setup(args) -> tuple[torch.device, bool]:
    """The pipeline's own setup (tspnet.params.setup_torch): seed, determinism, threads, precision."""
    base = {"seed": args.seed, "device": args.device, "precision": args.precision, "threads": args.threads}
    device = setup_torch(base)
    return device, uses_bf16(base, device)


def cpu_model() -> str:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def machine(device: torch.device) -> dict[str, Any]:
    info = {"cpu": cpu_model(), "cpu_count": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device),
            # Other work on the machine slows every figure: the 1-minute load when this run began.
            "load_average_1min": os.getloadavg()[0]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def result_name(benchmark: str, device: torch.device, precision: str) -> str:
    """`benchmark` for the CPU in fp32 (the README's figures), else `benchmark_<device>_<precision>`."""
    return benchmark if (device.type, precision) == ("cpu", "fp32") else f"{benchmark}_{device.type}_{precision}"


def write_results(name: str, results: dict[str, Any], path: Path | None = None) -> Path:
    path = path or OUT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def finish(name: str, results: dict[str, Any], path: Path | None, agree: bool, mismatch: str) -> int:
    """Write the results, say where, and return the exit code: 1 (saying `mismatch`) when the paths disagree."""
    print(f"\nresults: {write_results(name, results, path)}")
    if not agree:
        print(f"MISMATCH: {mismatch}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------ timing
@dataclass
class Timing:
    """Wall seconds of each run, and the CPU seconds of this process (all its threads) in each run.

    On a machine shared with other work, wall time stretches with the load; CPU
    time much less (a run with 2 threads uses about 2 CPU-seconds per second),
    so ratios of CPU times taken in the same run are the steadier comparison.
    """

    seconds: list[float]
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"median_s": self.median, "best_s": self.best, "runs_s": self.seconds,
                "cpu_median_s": self.cpu_median, "cpu_runs_s": self.cpu_seconds}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[Timing, Any]:
    """Seconds of `repeats` calls of `fn` after `warmup` untimed ones; and the last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    synchronize(device)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = fn()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    return Timing(seconds, cpu_seconds), result


# ------------------------------------------------------------------------------ the matmul floor
def network_gemms(rows: int, feature_dim: int, num_classes: int, backward: bool) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product of TSPNet's forward (and backward) over `rows` proposals.

    Forward: fusion [rows, 3D] x [3D, D]; per head [rows, D] x [D, D/2] and
    [rows, D/2] x [D/2, outputs]. Backward: the weight gradient of every layer,
    and the input gradient of every layer but the fusion layer (its input, the
    pooled features, needs none).
    """
    hidden = feature_dim // 2
    layers = [(3 * feature_dim, feature_dim, False)]
    for outputs in (num_classes + 1, 1, 1):
        layers += [(feature_dim, hidden, True), (hidden, outputs, True)]
    gemms = [(rows, k, n) for k, n, _ in layers]
    if backward:
        gemms += [(k, rows, n) for k, n, _ in layers]  # dW = x^T . dy
        gemms += [(rows, n, k) for k, n, needs_input_grad in layers if needs_input_grad]  # dx = dy . W^T
    return gemms


def gemm_flops(gemms: list[tuple[int, int, int]]) -> float:
    return float(sum(2 * m * k * n for m, k, n in gemms))


def floor_products(gemms: list[tuple[int, int, int]], device: torch.device, precision: str) -> Callable[[], None]:
    """A function that runs the same matrix products as plain `torch.mm` calls on preallocated operands.

    bf16 multiplies bfloat16 operands (as autocast does, on CUDA and the CPU);
    tf32 follows the global TF32 switch that `setup` set.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    # One set of operands per distinct shape (the three heads share theirs): less memory, the same products.
    operands = {shape: (torch.randn(shape[0], shape[1], generator=generator, device=device, dtype=dtype),
                        torch.randn(shape[1], shape[2], generator=generator, device=device, dtype=dtype),
                        torch.empty(shape[0], shape[2], device=device, dtype=dtype)) for shape in set(gemms)}
    products = [operands[shape] for shape in gemms]

    def run() -> None:
        for a, b, out in products:
            torch.mm(a, b, out=out)

    return run


def matmul_floor(gemms: list[tuple[int, int, int]], device: torch.device, precision: str, repeats: int,
                 warmup: int = 1) -> Timing:
    """Seconds of `floor_products(gemms, device, precision)`."""
    timing, _ = measure(floor_products(gemms, device, precision), device, repeats, warmup)
    return timing


# ------------------------------------------------------------------------------ synthetic videos
@dataclass
class SyntheticSplit:
    """Videos with random features, proposals and points, in both the per-video and the flat form."""

    videos: list[Video]  # per video: features [T, D], proposals [M, 2], point labels [M, C], center labels [M]
    names: list[str]
    features: list[torch.Tensor]  # [T, D] per video (shared with `videos`)
    proposals: Proposals
    points: pd.DataFrame
    labels: ProposalLabels
    num_classes: int

    @property
    def feature_dim(self) -> int:
        return int(self.features[0].shape[1])


def thumos_like_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    """Video lengths in snippets: THUMOS14-like, lognormal around 155 s (9 s to 28 min)."""
    seconds = np.clip(155.0 * np.exp(0.8 * rng.standard_normal(count)), 9.0, 1680.0)
    return np.maximum(1, (seconds * SNIPPETS_PER_SECOND).astype(np.int64))


def proposal_counts(rng: np.random.Generator, count: int, per_video: int, spread: bool) -> np.ndarray:
    """`per_video` each, or (spread) lognormal counts with that mean, as a base locator's (P-MIL: 15..1005)."""
    if not spread:
        return np.full(count, per_video, dtype=np.int64)
    sigma = 0.8
    draws = per_video * np.exp(sigma * rng.standard_normal(count) - sigma ** 2 / 2)
    return np.maximum(1, np.round(draws)).astype(np.int64)


def synthetic_split(videos: int, per_video: int, feature_dim: int, num_classes: int = 20, seed: int = 0,
                    spread_counts: bool = False, soft_value: float = 0.4) -> SyntheticSplit:
    """Random features; proposals as a base locator gives them (about 60% around a point, the rest
    anywhere; lengths lognormal, median 5 snippets as in P-MIL's THUMOS14 proposals); 3-30 points."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    names = [f"video_{i:04d}" for i in range(videos)]
    lengths = thumos_like_lengths(rng, videos)
    counts = proposal_counts(rng, videos, per_video, spread_counts)
    point_rows, starts, ends, index = [], [], [], []
    for v, (length, count) in enumerate(zip(lengths, counts)):
        times = rng.uniform(0, length, size=int(rng.integers(3, 31)))
        classes = rng.choice(num_classes, size=2, replace=False)
        point_rows += [(names[v], int(rng.choice(classes)), float(t)) for t in times]
        near = rng.random(count) < 0.6
        middle = np.where(near, rng.choice(times, size=count) + rng.normal(0, 3, count), rng.uniform(0, length, count))
        span = np.clip(5.0 * np.exp(1.1 * rng.standard_normal(count)), 0.5, length)
        start = np.clip(np.round(middle - span / 2, 2), 0, length - 0.01)
        starts.append(start)
        ends.append(np.maximum(np.clip(np.round(start + span, 2), 0, length), start + 0.01))
        index.append(np.full(count, v, dtype=np.int64))
    video_index = np.concatenate(index)
    proposals = Proposals(names, video_index, np.concatenate(starts), np.concatenate(ends),
                          rng.integers(num_classes, size=len(video_index)), rng.random(len(video_index)))
    points = pd.DataFrame({"point_id": np.arange(len(point_rows)), "video": [r[0] for r in point_rows],
                           "class_index": [r[1] for r in point_rows], "time": [r[2] for r in point_rows]})
    labels = assign_labels(proposals, points, num_classes, soft_value)
    features = [torch.randn(int(t), feature_dim, generator=generator) for t in lengths]
    segments = torch.from_numpy(proposals.segments)
    point_label = torch.from_numpy(labels.point_label)
    center_label = torch.from_numpy(labels.center_label).float()  # as tspnet.train.label_tensors
    per_video = [Video(features[v], segments[span], point_label[span], center_label[span])
                 for v, span in enumerate(proposals.video_slices())]
    return SyntheticSplit(per_video, names, features, proposals, points, labels, num_classes)


class MemoryDataset:
    """What `tspnet.train.pooled_features` uses of a Dataset (info.feature_dim, require_features,
    feature_store), in memory.

    The project's path is then timed without disk reads, like the per-video
    loop it is compared with.
    """

    def __init__(self, split: SyntheticSplit):
        self.split = split
        self.position = {name: i for i, name in enumerate(split.names)}
        self.info = SimpleNamespace(feature_dim=split.feature_dim)

    def require_features(self) -> None:
        """Features are always there."""

    def feature_store(self, split: str, videos: list[str] | None = None) -> FeatureStore:
        videos = list(self.split.names if videos is None else videos)
        features = [self.split.features[self.position[v]] for v in videos]
        lengths = torch.tensor([len(f) for f in features], dtype=torch.int64)
        return FeatureStore(videos, torch.cat(features), torch.cumsum(lengths, 0) - lengths, lengths)


def per_video_roi(bins: int, widen_ratio: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One video's RoI features [M, bins, D] with the project's kernel: the per-video loops' `video_roi`.

    The authors call a compiled kernel (torchvision's roi_align) once per video
    and step; this is the compiled kernel available here.
    """
    def video_roi(features: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        count = proposals.shape[0]
        device = features.device
        return roi_align(features, proposals.to(device), torch.zeros(count, dtype=torch.int64, device=device),
                         torch.full((count,), features.shape[0], dtype=torch.int64, device=device), bins,
                         widen_ratio)

    return video_roi


def to_device(videos: list[Video], device: torch.device) -> list[Video]:
    return [Video(*(t.to(device) for t in video)) for video in videos]


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (0 when both are empty)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if expected.numel() == 0:
        return 0.0
    scale = float(expected.abs().max())
    return float((got - expected).abs().max()) / (scale if scale > 0 else 1.0)


def elementwise_relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max over elements of |got - expected| / |expected| (for per-video losses, all positive)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    return float(((got - expected).abs() / expected.abs().clamp_min(1e-30)).max())
