"""Inference post-processing: from per-proposal outputs to detections (METHOD.md, "Inference").

Per test video: video-level class scores pick the classes to localize (step
2); each proposal gets an aligned confidence per class (step 3); per kept
class, Alignment-based Boundary Adaptation moves the boundaries of the
proposals it visits (step 4); Gaussian soft-NMS decays the scores per class
(step 5). On THUMOS14 the caller then drops detections that share a snippet
with an ambiguous segment (step 6) through `drop_ambiguous_mask`.

Everything reproduces the authors' per-video loops exactly -- the same
visiting order, the same tie-breaking, and the same floating-point operations
in the same order, so the results are bit-identical to a literal loop -- but
runs over a whole split at once:

- ABA visits exactly the proposals that greedy hard NMS ("suppress IoU >
  threshold", in `np.argsort(scores)[::-1]` order) keeps, and a visited
  proposal's new boundaries depend on the original proposals only. So the
  IoU matrix is computed once per video, the greedy pass only flips a
  boolean mask, and the weighted boundaries of all visits of the split are
  computed together, batched by group size (numpy's row sums over a [rows,
  k] array equal its sums of each k-vector, bit for bit).
- Soft-NMS is sequential, but many (video, class) groups can step together:
  each group is a row of a padded array laid out exactly as the authors'
  working array (select the first maximum, swap it with the front row, drop
  the front row), so their tie-breaking is reproduced literally. The decay
  factors of every pair of a group are computed once, up front.

Deliberate differences from the authors' code (each counted and logged):
- a zero-length proposal has IoU 0 with every other proposal (the authors'
  0/0 gives NaN and collapses it to [0, 0]); it forms a group of one and
  keeps its boundaries;
- a group whose scores are all zero (so `sum(s * u)` is 0) is weighted by
  its IoU shares `u` instead of dividing by zero.
Scores are float64 throughout (the authors' network outputs are float32).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import pandas as pd

from tspnet.files import DataError

log = logging.getLogger(__name__)

# Added to the attention sum in the video-level class scores, as the authors do.
VIDEO_SCORE_EPS = 1e-6
# Soft-NMS precomputes a [groups, width, width] table of decay factors; groups
# are stepped together in blocks of at most this many table cells (~64 MB).
_SOFT_NMS_MAX_CELLS = 8_000_000


@dataclass(frozen=True)
class AbaCounts:
    """How often ABA met the two cases this project handles differently from the authors."""

    zero_length: int = 0  # visited zero-length proposals, kept as they are
    zero_score_groups: int = 0  # groups with sum(s * u) == 0, weighted by u instead

    def __add__(self, other: "AbaCounts") -> "AbaCounts":
        return AbaCounts(
            self.zero_length + other.zero_length, self.zero_score_groups + other.zero_score_groups
        )


@dataclass(frozen=True)
class Detections:
    """Detections of a split as parallel arrays; `video` indexes a video list kept by the caller.

    `start` and `end` are in snippets.
    """

    video: np.ndarray  # int64
    label: np.ndarray  # int64, class index
    start: np.ndarray  # float64
    end: np.ndarray  # float64
    score: np.ndarray  # float64

    def __post_init__(self) -> None:
        dtypes = {"video": np.int64, "label": np.int64, "start": np.float64, "end": np.float64, "score": np.float64}
        for name, dtype in dtypes.items():
            value = np.asarray(getattr(self, name))
            if value.ndim != 1:
                raise ValueError(f"Detections.{name} must be 1-D, got shape {value.shape}")
            object.__setattr__(self, name, value.astype(dtype, copy=False))
        lengths = {name: len(getattr(self, name)) for name in dtypes}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Detections arrays differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.video)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(*(np.empty(0) for _ in fields(cls)))

    @classmethod
    def concat(cls, parts: Sequence["Detections"]) -> "Detections":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def select(self, mask: np.ndarray) -> "Detections":
        """The detections where `mask` (bool, one per detection) is True, in order."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(self),):
            raise ValueError(f"select needs a bool mask of shape ({len(self)},), got {mask.dtype} {mask.shape}")
        return Detections(*(getattr(self, f.name)[mask] for f in fields(self)))


# ---------------------------------------------------------------- validation


