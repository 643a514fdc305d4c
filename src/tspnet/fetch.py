"""Materialise a dataset in the on-disk layout of `tspnet.datasets` (stage `fetch`).

A registry entry (params.yaml `datasets.<name>`) is either generated
(`source: synthetic`) or assembled from files (`source: files`): one source
per file group (see `tspnet.sources` for the forms a source takes), turned
into the same layout as the synthetic dataset:

- gt.json with the entry's split mapping applied and the excluded videos removed;
- point_labels.csv, fps.json, ambiguous.txt (empty when the dataset has none),
  restricted to the dataset's videos; the points come from a point table in
  frames (`points`) or from SF-Net's single-frame files in seconds
  (`single_frames`, one annotator per video: `tspnet.sfnet`); the frame rates
  from an fps table or the ground truth's `fps` fields;
- features: read in place (the manifest records their directory and a
  fingerprint of every file) or copied into the dataset (`copy: true`), or
  absent: the base locator's proposals can be imported and evaluated without
  them, training and inference then ask for them.

Everything is validated before any training: each video of each split has
features for every stream, dimensions agree across videos, no NaN or
infinity, feature lengths agree with video durations (within
`length_tolerance_s`), every point lies inside its video and names a known
class. Errors name the file, the video and the field.

Downloadable sources are looked up first in the entry's `mirror` folder, if
set (`tspnet.sources.find_in_mirror`); an unreachable URL stops the stage with
one message naming that param and every other source that will need a copy.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tspnet import console, sfnet, synthetic, units
from tspnet.datasets import (FEATURE_LAYOUTS, POINT_COLUMNS, SPLITS, DatasetInfo, feature_relpaths,
                             read_points_table, scan_feature_file, validate_points, write_manifest)
from tspnet.files import (NPY_MAGIC, DataError, ParamsError, atomic_dir, describe, file_sha256, load_npy,
                          positive_numbers, read_json, write_json, write_text)
from tspnet.archives import UnpackLimits
from tspnet.sources import Mirror, Source, SourceUnreachable, materialize, offline_help, parse_mirror, parse_source

log = logging.getLogger(__name__)

# Every file group a `files` entry may name, and what it must hold (quoted in error messages).
# Features come last, so that the small annotation files are fetched (and fail) before a large download.
SOURCE_GROUPS = {
    "gt": "the ground truth: ActivityNet JSON {\"database\": {video: {\"subset\", \"annotations\": "
          "[{\"segment\": [start, end] in seconds, \"label\"}]}}}",
    "points": "the point labels: CSV with columns " + ",".join(POINT_COLUMNS)
              + " (frames at the video's own frame rate)",
    "single_frames": "instead of `points`, SF-Net's single-frame files, one per annotator (lines "
                     "`video,seconds,class`): a list of files, or a directory of *.txt files",
    "video_order": "SF-Net's videoname.npy: the order in which videos draw their annotator (annotator: random)",
    "fps": "the frame rate of every video: JSON {video: fps} (not needed when the ground truth gives `fps` "
           "per video)",
    "ambiguous": "the ambiguous segments: text lines `video start end` in seconds",
    "durations": "each video's duration in seconds: JSON {video: seconds}, or a W-TALC duration.npy "
                 "together with duration_videos",
    "duration_videos": "the W-TALC videoname.npy naming the entries of the duration.npy in `durations`",
    "features": "the I3D features: a directory (or an archive of one) with <split>/rgb/<video>.npy and "
                "<split>/flow/<video>.npy (layout lacp), or <split>/<video>.npy (layout sfnet)",
}
# What each group's file must be before a download of it enters the cache (tspnet.sources.CONTENT_KINDS).
SOURCE_CONTENT = {"gt": "json", "points": "csv", "single_frames": "text", "video_order": "npy", "fps": "json",
                  "ambiguous": "text", "durations": "json|npy", "duration_videos": "npy", "features": "archive"}
POINT_GROUPS = ("points", "single_frames")  # exactly one of them
ENTRY_KEYS = ("source", "classes", "feature_fps", "snippet_frames", "feature_layout", "feature_dim",
              "tiou_thresholds", "filter_ambiguous", "splits", "exclude", "length_tolerance_s", "sources",
              "annotator", "annotator_seed", "mirror")
OPTIONAL_KEYS = ("feature_dim", "annotator", "annotator_seed", "mirror")
FEATURE_ROOT_SEARCH_DEPTH = 3  # an archive may wrap the split folders in a few directories
# An annotation may end after its video's recorded duration (THUMOS14's W-TALC table has four such
# videos, the worst ending at 1.86x), which then raises the duration; beyond this factor it is a wrong
# unit or a typo, and is refused.
ANNOTATION_OVERRUN_FACTOR = 2.0


def fetch_dataset(name: str, entry: dict[str, Any], out: Path, progress: bool = True,
                  limits: UnpackLimits | None = None) -> DatasetInfo:
    """Build `out` from the registry entry; the directory appears only once complete.

    `limits` bound what archive sources unpack to (params.yaml `archives`).
    """
    source = entry.get("source")
    if source not in ("synthetic", "files"):
        raise ParamsError(f"datasets.{name}.source: unknown source {source!r} (synthetic or files)")
    config = FilesEntry.from_params(name, entry) if source == "files" else None
    with atomic_dir(out) as tmp:
        if config is not None:
            info = fetch_files(tmp, config, progress, limits)
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
    sources: dict[str, Source | None]  # every group but single_frames
    single_frames: tuple[Source, ...] = ()  # SF-Net annotator files (or directories of them)
    annotator: str | int = sfnet.RANDOM  # `random` (SF-Net's seeded draw per video) or a fixed 1-based file
    annotator_seed: int = sfnet.DEFAULT_SEED
    mirror: Mirror | None = None

    @classmethod
    def from_params(cls, name: str, entry: dict[str, Any]) -> "FilesEntry":
        where = f"datasets.{name}"
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ParamsError(f"{where}: unknown keys {unknown} (a files entry takes {list(ENTRY_KEYS)})")
        missing = [k for k in ENTRY_KEYS if k not in entry and k not in OPTIONAL_KEYS]
        if missing:
            raise ParamsError(f"{where}: missing keys {missing}")
        splits = entry["splits"]
        if not isinstance(splits, dict) or set(splits) != set(SPLITS):
            raise ParamsError(f"{where}.splits: expected a mapping of {list(SPLITS)} to subset names, got {splits!r}")
        sources = entry["sources"] or {}
        unknown = sorted(set(sources) - set(SOURCE_GROUPS))
        if unknown:
            raise ParamsError(f"{where}.sources: unknown file groups {unknown} (known: {list(SOURCE_GROUPS)})")
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
            sources={g: parse_source(sources.get(g), f"{where}.sources.{g}") for g in SOURCE_GROUPS
                     if g != "single_frames"},
            single_frames=parse_source_list(sources.get("single_frames"), f"{where}.sources.single_frames"),
            annotator=sfnet.parse_annotator(entry.get("annotator", sfnet.RANDOM), f"{where}.annotator"),
            annotator_seed=_integer(entry.get("annotator_seed", sfnet.DEFAULT_SEED), f"{where}.annotator_seed"),
            mirror=parse_mirror(entry.get("mirror"), f"{where}.mirror"),
        )
        config.validate()
        return config

    def validate(self) -> None:
        where = f"datasets.{self.name}"
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise ParamsError(f"{where}.feature_layout: {self.feature_layout!r} is not one of {FEATURE_LAYOUTS}")
        if self.feature_fps <= 0 or self.snippet_frames <= 0 or not self.length_tolerance_s >= 0:
            raise ParamsError(f"{where}: feature_fps and snippet_frames must be positive, length_tolerance_s >= 0")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ParamsError(f"{where}.classes: must be a non-empty list of distinct names")
        if len(set(self.splits.values())) != len(self.splits):
            raise ParamsError(f"{where}.splits: each split needs its own subset, got {self.splits}")
        missing = ["gt"] if self.sources["gt"] is None else []
        if self.sources["points"] is None and not self.single_frames:
            missing += list(POINT_GROUPS)
        if self.sources["points"] is not None and self.single_frames:
            raise ParamsError(f"{where}.sources: points and single_frames are both set; keep one of them")
        if self.single_frames and self.annotator == sfnet.RANDOM and self.sources["video_order"] is None:
            missing.append("video_order")
        if self.filter_ambiguous and self.sources["ambiguous"] is None:
            missing.append("ambiguous")
        if missing:
            wanted = "; ".join(f"{where}.sources.{g}: {SOURCE_GROUPS[g]}" for g in missing)
            raise DataError(f"{where}: these sources are not set (null in params.yaml): {wanted}. Set each to a "
                            "local path, an http(s) URL or {gdrive: <file id>} (README, 'Real data')"
                            + (" -- one of points and single_frames." if "single_frames" in missing else "."))

    def all_sources(self) -> list[tuple[str, Source]]:
        """(group, source) of every source that is set, in fetch order: small files first, features last."""
        listed = [(g, s) for g, s in self.sources.items() if s is not None and g != "features"]
        features = [("features", self.sources["features"])] if self.sources["features"] is not None else []
        return [*listed, *(("single_frames", s) for s in self.single_frames), *features]

    @property
    def snippets_per_second(self) -> float:
        return units.snippets_per_second(self.feature_fps, self.snippet_frames)


def parse_source_list(spec: Any, where: str) -> tuple[Source, ...]:
    """A group that takes several sources: a list of them, or one (e.g. a directory); () for null."""
    if spec is None:
        return ()
    if isinstance(spec, list):
        if not spec:
            raise ParamsError(f"{where}: an empty list (use null for none)")
        return tuple(parse_source(item, f"{where}[{i}]") for i, item in enumerate(spec))
    return (parse_source(spec, where),)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{where}: expected an integer, got {value!r}")
    return value


# ----------------------------------------------------------------------------- a dataset from files


def materialize_sources(config: FilesEntry, progress: bool = True, limits: UnpackLimits | None = None
                        ) -> tuple[dict[str, Path], list[Path]]:
    """(path of each single-valued group, the single-frame files in sorted name order), fetched in order.

    An unreachable URL stops here, before any further download, with one
    message naming the mirror param and every source that will need a copy.
    """
    paths: dict[str, Path] = {}
    frames: list[Path] = []
    for group, source in config.all_sources():
        try:
            path = materialize(source, progress, SOURCE_CONTENT[group], limits, mirror=config.mirror)
        except SourceUnreachable as exc:
            raise DataError(offline_help(exc, [s for _, s in config.all_sources()], config.mirror,
                                         f"datasets.{config.name}.mirror")) from None
        if group == "single_frames":
            frames += single_frame_files(path, source)
        else:
            paths[group] = path
    for group, path in paths.items():
        if group != "features" and not path.is_file():
            raise DataError(f"{config.sources[group].describe()}: {path} is not a file "
                            f"(expected {SOURCE_GROUPS[group]})")
    # SF-Net indexes its files in directory-listing order; sorted names make the index portable.
    return paths, sorted(frames, key=lambda p: p.name)


def single_frame_files(path: Path, source: Source) -> list[Path]:
    """A single-frame source's files: the file itself, or the *.txt files of a directory."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{source.describe()}: {path} holds no *.txt file (expected "
                        f"{SOURCE_GROUPS['single_frames']})")
    return files


