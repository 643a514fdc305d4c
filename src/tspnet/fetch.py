"""Materialise a dataset in the on-disk layout of `tspnet.datasets` (stage `fetch`).

A registry entry (params.yaml `datasets.<name>`) is either generated
(`source: synthetic`) or assembled from files (`source: files`): one source
per file group (see `tspnet.sources` for the forms a source takes), turned
into the same layout as the synthetic dataset:

- gt.json with the entry's split mapping applied and the excluded videos removed;
- point_labels.csv, fps.json, ambiguous.txt (empty when the dataset has none),
  restricted to the dataset's videos;
- features: read in place (the manifest records their directory and a
  fingerprint of every file) or copied into the dataset (`copy: true`), or
  absent: the base locator's proposals can be imported and evaluated without
  them, training and inference then ask for them.

Everything is validated before any training: each video of each split has
features for every stream, dimensions agree across videos, no NaN or
infinity, feature lengths agree with video durations (within
`length_tolerance_s`), every point lies inside its video and names a known
class. Errors name the file, the video and the field.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tspnet import console, synthetic, units
from tspnet.datasets import (FEATURE_LAYOUTS, POINT_COLUMNS, SPLITS, DatasetInfo, feature_relpaths,
                             read_points_table, scan_feature_file, validate_points, write_manifest)
from tspnet.files import (DataError, atomic_dir, describe, load_npy, positive_numbers, read_json, write_json,
                          write_text)
from tspnet.sources import Source, materialize, parse_source

log = logging.getLogger(__name__)

# Every file group a `files` entry may name, and what it must hold (quoted in error messages).
# Features come last, so that the small annotation files are fetched (and fail) before a large download.
SOURCE_GROUPS = {
    "gt": "the ground truth: ActivityNet JSON {\"database\": {video: {\"subset\", \"annotations\": "
          "[{\"segment\": [start, end] in seconds, \"label\"}]}}}",
    "points": "the point labels: CSV with columns " + ",".join(POINT_COLUMNS)
              + " (frames at the video's own frame rate)",
    "fps": "the frame rate of every video: JSON {video: fps}",
    "ambiguous": "the ambiguous segments: text lines `video start end` in seconds",
    "durations": "each video's duration in seconds: JSON {video: seconds}, or a W-TALC duration.npy "
                 "together with duration_videos",
    "duration_videos": "the W-TALC videoname.npy naming the entries of the duration.npy in `durations`",
    "features": "the I3D features: a directory (or an archive of one) with <split>/rgb/<video>.npy and "
                "<split>/flow/<video>.npy (layout lacp), or <split>/<video>.npy (layout sfnet)",
}
REQUIRED_GROUPS = ("gt", "points", "fps")
ENTRY_KEYS = ("source", "classes", "feature_fps", "snippet_frames", "feature_layout", "feature_dim",
              "tiou_thresholds", "filter_ambiguous", "splits", "exclude", "length_tolerance_s", "sources")
FEATURE_ROOT_SEARCH_DEPTH = 3  # an archive may wrap the split folders in a few directories
NPY_MAGIC = b"\x93NUMPY"


def fetch_dataset(name: str, entry: dict[str, Any], out: Path, progress: bool = True) -> DatasetInfo:
    """Build `out` from the registry entry; the directory appears only once complete."""
    source = entry.get("source")
    if source not in ("synthetic", "files"):
        raise ValueError(f"datasets.{name}.source: unknown source {source!r} (synthetic or files)")
    config = FilesEntry.from_params(name, entry) if source == "files" else None
    with atomic_dir(out) as tmp:
        if config is not None:
            info = fetch_files(tmp, config, progress)
        else:
            info = synthetic.generate(
                tmp, name, list(entry["classes"]), float(entry["feature_fps"]), int(entry["snippet_frames"]),
                synthetic.SyntheticConfig.from_params(entry["generator"]),
                tiou_thresholds=list(entry["tiou_thresholds"]),
                filter_ambiguous=bool(entry.get("filter_ambiguous", False)), progress=progress,
            )
    log.info("dataset %s: %d train / %d test videos, %d classes, %s", name, len(info.videos["train"]),
             len(info.videos["test"]), info.num_classes,
             f"{info.feature_dim}-d features" if info.has_features else "no features")
    return info


# ----------------------------------------------------------------------------- the registry entry


@dataclass(frozen=True)
class FilesEntry:
    """A `source: files` registry entry, checked."""

    name: str
    classes: tuple[str, ...]
    feature_fps: float
    snippet_frames: int
    feature_layout: str
    feature_dim: int | None  # expected total dimension, checked when set
    tiou_thresholds: tuple[float, ...]
    filter_ambiguous: bool
    splits: dict[str, str]  # our split -> the `subset` name in the ground truth
    exclude: frozenset[str]
    length_tolerance_s: float
    sources: dict[str, Source | None]

    @classmethod
    def from_params(cls, name: str, entry: dict[str, Any]) -> "FilesEntry":
        where = f"datasets.{name}"
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} (a files entry takes {list(ENTRY_KEYS)})")
        missing = [k for k in ENTRY_KEYS if k not in entry and k != "feature_dim"]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")
        splits = entry["splits"]
        if not isinstance(splits, dict) or set(splits) != set(SPLITS):
            raise ValueError(f"{where}.splits: expected a mapping of {list(SPLITS)} to subset names, got {splits!r}")
        sources = entry["sources"] or {}
        unknown = sorted(set(sources) - set(SOURCE_GROUPS))
        if unknown:
            raise ValueError(f"{where}.sources: unknown file groups {unknown} (known: {list(SOURCE_GROUPS)})")
        config = cls(
            name=name,
            classes=tuple(str(c) for c in entry["classes"]),
            feature_fps=float(entry["feature_fps"]),
            snippet_frames=int(entry["snippet_frames"]),
            feature_layout=str(entry["feature_layout"]),
            feature_dim=None if entry.get("feature_dim") is None else int(entry["feature_dim"]),
            tiou_thresholds=tuple(float(t) for t in entry["tiou_thresholds"]),
            filter_ambiguous=bool(entry["filter_ambiguous"]),
            splits={str(k): str(v) for k, v in splits.items()},
            exclude=frozenset(str(v) for v in entry["exclude"] or ()),
            length_tolerance_s=float(entry["length_tolerance_s"]),
            sources={g: parse_source(sources.get(g), f"{where}.sources.{g}") for g in SOURCE_GROUPS},
        )
        config.validate()
        return config

    def validate(self) -> None:
        where = f"datasets.{self.name}"
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise ValueError(f"{where}.feature_layout: {self.feature_layout!r} is not one of {FEATURE_LAYOUTS}")
        if self.feature_fps <= 0 or self.snippet_frames <= 0 or not self.length_tolerance_s >= 0:
            raise ValueError(f"{where}: feature_fps and snippet_frames must be positive, length_tolerance_s >= 0")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError(f"{where}.classes: must be a non-empty list of distinct names")
        if len(set(self.splits.values())) != len(self.splits):
            raise ValueError(f"{where}.splits: each split needs its own subset, got {self.splits}")
        missing = [g for g in REQUIRED_GROUPS if self.sources[g] is None]
        if self.filter_ambiguous and self.sources["ambiguous"] is None:
            missing.append("ambiguous")
        if missing:
            wanted = "\n".join(f"  {where}.sources.{g}: {SOURCE_GROUPS[g]}" for g in missing)
            raise DataError(f"{where}: these sources are not set (null in params.yaml):\n{wanted}\n"
                            "Set each to a local path, an http(s) URL or {gdrive: <file id>} (README, 'Real data').")

    @property
    def snippets_per_second(self) -> float:
        return units.snippets_per_second(self.feature_fps, self.snippet_frames)


# ----------------------------------------------------------------------------- a dataset from files


def fetch_files(root: Path, config: FilesEntry, progress: bool = True) -> DatasetInfo:
    """Materialise the entry's sources, validate them together and write the dataset under `root`."""
    paths = {group: materialize(source, progress) for group, source in config.sources.items() if source is not None}
    for group, path in paths.items():
        if group != "features" and not path.is_file():
            raise DataError(f"{config.sources[group].describe()}: {path} is not a file "
                            f"(expected {SOURCE_GROUPS[group]})")
    videos, database, gt_durations = read_ground_truth(paths["gt"], config)
    all_videos = [v for split in SPLITS for v in videos[split]]
    durations, unreliable = at_least_annotated(read_durations(paths, config, all_videos, gt_durations),
                                               database, paths)
    video_fps = read_fps(paths["fps"], all_videos)
    features = None
    if "features" in paths:
        checked = {v: d for v, d in durations.items() if v not in unreliable}
        features = scan_features(paths["features"], config, videos, checked, progress)
    else:
        log.info("datasets.%s.sources.features is null: fetching without features (the base locator's "
                 "proposals can be evaluated; training and inference will ask for features)", config.name)
    copy_features = features is not None and config.sources["features"].copy
    info = DatasetInfo(
        name=config.name,
        classes=config.classes,
        feature_fps=config.feature_fps,
        snippet_frames=config.snippet_frames,
        feature_layout=config.feature_layout,
        videos={split: tuple(videos[split]) for split in SPLITS},
        num_snippets=features.num_snippets if features else {},
        feature_dim=features.feature_dim if features else None,
        tiou_thresholds=config.tiou_thresholds,
        filter_ambiguous=config.filter_ambiguous,
        durations=durations,
        feature_root=None if features is None or copy_features else str(features.root),
        feature_fingerprint={} if features is None or copy_features else features.fingerprint(),
    )
    points = filtered_points(paths["points"], config, info, video_fps)
    ambiguous = ambiguous_lines(paths.get("ambiguous"), set(all_videos))

    if copy_features:
        log.info("copying %d feature files into %s", len(features.files), root / "features")
        for rel in features.files:
            target = root / "features" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(features.root / rel, target)
    write_json(root / "gt.json", {"version": f"{config.name} ({config.sources['gt'].location})",
                                  "database": database})
    write_json(root / "fps.json", video_fps)
    write_text(root / "point_labels.csv", points)
    write_text(root / "ambiguous.txt", ambiguous)
    write_manifest(root, info)
    return info


