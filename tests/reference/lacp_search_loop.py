"""Oracle for tspnet.lacp.pseudo and tspnet.lacp.search: LACP.md 3.2 and 3.3, one snippet at a time.

Written from the text of LACP.md, in the shape the text describes: regions and
walks for the seeds; per class a transcript with anchor ranges, a dictionary of
hypotheses advanced one snippet at a time, pruning, and a final choice. Slow on
purpose; it is the yardstick the vectorised search is checked (and timed)
against. Where the text leaves a choice it makes the ones listed in
tspnet.lacp.search's docstring: the authors' tie orders (the pruning sort key
`Hypothesis.order`, dictionary order for the final choice) and their
arithmetic under numpy 1.18 (np.mean in float32, running and final means in
float64: `running_score`, `decode_loop`).
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


# ------------------------------------------------------------------------------ 3.3 the sequence search
END = -2  # the transcript's end symbol (after the last element)


def transcript_loop(act: np.ndarray, bkg: np.ndarray, c: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Class c's transcript (0 background, 1 action) and anchor ranges, the sentinel (T, T) last (3.3 step 2)."""
    length = act.shape[0]
    seeds = [t for t in range(length) if act[t, c] > 0]
    background = [bool(bkg[t]) or (act[t].any() and not act[t, c] > 0) for t in range(length)]
    runs: list[list[int]] = []
    for t in seeds:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    transcript: list[int] = []
    anchors: list[tuple[int, int]] = []
    first = runs[0][0]
    if first > 0:
        before = [t for t in range(first) if background[t]]
        if before:  # filled from snippet 0 to the last background seed before the first action seed
            transcript.append(0)
            anchors.append((0, before[-1]))
        else:  # quirk 15: the first action run is forced from snippet 0
            runs[0][0] = -1
    for i, run in enumerate(runs):
        if i > 0:
            inside = [t for t in range(runs[i - 1][1] + 1, run[0]) if background[t]]
            if not inside:  # the authors' code fails an assertion; unreachable with seeds from 3.2
                raise ValueError(f"class {c}: no background seed between action seeds {runs[i - 1][1]} and {run[0]}")
            transcript.append(0)
            anchors.append((inside[0], inside[-1]))  # filled from the first to the last
        transcript.append(1)
        anchors.append((run[0], run[1]))
    last = runs[-1][1]
    if last < length - 1:
        after = [t for t in range(last + 1, length) if background[t]]
        if after:  # filled from the first background seed after the last action seed to T-1
            transcript.append(0)
            anchors.append((after[0], length - 1))
        else:  # quirk 15: the last action run is extended to T-1
            anchors[-1] = (anchors[-1][0], length - 1)
    anchors.append((length, length))
    return transcript, anchors


def oic_loop(scores: np.ndarray, start: int, end: int, outer_ratio: float = 0.25) -> tuple[np.float32, np.float32]:
    """(inner mean, outer mean) of scores[start..end] in float32 (np.mean), the outer mean 0 when its set is empty.

    Outer set: [max(0, int(s - r L)), s) then (e, min(T-1, int(e + r L))], L = e - s + 1.
    """
    size = end - start + 1
    inner = np.mean(scores[start: end + 1])
    outer_start = max(0, int(start - outer_ratio * size))
    outer_end = min(len(scores) - 1, int(end + outer_ratio * size))
    outer_set = list(range(outer_start, start)) + list(range(end + 1, outer_end + 1))
    outer = np.mean(scores[outer_set]) if outer_set else np.float32(0)
    return inner, outer


def oic32(scores: np.ndarray, start: int, end: int, outer_ratio: float = 0.25) -> np.float32:
    """inner - outer as one float32 subtraction (an empty outer set subtracts an exact 0)."""
    inner, outer = oic_loop(scores, start, end, outer_ratio)
    return np.float32(inner - outer)


class Hypothesis:
    def __init__(self, score: float, position: int, start: int, history: tuple[int, ...]):
        self.score = score  # running mean of the finished segments' OIC, +inf before the first switch
        self.position = position  # index of the current label in the transcript
        self.start = start  # first snippet of the current segment
        self.history = history  # lengths of the finished segments

    def key(self, t: int, transcript: list[int]) -> tuple:
        """Transcript position, label, length of the current segment (snippets 0..t seen), history."""
        return self.position, transcript[self.position], t + 1 - self.start, self.history

    def order(self, t: int) -> tuple:
        """Sort key of pruning: score, then the authors' key order (see tspnet.lacp.search)."""
        history = "0" + "".join("," + str(n) for n in self.history)
        return self.score, -self.position, t + 1 - self.start, history


def running_score(old: float, finished: int, inner: np.float32, outer: np.float32) -> float:
    """Score after the `finished`-th finished segment: its OIC first (float32), then a running mean (float64)."""
    if finished == 1:
        return float(np.float32(inner - outer))
    return ((old * (finished - 1)) + float(inner) - float(outer)) / finished


