"""The embedded synthetic dataset: THUMOS14's files and units, generated from a seed.

To every later stage it looks like THUMOS14 in the LACP layout: 16-frame
snippets at 25 fps, two feature streams, ground truth in seconds on a 0.1 s
grid, one point per training instance given as a frame index at the video's
own frame rate and drawn from a Gaussian around the instance middle, and a few
ambiguous segments in the test videos.

The features carry the structure TSPNet exploits:
- class evidence that is strongest at an instance's centre and fades toward
  its edges (so a point near the middle is the most salient snippet);
- a run-up on one side of each instance that carries weaker evidence of the
  same class in the RGB stream only, so thresholded activations spill over
  one boundary (confident but poorly aligned proposals);
- action-like distractors: stretches with the class's appearance (RGB) but
  almost no motion (flow), which no point ever labels;
- backgrounds that drift slowly, plus white noise.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tspnet.console import progress as bar

from tspnet import units
from tspnet.datasets import DatasetInfo, write_manifest
from tspnet.files import write_json, write_text

SPLIT_CODES = {"train": 0, "test": 1}
DRIFT_RANK = 8  # backgrounds drift inside a low-rank subspace, like scene changes
DRIFT_SMOOTHING = 24  # snippets: width of the box filter applied twice to white noise


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator knobs (params.yaml: datasets.<name>.generator)."""

    seed: int
    train_videos: int
    test_videos: int
    stream_dim: int
    duration_s: tuple[float, float]
    duration_distribution: str  # "uniform" in duration_s, or "thumos14": lognormal, median 155 s
    instances_per_video: tuple[int, int]
    instance_s: tuple[float, float]
    classes_per_video: tuple[int, int]
    distractors_per_video: tuple[int, int]
    ambiguous_per_test_video: tuple[int, int]
    video_fps: tuple[float, ...]
    signal: float
    runup: float
    dips_per_action: tuple[int, int]
    dip_depth: float
    shared_motion: float  # weight of a motion direction common to all action classes
    noise: float
    noise_smoothing: int  # snippets: I3D features of neighbouring snippets are correlated
    drift: float

    @classmethod
    def from_params(cls, params: dict) -> "SyntheticConfig":
        pair = lambda key, kind: tuple(kind(x) for x in params[key])  # noqa: E731
        config = cls(
            seed=int(params["seed"]),
            train_videos=int(params["train_videos"]),
            test_videos=int(params["test_videos"]),
            stream_dim=int(params["stream_dim"]),
            duration_s=pair("duration_s", float),
            duration_distribution=str(params.get("duration_distribution", "uniform")),
            instances_per_video=pair("instances_per_video", int),
            instance_s=pair("instance_s", float),
            classes_per_video=pair("classes_per_video", int),
            distractors_per_video=pair("distractors_per_video", int),
            ambiguous_per_test_video=pair("ambiguous_per_test_video", int),
            video_fps=tuple(float(x) for x in params["video_fps"]),
            signal=float(params["signal"]),
            runup=float(params["runup"]),
            dips_per_action=pair("dips_per_action", int),
            dip_depth=float(params["dip_depth"]),
            shared_motion=float(params["shared_motion"]),
            noise=float(params["noise"]),
            noise_smoothing=int(params["noise_smoothing"]),
            drift=float(params["drift"]),
        )
        config.validate()
        return config

    def validate(self) -> None:
        ranges = {"duration_s": self.duration_s, "instances_per_video": self.instances_per_video,
                  "instance_s": self.instance_s, "classes_per_video": self.classes_per_video,
                  "distractors_per_video": self.distractors_per_video,
                  "ambiguous_per_test_video": self.ambiguous_per_test_video}
        for name, (low, high) in ranges.items():
            if not 0 <= low <= high:
                raise ValueError(f"generator.{name}: expected 0 <= low <= high, got {[low, high]}")
        if self.duration_distribution not in ("uniform", "thumos14"):
            raise ValueError("generator.duration_distribution must be 'uniform' or 'thumos14'")
        if self.train_videos < 1 or self.test_videos < 1 or self.stream_dim < 1:
            raise ValueError("generator: train_videos, test_videos and stream_dim must be at least 1")
        if self.instances_per_video[0] < 1 or self.classes_per_video[0] < 1:
            raise ValueError("generator: every video needs at least one instance of one class")
        if self.noise_smoothing < 1:
            raise ValueError("generator.noise_smoothing must be at least 1 (1 = white noise)")
        if not self.video_fps or min(self.video_fps) <= 0:
            raise ValueError("generator.video_fps must list positive frame rates")


