"""Inference post-processing: from per-proposal outputs to detections (METHOD.md, "Inference").

Per test video: video-level class scores pick the classes to localize (step
2); each proposal gets an aligned confidence per class (step 3); per kept
class, Alignment-based Boundary Adaptation moves the boundaries of the
proposals it visits (step 4); Gaussian soft-NMS decays the scores per class
(step 5). On THUMOS14 the caller then drops detections that share a snippet
with an ambiguous segment (step 6) through `drop_ambiguous_mask`.

Everything reproduces the authors' per-video loops exactly -- the same
visiting order, the same tie-breaking, the same floating-point operations in
the same order, so the results are bit-identical to a literal loop -- but
runs over a whole split at once:

- Both steps act only within overlap components: proposals of one (video,
  class) whose intersection is 0 never act on each other (ABA never groups
  them; their soft-NMS factor exp(-0) is exactly 1). Sorted by start, a
  component is a run of proposals. Components step in lockstep, many per
  numpy call, in blocks of similar size; memory stays linear in the input.
- ABA visits exactly what greedy hard NMS ("suppress IoU > threshold", in
  `np.argsort(scores)[::-1]` order) keeps, and a visited proposal's new
  boundaries depend on the original proposals only: they are computed after
  the walk for every visit at once, batched by group size (numpy's row sums
  of a [rows, k] array equal its sums of each k-vector, bit for bit).
- Soft-NMS steps each component on the authors' working array (select the
  first maximum, swap it with the front, drop the front). A group's order is
  the merge of its components' orders, accepted only if no selection ever
  had a tied rival; a group with a tie is stepped again whole, which
  reproduces the authors' tie-breaking literally.

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

from tspnet.files import DataError, flat

log = logging.getLogger(__name__)

# Added to the attention sum in the video-level class scores, as the authors do.
VIDEO_SCORE_EPS = 1e-6


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


def _probs(value, length: int | None = None) -> np.ndarray:
    probs = _float_array("probs", value, (length, None))
    if probs.shape[1] < 2:
        raise ValueError(f"probs: expected C+1 >= 2 columns (C action classes and background), got {probs.shape[1]}")
    return probs


def _check_threshold(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value < high):
        raise ValueError(f"{name} must be in [{low}, {high}), got {value}")


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"soft-NMS sigma must be a positive number, got {sigma}")


# ------------------------------------------------------------- steps 2 and 3


def video_class_scores(probs: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """`v_c = sum_i p_ic a_i / (sum_i a_i + 1e-6)` for the C action classes (background dropped)."""
    probs = _probs(probs)
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
    probs = _probs(probs)
    attention = _float_array("attention", attention, (probs.shape[0],))
    center = _float_array("center", center, (probs.shape[0],))
    return probs * attention[:, None] * center[:, None]


# ------------------------------------------- groups, overlap components, blocks


def _group_ids(sizes: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def _running_max(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum of `values` within each group; `group` ids non-decreasing.

    Exact: the running maximum is taken over integer keys (group, rank of the value).
    """
    distinct, rank = np.unique(values, return_inverse=True)
    key = group * len(distinct) + rank
    return distinct[np.maximum.accumulate(key) - group * len(distinct)]


def _overlap_components(start: np.ndarray, end: np.ndarray, group: np.ndarray, plus_one: bool) -> np.ndarray:
    """Component of each segment in the graph "intersection > 0" of its group; any ids.

    Segments in different components have IoU exactly 0, so they never act on
    each other. Lengths are `end - start` (ABA), where a zero-length segment
    overlaps nothing, or `end - start + 1` (soft-NMS). Sorted by start, the
    other segments form runs: a segment joins the run before it when it
    overlaps the run's furthest-reaching segment, tested with the authors'
    expression for that pair.
    """
    n = len(start)
    isolated = (end == start) if not plus_one else np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~isolated)
    order = rest[np.lexsort((start[rest], group[rest]))]
    first, last, own = start[order], end[order], group[order]
    inter = np.minimum(_running_max(last, own)[:-1], last[1:]) - first[1:]
    if plus_one:
        inter = inter + 1
    new_run = np.ones(len(order), dtype=bool)
    new_run[1:] = (own[1:] != own[:-1]) | ~(inter > 0)
    component = np.empty(n, dtype=np.int64)
    component[order] = np.cumsum(new_run) - 1
    component[isolated] = len(order) + np.arange(np.count_nonzero(isolated))
    return component


