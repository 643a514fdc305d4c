"""LACP's proposal generation (LACP.md section 6), vectorised per video and class.

Per video: the eval-mode forward gives the video scores v (top-k means) and
the fused CAS Q; g = 1 - Q[:, C] is the class-agnostic actionness. For every
selected class c (v[c] >= class_threshold, else the argmax; on the training
split optionally the ground-truth classes):

1. Q[:, c] and g are upsampled `scale` times by linear interpolation at
   `np.arange(0, T, 1 / scale)`, *extrapolating* past snippet T-1 (the last
   scale-1 samples continue the last slope and may leave [0, 1]: quirk 16).
   `upsample` is scipy's `interp1d(kind="linear", fill_value="extrapolate")`
   written out: the same interval choice (`searchsorted`, clipped to the
   first and last interval) and the same operations, float32 differences of
   the samples, float64 results.
2. Candidates: for each CAS threshold, the upsampled class score is zeroed
   below it and the maximal runs of positive values are segments, scored on
   the *zeroed* sequence; for each agnostic threshold, the runs where g is at
   least the threshold (and positive) are segments, scored on the unzeroed
   class score. A threshold whose positive samples are only sample 0 gives
   nothing: the authors test the index array's truthiness (quirk 17,
   reproduced).
3. Score of a segment [s, e] (upsampled samples, L = e - s + 1): its mean
   inside minus the mean over [max(0, int(s - r L)), s) and
   (e, min(n - 1, int(e + r L))] (0 when both are empty), plus
   `video_score_weight * v[c]`. Means come from cumulative sums in float64,
   so every run of every threshold costs O(1).
4. Seconds: start = s * f, end = (e + 1) * f with the authors' factor
   f = (snippet_frames * T) / (scale * T * feature_fps), computed in their
   order (16 and 25 hard-coded there; the dataset's own units here).

The raw proposals TSPNet consumes skip the authors' last step, a hard NMS per
class (`nms`, IoU 0.7 with lengths `end - start + 1` in seconds, quirk 18),
which this project applies only where LACP's own mAP is reported.
Order of the rows: classes ascending, then the CAS thresholds, then the
agnostic ones, in the order given, segments in time order within each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COLUMNS = ["video", "label", "start", "end", "score"]


@dataclass(frozen=True)
class ProposalConfig:
    class_threshold: float = 0.5
    scale: int = 24
    cas_thresholds: tuple[float, ...] = tuple(np.arange(0.0, 0.25, 0.025).tolist())
    agnostic_thresholds: tuple[float, ...] = tuple(np.arange(0.5, 0.725, 0.025).tolist())
    outer_ratio: float = 0.25
    video_score_weight: float = 0.2


def upsample(values: np.ndarray, scale: int) -> np.ndarray:
    """[T, K] -> [n, K] float64 at positions `np.arange(0, T, 1 / scale)` (n = scale T), linear, extrapolated.

    A one-snippet video (where scipy refuses to interpolate) gives its value at every position.
    """
    values = np.asarray(values)
    length = values.shape[0]
    positions = np.arange(0, length, 1 / scale)
    if length == 1:
        return np.repeat(values.astype(np.float64), len(positions), axis=0)
    grid = np.arange(length)
    upper = np.clip(np.searchsorted(grid, positions), 1, length - 1)
    lower = upper - 1
    slope = (values[upper] - values[lower]) / (grid[upper] - grid[lower])[:, None]
    return slope * (positions - grid[lower])[:, None] + values[lower]


def select_classes(video_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Classes with a video score of at least `threshold`, else the single best one."""
    chosen = np.flatnonzero(video_scores >= threshold)
    return chosen if len(chosen) else np.array([int(np.argmax(video_scores))])


