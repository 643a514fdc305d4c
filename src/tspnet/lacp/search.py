"""The optimal sequence search (LACP.md 3.3; the authors' `search.py`, `grammar.py`, `decode.py`).

For every video and every class c with an action seed, a beam search labels
each snippet action (1) or background (0) so that the labelling follows class
c's transcript (alternating labels, one element per run of seeds) and agrees
with the seeds' anchor ranges, scoring finished segments by their outer-inner
contrast (OIC). The authors decode one (video, class) at a time in Python, a
dictionary of hypotheses per snippet. Here all decodes of a pass advance
together, one snippet at a time, as flat numpy arrays of hypotheses.

**State.** The authors key a hypothesis by (transcript position, label,
length of its current segment, lengths of all its finished segments): its whole
segmentation. A child's key extends its parent's, so two distinct hypotheses
never share a key and "merging identical hypotheses" never fires; the beam is a
set of distinct segmentations. What decides a hypothesis's future (its allowed
moves, the OIC of its later segments, its running score, hence pruning) is only
(transcript position p, start s of its current segment, score): the finished
segments' count is p, and the OIC of a segment reads only the frame scores. So
each hypothesis is (decode, p, s, score, node), where `node` is a back-pointer
to a record (start of its last finished segment, the record before): the full
segmentation, needed only for the final choice and for breaking exact ties, is
recovered by following it.

**Order.** The authors' dictionary keeps insertion order: parents in order,
each adding "keep the label" before "switch". The arrays here hold each
decode's hypotheses in that same order (children interleaved keep/switch, then
compressed), so "the last one on ties" of the final choice is the same one.

**Rules at snippet t** (hypothesis at position p, anchor ranges [first_p,
last_p], sentinel [T, T] after the last): must switch when t == first_{p+1};
else must keep when t <= last_p; else keep, and also switch unless p is the
last position. Switching finishes [s, t-1] with label transcript[p].

**Arithmetic, bit for bit as the authors' code under the numpy they pinned
(1.18).** Frame scores are float32: column 0 = 1 - Q[:, c], 1 = Q[:, c]. A mean
is numpy's float32 mean, i.e. numpy's pairwise float32 summation and one
division. Here the values of many segments are gathered into one buffer, each
segment led by a 0, and summed with `np.add.reduceat`, which runs the same
pairwise summation on each piece (its first value is the 0; tests check that
this equals `np.mean` bit for bit, lengths up to thousands). Outer set of
[s, e], L = e - s + 1: [max(0, int(s - r L)), s) then (e, min(T-1, int(e + r L))]
in that order, mean 0 when empty. A first finished segment scores
float32(inner - outer); the k-th (k >= 2) updates the score as
((score * (k-1)) + inner - outer) / k in float64 (numpy 1.x promotes a float32
scalar times a Python int to float64). Pruning compares with the threshold
exactly. The final choice sums float32(inner - outer) of every action run, then
every background run (time order), in float64 from 0, and divides by the count.

**Pruning** (per decode, after every snippet; `prune`): if some score is >=
the threshold, drop every score below it; else keep only the greatest in the
authors' sort order (score, then key: `authors_key`). Then, if more than
`budget` remain, keep every score >= the budget-th largest (so ties with it
survive).

**Checked against the authors' code** once, outside the test suite: their
`select_seed` (torch) and `decode.py`/`grammar.py` under numpy 1.26 (same
promotion rules as 1.18) gave the same seeds and pseudo labels as this module
and the loop oracle on 1,300 random videos (T 2-120, 1-3 classes, budgets 1, 3
and 25, 400 of them with CAS rounded to a few values, hence many exact ties),
and on 20,000 short ones (T 4-15, budgets 1-3). The same decoder under numpy 2
differed on 4 of 600 videos at budget 3 and on 10 of the short ones.

**Choices where LACP.md leaves one, and the choice made:**
- Tie-breaks: the authors' orders (LACP.md only says "the single best", "plus
  any tied", "last one on ties"); where their key comparison would raise
  TypeError, the lower transcript position counts as greater (`authors_key`).
- Arithmetic: the authors' pinned numpy 1.18 (running mean and final mean in
  float64 over float32 means); under numpy >= 2 their code would keep float32.
- A class whose seeds cover the whole video has no background seed: the
  authors' code fails (`bkg_idx[0]` of an empty index); here the transcript is
  [1] with anchor [0, T-1] and the column is all 1.
- Two action runs with no background seed between them: the authors' code
  fails an assertion; here ValueError. Unreachable with seeds from 3.2 (a gap
  between a class's seeds always holds a background point or another class's
  point).
- The fallbacks that force the first action run from snippet 0 (anchor start
  -1) or extend the last one to T-1 (quirk 15) are kept, though unreachable
  with seeds from 3.2.
- The per-video "sequence score" is not returned (the authors store it unused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tspnet.console import progress
from tspnet.lacp.pseudo import select_seeds_packed

END = -2  # label of the sentinel past a transcript's last element


@dataclass(frozen=True)
class SearchConfig:
    budget: int = 25            # beam budget (hypotheses kept after pruning, plus ties)
    prune_threshold: float = 0.1
    outer_ratio: float = 0.25   # OIC context
    bkg_threshold: float = 0.95
    act_threshold: float = 0.1

    def __post_init__(self):
        if not (isinstance(self.budget, (int, np.integer)) and self.budget >= 1):
            raise ValueError(f"search budget must be an integer >= 1, got {self.budget!r}")
        if not self.outer_ratio >= 0:
            raise ValueError(f"search outer_ratio must be >= 0, got {self.outer_ratio!r}")
        for name in ("prune_threshold", "bkg_threshold", "act_threshold"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"search {name} must be a finite number, got {getattr(self, name)!r}")


def search_pseudo_labels(cas: list[np.ndarray], points: list[np.ndarray], config: SearchConfig,
                         show_progress: bool = False) -> list[np.ndarray]:
    """For every video (cas [T_i, C+1] float32 from an eval-mode forward, points [T_i, C]):
    pseudo labels [T_i, C] (0/1 float32), LACP.md 3.3 (seeds from select_seeds, per class with at
    least one action seed; other columns 0)."""
    cas, points = _check_videos(cas, points)
    if not cas:
        return []
    lengths = [len(p) for p in points]
    act, bkg = select_seeds_packed(np.concatenate(cas), np.concatenate(points), lengths, config.bkg_threshold,
                                   config.act_threshold)
    bounds = np.cumsum(lengths)[:-1]
    return search_seeded(cas, np.split(act, bounds), np.split(bkg, bounds), config, show_progress)


def search_seeded(cas: list[np.ndarray], act_seeds: list[np.ndarray], bkg_seeds: list[np.ndarray],
                  config: SearchConfig, show_progress: bool = False) -> list[np.ndarray]:
    """The search from given seeds (act [T_i, C] 0/1, bkg [T_i] bool per video): pseudo labels [T_i, C]."""
    decodes = Decodes.build(cas, act_seeds, bkg_seeds)
    labels = [np.zeros(act.shape, dtype=np.float32) for act in act_seeds]
    if decodes.count:
        columns = decodes.decode(config, show_progress)
        for d, column in enumerate(columns):
            labels[decodes.video[d]][:, decodes.klass[d]] = column
    return labels


def _check_videos(cas, points) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(cas) != len(points):
        raise ValueError(f"search: {len(cas)} CAS but {len(points)} point matrices")
    cas = [np.asarray(q, dtype=np.float32) for q in cas]
    points = [np.asarray(p) for p in points]
    for i, (q, p) in enumerate(zip(cas, points)):
        if p.ndim != 2 or q.shape != (p.shape[0], p.shape[1] + 1) or p.shape[0] < 1:
            raise ValueError(f"search: video {i} needs cas [T, C+1] and points [T, C] with T >= 1, got "
                             f"{list(q.shape)} and {list(p.shape)}")
        if not np.isfinite(q).all():
            raise ValueError(f"search: the CAS of video {i} holds NaN or infinity")
    return cas, points


# ------------------------------------------------------------------------------ transcripts
def transcript_and_anchors(act: np.ndarray, background: np.ndarray, length: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's transcript [P] (0/1) and anchor ranges first/last [P + 1] (the sentinel T, T last).

    `act`: the class's action seeds [T] bool (at least one); `background`: its
    background seeds (pseudo background points and other classes' action seeds).
    """
    seeds = np.flatnonzero(act)
    breaks = np.flatnonzero(np.diff(seeds) > 1)
    run_first = seeds[np.concatenate(([0], breaks + 1))]
    run_last = seeds[np.concatenate((breaks, [seeds.size - 1]))]
    bkg = np.flatnonzero(background)
    gap_first = np.searchsorted(bkg, run_last[:-1])  # first background seed after each run but the last
    gap_last = np.searchsorted(bkg, run_first[1:]) - 1  # last one before the next run
    if (gap_last < gap_first).any():
        k = int(np.flatnonzero(gap_last < gap_first)[0])
        raise ValueError(f"no background seed between action seeds {run_last[k]} and {run_first[k + 1]}")
    runs = run_first.size
    first = np.empty(2 * runs - 1, dtype=np.int64)
    last = np.empty(2 * runs - 1, dtype=np.int64)
    first[0::2], last[0::2] = run_first, run_last
    first[1::2], last[1::2] = bkg[gap_first], bkg[gap_last]
    labels = np.ones(2 * runs - 1, dtype=np.int64)
    labels[1::2] = 0
    head = tail = np.empty(0, dtype=np.int64)
    if run_first[0] > 0:
        before = np.searchsorted(bkg, run_first[0])  # background seeds before the first action seed
        if before:  # filled from snippet 0
            head = np.array([0, bkg[before - 1]])
        else:  # quirk 15: forced from snippet 0
            first[0] = -1
    if run_last[-1] < length - 1:
        after = np.searchsorted(bkg, run_last[-1])
        if after < bkg.size:  # filled to T-1
            tail = np.array([bkg[after], length - 1])
        else:  # quirk 15: extended to T-1
            last[-1] = length - 1
    labels = np.concatenate(([0] if head.size else [], labels, [0] if tail.size else [])).astype(np.int64)
    first = np.concatenate((head[:1], first, tail[:1], [length]))
    last = np.concatenate((head[1:], last, tail[1:], [length]))
    return labels, first, last