def read_ground_truth(path: Path, config: FilesEntry) -> tuple[dict[str, list[str]], dict[str, dict], dict[str, Any]]:
    """(videos per split, ActivityNet database to write, durations the file gives) from the ground truth."""
    from tspnet.activitynet import load_ground_truth  # validates every segment and label, naming the video

    load_ground_truth(path, subset=None)
    database = read_json(path)["database"]
    split_of_subset = {subset: split for split, subset in config.splits.items()}
    videos: dict[str, list[str]] = {split: [] for split in SPLITS}
    out, durations, skipped = {}, {}, Counter()
    for video, entry in database.items():
        split = split_of_subset.get(str(entry.get("subset")))
        if video in config.exclude or split is None:
            skipped["excluded" if video in config.exclude else f"subset {entry.get('subset')!r}"] += 1
            continue
        annotations = []
        for i, item in enumerate(entry["annotations"]):
            if item["label"] not in config.classes:
                raise DataError(describe(path, video, f"annotations[{i}].label") + f": unknown class "
                                f"{item['label']!r} (datasets.{config.name}.classes: {list(config.classes)})")
            annotations.append({"segment": [float(item["segment"][0]), float(item["segment"][1])],
                                "label": item["label"]})
        out[video] = {"subset": split, "annotations": annotations}
        if entry.get("duration") is not None:
            durations[video] = entry["duration"]
        videos[split].append(video)
    for what, count in sorted(skipped.items()):
        log.info("%s: left out %d video(s): %s", path, count, what)
    for split, subset in config.splits.items():
        if not videos[split]:
            present = sorted({str(e.get("subset")) for e in database.values()})
            raise DataError(describe(path, field="subset") + f": no video of subset {subset!r} for the {split} "
                            f"split (subsets present: {present}; see datasets.{config.name}.splits)")
    return videos, out, durations


