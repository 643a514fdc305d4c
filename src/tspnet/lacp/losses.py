"""LACP's losses (LACP.md section 4), per video, for a packed batch of videos.

Each term is returned per video ([B]); the training step takes the weighted
sum per video and averages over the batch, as the authors average the
per-video totals of their 16 one-video forwards.

- `video_loss`: mean over classes of BCE(v, video labels).
- `point_loss`: focal-weighted BCE of Q on every snippet carrying a point,
  all C+1 columns (background target 0), summed and divided by the number of
  such snippets. `background_point_loss`: the same on the pseudo background
  points (target 1 in column C only), divided by their number -- 0 when a
  video has none (the authors divide by zero: quirk 8). Focal weight:
  (1 - Q)^2 where the target is 1, Q^2 where it is 0; the BCE clamps its logs
  at -100, as PyTorch's does.
- `score_contrast_loss`: (L_sa + L_sb)^2, where L_sa averages 1 - OIC(Q[:, c])
  over the action runs of the stored pseudo labels of every class of the
  video, L_sb averages 1 - OIC(1 - Q[:, c]) over its background runs (the
  complement of the class score, not the background column: quirk 12), and
  the sum is squared (quirk 11). OIC = mean inside the run minus the mean over
  [max(0, int(s - r L)), s) and (e, min(T-1, int(e + r L))] (0 if empty).
  Means are differences of float64 cumulative sums: O(1) per run.
- `feature_contrast_loss`: per class with at least two action runs, each run
  (action and background, in time order) is represented by the mean
  embedding at a few sampled snippets, L2-normalised; with
  S_ij = exp(f_i . f_j / tau) off the diagonal, p_j = sum_i S_ij [i action] /
  sum_i S_ij and the class's loss is -sum over action j of log p_j divided by
  the number of action runs. The video's value is the *last* such class's
  (quirk 10, `mode="last_class"`) or the sum over them (`mode="sum"`).
  All classes of all videos of a step go through one padded batched product.

Which runs enter (`completeness_runs`) follows the authors' boundary
arithmetic exactly, from the transitions of each pseudo-label column: a
column that never changes gives nothing; a run that reaches snippet T-1 is
cut at T-2, and a run made of snippet T-1 alone is skipped (quirk 9,
reproduced). For the feature contrast the background runs are not cut, but a
background run after an action run that ends at T-2 is left out, as theirs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tspnet.lacp.model import Packing

FEATURE_CONTRAST_MODES = ("last_class", "sum")


def focal_bce(cas: Tensor, target: Tensor) -> Tensor:
    weight = ((1 - cas) * target + cas * (1 - target)) ** 2
    return weight * F.binary_cross_entropy(cas, target, reduction="none")


def per_video_sum(values: Tensor, video: Tensor, num_videos: int) -> Tensor:
    return values.new_zeros(num_videos).index_add(0, video, values)


def guarded_divide(total: Tensor, count: Tensor) -> Tensor:
    """total / count, and 0 where count is 0."""
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def video_loss(scores: Tensor, labels: Tensor) -> Tensor:
    return F.binary_cross_entropy(scores, labels, reduction="none").mean(dim=1)


def point_loss(cas: Tensor, points: Tensor, packing: Packing) -> Tensor:
    """`points` [N, C] packed 0/1 point matrix."""
    rows = torch.nonzero(points.amax(dim=1) > 0).squeeze(1)
    target = torch.cat((points[rows], points.new_zeros((len(rows), 1))), dim=1)
    per_row = focal_bce(cas[rows], target).sum(dim=1)
    video = packing.video[rows]
    return guarded_divide(per_video_sum(per_row, video, packing.num_videos),
                          per_video_sum(torch.ones_like(per_row), video, packing.num_videos))


def background_point_loss(cas: Tensor, background: Tensor, packing: Packing) -> Tensor:
    """`background` [N] bool: the pseudo background points of every video."""
    rows = torch.nonzero(background).squeeze(1)
    target = torch.zeros((len(rows), cas.shape[1]), dtype=cas.dtype, device=cas.device)
    target[:, -1] = 1.0
    per_row = focal_bce(cas[rows], target).sum(dim=1)
    video = packing.video[rows]
    return guarded_divide(per_video_sum(per_row, video, packing.num_videos),
                          per_video_sum(torch.ones_like(per_row), video, packing.num_videos))


# ------------------------------------------------------------------------------ runs of pseudo labels
@dataclass
class CompletenessRuns:
    """The runs of one video's pseudo labels that the completeness losses read (snippet indices, inclusive).

    Score runs: `score_*` (class, first, last, outer_start, outer_end, action).
    Feature runs: `feature_*` (group, class, first, last, action); a group is
    one class with at least two action runs, numbered in class order.
    """

    score_class: np.ndarray
    score_first: np.ndarray
    score_last: np.ndarray
    score_outer_start: np.ndarray
    score_outer_end: np.ndarray
    score_action: np.ndarray
    feature_group: np.ndarray
    feature_class: np.ndarray
    feature_first: np.ndarray
    feature_last: np.ndarray
    feature_action: np.ndarray

    @property
    def num_groups(self) -> int:
        return int(self.feature_group.max()) + 1 if len(self.feature_group) else 0

    def last_group_only(self) -> "CompletenessRuns":
        keep = self.feature_group == self.num_groups - 1
        return dataclasses.replace(self, feature_group=np.zeros(int(keep.sum()), dtype=np.int64),
                                   feature_class=self.feature_class[keep], feature_first=self.feature_first[keep],
                                   feature_last=self.feature_last[keep], feature_action=self.feature_action[keep])


def transition_bounds(column: np.ndarray) -> list[int] | None:
    """The authors' `range_idx`: transition indices of a 0/1 column, -1 prepended if it starts
    with 1, T-2 appended if it ends with 1; None when the column never changes."""
    change = np.diff(column.astype(np.int64))
    bounds = np.flatnonzero(change).tolist()
    if not bounds:
        return None
    if change[bounds[0]] != 1:
        bounds = [-1] + bounds
    if change[bounds[-1]] != -1:
        bounds = bounds + [len(column) - 2]
    return bounds


def completeness_runs(pseudo_labels: np.ndarray, classes, outer_ratio: float = 0.25) -> CompletenessRuns:
    """The runs of `pseudo_labels` [T, C] for the video's classes (ascending), as the authors walk them."""
    length = pseudo_labels.shape[0]
    score, feature = [], []
    group = 0
    for c in sorted(int(c) for c in classes):
        column = pseudo_labels[:, c] > 0.5
        bounds = transition_bounds(column)
        if bounds is not None:
            items = [] if bounds[0] == -1 else [(0, bounds[0], False)]
            pairs = len(bounds) // 2
            for i in range(pairs):
                before, after = bounds[2 * i], bounds[2 * i + 1]
                if after - before < 1:
                    continue  # an action run of snippet T-1 alone
                items.append((before + 1, after, True))
                score.append((c, before + 1, after, True))
                if after != length - 2:
                    items.append((after + 1, length - 1 if i == pairs - 1 else bounds[2 * i + 2], False))
            if sum(action for _, _, action in items) > 1:
                feature += [(group, c, first, last, action) for first, last, action in items]
                group += 1
        bounds = transition_bounds(~column)
        if bounds is not None:
            for i in range(len(bounds) // 2):
                before, after = bounds[2 * i], bounds[2 * i + 1]
                if after - before >= 1:
                    score.append((c, before + 1, after, False))
    score_array = np.array(score, dtype=np.int64).reshape(-1, 4)
    first, last = score_array[:, 1], score_array[:, 2]
    span = last - first + 1
    feature_array = np.array(feature, dtype=np.int64).reshape(-1, 5)
    return CompletenessRuns(
        score_class=score_array[:, 0], score_first=first, score_last=last,
        score_outer_start=np.maximum(0, np.trunc(first - outer_ratio * span).astype(np.int64)),
        score_outer_end=np.minimum(length - 1, np.trunc(last + outer_ratio * span).astype(np.int64)),
        score_action=score_array[:, 3].astype(bool),
        feature_group=feature_array[:, 0], feature_class=feature_array[:, 1], feature_first=feature_array[:, 2],
        feature_last=feature_array[:, 3], feature_action=feature_array[:, 4].astype(bool))


@dataclass
class BatchRuns:
    """The `CompletenessRuns` of a batch's videos, concatenated, with each run's video in the batch."""

    score_video: np.ndarray
    score_class: np.ndarray
    score_first: np.ndarray
    score_last: np.ndarray
    score_outer_start: np.ndarray
    score_outer_end: np.ndarray
    score_action: np.ndarray
    feature_video: np.ndarray
    feature_group: np.ndarray  # unique across the batch, groups in (video, class) order
    feature_class: np.ndarray
    feature_first: np.ndarray
    feature_last: np.ndarray
    feature_action: np.ndarray

    @classmethod
    def of(cls, runs: list[CompletenessRuns | None], last_group_only: bool = False) -> "BatchRuns":
        """`None` for a video whose pseudo labels are not visible yet: it contributes no run.

        `last_group_only` keeps only each video's last feature group, the only
        one the feature contrast's `last_class` mode reads.
        """
        present = [(b, r if not last_group_only else r.last_group_only()) for b, r in enumerate(runs)
                   if r is not None]
        group_base = np.cumsum([0] + [r.num_groups for _, r in present])

        def cat(name: str, offset=None) -> np.ndarray:
            parts = [getattr(r, name) + (0 if offset is None else offset[i]) for i, (_, r) in enumerate(present)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

        def video(prefix: str) -> np.ndarray:
            parts = [np.full(len(getattr(r, f"{prefix}_first")), b, dtype=np.int64) for b, r in present]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

        return cls(video("score"), cat("score_class"), cat("score_first"), cat("score_last"),
                   cat("score_outer_start"), cat("score_outer_end"), cat("score_action").astype(bool),
                   video("feature"), cat("feature_group", group_base), cat("feature_class"), cat("feature_first"),
                   cat("feature_last"), cat("feature_action").astype(bool))


# ------------------------------------------------------------------------------ completeness losses
def score_contrast_loss(cas: Tensor, packing: Packing, runs: BatchRuns) -> Tensor:
    """(L_sa + L_sb)^2 per video; 0 for a video without runs."""
    num_videos = packing.num_videos
    if len(runs.score_video) == 0:
        return cas.new_zeros(num_videos)
    device = cas.device
    cumulative = torch.cat((cas.new_zeros((1, cas.shape[1]), dtype=torch.float64),
                            torch.cumsum(cas.double(), dim=0)))

    def at(index: np.ndarray) -> Tensor:
        rows = packing.offsets[video] + torch.from_numpy(index).to(device)
        return cumulative[rows, column]

    video = torch.from_numpy(runs.score_video).to(device)
    column = torch.from_numpy(runs.score_class).to(device)
    first, last = runs.score_first, runs.score_last
    outer_start, outer_end = runs.score_outer_start, runs.score_outer_end
    span = torch.from_numpy(last - first + 1).to(device, torch.float64)
    outer_count = torch.from_numpy((first - outer_start) + np.maximum(0, outer_end - last)).to(device, torch.float64)
    inner = (at(last + 1) - at(first)) / span
    outer_sum = at(first) - at(outer_start) + at(np.maximum(outer_end, last) + 1) - at(last + 1)
    outer = outer_sum / outer_count.clamp(min=1)
    action = torch.from_numpy(runs.score_action).to(device)
    has_outer = outer_count > 0
    # OIC of Q for action runs; OIC of 1 - Q for background runs: (1 - inner) - (1 - outer), or 1 - inner alone.
    oic = torch.where(action, inner - torch.where(has_outer, outer, 0.0),
                      (1 - inner) - torch.where(has_outer, 1 - outer, 0.0))
    term = (1 - oic).to(cas.dtype)
    zeros = torch.zeros_like(term)
    ones = torch.ones_like(term)
    action_loss = guarded_divide(per_video_sum(torch.where(action, term, zeros), video, num_videos),
                                 per_video_sum(torch.where(action, ones, zeros), video, num_videos))
    background_loss = guarded_divide(per_video_sum(torch.where(action, zeros, term), video, num_videos),
                                     per_video_sum(torch.where(action, zeros, ones), video, num_videos))
    return (action_loss + background_loss) ** 2


def sample_snippets(first: np.ndarray, last: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[R, count] snippets: draw i uniform over [int(s + i n/count), int(s + (i+1) n/count)), n = e - s + 1,
    or that lower end itself when the range is empty (the authors' `feature_sampling`)."""
    first = np.asarray(first, dtype=np.int64)[:, None]
    step = (np.asarray(last, dtype=np.int64)[:, None] + 1 - first) / count
    i = np.arange(count)[None, :]
    low = np.trunc(first + step * i).astype(np.int64)
    high = np.trunc(first + step * (i + 1)).astype(np.int64)
    high = np.where(low >= high, high + 1, high)
    return rng.integers(low, high) if low.size else low


def feature_contrast_loss(embedding: Tensor, packing: Packing, runs: BatchRuns, samples: np.ndarray,
                          temperature: float, mode: str = "last_class") -> Tensor:
    """Per video; `samples` [R, S] are the snippets (within each run's video) representing each feature run."""
    num_videos = packing.num_videos
    if len(runs.feature_video) == 0:
        return embedding.new_zeros(num_videos)
    if mode not in FEATURE_CONTRAST_MODES:
        raise ValueError(f"feature contrast mode must be one of {FEATURE_CONTRAST_MODES}, got {mode!r}")
    device = embedding.device
    video = torch.from_numpy(runs.feature_video).to(device)
    rows = packing.offsets[video][:, None] + torch.from_numpy(samples).to(device)
    vectors = embedding[rows.reshape(-1)].reshape(rows.shape[0], rows.shape[1], -1).mean(dim=1)
    vectors = vectors / torch.norm(vectors, p=2, dim=1, keepdim=True)
    # Groups padded to [G, M, H]: every group's similarity matrix in one batched product.
    group = runs.feature_group
    num_groups = int(group.max()) + 1
    starts = np.searchsorted(group, np.arange(num_groups))
    slot = np.arange(len(group)) - starts[group]
    width = int(slot.max()) + 1
    group_t, slot_t = torch.from_numpy(group).to(device), torch.from_numpy(slot).to(device)
    padded = vectors.new_zeros((num_groups, width, vectors.shape[1])).index_put((group_t, slot_t), vectors)
    valid = torch.zeros((num_groups, width), dtype=torch.bool, device=device).index_put(
        (group_t, slot_t), torch.ones(len(group), dtype=torch.bool, device=device))
    action = torch.zeros((num_groups, width), dtype=vectors.dtype, device=device).index_put(
        (group_t, slot_t), torch.from_numpy(runs.feature_action).to(device, vectors.dtype))
    similarity = torch.exp(torch.bmm(padded, padded.transpose(1, 2)) / temperature)
    off_diagonal = ~torch.eye(width, dtype=torch.bool, device=device)
    similarity = similarity * (valid[:, :, None] & valid[:, None, :] & off_diagonal).to(similarity.dtype)
    score = (similarity * action[:, :, None]).sum(dim=1) / similarity.sum(dim=1).where(valid, 1.0)
    log_score = torch.log(torch.where(valid, score, 1.0))
    group_loss = (-action * log_score).sum(dim=1) / action.sum(dim=1)
    group_video = torch.from_numpy(runs.feature_video[starts]).to(device)
    if mode == "sum":
        return per_video_sum(group_loss, group_video, num_videos)
    # The last group of each video (groups are in class order within a video) is its value.
    last = torch.full((num_videos,), -1, dtype=torch.long, device=device).scatter_reduce(
        0, group_video, torch.arange(num_groups, device=device), reduce="amax")
    return torch.where(last >= 0, group_loss[last.clamp(min=0)], embedding.new_zeros(num_videos))