def _float_array(name: str, value, shape: tuple) -> np.ndarray:
    """`value` as float64 with the given shape (None = any length), finite, or a ValueError."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        raise ValueError(f"{name}: expected shape {tuple('N' if s is None else s for s in shape)}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinity")
    return array


def _int_array(name: str, value, length: int) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != (length,) or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"{name}: expected {length} integers, got {array.dtype} {array.shape}")
    return array.astype(np.int64, copy=False)


def _segments(name: str, value, length: int | None = None) -> np.ndarray:
    segments = _float_array(name, value, (length, 2))
    reversed_rows = np.flatnonzero(segments[:, 1] < segments[:, 0])
    if reversed_rows.size:
        row = int(reversed_rows[0])
        raise ValueError(f"{name}: end < start in {reversed_rows.size} rows, first row {row}: {segments[row].tolist()}")
    return segments


def _check_threshold(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value < high):
        raise ValueError(f"{name} must be in [{low}, {high}), got {value}")


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"soft-NMS sigma must be a positive number, got {sigma}")


# ------------------------------------------------------------- steps 2 and 3


def video_class_scores(probs: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """`v_c = sum_i p_ic a_i / (sum_i a_i + 1e-6)` for the C action classes (background dropped)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs: expected shape (M, C+1) with C >= 1, got {probs.shape}")
    attention = _float_array("attention", attention, (probs.shape[0],))
    weighted = (probs * attention[:, None]).sum(axis=0) / (attention.sum() + VIDEO_SCORE_EPS)
    return weighted[:-1]