def fetch_files(root: Path, config: FilesEntry, progress: bool = True, limits: UnpackLimits | None = None
                ) -> DatasetInfo:
    """Materialise the entry's sources, validate them together and write the dataset under `root`."""
    paths, frame_files = materialize_sources(config, progress, limits)
    videos, database, gt_durations, gt_fps = read_ground_truth(paths["gt"], config)
    all_videos = [v for split in SPLITS for v in videos[split]]
    durations, unreliable = at_least_annotated(read_durations(paths, config, all_videos, gt_durations),
                                               database, paths)
    video_fps = read_fps(paths, config, all_videos, gt_fps)
    features = None
    if "features" in paths:
        checked = {v: d for v, d in durations.items() if v not in unreliable}
        features = scan_features(paths["features"], config, videos, checked, progress,
                                 fingerprint=not config.sources["features"].copy)
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
    if "points" in paths:
        points = filtered_points(paths["points"], config, info, video_fps)
    else:
        points = single_frame_points(frame_files, paths.get("video_order"), config, info, video_fps)
    ambiguous = ambiguous_lines(paths.get("ambiguous"), set(all_videos), config.exclude)

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


def read_ground_truth(path: Path, config: FilesEntry
                      ) -> tuple[dict[str, list[str]], dict[str, dict], dict[str, Any], dict[str, Any]]:
    """(videos per split, ActivityNet database to write, durations and frame rates the file gives)."""
    from tspnet.activitynet import load_ground_truth  # validates every segment and label, naming the video

    load_ground_truth(path, subset=None)
    database = read_json(path)["database"]
    split_of_subset = {subset: split for split, subset in config.splits.items()}
    videos: dict[str, list[str]] = {split: [] for split in SPLITS}
    out, durations, fps, skipped = {}, {}, {}, Counter()
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
        if entry.get("fps") is not None:  # SF-Net's ground truth has the frame rate of every video
            fps[video] = entry["fps"]
        videos[split].append(video)
    for what, count in sorted(skipped.items()):
        log.info("%s: left out %d video(s): %s", path, count, what)
    for split, subset in config.splits.items():
        if not videos[split]:
            present = sorted({str(e.get("subset")) for e in database.values()})
            raise DataError(describe(path, field="subset") + f": no video of subset {subset!r} for the {split} "
                            f"split (subsets present: {present}; see datasets.{config.name}.splits)")
    return videos, out, durations, fps


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
    source = paths.get("durations", paths["gt"])
    absurd = sorted((v for v, d in durations.items() if ends[v] > ANNOTATION_OVERRUN_FACTOR * d),
                    key=lambda v: ends[v] / durations[v], reverse=True)
    if absurd:
        v = absurd[0]
        raise DataError(describe(paths["gt"], v, "annotations") + f": an instance ends at {ends[v]:g} s, but the "
                        f"video lasts {durations[v]:g} s ({source}); more than {ANNOTATION_OVERRUN_FACTOR:g}x its "
                        f"duration is a wrong unit or a typo, not a late end ({len(absurd)} video(s)). Check the "
                        "segments (seconds) and the durations source")
    short = sorted(v for v, d in durations.items() if ends[v] > d)
    if short:
        log.warning("%s: %d video(s) end before their last annotated instance; their duration becomes that "
                    "instance's end and their feature length is not checked: %s",
                    source, len(short),
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


def read_fps(paths: dict[str, Path], config: FilesEntry, videos: list[str], gt_fps: dict[str, Any]
             ) -> dict[str, float]:
    """The frame rate of each dataset video: the fps table's, else the ground truth's `fps` fields.

    The table may list only some videos (points need one for each training video).
    """
    if "fps" in paths:
        return positive_numbers(paths["fps"], read_json(paths["fps"]), videos, "fps")
    missing = [v for v in videos if v not in gt_fps]
    if missing:
        raise DataError(describe(paths["gt"], missing[0], "fps") + f": missing ({len(missing)} video(s)), and "
                        f"datasets.{config.name}.sources.fps is null: set it to {SOURCE_GROUPS['fps']}")
    return positive_numbers(paths["gt"], gt_fps, videos, "fps")


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


def single_frame_points(files: list[Path], order_path: Path | None, config: FilesEntry, info: DatasetInfo,
                        video_fps: dict[str, float]) -> str:
    """The point CSV from SF-Net's single-frame files: one annotator per training video (`tspnet.sfnet`)."""
    where = f"datasets.{config.name}"
    frames = [sfnet.read_single_frames(path) for path in files]
    train = list(info.videos["train"])
    order = sfnet.read_video_order(order_path) if order_path is not None else None
    choice = sfnet.choose_annotators(config.annotator, len(frames), config.annotator_seed, order, train,
                                     f"{where}.annotator", f"{where}.sources.video_order")
    lengths = info.lengths_in_snippets(train)
    converted = sfnet.point_table(frames, choice, config.classes, video_fps, config.feature_fps,
                                  config.snippet_frames, None if lengths is None else dict(zip(train, lengths)))
    used = Counter(choice.values())
    log.info("%s: points from %s (annotator %s%s): %d points for %d training videos; %s", where,
             ", ".join(p.name for p in files), config.annotator,
             f", seed {config.annotator_seed}" if config.annotator == sfnet.RANDOM else "",
             len(converted.table), len(train), ", ".join(f"{files[i].name} chosen for {used[i]} video(s)"
                                                          for i in sorted(used)))
    if converted.past_end:
        log.warning("%s: dropped %d point(s) past their video's last snippet (%s)", where, converted.past_end,
                    "feature rows" if info.has_features else "duration")
    if converted.other_videos:
        log.info("%s: %d point(s) of videos outside the training split are not used", where,
                 converted.other_videos)
    validate_points(converted.table, f"{where}.sources.single_frames", info, video_fps)
    text = io.StringIO()
    converted.table[POINT_COLUMNS].to_csv(text, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return text.getvalue()


def ambiguous_lines(path: Path | None, videos: set[str], excluded: frozenset[str] = frozenset()) -> str:
    """The ambiguous segments of the dataset's videos, one `video  start end` line each ('' when none).

    Segments of excluded videos are left out quietly; those of videos the
    dataset does not know (a typo?) are left out with a warning naming them.
    """
    if path is None:
        return ""
    from tspnet.postprocess import read_ambiguous  # owns the format and its validation

    table = read_ambiguous(path)
    known = table["video"].isin(videos).to_numpy()
    of_excluded = table["video"].isin(excluded).to_numpy()
    if of_excluded.any():
        log.info("%s: left out %d segment(s) of excluded videos", path, int(of_excluded.sum()))
    unknown = ~known & ~of_excluded
    if unknown.any():
        names = sorted(set(table.loc[unknown, "video"]))
        log.warning("%s: left out %d segment(s) of %d video(s) that are not in the dataset: %s", path,
                    int(unknown.sum()), len(names), ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))
    return "".join(f"{v}  {float(s)!r} {float(e)!r}\n" for v, s, e in table[known].itertuples(index=False))


# ----------------------------------------------------------------------------- features


@dataclass
class FeatureScan:
    """The validated feature files of a dataset: where they are and what they hold."""

    root: Path
    files: list[str]  # relative to root, every file of every dataset video
    num_snippets: dict[str, int]
    feature_dim: int
    digests: dict[str, str] = field(default_factory=dict)  # relpath: sha256 (when fingerprinted)

    def fingerprint(self) -> dict[str, tuple[int, str]]:
        """(size, sha256) of every file, so that a change of content outside DVC's view is caught."""
        return {rel: ((self.root / rel).stat().st_size, self.digests[rel]) for rel in self.files}


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
                  progress: bool = True, fingerprint: bool = True) -> FeatureScan:
    """Validate every feature file of the dataset's videos (memory-mapped) and measure them; with
    `fingerprint`, hash each one (sha256) for the manifest: later stages read them in place."""
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
    digests: dict[str, str] = {}
    for _, video, rels in console.progress(wanted, "validating features", "video", progress):
        shapes = [scan_feature_file(root / rel, video) for rel in rels]
        if fingerprint:
            digests.update((rel, file_sha256(root / rel)) for rel in rels)
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
    return FeatureScan(root, [rel for _, _, rels in wanted for rel in rels], num_snippets, feature_dim, digests)


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