def runs(positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of True in each row of [R, n]: (row, first, last), rows in order, runs in time order.

    A row whose True samples are only sample 0 yields no run (quirk 17).
    """
    rows = positive.shape[0]
    edges = np.diff(np.concatenate([np.zeros((rows, 1), bool), positive, np.zeros((rows, 1), bool)], axis=1)
                    .astype(np.int8), axis=1)
    row_s, first = np.nonzero(edges == 1)
    row_e, stop = np.nonzero(edges == -1)
    only_zero = positive[:, 0] & ~positive[:, 1:].any(axis=1)
    keep = ~only_zero[row_s]
    return row_s[keep], first[keep], stop[keep] - 1


def outer_inner_scores(cumulative: np.ndarray, row: np.ndarray, first: np.ndarray, last: np.ndarray,
                       outer_ratio: float) -> np.ndarray:
    """Mean inside [first, last] minus the mean of the outer margins, of sequences given as [R, n+1] cumsums."""
    n = cumulative.shape[1] - 1
    length = last - first + 1
    inner = (cumulative[row, last + 1] - cumulative[row, first]) / length
    outer_start = np.maximum(0, np.trunc(first - outer_ratio * length).astype(np.int64))
    outer_end = np.minimum(n - 1, np.trunc(last + outer_ratio * length).astype(np.int64))
    outer_count = (first - outer_start) + np.maximum(0, outer_end - last)
    outer_sum = (cumulative[row, first] - cumulative[row, outer_start]
                 + cumulative[row, np.maximum(outer_end, last) + 1] - cumulative[row, last + 1])
    outer = np.where(outer_count > 0, outer_sum / np.maximum(outer_count, 1), 0.0)
    return inner - outer


def seconds_factor(length: int, scale: int, feature_fps: float, snippet_frames: int) -> float:
    """Seconds per upsampled sample, in the authors' order of operations."""
    return float(snippet_frames * length) / (scale * length * feature_fps)


def video_proposals(cas: np.ndarray, video_scores: np.ndarray, classes: np.ndarray, config: ProposalConfig,
                    feature_fps: float, snippet_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One video's raw proposals: (class, start, end in seconds, score), no NMS.

    `cas` is the fused CAS Q [T, C+1] (float32, as the network gives it),
    `video_scores` v [C], `classes` the selected classes.
    """
    classes = np.sort(np.asarray(classes, dtype=np.int64))
    length = cas.shape[0]
    upsampled = upsample(np.concatenate([cas[:, classes], 1 - cas[:, -1:]], axis=1), config.scale)
    class_scores, agnostic = upsampled[:, :-1].T, upsampled[:, -1]  # [K, n], [n]
    n = class_scores.shape[1]
    cas_levels = np.asarray(config.cas_thresholds, dtype=np.float64)
    agnostic_levels = np.asarray(config.agnostic_thresholds, dtype=np.float64)
    # Rows: (class k, CAS threshold i) for k, i, then (class k, agnostic threshold j) -- reordered below.
    zeroed = np.where(class_scores[:, None, :] < cas_levels[None, :, None], 0.0, class_scores[:, None, :])
    cas_positive = (zeroed > 0).reshape(-1, n)
    zeroed = zeroed.reshape(-1, n)
    agnostic_zeroed = np.where(agnostic[None, :] < agnostic_levels[:, None], 0.0, agnostic[None, :])
    agnostic_positive = np.broadcast_to(agnostic_zeroed > 0, (len(classes), len(agnostic_levels), n)).reshape(-1, n)
    cas_cumulative = np.concatenate([np.zeros((len(zeroed), 1)), np.cumsum(zeroed, axis=1)], axis=1)
    class_cumulative = np.concatenate([np.zeros((len(classes), 1)), np.cumsum(class_scores, axis=1)], axis=1)

    row_c, first_c, last_c = runs(cas_positive)
    score_c = outer_inner_scores(cas_cumulative, row_c, first_c, last_c, config.outer_ratio)
    row_a, first_a, last_a = runs(agnostic_positive)
    score_a = outer_inner_scores(class_cumulative, row_a // max(1, len(agnostic_levels)), first_a, last_a,
                                 config.outer_ratio)
    # Per class: its CAS rows, then its agnostic rows.
    per_class_c = row_c // max(1, len(cas_levels))
    per_class_a = row_a // max(1, len(agnostic_levels))
    key = np.concatenate([per_class_c * 2, per_class_a * 2 + 1])
    order = np.argsort(key, kind="stable")
    k = np.concatenate([per_class_c, per_class_a])[order]
    first = np.concatenate([first_c, first_a])[order]
    last = np.concatenate([last_c, last_a])[order]
    score = np.concatenate([score_c, score_a])[order]
    label = classes[k]
    score = score + config.video_score_weight * video_scores[label].astype(np.float64)
    factor = seconds_factor(length, config.scale, feature_fps, snippet_frames)
    return label, first * factor, (last + 1) * factor, score


def nms(start: np.ndarray, end: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by LACP's hard NMS (one class of one video): greedy by score, dropping IoU >= threshold.

    Lengths are `end - start + 1` (the authors' +1, here in seconds: quirk 18);
    the order is `score.argsort()[::-1]`, as theirs.
    """
    areas = end - start + 1
    order = score.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        inter = np.maximum(0.0, np.minimum(end[i], end[order[1:]]) - np.maximum(start[i], start[order[1:]]) + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_table(table: pd.DataFrame, iou_threshold: float) -> pd.DataFrame:
    """`nms` per video and class of a proposals table; kept rows in the authors' output order per group."""
    kept = []
    for _, group in table.groupby(["video", "label"], sort=False):
        index = group.index.to_numpy()
        keep = nms(group["start"].to_numpy(np.float64), group["end"].to_numpy(np.float64),
                   group["score"].to_numpy(np.float64), iou_threshold)
        kept.append(index[keep])
    if not kept:
        return table.iloc[:0]
    return table.loc[np.concatenate(kept)].reset_index(drop=True)


def predicted_classes(scores: np.ndarray, threshold: float) -> np.ndarray:
    """[V, C] 0/1 class decisions of every video (at least one class each)."""
    chosen = np.zeros(scores.shape, dtype=np.float32)
    for i, row in enumerate(scores):
        chosen[i, select_classes(row, threshold)] = 1.0
    return chosen


def propose(model, store, classes: tuple[str, ...], config: ProposalConfig, r_act: int, feature_fps: float,
            snippet_frames: int, chosen: np.ndarray | None = None, bf16: bool = False,
            show_progress: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Raw proposals (seconds, no NMS) of every video of a FeatureStore, and the video scores v [V, C].

    `chosen` [V, C] 0/1 replaces the class selection (rows without a 1 fall back to it).
    """
    from tspnet.console import progress
    from tspnet.lacp.model import predict

    offsets, lengths = store.offsets.numpy(), store.lengths.numpy()
    cas, scores = predict(model, store.features, offsets, lengths, r_act, bf16=bf16)
    parts = []
    for i, video in enumerate(progress(store.videos, "locate: LACP proposals", "video", show_progress)):
        selected = np.flatnonzero(chosen[i]) if chosen is not None else np.zeros(0, dtype=np.int64)
        if len(selected) == 0:
            selected = select_classes(scores[i], config.class_threshold)
        label, start, end, score = video_proposals(cas[i], scores[i], selected, config, feature_fps, snippet_frames)
        parts.append(pd.DataFrame({"video": video, "label": np.asarray(classes, dtype=object)[label],
                                   "start": start, "end": end, "score": score}))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return table[COLUMNS], scores