# ------------------------------------------------------------------------------ means
def _concatenated_ranges(low: np.ndarray, count: np.ndarray, total: int) -> np.ndarray:
    """low[0] .. low[0]+count[0]-1, low[1] .., all concatenated (`total` = count.sum())."""
    return np.repeat(low - (np.cumsum(count) - count), count) + np.arange(total)


def float32_means(values: np.ndarray, low: np.ndarray, count: np.ndarray, low2: np.ndarray, count2: np.ndarray
                  ) -> np.ndarray:
    """np.mean (float32, bit for bit) of values[low : low + count] followed by values[low2 : low2 + count2],
    for every item; 0 where both are empty.

    Each item's values are gathered after a leading 0 and summed by `np.add.reduceat`: 0 + numpy's pairwise
    float32 sum, exactly the sum `np.mean` takes.
    """
    size = count + count2
    if size.size == 0:
        return np.zeros(0, dtype=np.float32)
    offsets = np.cumsum(size + 1) - (size + 1)
    buffer = np.zeros(int(offsets[-1] + size[-1] + 1), dtype=np.float32)
    for at, piece_low, piece_count in ((offsets + 1, low, count), (offsets + 1 + count, low2, count2)):
        total = int(piece_count.sum())
        buffer[_concatenated_ranges(at, piece_count, total)] = values[_concatenated_ranges(piece_low, piece_count,
                                                                                            total)]
    sums = np.add.reduceat(buffer, offsets)
    return np.divide(sums, size.astype(np.float32), out=np.zeros(size.size, dtype=np.float32), where=size > 0)


