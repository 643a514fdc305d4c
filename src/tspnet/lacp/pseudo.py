"""Pseudo background points and pseudo action points (LACP.md 3.2; the authors' `select_seed`).

The authors walk one video's snippets in Python loops: the region before the
first point, the region after the last, and every gap of more than one snippet
between consecutive points (any class, `a_0 < ... < a_m`). Each region gets
background points from the raw background sigmoid `b = Q[:, C]`:

- before `a_0`: `[0, last snippet with b >= 0.95]`, or `[0, argmax b]` when none is that high;
- after `a_m`: `[first snippet with b >= 0.95, T-1]`, or `[argmax b, T-1]`;
- a gap: `[first, last]` of its high snippets when it has at least two, else its single argmax
  (which is the one high snippet when there is exactly one).

Then, region by region, a walk leaves each neighbouring point outward (left from
`a_0`, right from `a_m`, inward from both ends of a gap) while `b <= 0.1` and the
snippet is not background, copying the point's whole label row to every snippet
it passes.

Why the vectorised form below is the same (it takes many videos packed back to
back, as the training step holds them, so a call costs the same few dozen numpy
operations for 1 or 200 videos):
- Regions are the intervals between consecutive points of a video, plus the
  one from its first snippet to its first point and the one from its last
  point to its last snippet; empty ones are dropped. A region's count, first
  and last snippet with `b >= 0.95` are two binary searches in the sorted list
  of high unlabelled snippets. Its first argmax (numpy's and torch's argmax
  both return the first maximum) is one segment maximum (`ufunc.reduceat`) of
  an int64 key that orders snippets by `b` (the float32's bits, made monotonic)
  and then by decreasing index. Every region marks exactly one interval and
  the regions are disjoint, so all marks are one difference array and one
  cumulative sum.
- Every region holds at least one background point (each rule above marks
  one), and a video's first snippet is a point or background, and so is its
  last. A walk therefore never leaves its region (nor its video), and a
  snippet is walked on exactly when all snippets between it and the
  neighbouring point are walkable (`b <= 0.1`, not background, not a point).
  With "barriers" = the snippets that are not walkable, a walkable snippet is
  reached from the left when the nearest barrier on its left is a point (that
  point's row is copied), from the right when the nearest barrier on its right
  is a point; both cannot happen, since the region between two points holds a
  background barrier. The nearest barriers are running maxima / minima of
  barrier indices.
- Thresholds compare in float32, as torch compares a float32 tensor with a
  Python float (so `b == float32(0.95)` is high and `b == float32(0.1)` walks).

Points, background points and pseudo action points are disjoint: background is
only marked on unlabelled snippets, and walks only enter walkable ones.
"""

from __future__ import annotations

import numpy as np


