"""The ActivityNet JSON formats: ground truth (`database`) and results (`results`), in seconds.

Every base locator's proposals, TSPNet's detections and the ground truth are
read and written here, and validated on reading: a failure names the file,
the video and the field. The evaluation itself is tspnet.evaluate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tspnet.files import DataError, describe, read_json, write_json

GROUND_TRUTH_COLUMNS = ("video", "label", "start", "end")
RESULT_COLUMNS = ("video", "label", "start", "end", "score")


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth instances of one subset, and every video of that subset.

    `videos` also lists subset videos without any annotation: predictions on
    them are evaluated (as false positives), not ignored.
    """

    instances: pd.DataFrame  # video (str), label (str), start, end (float64 seconds), file order
    videos: list[str]  # file order

    @property
    def classes(self) -> list[str]:
        return sorted(self.instances["label"].unique().tolist())



def _number(value: Any, where: str) -> float:
    """A finite float from a JSON number or a numeric string (the THUMOS14 gt.json stores strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise DataError(f"{where}: expected a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise DataError(f"{where}: not a finite number ({value!r})")
    return number


def _segment(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DataError(f"{where}: expected [start, end], got {value!r}")
    start, end = _number(value[0], where), _number(value[1], where)
    if end < start:
        raise DataError(f"{where}: end {end} is before start {start}")
    return start, end


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: expected a non-empty class name, got {value!r}")
    return value


def _mapping(value: Any, where: str, key: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get(key), dict):
        raise DataError(f"{where}: expected a JSON object with a {key!r} object")
    return value[key]


def load_ground_truth(path: str | os.PathLike, subset: str | None = None) -> GroundTruth:
    """Read ActivityNet ground truth (`{"database": {video: {"subset", "annotations"}}}`).

    `subset=None` keeps every video. Segments are seconds, as numbers or numeric strings.
    """
    database = _mapping(read_json(path), describe(path), "database")
    rows: list[tuple[str, str, float, float]] = []
    videos: list[str] = []
    subsets_seen: set[str] = set()
    for video, entry in database.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            raise DataError(describe(path, video, "annotations") + ": expected a list")
        entry_subset = entry.get("subset")
        if subset is not None and not isinstance(entry_subset, str):
            raise DataError(describe(path, video, "subset") + f": expected a string, got {entry_subset!r}")
        subsets_seen.add(str(entry_subset))
        annotations = [_annotation(item, path, video, i) for i, item in enumerate(entry["annotations"])]
        if subset is None or entry_subset == subset:
            videos.append(video)
            rows.extend((video, label, start, end) for label, start, end in annotations)
    if not videos:
        raise DataError(f"{describe(path)}: no video in subset {subset!r} (subsets present: {sorted(subsets_seen)})")
    return GroundTruth(instances=_frame(rows, GROUND_TRUTH_COLUMNS), videos=videos)


def _annotation(item: Any, path: str | os.PathLike, video: str, index: int) -> tuple[str, float, float]:
    where = describe(path, video, f"annotations[{index}]")
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {item!r}")
    label = _label(item.get("label"), describe(path, video, f"annotations[{index}].label"))
    start, end = _segment(item.get("segment"), describe(path, video, f"annotations[{index}].segment"))
    return label, start, end


def load_results(path: str | os.PathLike, max_per_video: tuple[int, str] | None = None) -> pd.DataFrame:
    """Read ActivityNet results (`{"results": {video: [{"label", "score", "segment"}]}}`), file order.

    Scores must be JSON numbers (a string is refused, never coerced).
    `max_per_video` = (limit, the param that sets it): a video with more
    detections is refused before any is parsed.
    """
    results = _mapping(read_json(path), describe(path), "results")
    if max_per_video is not None:
        _check_counts(path, results, *max_per_video)
    rows: list[tuple[str, str, float, float, float]] = []
    for video, detections in results.items():
        if not isinstance(detections, list):
            raise DataError(describe(path, video) + f": expected a list of detections, got {type(detections).__name__}")
        for i, item in enumerate(detections):
            where = describe(path, video, f"[{i}]")
            if not isinstance(item, dict):
                raise DataError(f"{where}: expected an object, got {item!r}")
            label = _label(item.get("label"), describe(path, video, f"[{i}].label"))
            score = item.get("score")
            if isinstance(score, str):
                raise DataError(describe(path, video, f"[{i}].score") + f": expected a JSON number, got the string "
                                f"{score!r} (write scores unquoted)")
            score = _number(score, describe(path, video, f"[{i}].score"))
            start, end = _segment(item.get("segment"), describe(path, video, f"[{i}].segment"))
            rows.append((video, label, start, end, score))
    return _frame(rows, RESULT_COLUMNS)


def _check_counts(path: str | os.PathLike, results: dict, limit: int, param: str) -> None:
    counts = {video: len(items) for video, items in results.items() if isinstance(items, list)}
    over = sorted((v for v, n in counts.items() if n > limit), key=lambda v: -counts[v])
    if over:
        raise DataError(describe(path, over[0]) + f": {counts[over[0]]} proposals, more than {param} = {limit} "
                        f"({len(over)} video(s) over the limit). Real base locators give at most a few thousand per "
                        f"video; check the file, or raise {param} if you mean it (inference time grows with the "
                        "square of a video's proposals)")


def _frame(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(columns))
    numeric = [c for c in columns if c not in ("video", "label")]
    frame[numeric] = frame[numeric].astype(np.float64)
    frame[["video", "label"]] = frame[["video", "label"]].astype(str)
    return frame


def write_results(path: str | os.PathLike, detections: pd.DataFrame, version: str = "tspnet") -> None:
    """Write detections (seconds) as ActivityNet results JSON, videos in order of first appearance."""
    missing = [c for c in RESULT_COLUMNS if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack columns {missing}")
    numbers = detections[["start", "end", "score"]].to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all():
        raise ValueError(f"{path}: detections contain NaN or infinity")
    if (numbers[:, 1] < numbers[:, 0]).any():
        raise ValueError(f"{path}: a detection ends before it starts")
    results: dict[str, list[dict]] = {}
    for video, label, (start, end, score) in zip(
        detections["video"].tolist(), detections["label"].tolist(), numbers.tolist()
    ):
        results.setdefault(str(video), []).append({"label": str(label), "score": score, "segment": [start, end]})
    # "external_data" because the official evaluator refuses results files without it.
    write_json(path, {"version": version, "results": results, "external_data": {}})
