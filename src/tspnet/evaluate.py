"""Detection mAP: the official ActivityNet protocol, in seconds (METHOD.md, "Evaluation protocol").

Per class, predictions are visited in the order `scores.argsort()[::-1]` (the
very call the official evaluator makes, so score ties break as it breaks them).
At each tIoU threshold independently, a prediction is a true positive when the
ground truth of its video and class with the highest tIoU that is not yet
matched has tIoU >= threshold; ground-truth ties are ranked by
`tiou.argsort()[::-1]` over the video's instances in file order. AP is the
VOC-2011 interpolated area under the precision/recall curve; mAP is the mean
over the classes of the evaluated ground truth. Every number is reported in
percent.

Deliberate choices of this project:
- predictions on videos outside the evaluated subset, and predictions whose
  label is no ground-truth class, are ignored (counted, with a warning);
- two zero-length segments at the same instant have tIoU 0 (the official
  code divides 0 by 0 there and, through the NaN, matches them at every
  threshold).

The matcher is vectorised per (class, video) block; only predictions with two
or more candidate ground truths at a threshold need a sequential step, and
that loop touches nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The file format lives in tspnet.activitynet (stages that only read or write results import
# that, not the evaluation); re-exported here for the callers that evaluate.
from tspnet.activitynet import (  # noqa: F401
    GROUND_TRUTH_COLUMNS, RESULT_COLUMNS, GroundTruth, load_ground_truth, load_results, write_results,
)

log = logging.getLogger(__name__)

DEFAULT_TIOU_THRESHOLDS = np.round(np.arange(1, 8) * 0.1, 1)
# (name, lowest, highest): the averages the paper reports, over a 0.1 grid.
AVERAGE_RANGES = (("avg_0.1_0.5", 0.1, 0.5), ("avg_0.3_0.7", 0.3, 0.7), ("avg_0.1_0.7", 0.1, 0.7))
IGNORED_REASONS = {
    "video_outside_subset": "on videos outside the subset",
    "label_not_in_ground_truth": "with a label that is no ground-truth class",
}


@dataclass(frozen=True)
class Evaluation:
    """AP per tIoU threshold and class, in percent."""

    tiou_thresholds: np.ndarray  # [n_tiou]
    classes: list[str]  # sorted
    ap: np.ndarray  # [n_tiou, n_classes], percent
    num_ground_truth: np.ndarray  # [n_classes]
    num_predictions: int  # predictions evaluated (after the ignored ones)
    ignored_predictions: dict[str, int] = field(default_factory=dict)

    def mAP(self) -> np.ndarray:
        """Mean AP over classes at each threshold, in percent: [n_tiou]."""
        return self.ap.mean(axis=1)

    def summary(self) -> dict[str, float]:
        """`map@<t>` for every threshold, then the averages whose 0.1-grid range the thresholds cover."""
        maps = self.mAP()
        out = {f"map@{t:g}": float(m) for t, m in zip(self.tiou_thresholds, maps)}
        for name, low, high in AVERAGE_RANGES:
            grid = np.round(np.arange(round(low * 10), round(high * 10) + 1) * 0.1, 1)
            hits = [np.flatnonzero(np.isclose(self.tiou_thresholds, t)) for t in grid]
            if all(len(h) for h in hits):
                out[name] = float(np.mean([maps[h[0]] for h in hits]))
        return out

    def per_class(self) -> pd.DataFrame:
        """Long table: one row per (class, tIoU threshold) with its AP in percent."""
        n_tiou, n_classes = self.ap.shape
        return pd.DataFrame(
            {
                "class": np.tile(np.asarray(self.classes, dtype=object), n_tiou),
                "tiou": np.repeat(self.tiou_thresholds, n_classes),
                "ap": self.ap.ravel(),
            }
        )


# ----------------------------------------------------------------------------- evaluation


def evaluate_detections(
    ground_truth: GroundTruth,
    predictions: pd.DataFrame,
    tiou_thresholds: np.ndarray | list[float] = DEFAULT_TIOU_THRESHOLDS,
) -> Evaluation:
    """AP per class and tIoU threshold of `predictions` (load_results columns) against `ground_truth`."""
    thresholds = _check_thresholds(tiou_thresholds)
    classes = ground_truth.classes
    if not classes:
        raise ValueError("the ground truth has no instance: there is no class to evaluate")
    kept, ignored = _evaluated_predictions(predictions, ground_truth, classes)

    video_index = pd.Index(ground_truth.videos)
    gt = ground_truth.instances
    gt_video = video_index.get_indexer(gt["video"])
    gt_segments = gt[["start", "end"]].to_numpy(dtype=np.float64)
    pred_video = video_index.get_indexer(kept["video"])
    pred_segments = kept[["start", "end"]].to_numpy(dtype=np.float64)
    pred_scores = kept["score"].to_numpy(dtype=np.float64)
    gt_rows = gt.groupby("label", sort=False).indices
    pred_rows = kept.groupby("label", sort=False).indices

    ap = np.zeros((len(thresholds), len(classes)))
    num_ground_truth = np.zeros(len(classes), dtype=np.int64)
    for k, name in enumerate(classes):
        g = gt_rows[name]
        num_ground_truth[k] = len(g)
        p = pred_rows.get(name)
        if p is None:
            continue  # no prediction of this class: AP 0
        ap[:, k] = _class_average_precision(
            gt_video[g], gt_segments[g], pred_video[p], pred_segments[p], pred_scores[p], thresholds
        )
    return Evaluation(thresholds, classes, ap * 100.0, num_ground_truth, len(kept), ignored)


def _check_thresholds(tiou_thresholds: np.ndarray | list[float]) -> np.ndarray:
    thresholds = np.array(tiou_thresholds, dtype=np.float64)  # a copy: the result owns it
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError(f"tiou_thresholds must be a non-empty 1-d list, got {tiou_thresholds!r}")
    if not (np.all(thresholds > 0) and np.all(thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must lie in (0, 1], got {thresholds.tolist()}")
    return thresholds


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(str(n) for n in names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _evaluated_predictions(
    predictions: pd.DataFrame, ground_truth: GroundTruth, classes: list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop (and count) predictions on videos outside the subset, then those of unknown classes."""
    missing = [c for c in RESULT_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    in_subset = predictions["video"].isin(ground_truth.videos).to_numpy()
    known_class = predictions["label"].isin(classes).to_numpy()
    ignored = {
        "video_outside_subset": int((~in_subset).sum()),
        "label_not_in_ground_truth": int((in_subset & ~known_class).sum()),
    }
    if ignored["video_outside_subset"]:
        outside = sorted(predictions.loc[~in_subset, "video"].unique())
        log.warning("ignoring %d predictions on %d videos outside the evaluated subset: %s",
                    ignored["video_outside_subset"], len(outside), _some(outside))
    if ignored["label_not_in_ground_truth"]:
        labels = predictions.loc[in_subset & ~known_class, "label"].value_counts()
        log.warning("ignoring %d predictions whose label is not a ground-truth class: %s (the ground truth has %s)",
                    ignored["label_not_in_ground_truth"], _some([f"{k!r} ({n})" for k, n in labels.items()]),
                    _some(classes))
    return predictions.loc[in_subset & known_class].reset_index(drop=True), ignored


def _class_average_precision(
    gt_video: np.ndarray,
    gt_segments: np.ndarray,
    pred_video: np.ndarray,
    pred_segments: np.ndarray,
    pred_scores: np.ndarray,
    thresholds: np.ndarray,
) -> np.ndarray:
    """AP (fraction) at each threshold for one class; predictions in their input order."""
    order = pred_scores.argsort()[::-1]  # the official evaluator's exact call: same tie order
    candidates = _rank_candidates(gt_video, gt_segments, pred_video[order], pred_segments[order], thresholds)
    true_positive = np.stack([_match(candidates, len(gt_video), t, k) for k, t in enumerate(thresholds)])
    return _interpolated_average_precision(true_positive, len(gt_video))


@dataclass
class _Candidates:
    """For each ranked prediction: its best ground truth and how many reach each threshold.

    Predictions with several candidates at the lowest threshold also keep their
    ranked candidate list (ground-truth index, tIoU) for the sequential step.
    """

    best: np.ndarray  # [n_pred] index of the first-ranked ground truth (-1: none in the video)
    count: np.ndarray  # [n_tiou, n_pred] ground truths with tIoU >= threshold
    ranked: dict[int, tuple[list[int], list[float]]]


def _rank_candidates(
    gt_video: np.ndarray, gt_segments: np.ndarray, pred_video: np.ndarray, pred_segments: np.ndarray,
    thresholds: np.ndarray,
) -> _Candidates:
    n_pred = len(pred_video)
    best = np.full(n_pred, -1, dtype=np.int64)
    count = np.zeros((len(thresholds), n_pred), dtype=np.int64)
    ranked: dict[int, tuple[list[int], list[float]]] = {}
    lowest = thresholds.min()
    # Stable sorts by video keep ranks ascending and ground truth in file order within each block.
    gt_by_video = np.argsort(gt_video, kind="stable")
    pred_by_video = np.argsort(pred_video, kind="stable")
    videos, pred_starts = np.unique(pred_video[pred_by_video], return_index=True)
    pred_ends = np.append(pred_starts[1:], n_pred)
    gt_sorted_video = gt_video[gt_by_video]
    gt_starts = np.searchsorted(gt_sorted_video, videos, side="left")
    gt_ends = np.searchsorted(gt_sorted_video, videos, side="right")
    for p0, p1, g0, g1 in zip(pred_starts, pred_ends, gt_starts, gt_ends):
        if g0 == g1:
            continue  # no ground truth of this class in the video: all false positives
        rows = pred_by_video[p0:p1]
        cols = gt_by_video[g0:g1]
        tiou = _tiou_matrix(pred_segments[rows], gt_segments[cols])
        # Row by row this is the official `tiou.argsort()[::-1]` (same values, same length).
        ranking = tiou.argsort(axis=1)[:, ::-1]
        ranked_tiou = np.take_along_axis(tiou, ranking, axis=1)
        ranked_gt = cols[ranking]
        best[rows] = ranked_gt[:, 0]
        for k, threshold in enumerate(thresholds):
            count[k, rows] = (ranked_tiou >= threshold).sum(axis=1)
        n_lowest = (ranked_tiou >= lowest).sum(axis=1)
        for i in np.flatnonzero(n_lowest >= 2).tolist():
            n = n_lowest[i]
            ranked[int(rows[i])] = (ranked_gt[i, :n].tolist(), ranked_tiou[i, :n].tolist())
    return _Candidates(best, count, ranked)


def _tiou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[n_pred, n_gt] intersection over union, with the official evaluator's operation order."""
    inter = (np.minimum(pred[:, None, 1], gt[None, :, 1]) - np.maximum(pred[:, None, 0], gt[None, :, 0])).clip(0)
    union = (gt[None, :, 1] - gt[None, :, 0]) + (pred[:, None, 1] - pred[:, None, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(candidates: _Candidates, n_gt: int, threshold: float, k: int) -> np.ndarray:
    """Greedy matching at one threshold: True where the ranked prediction is a true positive.

    A prediction with exactly one candidate takes it unless an earlier prediction
    already has; the first such prediction per ground truth is found with one
    vectorised pass. Predictions with several candidates walk their ranked list
    in rank order; a ground truth counts as taken for them once its first
    single-candidate prediction or an earlier walker has come by.
    """
    count = candidates.count[k]
    n_pred = len(count)
    single = np.flatnonzero(count == 1)
    single_gt = candidates.best[single]
    first_single = np.full(n_gt, n_pred, dtype=np.int64)
    gts, first = np.unique(single_gt, return_index=True)
    first_single[gts] = single[first]

    # Plain lists: this loop indexes one element at a time.
    claimed = [n_pred] * n_gt
    first_single_list = first_single.tolist()
    walkers_hit = []
    for i in np.flatnonzero(count >= 2).tolist():
        gt_ids, tious = candidates.ranked[i]
        for g, tiou in zip(gt_ids, tious):
            if tiou < threshold:
                break
            if first_single_list[g] < i or claimed[g] < i:
                continue
            claimed[g] = i
            walkers_hit.append(i)
            break
    true_positive = np.zeros(n_pred, dtype=bool)
    true_positive[walkers_hit] = True
    claimed_at = np.asarray(claimed, dtype=np.int64)
    true_positive[single] = (first_single[single_gt] == single) & (claimed_at[single_gt] > single)
    return true_positive


def _interpolated_average_precision(true_positive: np.ndarray, n_gt: int) -> np.ndarray:
    """VOC-2011 interpolated AP per row of a [n_tiou, n_pred] true-positive table (ranked order)."""
    tp = np.cumsum(true_positive, axis=1).astype(np.float64)
    fp = np.cumsum(~true_positive, axis=1).astype(np.float64)
    recall = tp / float(n_gt)
    precision = tp / (tp + fp)
    n_tiou = len(true_positive)
    padded_precision = np.hstack([np.zeros((n_tiou, 1)), precision, np.zeros((n_tiou, 1))])
    padded_recall = np.hstack([np.zeros((n_tiou, 1)), recall, np.ones((n_tiou, 1))])
    envelope = np.maximum.accumulate(padded_precision[:, ::-1], axis=1)[:, ::-1]
    ap = np.zeros(n_tiou)
    for k in range(n_tiou):
        steps = np.flatnonzero(padded_recall[k, 1:] != padded_recall[k, :-1]) + 1
        ap[k] = np.sum((padded_recall[k, steps] - padded_recall[k, steps - 1]) * envelope[k, steps])
    return ap


# ----------------------------------------------------------------------------- report


def format_table(evaluation: Evaluation, title: str) -> str:
    """mAP (%) per tIoU threshold and the reported averages, as a small fixed-width table."""
    summary = evaluation.summary()
    headers = [f"{t:g}" for t in evaluation.tiou_thresholds]
    values = [summary[f"map@{h}"] for h in headers]
    for name, low, high in AVERAGE_RANGES:
        if name in summary:
            headers.append(f"{low:g}:{high:g}")
            values.append(summary[name])
    width = max(7, *(len(h) + 1 for h in headers))
    ignored = "; ".join(
        f"{n} {IGNORED_REASONS[reason]}" for reason, n in evaluation.ignored_predictions.items() if n
    )
    lines = [
        title,
        "tIoU    " + "".join(h.rjust(width) for h in headers),
        "mAP(%)  " + "".join(f"{v:{width}.2f}" for v in values),
        f"{len(evaluation.classes)} classes, {int(evaluation.num_ground_truth.sum())} ground-truth instances, "
        f"{evaluation.num_predictions} predictions evaluated" + (f" (ignored: {ignored})" if ignored else ""),
    ]
    return "\n".join(lines)


def best_tiou(video: np.ndarray, label: np.ndarray, segments: np.ndarray, instances: pd.DataFrame) -> np.ndarray:
    """[N] highest tIoU of each segment with a ground-truth instance of its video and label (0 if none).

    `video` and `label` are string arrays; `segments` [N, 2] and `instances` in the same unit (seconds).
    """
    out = np.zeros(len(video), dtype=np.float64)
    keys = pd.Series(list(zip(video, label)))
    gt_keys = pd.Series(list(zip(instances["video"], instances["label"])))
    gt_groups = gt_keys.groupby(gt_keys).indices
    gt_segments = instances[["start", "end"]].to_numpy(dtype=np.float64)
    for key, rows in keys.groupby(keys).indices.items():
        cols = gt_groups.get(key)
        if cols is not None:
            out[rows] = _tiou_matrix(segments[rows], gt_segments[cols]).max(axis=1)
    return out
