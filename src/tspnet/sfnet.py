"""SF-Net's point annotations for GTEA and BEOID: single-frame files, the annotator draw, the point table.

SF-Net (Ma et al., ECCV 2020; repository Flowerfan/SF-Net) publishes, per
dataset, four single-frame files, one per annotator: text lines
`video,seconds,class` (blank lines between them, CRLF line ends in BEOID's),
one point per instance that annotator marked. Its loader takes one file per
video: after `np.random.seed(seed)` (seed 1 by default) it calls
`np.random.choice(4)` once per video of `videoname.npy`, in that order, test
videos included (they draw but use nothing); the files are indexed in
directory-listing order, which depends on the file system, so here they are
indexed in sorted name order (LACP.md section 8, quirk 22). With seed 1 the
draw sequence begins 1, 3, 0, 0, 3, 1, 3, 1, 3, 0. A fixed annotator (1-4)
may be chosen instead.

Why the conversion keeps SF-Net's labels: SF-Net puts a point of a video at
`fps` frames per second on snippet `int(seconds * fps / 16)` and drops it when
that snippet is not below the number of feature rows T. The point table of
this project holds integer frames at the video's own frame rate, from which
every later stage computes the snippet time `frame * feature_fps / (fps * 16)`.
Storing `frame = floor(seconds * fps)` keeps SF-Net's snippet exactly: for
x >= 0, floor(floor(x) / 16) = floor(x / 16), and GTEA's and BEOID's features
run at the videos' own rate (feature_fps = fps), where the factor
feature_fps / (fps * 16) is exactly 1/16 in floating point too. The time inside the snippet
moves by less than one frame. A point is dropped, and counted, when its
snippet time is not below the video's length in snippets: its T feature rows
(SF-Net's rule), or without features its duration.

The single-frame files carry no instance bounds: the table's `start_frame`
and `stop_frame` columns repeat the point's frame (no stage reads them; LACP
reads only `video_id`, `point` and `class_index`, and so does this project).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tspnet import units
from tspnet.files import DataError, ParamsError, load_npy

log = logging.getLogger(__name__)

RANDOM = "random"
DEFAULT_SEED = 1  # SF-Net's default --seed


@dataclass(frozen=True)
class SingleFrames:
    """One annotator's file: a point per row (video, seconds, class), in file order."""

    path: Path
    video: tuple[str, ...]
    seconds: np.ndarray  # float64
    label: tuple[str, ...]
    line: tuple[int, ...]  # 1-based line numbers, for messages


def read_single_frames(path: Path) -> SingleFrames:
    """Parse one SF-Net single-frame file, naming the line of any malformed row."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read this single-frame file ({exc})") from exc
    videos, seconds, labels, lines = [], [], [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) != 3 or not fields[0] or not fields[2]:
            raise DataError(f"{path}, line {number}: expected `video,seconds,class`, got {raw.strip()!r}")
        try:
            value = float(fields[1])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise DataError(f"{path}, line {number}, video {fields[0]}: {fields[1]!r} is not a time in seconds >= 0")
        videos.append(fields[0])
        seconds.append(value)
        labels.append(fields[2])
        lines.append(number)
    if not videos:
        raise DataError(f"{path}: no points (expected lines `video,seconds,class`)")
    return SingleFrames(path, tuple(videos), np.array(seconds, dtype=np.float64), tuple(labels), tuple(lines))


def read_video_order(path: Path) -> list[str]:
    """The video names of a W-TALC `videoname.npy` (byte or text strings), in file order."""
    names = load_npy(path).reshape(-1)
    if names.dtype.kind not in "SU":
        raise DataError(f"{path}: expected an array of video names, got dtype {names.dtype}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]


def parse_annotator(value: object, where: str) -> str | int:
    """`random` or a 1-based annotator number, from params."""
    if value == RANDOM:
        return RANDOM
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ParamsError(f"{where}: expected {RANDOM!r} or an annotator number 1, 2, ..., got {value!r}")


def annotator_draws(video_order: Sequence[str], num_files: int, seed: int) -> list[int]:
    """SF-Net's draw: the 0-based file index of each video, `np.random.choice` after seeding once."""
    state = np.random.RandomState(seed)  # the legacy generator behind np.random.seed / np.random.choice
    return [int(state.choice(num_files)) for _ in video_order]


def choose_annotators(annotator: str | int, num_files: int, seed: int, video_order: Sequence[str] | None,
                      videos: Sequence[str], annotator_where: str, order_where: str) -> dict[str, int]:
    """The 0-based file index of every video in `videos`: drawn as SF-Net does, or one fixed file."""
    if annotator != RANDOM:
        if annotator > num_files:
            raise DataError(f"{annotator_where}: annotator {annotator} chosen, but there are {num_files} "
                            "single-frame files")
        return {v: annotator - 1 for v in videos}
    if video_order is None:
        raise DataError(f"{order_where} is not set: the random annotator choice follows SF-Net's videoname.npy "
                        "order; set it, or choose a fixed annotator (1-4)")
    draws = dict(zip(video_order, annotator_draws(video_order, num_files, seed)))
    missing = [v for v in videos if v not in draws]
    if missing:
        raise DataError(f"{order_where}: video {missing[0]} is not listed ({len(missing)} video(s) of the dataset "
                        "missing), so it has no annotator draw")
    return {v: draws[v] for v in videos}


@dataclass(frozen=True)
class PointTable:
    """The converted points (columns of tspnet.datasets.POINT_COLUMNS) and what was left out."""

    table: pd.DataFrame
    past_end: int  # points past the video's last snippet, dropped
    other_videos: int  # rows of any file whose video is not a training video (never used)


def point_table(files: Sequence[SingleFrames], choice: dict[str, int], classes: Sequence[str],
                video_fps: dict[str, float], feature_fps: float, snippet_frames: int,
                lengths: dict[str, float] | None) -> PointTable:
    """The training points of the chosen files, in the order of `choice` (a video's points in file order).

    `choice` maps every training video to its file's index; `lengths` gives
    each training video's length in snippets (None: not known, nothing is
    dropped). Frames are `floor(seconds * fps)` (see the module docstring).
    """
    class_index = {c: i for i, c in enumerate(classes)}
    parts, past_end = [], 0
    for video, index in choice.items():
        frames = files[index]
        rows = np.flatnonzero(np.asarray(frames.video, dtype=object) == video)
        if not len(rows):
            continue
        labels = [frames.label[r] for r in rows]
        unknown = [r for r, label in zip(rows, labels) if label not in class_index]
        if unknown:
            r = unknown[0]
            raise DataError(f"{frames.path}, line {frames.line[r]}, video {video}, field 'class': unknown class "
                            f"{frames.label[r]!r} ({len(unknown)} row(s); the dataset's classes: {list(classes)})")
        fps = float(video_fps[video])
        point = np.floor(frames.seconds[rows] * fps).astype(np.int64)
        if lengths is not None and video in lengths:
            time = units.frames_to_snippets(point, fps, feature_fps, snippet_frames)  # as later stages do
            keep = time < lengths[video]
            past_end += int((~keep).sum())
            rows, labels, point = rows[keep], [lab for lab, k in zip(labels, keep) if k], point[keep]
        parts.append(pd.DataFrame({"class": labels, "class_index": [class_index[lab] for lab in labels],
                                   "start_frame": point, "stop_frame": point, "video_id": video, "point": point}))
    other = sum(sum(v not in choice for v in f.video) for f in files)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"class": [], "class_index": [], "start_frame": [], "stop_frame": [], "video_id": [], "point": []})
    return PointTable(table, past_end, other)