def segment_means(values: np.ndarray, base: np.ndarray, start: np.ndarray, end: np.ndarray, length: np.ndarray,
                  ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer) float32 means of segments [start, end] of the sequences values[base : base + length].

    Outer set of [s, e], L = e - s + 1: [max(0, int(s - r L)), s) then (e, min(T-1, int(e + r L))]; int()
    truncates toward 0, which differs from floor only below 0, where the max clips anyway. Outer mean 0 if empty.
    """
    size = end - start + 1
    left = np.maximum(0, np.floor(start - ratio * size).astype(np.int64))
    right = np.minimum(length - 1, np.floor(end + ratio * size).astype(np.int64))
    n = start.size
    means = float32_means(values,
                          np.concatenate((base + start, base + left)),
                          np.concatenate((size, start - left)),
                          np.concatenate((base, base + end + 1)),
                          np.concatenate((np.zeros(n, dtype=np.int64), right - end)))
    return means[:n], means[n:]


@dataclass
class Beam:
    """Hypotheses as parallel arrays, grouped by decode, in the authors' order within a decode."""

    decode: np.ndarray  # int64
    position: np.ndarray  # int64, transcript position (= number of finished segments)
    start: np.ndarray  # int64, first snippet of the current segment
    score: np.ndarray  # float64 (holding a float32 value after the first segment), +inf before it
    node: np.ndarray  # int64, record of the last finished segment, -1 if none

    @property
    def size(self) -> int:
        return len(self.decode)

    def take(self, index) -> "Beam":
        return Beam(self.decode[index], self.position[index], self.start[index], self.score[index],
                    self.node[index])

    @staticmethod
    def concatenate(beams: list["Beam"]) -> "Beam":
        return Beam(*(np.concatenate([getattr(b, f) for b in beams])
                      for f in ("decode", "position", "start", "score", "node")))


