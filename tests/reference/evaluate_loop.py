"""Oracle for tspnet.evaluate: the official ActivityNet detection evaluator's structure, row by row.

pandas groupby per class and per video, one prediction at a time in score
order, one threshold at a time, a walk over the video's ground truth in
decreasing tIoU. Slow on purpose: it is the yardstick the vectorised matcher
is checked (and timed) against. It applies the project's choices too: only
subset videos and ground-truth classes are evaluated, and two zero-length
segments at one instant have tIoU 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tspnet.evaluate import GroundTruth


def evaluate_loop(
    ground_truth: GroundTruth, predictions: pd.DataFrame, tiou_thresholds
) -> tuple[list[str], np.ndarray]:
    """(sorted classes, AP in percent [n_tiou, n_classes])."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    gt = ground_truth.instances
    classes = sorted(set(gt["label"]))
    keep = predictions["video"].isin(ground_truth.videos) & predictions["label"].isin(classes)
    kept = predictions[keep].reset_index(drop=True)

    gt_by_label = gt.groupby("label")
    pred_by_label = kept.groupby("label")
    ap = np.zeros((len(thresholds), len(classes)))
    for k, name in enumerate(classes):
        if name not in pred_by_label.groups:
            continue
        ap[:, k] = class_ap_loop(
            gt_by_label.get_group(name).reset_index(drop=True),
            pred_by_label.get_group(name).reset_index(drop=True),
            thresholds,
        )
    return classes, ap * 100.0


def class_ap_loop(gt: pd.DataFrame, pred: pd.DataFrame, thresholds: np.ndarray) -> np.ndarray:
    n_gt = float(len(gt))
    locked_by = -np.ones((len(thresholds), len(gt)))
    ranking = pred["score"].values.argsort()[::-1]
    pred = pred.loc[ranking].reset_index(drop=True)
    tp = np.zeros((len(thresholds), len(pred)))
    fp = np.zeros((len(thresholds), len(pred)))
    gt_by_video = gt.groupby("video")

    for i, row in pred.iterrows():
        try:
            video_gt = gt_by_video.get_group(row["video"]).reset_index()
        except KeyError:
            fp[:, i] = 1  # no ground truth of this class in the video
            continue
        tiou = segment_tiou(row[["start", "end"]].values.astype(float), video_gt[["start", "end"]].values)
        walk = tiou.argsort()[::-1]
        for t, threshold in enumerate(thresholds):
            for j in walk:
                if tiou[j] < threshold:
                    fp[t, i] = 1
                    break
                gt_id = video_gt.loc[j, "index"]
                if locked_by[t, gt_id] >= 0:
                    continue
                tp[t, i] = 1
                locked_by[t, gt_id] = i
                break
            if tp[t, i] == 0 and fp[t, i] == 0:
                fp[t, i] = 1

    tp_sum = np.cumsum(tp, axis=1).astype(float)
    fp_sum = np.cumsum(fp, axis=1).astype(float)
    recall = tp_sum / n_gt
    precision = tp_sum / (tp_sum + fp_sum)
    return np.array([voc_interpolated_ap(precision[t], recall[t]) for t in range(len(thresholds))])


def segment_tiou(segment: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    left = np.maximum(segment[0], candidates[:, 0])
    right = np.minimum(segment[1], candidates[:, 1])
    inter = (right - left).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (segment[1] - segment[0]) - inter
    out = np.zeros(len(candidates))
    for j in range(len(candidates)):
        if union[j] > 0:
            out[j] = inter[j] / union[j]
    return out


def voc_interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    p = np.hstack([[0], precision, [0]])
    r = np.hstack([[0], recall, [1]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.where(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))