def select_seeds(cas: np.ndarray, points: np.ndarray, bkg_threshold: float = 0.95, act_threshold: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """cas: [T, C+1] fused CAS Q (column C = background sigmoid), float32; points: [T, C] 0/1 point matrix.
    Returns (act_seeds [T, C] float32: the point matrix extended by pseudo action points,
             bkg_seeds [T] bool: pseudo background points).  LACP.md 3.2, exactly.

    A video without any point has no seeds (the authors' code crashes, LACP.md
    quirk 7): it raises ValueError, and the caller should have rejected it.
    """
    points = np.asarray(points)
    return select_seeds_packed(cas, points, [points.shape[0]] if points.ndim == 2 else [], bkg_threshold,
                               act_threshold)


def select_seeds_packed(cas: np.ndarray, points: np.ndarray, lengths, bkg_threshold: float = 0.95,
                        act_threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """`select_seeds` for many videos at once, packed back to back: video b is rows
    `offsets[b] : offsets[b] + lengths[b]` of cas [N, C+1] and points [N, C], offsets = cumsum - lengths.
    Returns (act_seeds [N, C] float32, bkg_seeds [N] bool), each video's rows as `select_seeds` gives them.
    """
    cas = np.asarray(cas)
    points = np.asarray(points)
    lengths = np.asarray(lengths, dtype=np.int64)
    if points.ndim != 2 or cas.ndim != 2 or cas.shape != (points.shape[0], points.shape[1] + 1):
        raise ValueError(f"select_seeds needs cas [T, C+1] and points [T, C], got {list(cas.shape)} "
                         f"and {list(points.shape)}")
    if lengths.ndim != 1 or (lengths < 1).any() or lengths.sum() != points.shape[0]:
        raise ValueError(f"select_seeds: video lengths {lengths.tolist()} do not add up to the "
                         f"{points.shape[0]} packed rows (each video needs at least one snippet)")
    rows = points.shape[0]
    background = np.ascontiguousarray(cas[:, -1], dtype=np.float32)
    if not np.isfinite(background).all():
        raise ValueError("select_seeds: the background column of the CAS holds NaN or infinity")
    labelled = points.any(axis=1)
    point_at = np.flatnonzero(labelled)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    first_point = np.searchsorted(point_at, starts)
    empty = first_point == np.searchsorted(point_at, ends)
    if empty.any():
        video = int(np.flatnonzero(empty)[0])
        raise ValueError(f"select_seeds: video {video} of the batch has no point label (LACP needs at least "
                         f"one per video)")
    act_seeds = points.astype(np.float32)

    # ---- background: one interval per non-empty region. Video b's regions: [start, p_1 - 1],
    # [p_1 + 1, p_2 - 1], ..., [p_k + 1, end - 1]; `before` / `after` flag the first / last of each video.
    count = point_at.size + len(lengths)
    before = np.zeros(count, dtype=bool)
    before[first_point + np.arange(len(lengths))] = True
    after = np.roll(before, -1)
    low = np.empty(count, dtype=np.int64)
    low[before] = starts
    low[~before] = point_at + 1
    top = np.empty(count, dtype=np.int64)
    top[after] = ends - 1
    top[~after] = point_at - 1
    regions = np.flatnonzero(top >= low)
    if regions.size == 0:
        return act_seeds, np.zeros(rows, dtype=bool)
    low, top, before, after = low[regions], top[regions], before[regions], after[regions]

    bits = (background + np.float32(0)).view(np.int32).astype(np.int64)  # + 0 turns -0 into +0
    ordered = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # float order as integers
    key = np.empty(rows + 1, dtype=np.int64)  # one spare entry: a region may end on the last row
    np.subtract((ordered << 32) + 0xFFFFFFFF, np.arange(rows), out=key[:rows])
    key[rows] = 0
    bounds = np.empty(2 * low.size, dtype=np.int64)  # reduce [low, top]; the pieces between regions are unused
    bounds[0::2] = low
    bounds[1::2] = top + 1
    peak = np.maximum.reduceat(key, bounds)[::2]
    argmax = 0xFFFFFFFF - (peak & 0xFFFFFFFF)

    high_at = np.flatnonzero((background >= np.float32(bkg_threshold)) & ~labelled)
    first_high = np.searchsorted(high_at, low)
    past_high = np.searchsorted(high_at, top, side="right")
    high_count = past_high - first_high
    high_at = np.append(high_at, -1)  # an index for regions without any high snippet (never used)
    first = high_at[first_high]
    last = high_at[past_high - 1]
    two_high = high_count >= 2
    mark_low = np.where(two_high, first, argmax)  # a gap
    mark_top = np.where(two_high, last, argmax)
    any_high = high_count >= 1
    mark_low[before] = low[before]
    mark_top[before] = np.where(any_high, last, argmax)[before]
    mark_low[after] = np.where(any_high, first, argmax)[after]
    mark_top[after] = top[after]
    marks = np.zeros(rows + 1, dtype=np.int32)
    marks[mark_low] += 1  # intervals are disjoint: no index repeats within either assignment
    marks[mark_top + 1] -= 1
    bkg_seeds = np.cumsum(marks[:rows]) > 0

    # ---- pseudo action points: walks from the points, stopped by the first non-walkable snippet
    walkable = (background <= np.float32(act_threshold)) & ~bkg_seeds & ~labelled
    walk = np.flatnonzero(walkable)
    if walk.size:
        index = np.arange(rows)
        left = np.maximum.accumulate(np.where(walkable, -1, index))[walk]  # nearest barrier on the left
        right = np.minimum.accumulate(np.where(walkable, rows, index)[::-1])[::-1][walk]
        from_left = (left >= 0) & labelled[np.maximum(left, 0)]
        source = np.where(from_left, left, right)
        reached = from_left | ((right < rows) & labelled[np.minimum(right, rows - 1)])
        act_seeds[walk[reached]] = points[source[reached]]
    return act_seeds, bkg_seeds