def prune(decode: np.ndarray, score: np.ndarray, budget: int, threshold: float,
          greatest: Callable[[np.ndarray], int]) -> np.ndarray:
    """Indices of the hypotheses (grouped by decode) that survive pruning, in order.

    Per decode: if some score is >= threshold, those below are dropped; else only the greatest survives
    (`greatest(indices)` picks among exactly tied ones). Then, beyond `budget` survivors, only scores >= the
    budget-th largest stay (ties with it included).
    """
    groups, group = _groups(decode)
    best = np.maximum.reduceat(score, groups)
    survive = score >= threshold
    low = best < threshold
    if low.any():
        candidates = np.flatnonzero(low[group] & (score == best[group]))
        owner = group[candidates]
        alone = np.diff(owner, prepend=-1, append=best.size) != 0
        lone = alone[:-1] & alone[1:]  # the only candidate of its decode
        survive[candidates[lone]] = True
        if not lone.all():  # exact ties: rare, resolved one decode at a time
            for g in np.unique(owner[~lone]):
                survive[greatest(candidates[owner == g])] = True
    kept = np.add.reduceat(survive.astype(np.int64), groups)
    over = np.flatnonzero(kept > budget)
    if over.size:  # the budget-th largest score of each such decode, from a [decodes, hypotheses] table
        is_over = np.zeros(best.size, dtype=bool)
        is_over[over] = True
        rows = np.flatnonzero(survive & is_over[group])
        row_group = np.searchsorted(over, group[rows])
        column = rows - groups[over][row_group]  # position within the decode's run: a unique cell
        table = np.full((over.size, int(np.diff(groups, append=decode.size)[over].max())), -np.inf)
        table[row_group, column] = score[rows]
        base = np.full(best.size, -np.inf)
        base[over] = -np.partition(-table, budget - 1, axis=1)[:, budget - 1]
        survive &= score >= base[group]
    return np.flatnonzero(survive)


def authors_key(starts: list[int], t: int) -> tuple[int, int, str]:
    """Sort key, among equal scores, of a hypothesis whose segments start at `starts` after snippet t.

    The authors sort (score, key) with key = (-1, labels of the transcript so far, length of the current
    segment, history string "0,l1,l2,..." of the finished segments' lengths). Among equal scores a key of a
    lower transcript position is greater (its next entry, a length >= 1, meets a label 0 or 1), except
    against a label 1 with a current length 1, where their comparison reaches str against int and raises
    TypeError; here the lower position is greater there too. At equal position: longer current segment,
    then the history in Python string order ("0,12" < "0,3").
    """
    history = "0" + "".join("," + str(b - a) for a, b in zip(starts[:-1], starts[1:]))
    return -(len(starts) - 1), t + 1 - starts[-1], history


