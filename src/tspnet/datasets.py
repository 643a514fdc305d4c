"""A dataset on disk, in the layout the `fetch` stage writes and every later stage reads.

    <root>/dataset.json          manifest: classes, units, videos per split, snippets per video
    <root>/gt.json               ground truth, ActivityNet `database` format, seconds
    <root>/point_labels.csv      class,class_index,start_frame,stop_frame,video_id,point
    <root>/fps.json              original frame rate of each video
    <root>/ambiguous.txt         optional: `video  start end` in seconds
    <root>/features/<split>/rgb/<video>.npy, .../flow/<video>.npy    (layout "lacp")
    <root>/features/<split>/<video>.npy  (layout "sfnet": one file, RGB in the first half)

The manifest is the one place later stages learn units and video lists from,
so a stage that reads a dataset never needs the params that produced it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tspnet import units
from tspnet.files import DataError, describe, load_npy, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "dataset.json"
SPLITS = ("train", "test")
FEATURE_LAYOUTS = ("lacp", "sfnet")
POINT_COLUMNS = ["class", "class_index", "start_frame", "stop_frame", "video_id", "point"]


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

    def split_of(self, video: str) -> str | None:
        for split, videos in self.videos.items():
            if video in videos:
                return split
        return None

    def to_json(self) -> dict:
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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: malformed dataset manifest ({exc!r})") from exc
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

    def feature_paths(self, split: str, video: str) -> list[Path]:
        base = self.root / "features" / split
        if self.info.feature_layout == "lacp":
            return [base / "rgb" / f"{video}.npy", base / "flow" / f"{video}.npy"]
        return [base / f"{video}.npy"]

    # --- annotations -------------------------------------------------------------------
    def video_fps(self) -> dict[str, float]:
        table = read_json(self.fps_path)
        if not isinstance(table, dict):
            raise DataError(f"{self.fps_path}: expected an object mapping video id to fps")
        out = {}
        for video, fps in table.items():
            try:
                value = float(fps)
            except (TypeError, ValueError):
                raise DataError(describe(self.fps_path, video) + f": fps {fps!r} is not a number") from None
            if not np.isfinite(value) or value <= 0:
                raise DataError(describe(self.fps_path, video) + f": fps {fps!r} must be positive")
            out[str(video)] = value
        return out

    def points(self) -> pd.DataFrame:
        """Training points in file order: point_id (row index), video, class_index, frame, time (snippets)."""
        return read_points(self.points_path, self.info, self.video_fps())

    def ground_truth(self, split: str) -> pd.DataFrame:
        """Instances of a split: video, label (name), start, end (seconds)."""
        from tspnet.evaluate import load_ground_truth  # evaluate owns the ActivityNet reader

        gt = load_ground_truth(self.gt_path, subset=None)
        videos = set(self.info.videos[split])
        return gt[gt["video"].isin(videos)].reset_index(drop=True)

    # --- features ----------------------------------------------------------------------
    def read_features(self, split: str, video: str) -> np.ndarray:
        """One video's [T, D] float32 features (RGB then flow), validated."""
        if not self.info.has_features:
            raise DataError(f"{self.root}: dataset {self.info.name} was fetched without features")
        arrays = []
        for path in self.feature_paths(split, video):
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
        from tqdm import tqdm

        videos = list(dataset.info.videos[split] if videos is None else videos)
        lengths = np.array([dataset.info.num_snippets[v] for v in videos], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # One allocation for the whole split: peak memory stays at the store's size.
        store = np.empty((int(lengths.sum()), int(dataset.info.feature_dim)), dtype=np.float32)
        for video, offset, length in tqdm(list(zip(videos, offsets, lengths)), desc=f"features {split}",
                                          disable=not progress, unit="video"):
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
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in POINT_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (expected {POINT_COLUMNS})")

    def fail(mask: np.ndarray, field: str, problem: str) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise DataError(describe(path, table["video_id"].iat[row], field)
                            + f", row {row + 2}: {problem} ({mask.sum()} row(s) in all)")

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
    if info.has_features:
        snippets = np.array([info.num_snippets[v] for v in videos], dtype=np.float64)
        last_frame = snippets * info.snippet_frames * fps / info.feature_fps
        fail(integers["point"] > last_frame, "point", "frame lies past the end of the video's features")
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
