"""Point labels, center labels and saliency point updating (METHOD.md, "Labels for training").

A point at snippet time t *falls in* proposal [s, e] when s < t < e. A
proposal's point label is the multi-hot set of classes of the points that fall
in it; its center label is 1 - 2 |(t - s)/(e - s) - 0.5| for the first such
point in file order (whose id it remembers), or `soft_value` when no point
falls in it (a background proposal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tspnet.proposals import Proposals


@dataclass
class ProposalLabels:
    point_label: np.ndarray  # [N, C] float32 multi-hot over the action classes
    center_label: np.ndarray  # [N] float64
    point_id: np.ndarray  # [N] int64: the first point inside, -1 for background proposals
    num_points: np.ndarray  # [N] int64: how many points fall inside

    def counts(self) -> dict[str, int]:
        return {
            "action_proposals": int((self.num_points > 0).sum()),
            "background_proposals": int((self.num_points == 0).sum()),
            "multi_point_proposals": int((self.num_points > 1).sum()),
        }

    def subset(self, rows: np.ndarray) -> "ProposalLabels":
        return ProposalLabels(self.point_label[rows], self.center_label[rows], self.point_id[rows],
                              self.num_points[rows])


def point_proposal_pairs(proposals: Proposals, point_video: np.ndarray, point_time: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """All (point row, proposal row) pairs with the point strictly inside the proposal.

    Pairs come sorted by proposal, then by point row (file order).
    """
    slices = proposals.video_slices()
    point_rows, proposal_rows = [], []
    for p in range(len(point_video)):
        rows = slices[point_video[p]]
        if rows.stop == rows.start:
            continue
        s, e = proposals.start[rows], proposals.end[rows]
        inside = np.flatnonzero((point_time[p] - s > 0) & (point_time[p] - e < 0))
        point_rows.append(np.full(inside.size, p, dtype=np.int64))
        proposal_rows.append(inside + rows.start)
    if not point_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    points, props = np.concatenate(point_rows), np.concatenate(proposal_rows)
    order = np.lexsort((points, props))
    return points[order], props[order]


def assign_labels(proposals: Proposals, points: pd.DataFrame, num_classes: int, soft_value: float
                  ) -> ProposalLabels:
    """Labels of every proposal from the points (columns point_id, video, class_index, time)."""
    n = len(proposals)
    position = {v: i for i, v in enumerate(proposals.videos)}
    known = points["video"].isin(position).to_numpy()
    point_video = points["video"][known].map(position).to_numpy(np.int64)
    point_time = points["time"].to_numpy(np.float64)[known]
    point_class = points["class_index"].to_numpy(np.int64)[known]
    point_ids = points["point_id"].to_numpy(np.int64)[known]

    pair_point, pair_proposal = point_proposal_pairs(proposals, point_video, point_time)
    point_label = np.zeros((n, num_classes), dtype=np.float32)
    point_label[pair_proposal, point_class[pair_point]] = 1.0
    num_points = np.bincount(pair_proposal, minlength=n).astype(np.int64)

    # The first point (file order) of each proposal sets its center label and is remembered.
    first = np.ones(pair_proposal.size, dtype=bool)
    first[1:] = pair_proposal[1:] != pair_proposal[:-1]
    rows, which = pair_proposal[first], pair_point[first]
    s, e, t = proposals.start[rows], proposals.end[rows], point_time[which]
    relative = (t - s) / (e - s)
    center_label = np.full(n, soft_value, dtype=np.float64)
    center_label[rows] = 1 - np.abs(relative - 0.5) * 2
    point_id = np.full(n, -1, dtype=np.int64)
    point_id[rows] = point_ids[which]
    return ProposalLabels(point_label, center_label, point_id, num_points)


def update_point_times(points: pd.DataFrame, original_time: np.ndarray, proposals: Proposals,
                       labels: ProposalLabels, center_score: np.ndarray, threshold: float) -> np.ndarray:
    """Saliency point updating: the new time of every point (rows of `points`).

    Proposals whose center score exceeds `threshold` and that remember a point
    pull that point: new time = original time + sum_j a_j (mid_j - t), with a_j
    the center scores normalised within the point's group and t the point's
    current time. A point that no proposal pulls returns to its original time
    (the authors rebuild the offsets from scratch at every update).
    """
    row_of_id = pd.Series(np.arange(len(points)), index=points["point_id"].to_numpy())
    pulling = (center_score > threshold) & (labels.point_id >= 0)
    point_rows = row_of_id.loc[labels.point_id[pulling]].to_numpy()
    weights = center_score[pulling]
    middles = (proposals.end[pulling] + proposals.start[pulling]) / 2
    current = points["time"].to_numpy(np.float64)[point_rows]
    weight_sum = np.bincount(point_rows, weights=weights, minlength=len(points))
    pull = np.bincount(point_rows, weights=weights * (middles - current), minlength=len(points))
    moved = weight_sum > 0
    new_time = original_time.astype(np.float64).copy()
    new_time[moved] += pull[moved] / weight_sum[moved]
    return new_time