def prune_loop(hyps: dict, t: int, budget: int, threshold: float) -> dict:
    ranked = sorted(hyps.items(), key=lambda item: item[1].order(t))
    dropped = 0
    for _, hyp in ranked[:-1]:  # below the threshold, except the single best
        if hyp.score < threshold:
            dropped += 1
        else:
            break
    keys = {key for key, _ in ranked[:dropped]}
    hyps = {key: hyp for key, hyp in hyps.items() if key not in keys}
    if len(hyps) > budget:  # the `budget` best, plus every hypothesis tied with the last of them
        ranked = sorted(hyps.values(), key=lambda hyp: hyp.order(t))
        base = ranked[len(ranked) - budget].score
        hyps = {key: hyp for key, hyp in hyps.items() if hyp.score >= base}
    return hyps


def decode_loop(frame_scores: np.ndarray, transcript: list[int], anchors: list[tuple[int, int]],
                budget: int = 25, threshold: float = 0.1, outer_ratio: float = 0.25) -> np.ndarray:
    """Labels [T] (0/1) of the best hypothesis; frame_scores [T, 2] float32: column 0 = 1 - Q[:, c], 1 = Q[:, c]."""
    length = frame_scores.shape[0]
    labels = transcript + [END]
    hyps = {}
    first = Hypothesis(np.inf, 0, 0, ())
    hyps[first.key(0, labels)] = first
    for t in range(1, length):
        new: dict = {}

        def add(hyp: Hypothesis) -> None:
            key = hyp.key(t, labels)
            if key not in new or new[key].score <= hyp.score:  # merge identical hypotheses, keep the higher score
                new[key] = hyp

        for hyp in hyps.values():
            position = hyp.position
            next_first = anchors[position + 1][0]
            own_last = anchors[position][1]
            forced = t == next_first
            if not forced:
                add(Hypothesis(hyp.score, position, hyp.start, hyp.history))  # keep the label
            if forced or (t > own_last and labels[position + 1] != END):  # switch to the next label
                finished = len(hyp.history) + 1
                inner, outer = oic_loop(frame_scores[:, labels[position]], hyp.start, t - 1, outer_ratio)
                score = running_score(hyp.score, finished, inner, outer)
                add(Hypothesis(score, position + 1, t, hyp.history + (t - hyp.start,)))
        hyps = prune_loop(new, t, budget, threshold)

    best, best_labels = -np.inf, None
    for hyp in hyps.values():  # final choice: rescore every run of the whole labelling; last one on ties
        bounds = np.cumsum((0,) + hyp.history).tolist() + [length]
        segment_labels = np.zeros(length, dtype=np.int64)
        for k in range(len(bounds) - 1):
            segment_labels[bounds[k]: bounds[k + 1]] = labels[k]
        action = [oic32(frame_scores[:, 1], s, e, outer_ratio) for s, e in runs_of(segment_labels == 1)]
        background = [oic32(frame_scores[:, 0], s, e, outer_ratio) for s, e in runs_of(segment_labels == 0)]
        total = 0.0
        for value in action + background:
            total += float(value)
        score = total / (len(action) + len(background))
        if score >= best:
            best, best_labels = score, segment_labels
    return best_labels


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    runs = []
    for t, on in enumerate(mask):
        if on and (t == 0 or not mask[t - 1]):
            runs.append([t, t])
        elif on:
            runs[-1][1] = t
    return [tuple(run) for run in runs]


def search_seeded_loop(cas: list[np.ndarray], act_seeds: list[np.ndarray], bkg_seeds: list[np.ndarray],
                       budget: int = 25, threshold: float = 0.1, outer_ratio: float = 0.25) -> list[np.ndarray]:
    """Pseudo labels [T, C] per video from given seeds: one decode per class with an action seed."""
    out = []
    for q, act, bkg in zip(cas, act_seeds, bkg_seeds):
        q = np.asarray(q, dtype=np.float32)
        labels = np.zeros(act.shape, dtype=np.float32)
        for c in range(act.shape[1]):
            if not (act[:, c] > 0).any():
                continue
            transcript, anchors = transcript_loop(act, bkg, c)
            frame_scores = np.stack([np.float32(1) - q[:, c], q[:, c]], axis=1)
            labels[:, c] = decode_loop(frame_scores, transcript, anchors, budget, threshold, outer_ratio)
        out.append(labels)
    return out


def search_pseudo_labels_loop(cas: list[np.ndarray], points: list[np.ndarray], budget: int = 25,
                              threshold: float = 0.1, outer_ratio: float = 0.25, bkg_threshold: float = 0.95,
                              act_threshold: float = 0.1) -> list[np.ndarray]:
    seeds = [select_seeds_loop(q, p, bkg_threshold, act_threshold) for q, p in zip(cas, points)]
    return search_seeded_loop(cas, [s[0] for s in seeds], [s[1] for s in seeds], budget, threshold, outer_ratio)