def read_durations(paths: dict[str, Path], config: FilesEntry, videos: list[str],
                   gt_durations: dict[str, Any]) -> dict[str, float]:
    """Every video's duration in seconds, from `durations` or else the ground truth; {} when unknown."""
    path = paths.get("durations")
    if path is None:
        if not (gt_durations and all(v in gt_durations for v in videos)):
            log.info("datasets.%s: no video durations (sources.durations is null and the ground truth has "
                     "none): feature lengths and points are checked against the features only", config.name)
            return {}
        path, table = paths["gt"], gt_durations
    else:
        with open(path, "rb") as f:
            is_npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
        table = w_talc_durations(path, paths, config) if is_npy else read_json(path)
    durations = positive_numbers(path, table, videos, "duration")
    missing = [v for v in videos if v not in durations]
    if missing:
        raise DataError(describe(path, missing[0], "duration") + f": missing ({len(missing)} video(s) of the "
                        "dataset have no duration)")
    return durations


def at_least_annotated(durations: dict[str, float], database: dict[str, dict],
                       paths: dict[str, Path]) -> tuple[dict[str, float], set[str]]:
    """Durations raised to the end of each video's last annotated instance where they fall short, and those videos.

    A video lasts at least until its last instance ends, so a shorter duration
    is wrong (THUMOS14's W-TALC table has four such videos). Raising it keeps
    proposals from being clipped inside the annotations; the true length stays
    unknown, so these videos are left out of the feature-length check.
    """
    ends = {v: max((a["segment"][1] for a in e["annotations"]), default=0.0) for v, e in database.items()}
    short = sorted(v for v, d in durations.items() if ends[v] > d)
    if short:
        log.warning("%s: %d video(s) end before their last annotated instance; their duration becomes that "
                    "instance's end and their feature length is not checked: %s",
                    paths.get("durations", paths["gt"]), len(short),
                    ", ".join(f"{v} ({durations[v]:.2f} -> {ends[v]:.2f} s)" for v in short))
    return {v: max(d, ends[v]) for v, d in durations.items()}, set(short)