@dataclass
class Event:
    kind: str  # "action", "distractor" or "ambiguous"
    label: int
    start: float  # seconds, on the 0.1 s grid
    end: float
    runup_side: int = 0  # -1 before the action, +1 after it, 0 none
    dips: tuple[float, ...] = ()  # positions in [-1, 1] where an action's evidence dips (never the centre)


@dataclass
class VideoPlan:
    video: str
    split: str
    duration: float
    fps: float
    num_snippets: int
    events: list[Event]


class Prototypes:
    """Per-class appearance (RGB) and motion (flow) directions, plus a shared motion direction."""

    def __init__(self, rng: np.random.Generator, num_classes: int, dim: int):
        def unit(shape):
            v = rng.standard_normal(shape)
            return v / np.linalg.norm(v, axis=-1, keepdims=True)

        self.rgb = unit((num_classes, dim))
        self.flow = unit((num_classes, dim))
        self.motion = unit((dim,))
        self.drift_rgb = unit((DRIFT_RANK, dim))
        self.drift_flow = unit((DRIFT_RANK, dim))


def video_ids(split: str, count: int) -> list[str]:
    return [f"synthetic_{split}_{i:04d}" for i in range(1, count + 1)]


def sample_duration(rng: np.random.Generator, config: SyntheticConfig) -> float:
    low, high = config.duration_s
    if config.duration_distribution == "thumos14":
        # THUMOS14 video lengths: median about 155 s, long right tail (9 s to 28 min).
        return float(np.clip(155.0 * math.exp(0.8 * rng.standard_normal()), low, high))
    return float(rng.uniform(low, high))


def plan_video(rng: np.random.Generator, video: str, split: str, num_classes: int,
               config: SyntheticConfig, feature_fps: float, snippet_frames: int) -> VideoPlan:
    """Draw a video's length, frame rate and non-overlapping events (0.1 s grid)."""
    duration = round(sample_duration(rng, config), 1)
    fps = float(rng.choice(config.video_fps))
    num_snippets = max(1, int(duration * units.snippets_per_second(feature_fps, snippet_frames)))
    n_classes = int(rng.integers(config.classes_per_video[0], config.classes_per_video[1] + 1))
    video_classes = rng.choice(num_classes, size=min(n_classes, num_classes), replace=False)

    kinds = ["action"] * int(rng.integers(config.instances_per_video[0], config.instances_per_video[1] + 1))
    kinds += ["distractor"] * int(rng.integers(config.distractors_per_video[0], config.distractors_per_video[1] + 1))
    if split == "test":
        kinds += ["ambiguous"] * int(rng.integers(config.ambiguous_per_test_video[0],
                                                  config.ambiguous_per_test_video[1] + 1))
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    lengths = rng.uniform(config.instance_s[0], config.instance_s[1], size=len(kinds))
    lengths[np.array([k == "ambiguous" for k in kinds], dtype=bool)] *= 0.5
    runups = np.where([k == "action" for k in kinds], 0.5 * lengths, 0.0)
    footprints = lengths + runups + 1.0  # one second of clearance around every event
    # Drop events from the end until the rest fit; the first event is always an action.
    order = sorted(range(len(kinds)), key=lambda i: kinds[i] != "action")
    kept = []
    for i in order:
        if footprints[kept + [i]].sum() <= duration - 1.0 or not kept:
            kept.append(i)
    kept.sort()
    free = max(duration - footprints[kept].sum(), 0.0)
    gaps = rng.dirichlet(np.ones(len(kept) + 1)) * free

    events, cursor = [], 0.5
    for slot, i in enumerate(kept):
        cursor += gaps[slot]
        side = int(rng.choice([-1, 1])) if kinds[i] == "action" else 0
        start = cursor + (runups[i] if side < 0 else 0.0)
        end = min(start + lengths[i], duration)
        start, end = round(start, 1), round(end, 1)
        n_dips = int(rng.integers(config.dips_per_action[0], config.dips_per_action[1] + 1))
        dips = tuple(rng.choice([-1.0, 1.0], size=n_dips) * rng.uniform(0.3, 0.75, size=n_dips))
        if end - start >= 0.2:
            events.append(Event(kinds[i], int(rng.choice(video_classes)), start, end, side,
                                dips if kinds[i] == "action" else ()))
        cursor += footprints[i]
    if not any(e.kind == "action" for e in events):  # a very short video: one action over its middle
        start, end = round(0.25 * duration, 1), round(0.75 * duration, 1)
        events.insert(0, Event("action", int(video_classes[0]), start, max(end, start + 0.1), 0))
    return VideoPlan(video, split, duration, fps, num_snippets, events)