def _rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elements grouped by `key`, ascending within a row: (elements in row order, each row's first position, size)."""
    elements = np.argsort(key, kind="stable")
    _, first, sizes = np.unique(key[elements], return_index=True, return_counts=True)
    return elements, first, sizes


def _blocks(sizes: np.ndarray) -> list[np.ndarray]:
    """Row ids in blocks that step together: sizes within a factor of 2 (little padding), descending in a block."""
    by_size = np.argsort(-sizes, kind="stable")
    by_size = by_size[sizes[by_size] > 0]
    size_class = np.ceil(np.log2(sizes[by_size])).astype(np.int64)
    return [by_size[size_class == cls] for cls in np.unique(size_class)[::-1].tolist()]


def _padded(elements: np.ndarray, first: np.ndarray, sizes: np.ndarray, block: np.ndarray):
    """[R, W] elements of the block's rows (padding repeats element 0) and the mask of real entries."""
    columns = np.arange(sizes[block[0]])
    valid = columns < sizes[block][:, None]
    return elements[np.where(valid, first[block][:, None] + columns, 0)], valid


def _active_counts(valid: np.ndarray) -> list[int]:
    """Rows still stepping at each step t (size > t): a prefix, since sizes descend within a block."""
    sizes = valid.sum(axis=1)
    return np.searchsorted(-sizes, -np.arange(valid.shape[1]), side="left").tolist()


# -------------------------------------------------------------------- step 4


def _aba_rows(start, end, rank, members, valid, iou_threshold):
    """The greedy ABA walk of each row (a component), all rows in lockstep.

    Returns the visited proposals, their groups' members (concatenated,
    ascending), the members' IoU with their visited proposal, and group sizes.
    """
    lo, hi = start[members], end[members]
    length = hi - lo
    walk = np.argsort(np.where(valid, rank[members], np.iinfo(np.int64).max), axis=1)
    locked = np.zeros(members.shape, dtype=bool)
    targets, group_members, group_iou, group_sizes = [], [], [], []
    for t, active in enumerate(_active_counts(valid)):
        row, col = np.arange(active), walk[:active, t]
        free = ~locked[row, col]
        row, col = row[free], col[free]
        # IoU of each visited proposal with its row, with the authors' operations.
        visit_lo, visit_hi = lo[row, col][:, None], hi[row, col][:, None]
        inter = np.maximum(np.minimum(visit_hi, hi[row]) - np.maximum(visit_lo, lo[row]), 0.0)
        union = length[row] + (visit_hi - visit_lo) - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        iou[np.arange(len(row)), col] = 1.0  # only changes zero-length proposals: L / L is exactly 1 otherwise
        group = (iou > iou_threshold) & valid[row]
        locked[row] |= group
        member_row, member_col = np.nonzero(group)
        targets.append(members[row, col])
        group_members.append(members[row[member_row], member_col])
        group_iou.append(iou[member_row, member_col])
        group_sizes.append(group.sum(axis=1))
    return tuple(np.concatenate(part) for part in (targets, group_members, group_iou, group_sizes))


def _adapt_jobs(segments: np.ndarray, scores: np.ndarray, sizes: np.ndarray, iou_threshold: float):
    """ABA of consecutive independent jobs (`sizes` rows each). Returns (new segments, AbaCounts)."""
    start, end = segments[:, 0], segments[:, 1]
    offsets = np.cumsum(sizes) - sizes
    rank = np.empty(len(scores), dtype=np.int64)  # position in the job's visiting order
    for offset, size in zip(offsets.tolist(), sizes.tolist()):
        rank[offset + np.argsort(scores[offset : offset + size])[::-1]] = np.arange(size)
    # Locking and weights stay within a component of overlapping proposals.
    elements, first, component_sizes = _rows(_overlap_components(start, end, _group_ids(sizes), plus_one=False))
    parts = [
        _aba_rows(start, end, rank, *_padded(elements, first, component_sizes, block), iou_threshold)
        for block in _blocks(component_sizes)
    ]
    adapted = segments.copy()
    if not parts:
        return adapted, AbaCounts()
    targets, members, member_iou, group_sizes = (np.concatenate(p) for p in zip(*parts))
    group_first = np.cumsum(group_sizes) - group_sizes
    zero_score_groups = 0
    # Visits with equal group size k are computed together as [rows, k] arrays:
    # their row sums are bit-identical to the authors' np.sum over each group.
    for k in np.unique(group_sizes).tolist():
        rows = np.flatnonzero(group_sizes == k)
        slots = group_first[rows][:, None] + np.arange(k)
        group_iou, group = member_iou[slots], members[slots]
        u = group_iou / group_iou.sum(axis=1, keepdims=True)
        su = scores[group] * u
        total = su.sum(axis=1, keepdims=True)
        zero = total == 0.0
        v = np.where(zero, u, su / np.where(zero, 1.0, total))
        adapted[targets[rows]] = (segments[group] * v[:, :, None]).sum(axis=1)
        zero_score_groups += int(zero.sum())
    zero_length = int(np.count_nonzero(end[targets] == start[targets]))
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
    return _adapt_jobs(segments, scores, np.array([len(scores)]), iou_threshold)


# -------------------------------------------------------------------- step 5


def _soft_nms_rows(start, end, score, members, valid, sigma):
    """Soft-NMS of each row, all rows in lockstep, each on the authors' working array.

    A row holds its entries in order; each step selects the first maximum,
    swaps it with the front entry and drops the front, so ties break exactly
    as the authors' row swapping breaks them, and decays the rest with the
    authors' operations in their order (IoU with lengths `end - start + 1`).
    Returns [R, W] selected elements and their scores, and whether a row ever
    had a tied maximum.
    """
    rows, width = members.shape
    # Padding sits well past every segment: its IoU with any is 0, so its
    # factor is exactly 1 and its -inf score never turns into NaN.
    far = end.max() + abs(end.max()) + 2 if len(end) else 0.0
    entry = np.where(valid, members, -1)
    lo = np.where(valid, start[members], far)
    hi = np.where(valid, end[members], far)
    area = hi - lo + 1
    current = np.where(valid, score[members], -np.inf)  # padding is never the maximum
    picked = np.zeros((rows, width), dtype=np.int64)
    picked_score = np.zeros((rows, width))
    tied = np.zeros(rows, dtype=bool)
    for t, active in enumerate(_active_counts(valid)):
        row = np.arange(active)
        now = [array[:active, t:] for array in (current, entry, lo, hi, area)]
        best = now[0].argmax(axis=1)  # first maximum, as np.argmax
        top, chosen, top_lo, top_hi, top_area = (array[row, best] for array in now)
        picked[:active, t], picked_score[:active, t] = chosen, top
        tied[:active] |= (now[0] == top[:, None]).sum(axis=1) > 1
        for array in now:  # the front entry takes the chosen one's place; column t is dropped
            array[row, best] = array[:, 0]
        if t + 1 < width:
            scores_now, _, lo_now, hi_now, area_now = (array[:, 1:] for array in now)
            inter = np.maximum(np.minimum(top_hi[:, None], hi_now) - np.maximum(top_lo[:, None], lo_now) + 1, 0.0)
            iou = inter / (top_area[:, None] + area_now - inter)
            scores_now *= np.exp(-(iou * iou) / sigma)
    return picked, picked_score, tied


def _soft_nms_groups(
    start: np.ndarray, end: np.ndarray, score: np.ndarray, sizes: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS of consecutive groups (`sizes` rows each). Returns (order, decayed scores).

    `order` lists input rows, group after group, each group in selection
    order; the scores are aligned with it.

    Overlap components of a group are stepped separately: nothing outside a
    component changes its scores (their factor is exactly 1). A group's
    selection order is then an interleaving of its components' orders; it is
    merged by the running minimum of each component's selected scores (a
    component's next selection waits behind its earlier, lower ones) and then
    verified: if every selection was the strict maximum of its component and
    of the other components' next selections, it is the authors' order.
    Groups that fail (ties at the top) are stepped again as one row each.
    """
    n = len(score)
    group = _group_ids(sizes)
    component = _overlap_components(start, end, group, plus_one=True)
    elements, first, component_sizes = _rows(component)
    picked = np.empty(n, dtype=np.int64)
    picked_score = np.empty(n)
    running_min = np.empty(n)
    tied = np.zeros(len(component_sizes), dtype=bool)
    for block in _blocks(component_sizes):
        members, valid = _padded(elements, first, component_sizes, block)
        chosen, chosen_score, tied[block] = _soft_nms_rows(start, end, score, members, valid, sigma)
        slots = (first[block][:, None] + np.arange(members.shape[1]))[valid]
        picked[slots] = chosen[valid]
        picked_score[slots] = chosen_score[valid]
        running_min[slots] = np.minimum.accumulate(chosen_score, axis=1)[valid]
    merged = np.lexsort((np.arange(n), -running_min, group[picked]))
    order, decayed = picked[merged], picked_score[merged]
    redo = np.zeros(len(sizes), dtype=bool)
    redo[group[elements[first[tied]]]] = True
    redo[group[order[~_strict_heads(order, decayed, group, component)]]] = True
    if redo.any():
        offsets = np.cumsum(sizes) - sizes
        for block in _blocks(np.where(redo, sizes, 0)):
            members, valid = _padded(np.arange(n), offsets, sizes, block)
            chosen, chosen_score, _ = _soft_nms_rows(start, end, score, members, valid, sigma)
            slots = (offsets[block][:, None] + np.arange(members.shape[1]))[valid]
            order[slots] = chosen[valid]
            decayed[slots] = chosen_score[valid]
    return order, decayed


def _strict_heads(order: np.ndarray, decayed: np.ndarray, group: np.ndarray, component: np.ndarray) -> np.ndarray:
    """Per position of the merged `order`: did every selection made while it waited score strictly higher?

    A component's next selection waits from the step after its previous
    selection (or from its group's first step) until its own step. If each
    selection beats every waiting one, each was the unique maximum of the
    whole group, so the authors' loop makes the same choices.
    """
    step = np.empty(len(order), dtype=np.int64)
    step[order] = np.arange(len(order))
    by_component = np.lexsort((step, component))  # each component's elements in selection order
    own = step[by_component]
    follows = np.zeros(len(order), dtype=bool)
    follows[1:] = component[by_component][1:] == component[by_component][:-1]
    group_start = np.searchsorted(group[order], group[by_component], side="left")
    waiting_from = np.where(follows, np.concatenate([[0], own[:-1]]) + 1, group_start)
    strict = np.empty(len(order), dtype=bool)
    strict[own] = _range_min(decayed, waiting_from, own) > decayed[own]
    return strict


def _range_min(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """min(values[low:high]) for each pair (+inf where empty), from a sparse table of power-of-two spans."""
    table = [values]
    while 2 ** len(table) <= len(values):
        span = 2 ** (len(table) - 1)
        table.append(np.minimum(table[-1][:-span], table[-1][span:]))
    length = high - low
    out = np.full(len(low), np.inf)
    has = length > 0
    level = np.floor(np.log2(np.where(has, length, 1))).astype(np.int64)
    for k in np.unique(level[has]).tolist():
        rows = np.flatnonzero(has & (level == k))
        out[rows] = np.minimum(table[k][low[rows]], table[k][high[rows] - 2**k])
    return out


def soft_nms(segments: np.ndarray, scores: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS of one group, no score threshold.

    Returns (order: input indices in selection order, the decayed scores in that order).
    """
    segments = _segments("segments", segments)
    scores = _float_array("scores", scores, (len(segments),))
    _check_sigma(sigma)
    return _soft_nms_groups(segments[:, 0], segments[:, 1], scores, np.array([len(scores)]), sigma)


# -------------------------------------------------------------- whole split


def _rows_by_video(video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    probs = _probs(probs, n)
    confidence = aligned_confidence(probs, attention, center)
    attention = np.asarray(attention, dtype=np.float64)
    _check_threshold("ABA IoU threshold", aba_iou, 0.0, 1.0)
    _check_sigma(nms_sigma)

    # One job per (video, kept class): the video's proposals, scored for that class.
    rows, videos, firsts, counts = _rows_by_video(video_index)
    job_rows, job_video, job_label, job_sizes = [], [], [], []
    for video, first, count in zip(videos.tolist(), firsts.tolist(), counts.tolist()):
        own = rows[first : first + count]
        for label in select_classes(video_class_scores(probs[own], attention[own]), class_threshold).tolist():
            job_rows.append(own)
            job_video.append(video)
            job_label.append(label)
            job_sizes.append(count)
    if not job_rows:
        return Detections.empty()
    flat_rows = np.concatenate(job_rows)
    job_sizes = np.array(job_sizes)
    flat_label = np.repeat(job_label, job_sizes)
    scores = confidence[flat_rows, flat_label]
    adapted, aba_counts = _adapt_jobs(segments[flat_rows], scores, job_sizes, aba_iou)
    if aba_counts != AbaCounts():
        log.warning(
            "ABA: %d zero-length proposals kept their boundaries; %d groups with all-zero scores "
            "were weighted by IoU alone (the authors' code gives [0, 0] and NaN there)",
            aba_counts.zero_length,
            aba_counts.zero_score_groups,
        )
    order, decayed = _soft_nms_groups(adapted[:, 0], adapted[:, 1], scores, job_sizes, nms_sigma)
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
        raise DataError(f"{path}: cannot read ({flat(exc)})") from exc
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
