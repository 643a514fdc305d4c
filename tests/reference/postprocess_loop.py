"""Oracle for tspnet.postprocess: the authors' per-video inference loop, literally.

Per video: video-level class scores, then per kept class a boundary-adaptation
walk over the proposals (one IoU vector per visited proposal), then soft-NMS
on a working array whose selected row is swapped to the front and dropped,
then the ambiguous-segment filter with Python sets. Slow on purpose: it is
what the vectorised module is checked (and timed) against.

It includes the project's two deliberate differences (see tspnet.postprocess):
zero-union IoU is 0 (1 for a proposal with itself), and a group whose scores
sum to zero is weighted by its IoU shares. The ambiguous filter tests "the
ranges share a snippet" directly; the authors' IoU > 0 is the same test, but
divides by zero when both ranges are empty.
"""

from __future__ import annotations

import numpy as np

from tspnet.postprocess import AbaCounts, Detections


def boundary_adaption_loop(
    proposals: np.ndarray, proposal_score: np.ndarray, refine_threshold: float
) -> tuple[np.ndarray, AbaCounts]:
    count = len(proposals)
    lock_flag = np.ones(count) * -1
    new_proposal = np.copy(proposals)
    zero_length = zero_score = 0
    for idx in np.argsort(proposal_score)[::-1]:
        if lock_flag[idx] == 1:
            continue
        target = proposals[idx]
        x1 = np.maximum(target[0], proposals[:, 0])
        x2 = np.minimum(target[1], proposals[:, 1])
        intersection = (x2 - x1).clip(0).astype(float)
        union = (proposals[:, 1] - proposals[:, 0]) + (target[1] - target[0]) - intersection
        iou = np.zeros(count)
        for j in range(count):
            if union[j] > 0:
                iou[j] = intersection[j] / union[j]
        iou[idx] = 1.0
        sim_idx = np.where(iou > refine_threshold)
        iou = iou[sim_idx] / np.sum(iou[sim_idx])
        total = np.sum(proposal_score[sim_idx] * iou)
        if total == 0:
            weight = iou
            zero_score += 1
        else:
            weight = (proposal_score[sim_idx] * iou) / total
        new_proposal[idx] = np.sum(proposals[sim_idx] * weight[:, np.newaxis], axis=0)
        lock_flag[sim_idx] = 1
        if target[1] == target[0]:
            zero_length += 1
    return new_proposal, AbaCounts(zero_length, zero_score)


def soft_nms_loop(segments: np.ndarray, scores: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(input indices in selection order, decayed scores); column 2 carries the input index."""
    dets = np.column_stack([segments[:, 0], segments[:, 1], np.arange(len(scores)), scores]).astype(float)
    areas = dets[:, 1] - dets[:, 0] + 1
    dets = np.concatenate((dets, areas[:, None]), axis=1)
    order, kept = [], []
    while dets.size > 0:
        max_idx = np.argmax(dets[:, 3], axis=0)
        dets[[0, max_idx], :] = dets[[max_idx, 0], :]
        order.append(int(dets[0, 2]))
        kept.append(dets[0, 3])
        xx1 = np.maximum(dets[0, 0], dets[1:, 0])
        xx2 = np.minimum(dets[0, 1], dets[1:, 1])
        inter = np.maximum(xx2 - xx1 + 1, 0.0)
        iou = inter / (dets[0, -1] + dets[1:, -1] - inter)
        weight = np.exp(-(iou * iou) / sigma)
        dets[1:, 3] *= weight
        dets = dets[1:, :]
    return np.array(order, dtype=np.int64), np.array(kept, dtype=np.float64)


def localize_loop(
    video_index: np.ndarray,
    segments: np.ndarray,
    probs: np.ndarray,
    attention: np.ndarray,
    center: np.ndarray,
    class_threshold: float = 0.1,
    aba_iou: float = 0.4,
    nms_sigma: float = 0.3,
) -> tuple[Detections, AbaCounts]:
    parts, counts = [], AbaCounts()
    for video in sorted(set(video_index.tolist())):
        rows = np.flatnonzero(video_index == video)
        prop_cas, prop_attn, prop_center = probs[rows], attention[rows][:, None], center[rows][:, None]
        pred_vid_score = ((prop_cas * prop_attn).sum(axis=0) / (prop_attn.sum() + 1e-6))[:-1]
        prop_score = prop_cas * prop_attn * prop_center
        pred = np.where(pred_vid_score >= class_threshold)[0]
        if len(pred) == 0:
            pred = np.array([np.argmax(pred_vid_score)])
        proposals = segments[rows]
        for c in pred:
            c_proposals, c_counts = boundary_adaption_loop(proposals, prop_score[:, c], aba_iou)
            counts = counts + c_counts
            order, scores = soft_nms_loop(c_proposals, prop_score[:, c], nms_sigma)
            n = len(order)
            parts.append(
                Detections([video] * n, [c] * n, c_proposals[order, 0], c_proposals[order, 1], scores)
            )
    return Detections.concat(parts), counts


def base_detections_loop(
    video_index: np.ndarray, segments: np.ndarray, labels: np.ndarray, scores: np.ndarray, nms_sigma: float = 0.3
) -> Detections:
    parts = []
    for video in sorted(set(video_index.tolist())):
        for label in sorted(set(labels[video_index == video].tolist())):
            rows = np.flatnonzero((video_index == video) & (labels == label))
            order, kept = soft_nms_loop(segments[rows], scores[rows], nms_sigma)
            n = len(order)
            parts.append(
                Detections([video] * n, [label] * n, segments[rows][order, 0], segments[rows][order, 1], kept)
            )
    return Detections.concat(parts)


def filter_segments_loop(
    video: np.ndarray, start: np.ndarray, end: np.ndarray, ambiguous_path, snippets_per_second: float
) -> np.ndarray:
    """True where a detection shares a snippet with an ambiguous segment of its video (read from the file)."""
    with open(ambiguous_path, "r", encoding="utf-8") as f:
        ambilist = [line.split() for line in f if line.strip()]
    drop = np.zeros(len(video), dtype=bool)
    for i in range(len(video)):
        for a in ambilist:
            if a[0] == video[i]:
                gt = range(int(round(float(a[1]) * snippets_per_second)), int(round(float(a[2]) * snippets_per_second)))
                pd = range(int(start[i]), int(end[i]))
                if set(gt).intersection(set(pd)):
                    drop[i] = True
    return drop