def box_filtered_noise(rng: np.random.Generator, length: int, dim: int, width: int, passes: int) -> np.ndarray:
    """Unit-variance Gaussian noise [length, dim], correlated over about `width` snippets."""
    if width <= 1:
        return rng.standard_normal((length, dim), dtype=np.float32)
    x = rng.standard_normal((length + passes * (width - 1), dim), dtype=np.float32)
    kernel = np.ones(1)
    for _ in range(passes):
        c = np.concatenate([np.zeros((1, dim), np.float32), np.cumsum(x, axis=0, dtype=np.float32)])
        x = c[width:] - c[:-width]
        kernel = np.convolve(kernel, np.ones(width))
    return x / np.float32(math.sqrt(float((kernel ** 2).sum())))


def render_features(rng: np.random.Generator, plan: VideoPlan, protos: Prototypes,
                    config: SyntheticConfig, sps: float) -> tuple[np.ndarray, np.ndarray]:
    """The RGB and flow feature sequences [T, stream_dim] of one planned video."""
    t = (np.arange(plan.num_snippets) + 0.5) / sps  # snippet centres, seconds
    dim = config.stream_dim
    noise, t_len = np.float32(config.noise), plan.num_snippets
    rgb = noise * box_filtered_noise(rng, t_len, dim, config.noise_smoothing, 1)
    flow = noise * box_filtered_noise(rng, t_len, dim, config.noise_smoothing, 1)
    drift = config.drift * box_filtered_noise(rng, t_len, 2 * DRIFT_RANK, DRIFT_SMOOTHING, 2)
    rgb += (drift[:, :DRIFT_RANK] @ protos.drift_rgb).astype(np.float32)
    flow += (drift[:, DRIFT_RANK:] @ protos.drift_flow).astype(np.float32)

    for event in plan.events:
        half = (event.end - event.start) / 2.0
        u = (t - (event.start + half)) / half  # -1 .. 1 inside the event
        inside = np.abs(u) <= 1.0
        if not inside.any():
            continue
        if event.kind == "action":
            # Strongest at the centre, a quarter of that at the edges, with dips between
            # sub-phases that fragment thresholded activations (never at the centre).
            profile = np.where(inside, 0.25 + 0.75 * np.cos(0.5 * math.pi * u) ** 2, 0.0)
            for position in event.dips:
                profile = profile * (1.0 - config.dip_depth * np.exp(-(((u - position) / 0.12) ** 2)))
            appearance = motion = config.signal * profile
            if event.runup_side:
                gap = (event.start - t) if event.runup_side < 0 else (t - event.end)
                reach = half  # the run-up spans half the action's length
                ramp = np.where((gap > 0) & (gap <= reach), 1.0 - 0.5 * gap / reach, 0.0)
                appearance = appearance + config.runup * config.signal * ramp
                motion = motion + 0.5 * config.runup * config.signal * ramp
            rgb += np.outer(appearance, protos.rgb[event.label]).astype(np.float32)
            flow += np.outer(motion, protos.flow[event.label] + config.shared_motion * protos.motion).astype(np.float32)
        elif event.kind == "distractor":
            level = np.where(inside, config.signal * 0.8, 0.0)
            rgb += np.outer(level, protos.rgb[event.label]).astype(np.float32)
            flow += np.outer(0.15 * level, protos.flow[event.label]).astype(np.float32)
        else:  # ambiguous: a half-strength, flat action
            level = np.where(inside, config.signal * 0.5, 0.0)
            rgb += np.outer(level, protos.rgb[event.label]).astype(np.float32)
            flow += np.outer(level, protos.flow[event.label] + config.shared_motion * protos.motion).astype(np.float32)
    return rgb, flow


