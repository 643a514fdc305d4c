"""Oracle for tspnet.lacp.pseudo and tspnet.lacp.search: LACP.md 3.2 and 3.3, one snippet at a time.

Written from the text of LACP.md, in the shape the text describes: regions and
walks for the seeds; per class a transcript with anchor ranges, a dictionary of
hypotheses advanced one snippet at a time, pruning, and a final choice. Slow on
purpose; it is the yardstick the vectorised search is checked (and timed)
against.
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------ 3.2 seeds
def select_seeds_loop(cas: np.ndarray, points: np.ndarray, bkg_threshold: float = 0.95,
                      act_threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(act_seeds [T, C] float32, bkg_seeds [T] bool), region by region and snippet by snippet."""
    b = np.asarray(cas, dtype=np.float32)[:, -1]
    high_at, walk_at = np.float32(bkg_threshold), np.float32(act_threshold)  # float32 comparisons, as torch
    length = len(b)
    act = np.asarray(points, dtype=np.float32).copy()
    bkg = np.zeros(length, dtype=bool)
    anchors = [t for t in range(length) if act[t].any()]  # the points, before any walk
    if not anchors:
        raise ValueError("no point")
    first, last = anchors[0], anchors[-1]

    def walk(start: int, stop: int, step: int, source: int) -> None:
        for t in range(start, stop, step):
            if b[t] <= walk_at and not bkg[t]:
                act[t] = points[source]
            else:
                break

    if first > 0:  # before the first point
        high = [t for t in range(first) if b[t] >= high_at]
        end = high[-1] if high else int(np.argmax(b[:first]))
        bkg[: end + 1] = True
        walk(first - 1, -1, -1, first)
    if last < length - 1:  # after the last point
        high = [t for t in range(last + 1, length) if b[t] >= high_at]
        start = high[0] if high else last + 1 + int(np.argmax(b[last + 1:]))
        bkg[start:] = True
        walk(last + 1, length, 1, last)
    for left, right in zip(anchors[:-1], anchors[1:]):  # between consecutive points
        if right - left <= 1:
            continue
        high = [t for t in range(left + 1, right) if b[t] >= high_at]
        if len(high) >= 2:
            bkg[high[0]: high[-1] + 1] = True
        else:
            bkg[left + 1 + int(np.argmax(b[left + 1: right]))] = True
        walk(left + 1, right, 1, left)
        walk(right - 1, left, -1, right)
    return act, bkg
