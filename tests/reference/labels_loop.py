"""Saliency point updating, written the authors' way (dict of offsets per point, Python loops)."""

import numpy as np


def update_point_times_loop(points, original_time, proposals, labels, center_score, threshold):
    offsets = {}
    keep = np.flatnonzero(center_score > threshold)
    for point_id in sorted(set(labels.point_id[keep].tolist())):
        if point_id < 0:
            continue  # the authors compute an offset for id -1 too, but no point ever reads it
        group = keep[labels.point_id[keep] == point_id]
        weights = center_score[group] / np.sum(center_score[group])
        middles = (proposals.end[group] + proposals.start[group]) / 2
        current = float(points.loc[points["point_id"] == point_id, "time"].iloc[0])
        offsets[point_id] = np.sum((middles - current) * weights)
    new = np.array(original_time, dtype=np.float64, copy=True)
    for row, point_id in enumerate(points["point_id"].tolist()):
        if point_id in offsets:
            new[row] += offsets[point_id]
    return new