def w_talc_durations(path: Path, paths: dict[str, Path], config: FilesEntry) -> dict[str, float]:
    """{video: seconds} from a W-TALC duration.npy and the videoname.npy that names its rows."""
    names_path = paths.get("duration_videos")
    if names_path is None:
        raise DataError(f"{path}: a numpy array of durations (W-TALC duration.npy) needs the videoname.npy "
                        f"naming its rows: set datasets.{config.name}.sources.duration_videos")
    seconds = load_npy(path).reshape(-1)
    names = load_npy(names_path).reshape(-1)
    if seconds.dtype.kind not in "fiu" or names.dtype.kind not in "SU":
        raise DataError(f"{path}, {names_path}: expected numbers and video names, got {seconds.dtype} and "
                        f"{names.dtype}")
    if len(seconds) != len(names):
        raise DataError(f"{path}: {len(seconds)} durations, but {names_path} names {len(names)} videos")
    decoded = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    return dict(zip(decoded, seconds.astype(np.float64).tolist()))


def read_fps(path: Path, videos: list[str]) -> dict[str, float]:
    """The frame rate of each dataset video that the table lists (points need one for each training video)."""
    return positive_numbers(path, read_json(path), videos, "fps")


def filtered_points(path: Path, config: FilesEntry, info: DatasetInfo, video_fps: dict[str, float]) -> str:
    """The point CSV without the excluded videos' rows, validated against the dataset."""
    table = read_points_table(path)
    excluded = table["video_id"].isin(config.exclude).to_numpy()
    if excluded.any():
        log.info("%s: left out %d point(s) of excluded videos", path, int(excluded.sum()))
    table = table[~excluded]
    validate_points(table, path, info, video_fps)
    text = io.StringIO()
    table[POINT_COLUMNS].to_csv(text, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return text.getvalue()


def ambiguous_lines(path: Path | None, videos: set[str]) -> str:
    """The ambiguous segments of the dataset's videos, one `video  start end` line each ('' when none)."""
    if path is None:
        return ""
    from tspnet.postprocess import read_ambiguous  # owns the format and its validation

    table = read_ambiguous(path)
    known = table["video"].isin(videos).to_numpy()
    if not known.all():
        log.info("%s: left out %d segment(s) of videos outside the dataset", path, int((~known).sum()))
    return "".join(f"{v}  {float(s)!r} {float(e)!r}\n" for v, s, e in table[known].itertuples(index=False))


# ----------------------------------------------------------------------------- features


@dataclass
class FeatureScan:
    """The validated feature files of a dataset: where they are and what they hold."""

    root: Path
    files: list[str]  # relative to root, every file of every dataset video
    num_snippets: dict[str, int]
    feature_dim: int

    def fingerprint(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file, so that a change outside DVC's view is caught."""
        stats = {rel: (self.root / rel).stat() for rel in self.files}
        return {rel: (s.st_size, s.st_mtime_ns) for rel, s in stats.items()}


def find_feature_root(path: Path, where: str) -> Path:
    """The directory at or below `path` (shallowest first) that holds one folder per split."""
    level = [path]
    for _ in range(FEATURE_ROOT_SEARCH_DEPTH + 1):
        found = [d for d in level if all((d / split).is_dir() for split in SPLITS)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"{where}: several feature folders under {path}: {[str(d) for d in found]}")
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    raise DataError(f"{where}: no directory with {'/'.join(SPLITS)} split folders at or below {path} "
                    f"(expected {SOURCE_GROUPS['features']})")


def scan_features(path: Path, config: FilesEntry, videos: dict[str, list[str]], durations: dict[str, float],
                  progress: bool = True) -> FeatureScan:
    """Validate every feature file of the dataset's videos (memory-mapped, read once) and measure them."""
    where = config.sources["features"].where
    if not path.is_dir():
        raise DataError(f"{where}: {path} is a file that is not an archive (expected {SOURCE_GROUPS['features']})")
    root = find_feature_root(path, where)
    wanted = [(split, video, feature_relpaths(config.feature_layout, split, video))
              for split in SPLITS for video in videos[split]]
    missing = [(video, rel) for _, video, rels in wanted for rel in rels if not (root / rel).is_file()]
    if missing:
        video, rel = missing[0]
        raise DataError(describe(root / rel, video) + f": feature file not found ({len(missing)} file(s) of "
                        f"{len({v for v, _ in missing})} video(s) missing; datasets.{config.name}.feature_layout "
                        f"is {config.feature_layout})")

    num_snippets: dict[str, int] = {}
    reference: list[tuple[int, str]] = []  # per stream: (dims, the first video that had them)
    for _, video, rels in console.progress(wanted, "validating features", "video", progress):
        shapes = [scan_feature_file(root / rel, video) for rel in rels]
        if not reference:
            reference = [(dims, video) for _, dims in shapes]
        for rel, (snippets, dims), (ref_dims, ref_video) in zip(rels, shapes, reference):
            if dims != ref_dims:
                raise DataError(describe(root / rel, video, "shape") + f": {dims} dims, but video {ref_video} "
                                f"has {ref_dims} in the same stream")
            if snippets != shapes[0][0]:
                raise DataError(describe(root / rel, video, "shape") + f": {snippets} snippets, but "
                                f"{rels[0]} has {shapes[0][0]}")
        num_snippets[video] = shapes[0][0]
    feature_dim = sum(dims for dims, _ in reference)
    if config.feature_dim is not None and feature_dim != config.feature_dim:
        raise DataError(f"{where}: {root}: features have {feature_dim} dims in all "
                        f"({' + '.join(str(d) for d, _ in reference)}), datasets.{config.name}.feature_dim "
                        f"says {config.feature_dim}")
    if durations:
        check_lengths(root, wanted, num_snippets, durations, config)
    return FeatureScan(root, [rel for _, _, rels in wanted for rel in rels], num_snippets, feature_dim)


def largest_length_mismatch(videos: list[str], num_snippets: dict[str, int], durations: dict[str, float],
                            snippets_per_second: float) -> tuple[int, np.ndarray]:
    """(index of the worst video, signed mismatch in seconds of every video): feature length minus duration."""
    covered = np.array([num_snippets[v] for v in videos], dtype=np.float64) / snippets_per_second
    mismatch = covered - np.array([durations[v] for v in videos], dtype=np.float64)
    return int(np.argmax(np.abs(mismatch))), mismatch


def check_lengths(root: Path, wanted: list[tuple[str, str, list[str]]], num_snippets: dict[str, int],
                  durations: dict[str, float], config: FilesEntry) -> None:
    """Feature length against duration: report the largest mismatch, fail past the tolerance."""
    checked = [(video, rels[0]) for _, video, rels in wanted if video in durations]
    if not checked:
        return
    videos = [video for video, _ in checked]
    worst, mismatch = largest_length_mismatch(videos, num_snippets, durations, config.snippets_per_second)
    video, rel = checked[worst]
    log.info("feature lengths vs durations (%d videos): largest mismatch %+.2f s (video %s), tolerance %.2f s",
             len(videos), mismatch[worst], video, config.length_tolerance_s)
    if abs(mismatch[worst]) > config.length_tolerance_s:
        raise DataError(
            describe(root / rel, video, "shape") + f": {num_snippets[video]} snippets cover "
            f"{num_snippets[video] / config.snippets_per_second:.2f} s, the video lasts {durations[video]:.2f} s "
            f"(off by {mismatch[worst]:+.2f} s, the largest mismatch of the dataset; "
            f"{int((np.abs(mismatch) > config.length_tolerance_s).sum())} video(s) exceed "
            f"datasets.{config.name}.length_tolerance_s = {config.length_tolerance_s}). Check feature_fps and "
            "snippet_frames, or the durations source.")