def draw_point_frame(rng: np.random.Generator, event: Event, fps: float) -> tuple[int, int, int]:
    """(start_frame, stop_frame, point) of a training instance; the point ~ N(middle, length/6), kept inside."""
    start_frame, stop_frame = int(round(event.start * fps)), int(round(event.end * fps))
    middle, sigma = (start_frame + stop_frame) / 2.0, (stop_frame - start_frame) / 6.0
    point = int(round(np.clip(rng.normal(middle, sigma), start_frame, stop_frame)))
    return start_frame, stop_frame, point


def generate(root: Path, name: str, classes: list[str], feature_fps: float, snippet_frames: int,
             config: SyntheticConfig, tiou_thresholds: list[float], filter_ambiguous: bool,
             progress: bool = True) -> DatasetInfo:
    """Write a whole synthetic dataset under `root` (an empty directory) and return its manifest."""
    sps = units.snippets_per_second(feature_fps, snippet_frames)
    protos = Prototypes(np.random.default_rng([config.seed, 99]), len(classes), config.stream_dim)
    plans = []
    for split, count in (("train", config.train_videos), ("test", config.test_videos)):
        for i, video in enumerate(video_ids(split, count)):
            rng = np.random.default_rng([config.seed, SPLIT_CODES[split], i])
            plans.append((rng, plan_video(rng, video, split, len(classes), config, feature_fps, snippet_frames)))

    database, fps_table, ambiguous_lines = {}, {}, []
    point_rows = io.StringIO()
    writer = csv.writer(point_rows, lineterminator="\n")
    writer.writerow(["class", "class_index", "start_frame", "stop_frame", "video_id", "point"])
    for rng, plan in bar(plans, "synthetic videos", "video", progress):
        rgb, flow = render_features(rng, plan, protos, config, sps)
        for stream, array in (("rgb", rgb), ("flow", flow)):
            folder = root / "features" / plan.split / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{plan.video}.npy", array)
        actions = [e for e in plan.events if e.kind == "action"]
        database[plan.video] = {
            "subset": plan.split,
            "duration": plan.duration,
            "annotations": [{"segment": [e.start, e.end], "label": classes[e.label]} for e in actions],
        }
        fps_table[plan.video] = plan.fps
        if plan.split == "train":
            for e in actions:
                start_frame, stop_frame, point = draw_point_frame(rng, e, plan.fps)
                writer.writerow([classes[e.label], e.label, start_frame, stop_frame, plan.video, point])
        ambiguous_lines += [f"{plan.video}  {e.start:.1f} {e.end:.1f}\n" for e in plan.events if e.kind == "ambiguous"]

    write_json(root / "gt.json", {"version": f"{name} (synthetic, seed {config.seed})", "database": database})
    write_json(root / "fps.json", fps_table)
    write_text(root / "point_labels.csv", point_rows.getvalue())
    write_text(root / "ambiguous.txt", "".join(ambiguous_lines))
    info = DatasetInfo(
        name=name,
        classes=tuple(classes),
        feature_fps=feature_fps,
        snippet_frames=snippet_frames,
        feature_layout="lacp",
        videos={split: tuple(p.video for _, p in plans if p.split == split) for split in ("train", "test")},
        num_snippets={p.video: p.num_snippets for _, p in plans},
        feature_dim=2 * config.stream_dim,
        tiou_thresholds=tuple(tiou_thresholds),
        filter_ambiguous=filter_ambiguous,
    )
    write_manifest(root, info)
    return info
