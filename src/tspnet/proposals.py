"""A base locator's proposals, imported and converted to snippet units (stage `proposals`).

Proposals arrive as ActivityNet results JSON in seconds, one file per split,
from any base locator. Import converts them to snippets with the authors'
rounding (2 decimals), validates them against the dataset and stores them
grouped by video (file order kept within a video), with the locator's own
class label and score for the base evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tspnet import units
from tspnet.datasets import DatasetInfo
from tspnet.files import DataError, describe, load_npz, save_npz

log = logging.getLogger(__name__)

INVALID_POLICIES = ("clip", "refuse")


@dataclass
class Proposals:
    """The proposals of one split, grouped by video: row i belongs to `videos[video_index[i]]`."""

    videos: list[str]
    video_index: np.ndarray  # [N] int64, non-decreasing
    start: np.ndarray  # [N] float64, snippets
    end: np.ndarray  # [N] float64, snippets
    label: np.ndarray  # [N] int64, the base locator's class
    score: np.ndarray  # [N] float64, the base locator's confidence (any finite number)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def segments(self) -> np.ndarray:
        return np.stack([self.start, self.end], axis=1)

    def video_slices(self) -> list[slice]:
        """Row range of every video (empty for a video without proposals)."""
        bounds = np.searchsorted(self.video_index, np.arange(len(self.videos) + 1))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def counts(self) -> np.ndarray:
        return np.bincount(self.video_index, minlength=len(self.videos))

    def save(self, path: str | Path) -> None:
        save_npz(path, videos=np.array(self.videos, dtype=str), video_index=self.video_index,
                 start=self.start, end=self.end, label=self.label, score=self.score)

    @classmethod
    def load(cls, path: str | Path) -> "Proposals":
        arrays = load_npz(path, {"videos": "U", "video_index": "i", "start": "f", "end": "f",
                                 "label": "i", "score": "f"})
        n = len(arrays["start"])
        if any(len(arrays[k]) != n for k in ("video_index", "end", "label", "score")):
            raise DataError(f"{path}: arrays of different lengths")
        index = arrays["video_index"]
        if n and (index.min() < 0 or index.max() >= len(arrays["videos"]) or np.any(np.diff(index) < 0)):
            raise DataError(describe(path, field="video_index") + ": out of range or not grouped by video")
        if np.any(arrays["end"] <= arrays["start"]):
            raise DataError(describe(path, field="end") + ": a proposal ends before it starts")
        return cls(list(arrays["videos"].tolist()), index.astype(np.int64), arrays["start"], arrays["end"],
                   arrays["label"].astype(np.int64), arrays["score"])


@dataclass
class ImportReport:
    """What the import did to the file's proposals; every number is logged and kept as a metric."""

    read: int = 0
    imported: int = 0
    other_videos: int = 0  # proposals on videos outside this split (ignored)
    clipped: int = 0  # moved inside [0, video length]
    zero_length: int = 0  # end <= start after conversion (dropped: METHOD.md deliberate difference)
    videos_without_proposals: int = 0
    ignored_video_names: list[str] = field(default_factory=list)

    def metrics(self, prefix: str) -> dict[str, int]:
        return {f"{prefix}.{k}": v for k, v in self.__dict__.items() if isinstance(v, int)}


def import_proposals(results: pd.DataFrame, info: DatasetInfo, split: str, invalid: str = "clip",
                     source: str = "<results>") -> tuple[Proposals, ImportReport]:
    """Validate and convert a results table (video, label, start, end, score; seconds) for one split."""
    if invalid not in INVALID_POLICIES:
        raise ValueError(f"proposals.invalid must be one of {INVALID_POLICIES}, got {invalid!r}")
    report = ImportReport(read=len(results))
    videos = list(info.videos[split])
    position = {v: i for i, v in enumerate(videos)}

    in_split = results["video"].isin(position).to_numpy()
    report.other_videos = int((~in_split).sum())
    if report.other_videos:
        report.ignored_video_names = sorted(set(results.loc[~in_split, "video"]))
        log.warning("%s: ignoring %d proposals on %d video(s) outside the %s split, e.g. %s", source,
                    report.other_videos, len(report.ignored_video_names), split, report.ignored_video_names[:3])
    table = results[in_split]

    unknown = ~table["label"].isin(info.classes).to_numpy()
    if unknown.any():
        row = table[unknown].iloc[0]
        raise DataError(describe(source, row["video"], "label") + f": unknown class {row['label']!r} "
                        f"({int(unknown.sum())} proposal(s); the dataset's classes are {list(info.classes)})")

    start = units.round_proposal_snippets(units.seconds_to_snippets(table["start"].to_numpy(np.float64),
                                                                     info.feature_fps, info.snippet_frames))
    end = units.round_proposal_snippets(units.seconds_to_snippets(table["end"].to_numpy(np.float64),
                                                                   info.feature_fps, info.snippet_frames))
    video_index = table["video"].map(position).to_numpy(np.int64)

    lengths = info.lengths_in_snippets(videos)  # from the features, else from the durations
    if lengths is not None:
        length = lengths[video_index]
        outside = (start < 0) | (end > length)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            where = describe(source, videos[video_index[first]], "segment")
            if invalid == "refuse":
                raise DataError(where + f": [{start[first]}, {end[first]}] snippets lies outside the video "
                                f"[0, {length[first]:g}] ({int(outside.sum())} proposal(s); "
                                "set proposals.invalid: clip to clip them)")
            report.clipped = int(outside.sum())
            log.warning("%s: clipped %d proposals to their video's length (first: %s)", source,
                        report.clipped, where)
            start, end = np.clip(start, 0.0, length), np.clip(end, 0.0, length)
    else:
        negative = start < 0
        if negative.any():
            if invalid == "refuse":
                raise DataError(describe(source, videos[video_index[np.flatnonzero(negative)[0]]], "segment")
                                + ": starts before 0")
            report.clipped = int(negative.sum())
            start = np.maximum(start, 0.0)

    degenerate = end <= start
    report.zero_length = int(degenerate.sum())
    if report.zero_length:
        log.warning("%s: dropped %d proposals of zero (or negative) length in snippets", source, report.zero_length)
    keep = ~degenerate

    order = np.argsort(video_index[keep], kind="stable")  # group by video, file order inside each
    label = np.array([info.class_index(c) for c in table["label"]], dtype=np.int64)
    proposals = Proposals(
        videos=videos,
        video_index=video_index[keep][order],
        start=start[keep][order],
        end=end[keep][order],
        label=label[keep][order],
        score=table["score"].to_numpy(np.float64)[keep][order],
    )
    report.imported = len(proposals)
    report.videos_without_proposals = int((proposals.counts() == 0).sum())
    if report.videos_without_proposals:
        log.warning("%s: %d %s video(s) have no proposals", source, report.videos_without_proposals, split)
    log.info("%s: imported %d %s proposals (%.1f per video)", source, report.imported, split,
             report.imported / max(1, len(videos)))
    return proposals, report
