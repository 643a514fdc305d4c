"""A dataset on disk, in the layout the `fetch` stage writes and every later stage reads.

    <root>/dataset.json          manifest: classes, units, videos per split, snippets per video
    <root>/gt.json               ground truth, ActivityNet `database` format, seconds
    <root>/point_labels.csv      class,class_index,start_frame,stop_frame,video_id,point
    <root>/fps.json              original frame rate of each video
    <root>/ambiguous.txt         `video  start end` in seconds (empty when the dataset has none)
    <root>/features/<split>/rgb/<video>.npy, .../flow/<video>.npy    (layout "lacp")
    <root>/features/<split>/<video>.npy  (layout "sfnet": one file, RGB in the first half)

The manifest is the one place later stages learn units and video lists from,
so a stage that reads a dataset never needs the params that produced it.

Features may also be read in place from a directory outside the dataset
(`feature_root` in the manifest, same layout below it). The manifest then
records every feature file's size and sha256, so that a file whose content
changed is caught when it is read, whatever its timestamp says (DVC cannot
watch files outside the repository; sha256 because it is the checksum the
project uses everywhere, and with the SHA extensions of current x86 CPUs the
fastest cryptographic hash in hashlib, see bench/bench_thumos_scale.py), and
a dataset may be fetched without features at all (`feature_dim` null): the
base locator's proposals can then still be imported and evaluated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from tspnet import units
from tspnet.files import DataError, describe, file_sha256, flat, load_npy, positive_numbers, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "dataset.json"
SPLITS = ("train", "test")
FEATURE_LAYOUTS = ("lacp", "sfnet")
POINT_COLUMNS = ["class", "class_index", "start_frame", "stop_frame", "video_id", "point"]
FINITE_CHECK_ROWS = 4096  # feature rows checked for NaN/inf at a time, to bound memory on long videos


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: classes, units, and the videos of each split."""

    name: str
    classes: tuple[str, ...]
    feature_fps: float
    snippet_frames: int
    feature_layout: str
    videos: dict[str, tuple[str, ...]]
    num_snippets: dict[str, int] = field(default_factory=dict)  # empty when features are absent
    feature_dim: int | None = None
    tiou_thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    filter_ambiguous: bool = False
    durations: dict[str, float] = field(default_factory=dict)  # seconds; empty when unknown
    feature_root: str | None = None  # absolute directory read in place; None = <root>/features
    feature_fingerprint: dict[str, tuple[int, str]] = field(default_factory=dict)  # relpath: (size, sha256)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def snippets_per_second(self) -> float:
        return units.snippets_per_second(self.feature_fps, self.snippet_frames)

    @property
    def has_features(self) -> bool:
        return self.feature_dim is not None

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"unknown class {name!r} (dataset {self.name} has {list(self.classes)})") from None

    def lengths_in_snippets(self, videos: Sequence[str]) -> np.ndarray | None:
        """Each video's length in snippets: from its features, else from its duration; None if unknown."""
        if self.has_features:
            return np.array([self.num_snippets[v] for v in videos], dtype=np.float64)
        if self.durations and all(v in self.durations for v in videos):
            seconds = np.array([self.durations[v] for v in videos], dtype=np.float64)
            return units.seconds_to_snippets(seconds, self.feature_fps, self.snippet_frames)
        return None

    def split_of(self, video: str) -> str | None:
        for split, videos in self.videos.items():
            if video in videos:
                return split
        return None

    def to_json(self) -> dict:
        # Fields added for real datasets are written only when set, so that a synthetic
        # manifest stays byte-identical (and DVC does not rerun everything downstream).
        optional = {
            "durations": dict(self.durations),
            "feature_root": self.feature_root,
            "feature_fingerprint": {k: list(v) for k, v in self.feature_fingerprint.items()},
        }
        return {
            "name": self.name,
            "classes": list(self.classes),
            "feature_fps": self.feature_fps,
            "snippet_frames": self.snippet_frames,
            "feature_layout": self.feature_layout,
            "feature_dim": self.feature_dim,
            "tiou_thresholds": list(self.tiou_thresholds),
            "filter_ambiguous": self.filter_ambiguous,
            "videos": {split: list(v) for split, v in self.videos.items()},
            "num_snippets": dict(self.num_snippets),
            **{k: v for k, v in optional.items() if v},
        }

    @classmethod
    def from_json(cls, obj: dict, source: str = MANIFEST) -> "DatasetInfo":
        try:
            info = cls(
                name=str(obj["name"]),
                classes=tuple(str(c) for c in obj["classes"]),
                feature_fps=float(obj["feature_fps"]),
                snippet_frames=int(obj["snippet_frames"]),
                feature_layout=str(obj["feature_layout"]),
                feature_dim=None if obj.get("feature_dim") is None else int(obj["feature_dim"]),
                tiou_thresholds=tuple(float(t) for t in obj["tiou_thresholds"]),
                filter_ambiguous=bool(obj["filter_ambiguous"]),
                videos={split: tuple(str(v) for v in vids) for split, vids in obj["videos"].items()},
                num_snippets={str(k): int(v) for k, v in obj.get("num_snippets", {}).items()},
                durations={str(k): float(v) for k, v in obj.get("durations", {}).items()},
                feature_root=None if obj.get("feature_root") is None else str(obj["feature_root"]),
                feature_fingerprint={str(k): (int(v[0]), str(v[1]))
                                     for k, v in obj.get("feature_fingerprint", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: malformed dataset manifest ({flat(repr(exc))}); rerun the fetch stage") from exc
        info.validate(source)
        return info

    def validate(self, source: str = MANIFEST) -> None:
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise DataError(describe(source, field="feature_layout") + f": {self.feature_layout!r} is not one of {FEATURE_LAYOUTS}")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise DataError(describe(source, field="classes") + ": must be a non-empty list of distinct names")
        if self.feature_fps <= 0 or self.snippet_frames <= 0:
            raise DataError(describe(source, field="feature_fps") + ": feature_fps and snippet_frames must be positive")
        seen: dict[str, str] = {}
        for split, videos in self.videos.items():
            if split not in SPLITS:
                raise DataError(describe(source, field="videos") + f": unknown split {split!r}")
            for video in videos:
                if video in seen:
                    raise DataError(describe(source, video, "videos") + f": listed in both {seen[video]} and {split}")
                seen[video] = split
        if self.has_features:
            missing = [v for v in seen if v not in self.num_snippets]
            if missing:
                raise DataError(describe(source, missing[0], "num_snippets") + f": missing for {len(missing)} video(s)")
            bad = [v for v, t in self.num_snippets.items() if t < 1]
            if bad:
                raise DataError(describe(source, bad[0], "num_snippets") + ": must be at least 1")
        elif self.feature_root is not None:
            raise DataError(describe(source, field="feature_root") + ": set, but the dataset has no features")
        bad = [v for v, d in self.durations.items() if not (math.isfinite(d) and d > 0)]
        if bad:
            raise DataError(describe(source, bad[0], "durations") + f": {self.durations[bad[0]]} is not a positive duration")


class Dataset:
    """A dataset directory: manifest plus lazily read annotation tables and features."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST
        self.info = DatasetInfo.from_json(read_json(manifest), str(manifest))

    # --- paths -------------------------------------------------------------------------
    @property
    def gt_path(self) -> Path:
        return self.root / "gt.json"

    @property
    def points_path(self) -> Path:
        return self.root / "point_labels.csv"

    @property
    def fps_path(self) -> Path:
        return self.root / "fps.json"

    @property
    def ambiguous_path(self) -> Path:
        return self.root / "ambiguous.txt"

    @property
    def feature_root(self) -> Path:
        return Path(self.info.feature_root) if self.info.feature_root is not None else self.root / "features"

    def feature_paths(self, split: str, video: str) -> list[Path]:
        return [self.feature_root / rel for rel in feature_relpaths(self.info.feature_layout, split, video)]

    def require_features(self) -> None:
        """Fail, naming the param to set, when the dataset was fetched without features."""
        if not self.info.has_features:
            raise DataError(
                f"{self.root}: dataset {self.info.name!r} was fetched without features, which this stage needs. "
                f"Set datasets.{self.info.name}.sources.features in params.yaml (a directory, an archive, a URL "
                f"or {{gdrive: <file id>}}; e.g. `dvc exp run -S datasets.{self.info.name}.sources.features="
                "/path/to/features`) and run the pipeline again.")

    def check_unchanged(self, path: Path, video: str) -> None:
        """For features read in place: the file's content must be the one the fetch stage validated."""
        if self.info.feature_root is None:
            return
        rel = path.relative_to(self.feature_root).as_posix()
        recorded = self.info.feature_fingerprint.get(rel)
        if recorded is None or not path.is_file():
            change = "vanished" if recorded is not None else "is not in the manifest"
        elif path.stat().st_size != recorded[0]:
            change = f"changed size ({path.stat().st_size} bytes, {recorded[0]} when fetched)"
        elif file_sha256(path) != recorded[1]:
            change = "changed content (same size; its sha256 differs from the fetched file's)"
        else:
            return
        raise DataError(describe(path, video) + f": this feature file {change} since the fetch stage validated it; "
                        "DVC cannot watch files outside the repository, so run `dvc repro -f fetch` (then "
                        "`dvc repro`) to validate it again")

    # --- annotations -------------------------------------------------------------------
    def video_fps(self) -> dict[str, float]:
        return positive_numbers(self.fps_path, read_json(self.fps_path), None, "fps")

    def points(self) -> pd.DataFrame:
        """Training points in file order: point_id (row index), video, class_index, frame, time (snippets)."""
        return read_points(self.points_path, self.info, self.video_fps())

    def ground_truth(self, split: str) -> pd.DataFrame:
        """Instances of a split: video, label (name), start, end (seconds)."""
        from tspnet.activitynet import load_ground_truth  # owns the ActivityNet reader (no evaluation)

        instances = load_ground_truth(self.gt_path, subset=None).instances
        videos = set(self.info.videos[split])
        return instances[instances["video"].isin(videos)].reset_index(drop=True)

    # --- features ----------------------------------------------------------------------
    def read_features(self, split: str, video: str) -> np.ndarray:
        """One video's [T, D] float32 features (RGB then flow), validated."""
        self.require_features()
        arrays = []
        for path in self.feature_paths(split, video):
            self.check_unchanged(path, video)
            array = load_npy(path)
            check_feature_array(array, path, video)
            arrays.append(array)
        if len(arrays) == 2 and arrays[0].shape[0] != arrays[1].shape[0]:
            raise DataError(
                describe(self.feature_paths(split, video)[1], video, "shape")
                + f": flow has {arrays[1].shape[0]} snippets, rgb has {arrays[0].shape[0]}"
            )
        features = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
        if features.shape[1] != self.info.feature_dim:
            raise DataError(describe(self.feature_paths(split, video)[0], video, "shape")
                            + f": {features.shape[1]} dims, the manifest says {self.info.feature_dim}")
        if features.shape[0] != self.info.num_snippets[video]:
            raise DataError(describe(self.feature_paths(split, video)[0], video, "shape")
                            + f": {features.shape[0]} snippets, the manifest says {self.info.num_snippets[video]}")
        return np.ascontiguousarray(features, dtype=np.float32)

    def feature_store(self, split: str, videos: list[str] | None = None, progress: bool = False) -> "FeatureStore":
        return FeatureStore.load(self, split, videos, progress)


def feature_relpaths(layout: str, split: str, video: str) -> list[str]:
    """A video's feature files relative to the feature root: rgb and flow (lacp) or one file (sfnet)."""
    if layout == "lacp":
        return [f"{split}/rgb/{video}.npy", f"{split}/flow/{video}.npy"]
    return [f"{split}/{video}.npy"]


def scan_feature_file(path: Path, video: str) -> tuple[int, int]:
    """(snippets, dims) of a feature file, validated without holding it in memory.

    The file is memory-mapped for its shape and dtype, and checked for NaN and
    infinity a block of rows at a time, so that a 1 GB dataset is read once.
    """
    array = load_npy(path, mmap=True)
    if array.ndim != 2:
        raise DataError(describe(path, video, "shape") + f": expected [snippets, dims], got shape {array.shape}")
    if array.dtype.kind != "f":
        raise DataError(describe(path, video, "dtype") + f": expected floating point, got {array.dtype}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(describe(path, video, "shape") + f": empty array of shape {array.shape}")
    for start in range(0, array.shape[0], FINITE_CHECK_ROWS):
        finite = np.isfinite(array[start:start + FINITE_CHECK_ROWS]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise DataError(describe(path, video) + f": features contain NaN or infinity (first at snippet {row})")
    return int(array.shape[0]), int(array.shape[1])


def check_feature_array(array: np.ndarray, path: Path, video: str) -> None:
    if array.ndim != 2:
        raise DataError(describe(path, video, "shape") + f": expected [snippets, dims], got shape {array.shape}")
    if array.dtype.kind != "f":
        raise DataError(describe(path, video, "dtype") + f": expected floating point, got {array.dtype}")
    if array.shape[0] < 1:
        raise DataError(describe(path, video, "shape") + ": no snippets")
    if not np.isfinite(array).all():
        raise DataError(describe(path, video) + ": features contain NaN or infinity")


@dataclass
class FeatureStore:
    """The features of many videos back to back in one [T_total, D] tensor, read once.

    `offsets[i]` and `lengths[i]` locate video `videos[i]`. Training and
    inference index this store instead of re-reading files per step.
    """

    videos: list[str]
    features: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def load(cls, dataset: Dataset, split: str, videos: list[str] | None, progress: bool = False) -> "FeatureStore":
        dataset.require_features()
        videos = list(dataset.info.videos[split] if videos is None else videos)
        lengths = np.array([dataset.info.num_snippets[v] for v in videos], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # One allocation for the whole split: peak memory stays at the store's size.
        store = np.empty((int(lengths.sum()), int(dataset.info.feature_dim)), dtype=np.float32)
        from tspnet.console import progress as bar

        for video, offset, length in bar(list(zip(videos, offsets, lengths)), f"features {split}", "video", progress):
            store[offset:offset + length] = dataset.read_features(split, video)
        return cls(videos, torch.from_numpy(store), torch.from_numpy(offsets), torch.from_numpy(lengths))

    def index_of(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.videos)}

    def to(self, device: torch.device) -> "FeatureStore":
        pin = device.type == "cuda"
        features = self.features.pin_memory() if pin else self.features
        return FeatureStore(self.videos, features.to(device, non_blocking=pin),
                            self.offsets.to(device), self.lengths.to(device))


def read_points(path: Path, info: DatasetInfo, video_fps: dict[str, float]) -> pd.DataFrame:
    """Parse and validate point labels; returns point_id, video, class_index, frame, fps, time."""
    return validate_points(read_points_table(path), path, info, video_fps)


def read_points_table(path: Path) -> pd.DataFrame:
    """The point-label CSV as strings, with the expected columns."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV ({flat(exc)})") from exc
    missing = [c for c in POINT_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (expected {POINT_COLUMNS})")
    return table


def validate_points(table: pd.DataFrame, path: Path, info: DatasetInfo, video_fps: dict[str, float]) -> pd.DataFrame:
    """Check a point table (as read by `read_points_table`, maybe filtered) against the dataset.

    Messages give the row number in the file, so the table's index must be the
    CSV's row order (the default index of `read_points_table`, kept by filtering).
    """
    def fail(mask: np.ndarray, field: str, problem: str) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise DataError(describe(path, table["video_id"].iat[row], field)
                            + f", row {int(table.index[row]) + 2}: {problem} ({mask.sum()} row(s) in all)")

    if table.empty:
        raise DataError(f"{path}: no point labels for the dataset's training videos (the file has its header and "
                        "no rows, or only rows of excluded videos); training needs one point per action instance")
    videos = table["video_id"].to_numpy(str)
    fail(~np.isin(videos, list(info.videos.get("train", ()))), "video_id", "video is not in the training split")
    fail(~np.isin(videos, list(video_fps)), "video_id", "video has no fps entry")
    fail(~table["class"].isin(info.classes).to_numpy(), "class", "unknown class")
    integers = {}
    for name in ("class_index", "start_frame", "stop_frame", "point"):
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
        fail(~np.isfinite(values) | (values != np.round(values)), name, "not an integer")
        integers[name] = values.astype(np.int64)
    expected_index = np.array([info.class_index(c) for c in table["class"]], dtype=np.int64)
    fail(integers["class_index"] != expected_index, "class_index", "does not match the class name")
    fail(integers["point"] < 0, "point", "negative frame")
    fps = np.array([video_fps[v] for v in videos], dtype=np.float64)
    lengths = info.lengths_in_snippets(list(videos))
    if lengths is not None:
        last_frame = lengths * info.snippet_frames * fps / info.feature_fps
        where = "features" if info.has_features else "duration"
        fail(integers["point"] > last_frame, "point", f"frame lies past the end of the video's {where}")
    return pd.DataFrame({
        "point_id": np.arange(len(table), dtype=np.int64),
        "video": videos,
        "class_index": integers["class_index"],
        "frame": integers["point"],
        "fps": fps,
        "time": units.frames_to_snippets(integers["point"], fps, info.feature_fps, info.snippet_frames),
    })


def write_manifest(root: str | Path, info: DatasetInfo) -> None:
    info.validate(str(Path(root) / MANIFEST))
    write_json(Path(root) / MANIFEST, info.to_json())