def select_classes(video_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Classes with a video score >= threshold, ascending; if none, the single best class."""
    video_scores = np.asarray(video_scores, dtype=np.float64)
    if video_scores.ndim != 1 or video_scores.size == 0:
        raise ValueError(f"video_scores: expected a non-empty vector, got shape {video_scores.shape}")
    kept = np.flatnonzero(video_scores >= threshold)
    if kept.size == 0:
        kept = np.array([np.argmax(video_scores)])
    return kept.astype(np.int64)


def aligned_confidence(probs: np.ndarray, attention: np.ndarray, center: np.ndarray) -> np.ndarray:
    """`s_ic = p_ic * a_i * g_i`, [M, C+1]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs: expected shape (M, C+1), got {probs.shape}")
    attention = _float_array("attention", attention, (probs.shape[0],))
    center = _float_array("center", center, (probs.shape[0],))
    return probs * attention[:, None] * center[:, None]


# -------------------------------------------------------------------- step 4


def _plain_iou_matrix(segments: np.ndarray) -> np.ndarray:
    """IoU of every pair with lengths `end - start`; a zero union gives 0, except a proposal with itself (1).

    Same operations as the authors' per-target computation, so the values are bit-identical.
    """
    start, end = segments[:, 0], segments[:, 1]
    inter = np.maximum(np.minimum(end[:, None], end[None, :]) - np.maximum(start[:, None], start[None, :]), 0.0)
    length = end - start
    union = length[None, :] + length[:, None] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(iou, 1.0)  # only changes zero-length proposals: L / L is exactly 1 otherwise
    return iou


def _greedy_visits(above: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Proposals ABA visits: walk `argsort(scores)[::-1]`, skip locked ones, lock each visit's group."""
    locked = np.zeros(len(scores), dtype=bool)
    visited = []
    for i in np.argsort(scores)[::-1].tolist():
        if not locked[i]:
            visited.append(i)
            locked |= above[i]
    return np.array(visited, dtype=np.int64)


@dataclass(frozen=True)
class _AbaJob:
    """One ABA run: the proposals at rows [offset, offset + M) of the job arrays, and their IoU matrix."""

    offset: int
    iou: np.ndarray  # [M, M], shared by the jobs (classes) of one video
    above: np.ndarray  # iou > threshold


def _adapt_jobs(segments: np.ndarray, scores: np.ndarray, jobs: Sequence[_AbaJob]) -> tuple[np.ndarray, AbaCounts]:
    """ABA for many independent jobs laid out one after another in `segments` / `scores`."""
    targets, members, member_iou, sizes = [], [], [], []
    for job in jobs:
        m = len(job.iou)
        visited = _greedy_visits(job.above, scores[job.offset : job.offset + m])
        group_rows, group_cols = np.nonzero(job.above[visited])  # members ascending, as np.where gives
        targets.append(visited + job.offset)
        members.append(group_cols + job.offset)
        member_iou.append(job.iou[visited[group_rows], group_cols])
        sizes.append(np.bincount(group_rows, minlength=len(visited)))
    adapted = segments.copy()
    if not jobs:
        return adapted, AbaCounts()
    targets, members = np.concatenate(targets), np.concatenate(members)
    member_iou, sizes = np.concatenate(member_iou), np.concatenate(sizes)
    first = np.cumsum(sizes) - sizes
    zero_score_groups = 0
    # Visits with equal group size k are computed together as [rows, k] arrays:
    # their row sums are bit-identical to the authors' np.sum over each group.
    for k in np.unique(sizes).tolist():
        rows = np.flatnonzero(sizes == k)
        slots = first[rows][:, None] + np.arange(k)
        group_iou, group = member_iou[slots], members[slots]
        u = group_iou / group_iou.sum(axis=1, keepdims=True)
        su = scores[group] * u
        total = su.sum(axis=1, keepdims=True)
        zero = total == 0.0
        v = np.where(zero, u, su / np.where(zero, 1.0, total))
        adapted[targets[rows]] = (segments[group] * v[:, :, None]).sum(axis=1)
        zero_score_groups += int(zero.sum())
    zero_length = int(np.count_nonzero(segments[targets, 1] == segments[targets, 0]))
    return adapted, AbaCounts(zero_length, zero_score_groups)


def adapt_boundaries(
    segments: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, AbaCounts]:
    """Alignment-based Boundary Adaptation of one video's proposals for one class.

    Returns the new [M, 2] segments (unvisited proposals keep theirs) and the
    counts of the cases handled differently from the authors.
    """
    segments = _segments("segments", segments)
    scores = _float_array("scores", scores, (len(segments),))
    _check_threshold("ABA IoU threshold", iou_threshold, 0.0, 1.0)
    iou = _plain_iou_matrix(segments)
    return _adapt_jobs(segments, scores, [_AbaJob(0, iou, iou > iou_threshold)])


# -------------------------------------------------------------------- step 5


def _decay_table(start: np.ndarray, end: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-(iou^2) / sigma) of every pair of each row, [R, W, W]; 1 wherever a padding slot takes part.

    IoU with lengths `end - start + 1`, written with the authors' operations in their order.
    """
    area = end - start + 1
    inter = np.maximum(
        np.minimum(end[:, :, None], end[:, None, :]) - np.maximum(start[:, :, None], start[:, None, :]) + 1, 0.0
    )
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    decay = np.exp(-(iou * iou) / sigma)
    decay[~(valid[:, :, None] & valid[:, None, :])] = 1.0
    return decay


def _soft_nms_block(
    start: np.ndarray, end: np.ndarray, score: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS of groups stepped together; `sizes` descending. Returns [R, W] picked flat indices and scores."""
    rows, width = len(sizes), int(sizes[0])
    valid = np.arange(width) < sizes[:, None]
    flat = np.where(valid, offsets[:, None] + np.arange(width), 0)
    decay = _decay_table(start[flat], end[flat], valid, sigma).reshape(-1)
    # Row r is group r's working array, as the authors lay it out: `slot` holds
    # each entry's column in the group, `current` its decayed score; padding
    # scores -inf, so a group never selects padding while it has entries left.
    slot = np.broadcast_to(np.arange(width), (rows, width)).copy()
    current = np.where(valid, score[flat], -np.inf)
    table_row = np.arange(rows) * width * width
    picked = np.zeros((rows, width), dtype=np.int64)
    picked_score = np.zeros((rows, width))
    # Rows still stepping at step t: those with size > t, a prefix since sizes descend.
    active_counts = np.searchsorted(-sizes, -np.arange(width), side="left")
    for t, active in enumerate(active_counts.tolist()):
        r = np.arange(active)
        scores_now, slots_now = current[:active, t:], slot[:active, t:]
        best = scores_now.argmax(axis=1)  # first maximum, as np.argmax
        chosen = slots_now[r, best]
        picked[:active, t] = chosen
        picked_score[:active, t] = scores_now[r, best]
        # The front entry takes the chosen one's place; column t is then dropped.
        slots_now[r, best] = slots_now[:, 0]
        scores_now[r, best] = scores_now[:, 0]
        if t + 1 < width:
            scores_now[:, 1:] *= decay[(table_row[:active] + chosen * width)[:, None] + slots_now[:, 1:]]
    return offsets[:, None] + picked, picked_score


def _soft_nms_groups(
    start: np.ndarray, end: np.ndarray, score: np.ndarray, sizes: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS of consecutive groups (`sizes` rows each). Returns (order, decayed scores).

    `order` lists input rows, group after group in input order, each group in
    selection order; the scores are aligned with it.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes
    order = np.empty(len(score), dtype=np.int64)
    decayed = np.empty(len(score))
    # Groups of similar size step together (sizes within a factor of 2), so
    # little work is spent on padding; blocks are capped in table cells.
    by_size = np.argsort(-sizes, kind="stable")
    by_size = by_size[sizes[by_size] > 0]
    size_class = np.ceil(np.log2(sizes[by_size])).astype(np.int64)
    for cls in np.unique(size_class)[::-1].tolist():
        members = by_size[size_class == cls]
        per_block = max(1, _SOFT_NMS_MAX_CELLS // int(sizes[members[0]]) ** 2)
        for block in np.array_split(members, -(-len(members) // per_block)):
            picked, picked_score = _soft_nms_block(start, end, score, offsets[block], sizes[block], sigma)
            valid = np.arange(picked.shape[1]) < sizes[block][:, None]
            out = (offsets[block][:, None] + np.arange(picked.shape[1]))[valid]
            order[out] = picked[valid]
            decayed[out] = picked_score[valid]
    return order, decayed


def soft_nms(segments: np.ndarray, scores: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS of one group, no score threshold.

    Returns (order: input indices in selection order, the decayed scores in that order).
    """
    segments = _segments("segments", segments)
    scores = _float_array("scores", scores, (len(segments),))
    _check_sigma(sigma)
    return _soft_nms_groups(segments[:, 0], segments[:, 1], scores, np.array([len(scores)]), sigma)


# -------------------------------------------------------------- whole split


def _video_blocks(video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by video (input order kept within a video), each video, its first sorted row, its size."""
    rows = np.argsort(video_index, kind="stable")
    videos, first, counts = np.unique(video_index[rows], return_index=True, return_counts=True)
    return rows, videos, first, counts


def localize(
    video_index: np.ndarray,
    segments: np.ndarray,
    probs: np.ndarray,
    attention: np.ndarray,
    center: np.ndarray,
    *,
    class_threshold: float = 0.1,
    aba_iou: float = 0.4,
    nms_sigma: float = 0.3,
) -> Detections:
    """TSPNet inference of a split (METHOD.md, inference steps 2-5), every video at once.

    The proposals of a video are the rows with its `video_index`, in input
    order. Output: videos ascending, kept classes ascending, soft-NMS
    selection order -- the order of the authors' per-video loop.
    """
    segments = _segments("segments", segments)
    n = len(segments)
    video_index = _int_array("video_index", video_index, n)
    probs = _float_array("probs", probs, (n, None))
    if probs.shape[1] < 2:
        raise ValueError(f"probs: expected C+1 >= 2 columns, got {probs.shape[1]}")
    confidence = aligned_confidence(probs, attention, center)
    attention = np.asarray(attention, dtype=np.float64)
    _check_threshold("ABA IoU threshold", aba_iou, 0.0, 1.0)
    _check_sigma(nms_sigma)

    rows, videos, firsts, counts = _video_blocks(video_index)
    job_rows, job_video, job_label, job_sizes, jobs = [], [], [], [], []
    offset = 0
    for video, first, count in zip(videos.tolist(), firsts.tolist(), counts.tolist()):
        own = rows[first : first + count]
        classes = select_classes(video_class_scores(probs[own], attention[own]), class_threshold)
        iou = _plain_iou_matrix(segments[own])
        above = iou > aba_iou
        for label in classes.tolist():
            jobs.append(_AbaJob(offset, iou, above))
            job_rows.append(own)
            job_video.append(video)
            job_label.append(label)
            job_sizes.append(count)
            offset += count
    if not jobs:
        return Detections.empty()
    flat_rows = np.concatenate(job_rows)
    flat_label = np.repeat(job_label, job_sizes)
    scores = confidence[flat_rows, flat_label]
    adapted, counts_aba = _adapt_jobs(segments[flat_rows], scores, jobs)
    if counts_aba != AbaCounts():
        log.warning(
            "ABA: %d zero-length proposals kept their boundaries; %d groups with all-zero scores "
            "were weighted by IoU alone (the authors' code gives [0, 0] and NaN there)",
            counts_aba.zero_length,
            counts_aba.zero_score_groups,
        )
    order, decayed = _soft_nms_groups(adapted[:, 0], adapted[:, 1], scores, np.array(job_sizes), nms_sigma)
    return Detections(
        video=np.repeat(job_video, job_sizes),
        label=flat_label,
        start=adapted[order, 0],
        end=adapted[order, 1],
        score=decayed,
    )


def base_detections(
    video_index: np.ndarray,
    segments: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    nms_sigma: float = 0.3,
) -> Detections:
    """The base locator's own proposals, scored by their own confidence, soft-NMS per (video, label).

    Output: videos ascending, labels ascending, soft-NMS selection order.
    """
    segments = _segments("segments", segments)
    n = len(segments)
    video_index = _int_array("video_index", video_index, n)
    labels = _int_array("labels", labels, n)
    scores = _float_array("scores", scores, (n,))
    _check_sigma(nms_sigma)
    rows = np.lexsort((labels, video_index))  # stable: input order within a (video, label)
    video, label = video_index[rows], labels[rows]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (video[1:] != video[:-1]) | (label[1:] != label[:-1])
    sizes = np.diff(np.append(np.flatnonzero(new_group), n))
    order, decayed = _soft_nms_groups(segments[rows, 0], segments[rows, 1], scores[rows], sizes, nms_sigma)
    picked = rows[order]
    return Detections(video_index[picked], labels[picked], segments[picked, 0], segments[picked, 1], decayed)


# -------------------------------------------------------------------- step 6


def read_ambiguous(path: str | os.PathLike) -> pd.DataFrame:
    """Ambiguous segments, one `video start end` line each (seconds): DataFrame[video, start, end]."""
    videos, starts, ends = [], [], []
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}, line {number}"
        if len(parts) != 3:
            raise DataError(f"{where}: expected 'video start end', got {len(parts)} fields: {line!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError as exc:
            raise DataError(f"{where}: start and end must be numbers: {line!r}") from exc
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DataError(f"{where}: start and end must be finite: {line!r}")
        if start > end:
            raise DataError(f"{where}: start {start} > end {end}")
        videos.append(parts[0])
        starts.append(start)
        ends.append(end)
    return pd.DataFrame(
        {
            "video": pd.Series(videos, dtype=object),
            "start": np.array(starts, dtype=np.float64),
            "end": np.array(ends, dtype=np.float64),
        }
    )


def drop_ambiguous_mask(
    video: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    ambiguous: pd.DataFrame,
    snippets_per_second: float,
) -> np.ndarray:
    """True for each detection whose snippets `[int(start), int(end))` meet an ambiguous segment of its video.

    An ambiguous segment [a_s, a_e] in seconds covers snippets
    `[round(a_s * sps), round(a_e * sps))`, with Python's half-even `round`.
    Two integer ranges share a snippet when the larger start is below the
    smaller end.
    """
    video = np.asarray(video, dtype=str)
    n = len(video)
    start = _float_array("start", start, (n,))
    end = _float_array("end", end, (n,))
    if not (math.isfinite(snippets_per_second) and snippets_per_second > 0):
        raise ValueError(f"snippets_per_second must be positive, got {snippets_per_second}")
    drop = np.zeros(n, dtype=bool)
    if ambiguous.empty or n == 0:
        return drop
    by_video = ambiguous.sort_values("video", kind="stable")
    names, first, counts = np.unique(by_video["video"].to_numpy(dtype=str), return_index=True, return_counts=True)
    # np.round rounds half to even, as Python's round does.
    amb_low = np.round(by_video["start"].to_numpy(dtype=np.float64) * snippets_per_second)
    amb_high = np.round(by_video["end"].to_numpy(dtype=np.float64) * snippets_per_second)

    where = np.searchsorted(names, video).clip(max=len(names) - 1)
    matched = np.flatnonzero(names[where] == video)
    # One (detection, ambiguous segment) pair per segment of the detection's video.
    per_detection = counts[where[matched]]
    detection = np.repeat(matched, per_detection)
    within = np.arange(len(detection)) - np.repeat(np.cumsum(per_detection) - per_detection, per_detection)
    segment = np.repeat(first[where[matched]], per_detection) + within
    low = np.maximum(np.trunc(start[detection]), amb_low[segment])  # int() truncates toward zero
    high = np.minimum(np.trunc(end[detection]), amb_high[segment])
    drop[detection[low < high]] = True
    return drop