def _groups(decode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each decode's run, run number of every entry) of a non-empty array grouped by decode."""
    opens = np.empty(decode.size, dtype=bool)
    opens[0] = True
    np.not_equal(decode[1:], decode[:-1], out=opens[1:])
    return np.flatnonzero(opens), np.cumsum(opens) - 1


class _Nodes:
    """Finished-segment records, appended in blocks: start of the segment and the record before (-1: none)."""

    def __init__(self):
        self.start = np.empty(1024, dtype=np.int64)
        self.previous = np.empty(1024, dtype=np.int64)
        self.count = 0

    def add(self, start: np.ndarray, previous: np.ndarray) -> np.ndarray:
        n = start.size
        if self.count + n > self.start.size:
            capacity = max(2 * self.start.size, self.count + n)
            self.start = np.resize(self.start, capacity)
            self.previous = np.resize(self.previous, capacity)
        self.start[self.count: self.count + n] = start
        self.previous[self.count: self.count + n] = previous
        self.count += n
        return np.arange(self.count - n, self.count)

    def segment_starts(self, node: np.ndarray, start: np.ndarray, finished: np.ndarray) -> np.ndarray:
        """Flat starts of every segment of each hypothesis (finished ones by their records, then `start`)."""
        offsets = np.cumsum(finished + 1) - (finished + 1)
        starts = np.empty(int(offsets[-1] + finished[-1] + 1), dtype=np.int64)
        slot = offsets + finished
        starts[slot] = start
        node = node.copy()
        while True:
            live = node >= 0
            if not live.any():
                return starts
            slot = slot - 1
            starts[slot[live]] = self.start[node[live]]
            node[live] = self.previous[node[live]]


# ------------------------------------------------------------------------------ the decodes of one pass
@dataclass
class Decodes:
    """Every (video, class) decode of a pass, sorted by decreasing length (stable), so that the decodes
    still running at snippet t are a prefix."""

    video: np.ndarray  # [D] video of each decode
    klass: np.ndarray  # [D] class
    length: np.ndarray  # [D] T
    score_base: np.ndarray  # [D] decode d's frame scores: column l at score_base + l * T of `scores`
    scores: np.ndarray  # flat float32
    transcript_base: np.ndarray  # [D] decode d's element k (0..P, P = the sentinel) is at transcript_base + k of:
    labels: np.ndarray  # flat transcripts, END at each sentinel
    first: np.ndarray  # flat anchor ranges [first, last]; (T, T) at each sentinel
    last: np.ndarray

    @property
    def count(self) -> int:
        return len(self.video)

    @classmethod
    def build(cls, cas: list[np.ndarray], act_seeds: list[np.ndarray], bkg_seeds: list[np.ndarray]) -> "Decodes":
        items = []
        for v, (q, act, bkg) in enumerate(zip(cas, act_seeds, bkg_seeds)):
            q = np.asarray(q, dtype=np.float32)
            action = np.asarray(act) > 0
            other = action.any(axis=1)
            bkg = np.asarray(bkg, dtype=bool)
            for c in np.flatnonzero(action.any(axis=0)):
                labels, first, last = transcript_and_anchors(action[:, c], bkg | (other & ~action[:, c]), len(q))
                column = q[:, c]
                items.append((len(q), v, c, np.concatenate((np.float32(1) - column, column)),
                              np.append(labels, END), first, last))
        items.sort(key=lambda item: -item[0])  # stable: equal lengths keep video, class order
        if not items:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, empty, np.zeros(0, np.float32), empty, empty, empty, empty)
        length = np.array([i[0] for i in items], dtype=np.int64)
        sizes = np.array([len(i[4]) for i in items], dtype=np.int64)
        return cls(video=np.array([i[1] for i in items]), klass=np.array([i[2] for i in items]), length=length,
                   score_base=np.cumsum(2 * length) - 2 * length, scores=np.concatenate([i[3] for i in items]),
                   transcript_base=np.cumsum(sizes) - sizes,
                   labels=np.concatenate([i[4] for i in items]), first=np.concatenate([i[5] for i in items]),
                   last=np.concatenate([i[6] for i in items]))

    # -------------------------------------------------------------------------- beam decoding
    def decode(self, config: SearchConfig, show_progress: bool = False) -> list[np.ndarray]:
        """Each decode's label column [T_d] (float32 0/1), in decode order."""
        nodes = _Nodes()
        # one hypothesis per decode at snippet 0: position 0, segment from 0, score +inf, no record
        beam = Beam(np.arange(self.count), np.zeros(self.count, np.int64), np.zeros(self.count, np.int64),
                    np.full(self.count, np.inf), np.full(self.count, -1, np.int64))
        finished: list[Beam] = []
        running = self.count
        steps = progress(range(1, int(self.length[0])), desc="LACP sequence search", unit="snippet",
                         enabled=show_progress)
        for t in steps:
            now_running = int(np.searchsorted(-self.length, -t, side="left"))  # decodes with T > t
            if now_running < running:
                cut = int(np.searchsorted(beam.decode, now_running))
                finished.append(beam.take(slice(cut, None)))
                beam = beam.take(slice(0, cut))
                running = now_running
            beam = self._advance(beam, t, nodes, config)
        finished.append(beam)
        return self._final_choice(Beam.concatenate(finished[::-1]), nodes, config)

    def _advance(self, beam: Beam, t: int, nodes: _Nodes, config: SearchConfig) -> Beam:
        """The hypotheses after snippet t, pruned."""
        at = self.transcript_base[beam.decode] + beam.position
        forced = self.first[at + 1] == t
        switch = forced | ((t > self.last[at]) & (self.labels[at + 1] != END))
        movers = np.flatnonzero(switch)

        # the segment each mover finishes, [start, t-1], scored on its label's column
        decode, position, start = beam.decode[movers], beam.position[movers], beam.start[movers]
        length = self.length[decode]
        base = self.score_base[decode] + self.labels[at[movers]] * length
        inner, outer = segment_means(self.scores, base, start, np.full(movers.size, t - 1), length,
                                     config.outer_ratio)
        moved = np.empty(beam.size, dtype=np.float64)  # the movers' new scores, at their parents' index
        first = position == 0
        moved[movers[first]] = inner[first] - outer[first]  # float32 subtraction
        later = ~first
        k = position[later].astype(np.float64)
        old = beam.score[movers[later]]
        moved[movers[later]] = ((old * k) + inner[later].astype(np.float64)
                                - outer[later].astype(np.float64)) / (k + 1)
        record = np.empty(beam.size, dtype=np.int64)
        record[movers] = nodes.add(start, beam.node[movers])

        # children in the authors' order: for each parent, "keep" (unless forced to switch) then "switch"
        child = np.flatnonzero(np.stack((~forced, switch), axis=1).ravel())
        parent, switched = child >> 1, (child & 1).astype(bool)
        decode = beam.decode[parent]
        score = np.where(switched, moved[parent], beam.score[parent])
        keep = prune(decode, score, config.budget, config.prune_threshold,
                     lambda tied: tied[self._greatest_key(beam, parent[tied], switched[tied], t, nodes)])
        parent, switched = parent[keep], switched[keep]
        return Beam(decode[keep], beam.position[parent] + switched, np.where(switched, t, beam.start[parent]),
                    score[keep], np.where(switched, record[parent], beam.node[parent]))

    def _greatest_key(self, beam: Beam, parent: np.ndarray, switched: np.ndarray, t: int, nodes: _Nodes) -> int:
        """Among children of one decode with equal scores (given by parent and move), the position of the
        greatest in the authors' key order."""
        finished = beam.position[parent]
        starts = nodes.segment_starts(beam.node[parent], beam.start[parent], finished)
        offsets = np.cumsum(finished + 1) - (finished + 1)
        keys = []
        for i in range(len(parent)):
            own = starts[offsets[i]: offsets[i] + finished[i] + 1].tolist()  # the parent's segment starts
            keys.append(authors_key(own + [t] if switched[i] else own, t))
        return max(range(len(parent)), key=keys.__getitem__)

    # -------------------------------------------------------------------------- final choice
    def _final_choice(self, beam: Beam, nodes: _Nodes, config: SearchConfig) -> list[np.ndarray]:
        """Rescore every surviving hypothesis on its whole labelling; the last best of each decode wins."""
        segments = beam.position + 1
        owner = np.repeat(np.arange(beam.size), segments)
        starts = nodes.segment_starts(beam.node, beam.start, beam.position)
        index = np.arange(starts.size) - np.repeat(np.cumsum(segments) - segments, segments)  # k within its owner
        decode = beam.decode[owner]
        length = self.length[decode]
        is_last = index == beam.position[owner]
        ends = np.where(is_last, length - 1, np.roll(starts, -1) - 1)
        label = self.labels[self.transcript_base[decode] + index]
        inner, outer = segment_means(self.scores, self.score_base[decode] + label * length, starts, ends, length,
                                     config.outer_ratio)
        oic = (inner - outer).astype(np.float64)  # float32 subtraction, then summed in float64

        # per hypothesis: action runs first, then background runs, each in time order, summed one by one
        order = np.lexsort((index, label == 0, owner))  # owners keep their blocks, so `index` is the column
        table = np.zeros((beam.size, int(segments.max())), dtype=np.float64)
        table[owner, index] = oic[order]
        total = np.zeros(beam.size, dtype=np.float64)
        for k in range(table.shape[1]):
            total += table[:, k]
        score = total / segments

        groups, group = _groups(beam.decode)
        best = np.maximum.reduceat(score, groups)
        chosen = np.maximum.reduceat(np.where(score == best[group], np.arange(beam.size), -1), groups)
        pick = np.isin(owner, chosen)
        columns = np.repeat(label[pick], (ends - starts + 1)[pick]).astype(np.float32)
        return np.split(columns, np.cumsum(self.length)[:-1])
