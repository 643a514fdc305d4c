"""Oracle for tspnet.roi: the authors' per-video RoI feature extraction, written as plain loops.

One video at a time: widen each proposal by `ratio` of its length, zero-pad
the [T, D] features by ceil(ratio * max length) + 1 rows at each end, shift
by pad - 0.5, then torchvision's RoI Align (aligned=False, adaptive sampling)
along the time axis, one proposal, bin and sample at a time, in float64.
"""

from __future__ import annotations

import math

import numpy as np


def interpolate(padded: np.ndarray, y: float) -> np.ndarray:
    """torchvision's bilinear_interpolate along one axis of a map with `len(padded)` rows."""
    height = padded.shape[0]
    if y < -1.0 or y > height:
        return np.zeros(padded.shape[1])
    if y <= 0:
        y = 0.0
    y_low = int(y)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    ly = y - y_low
    return (1.0 - ly) * padded[y_low] + ly * padded[y_high]


def video_roi_align(features: np.ndarray, proposals: np.ndarray, bins: int = 12,
                    ratio: float = 0.25) -> np.ndarray:
    """[M, bins, D] RoI features of one video's [M, 2] proposals (snippets) over its [T, D] features."""
    features = np.asarray(features, dtype=np.float64)
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 2)
    dim = features.shape[1]
    out = np.zeros((len(proposals), bins, dim))
    if len(proposals) == 0:
        return out
    lengths = proposals[:, 1] - proposals[:, 0]
    pad = math.ceil(ratio * lengths.max()) + 1
    padded = np.concatenate([np.zeros((pad, dim)), features, np.zeros((pad, dim))])
    for m, (start, end) in enumerate(proposals):
        length = end - start
        y1 = start - ratio * length + pad - 0.5
        y2 = end + ratio * length + pad - 0.5
        roi_len = max(y2 - y1, 1.0)
        bin_len = roi_len / bins
        samples = math.ceil(roi_len / bins)
        for b in range(bins):
            total = np.zeros(dim)
            for k in range(samples):
                y = y1 + b * bin_len + (k + 0.5) * bin_len / samples
                total += interpolate(padded, y)
            out[m, b] = total / samples
    return out
