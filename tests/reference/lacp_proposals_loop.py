"""Oracle for tspnet.lacp.proposals: the authors' proposal generation, one threshold and one segment at a time.

Structure of LACP's test.py / utils.py (LACP.md section 6): upsample every
selected class and the agnostic score, then for each CAS threshold a zeroed
copy, the positive indices of each class, grouped into consecutive runs
(`np.split` where the difference is not 1), each run scored with Python
ranges and `np.mean`; then the same for each agnostic threshold, scored on
the unzeroed class score. The upsampling is scipy's `interp1d(kind="linear",
fill_value="extrapolate")` (not installed here) one position at a time. The per-class NMS is the authors' greedy loop.
"""

from __future__ import annotations

import numpy as np


def upsample_loop(values: np.ndarray, scale: int) -> np.ndarray:
    """[T, K] -> [n, K], one position at a time: the line through the two snippets around it (searchsorted
    semantics: an integer position k uses the interval [k-1, k]); past T-1 the last interval's line."""
    length = values.shape[0]
    positions = np.arange(0, length, 1 / scale)
    out = np.zeros((len(positions), values.shape[1]))
    for k in range(values.shape[1]):
        column = values[:, k]
        for i, x in enumerate(positions):
            if length == 1:
                out[i, k] = column[0]
                continue
            upper = min(max(int(np.ceil(x)), 1), length - 1)
            slope = float(column[upper] - column[upper - 1])  # in the samples' own dtype, as scipy
            out[i, k] = slope * (x - (upper - 1)) + float(column[upper - 1])
    return out


def grouping(indices: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.where(np.diff(indices) != 1)[0] + 1)


def proposals_of_threshold(positive: list[np.ndarray], scored: np.ndarray, video_scores: np.ndarray,
                           classes: np.ndarray, factor: float, outer_ratio: float, weight: float) -> list[list]:
    """[class, score, start, end] of each run of positive indices (one array per selected class)."""
    out = []
    for i, indices in enumerate(positive):
        if not indices.any():  # the authors' truthiness test: nothing when the indices are only [0]
            continue
        for run in grouping(indices):
            inner = np.mean(scored[run, i])
            length = len(run)
            outer_start = max(0, int(run[0] - outer_ratio * length))
            outer_end = min(int(scored.shape[0] - 1), int(run[-1] + outer_ratio * length))
            outer_indices = list(range(outer_start, int(run[0]))) + list(range(int(run[-1] + 1), outer_end + 1))
            outer = np.mean(scored[outer_indices, i]) if outer_indices else 0
            out.append([int(classes[i]), inner - outer + weight * float(video_scores[classes[i]]),
                        run[0] * factor, (run[-1] + 1) * factor])
    return out


def video_proposals_loop(cas: np.ndarray, video_scores: np.ndarray, classes: np.ndarray, config,
                         feature_fps: float, snippet_frames: int) -> list[list]:
    """Rows [class, score, start, end], grouped by class (ascending), CAS thresholds then agnostic ones."""
    classes = np.sort(np.asarray(classes))
    length = cas.shape[0]
    factor = float(snippet_frames * length) / (config.scale * length * feature_fps)
    class_up = upsample_loop(cas[:, classes], config.scale)
    agnostic_up = upsample_loop(np.repeat(1 - cas[:, -1:], len(classes), axis=1), config.scale)
    per_class: dict[int, list] = {int(c): [] for c in classes}
    for threshold in config.cas_thresholds:
        zeroed = class_up.copy()
        zeroed[zeroed < threshold] = 0
        positive = [np.where(zeroed[:, i] > 0)[0] for i in range(len(classes))]
        for row in proposals_of_threshold(positive, zeroed, video_scores, classes, factor, config.outer_ratio,
                                          config.video_score_weight):
            per_class[row[0]].append(row)
    for threshold in config.agnostic_thresholds:
        zeroed = agnostic_up.copy()
        zeroed[zeroed < threshold] = 0
        positive = [np.where(zeroed[:, i] > 0)[0] for i in range(len(classes))]
        for row in proposals_of_threshold(positive, class_up, video_scores, classes, factor, config.outer_ratio,
                                          config.video_score_weight):
            per_class[row[0]].append(row)
    return [row for c in classes for row in per_class[int(c)]]


def nms_loop(rows: list[list], threshold: float) -> list[list]:
    """The authors' greedy NMS over [class, score, start, end] rows of one class."""
    proposals = np.array(rows)
    x1, x2, scores = proposals[:, 2], proposals[:, 3], proposals[:, 1]
    areas = x2 - x1 + 1
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(proposals[i].tolist())
        xx1 = np.maximum(x1[i], x1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(iou < threshold)[0] + 1]
    return keep
