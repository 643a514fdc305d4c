"""TSPNet training losses (METHOD.md, "Losses (per video)").

Each video's loss is the mean over its proposals of the point classification
loss plus `center_weight` times the mean of the center (saliency) loss; a
training step averages that over the videos of the batch. Proposals of
several videos travel as one flat batch tagged with a video index, so the
per-video means are segment means, not one mean over all proposals.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tspnet.model import ProposalHeads


class LossTerms(NamedTuple):
    """`total` (differentiable scalar); `classification`, `center`: video means of each term, detached."""

    total: Tensor
    classification: Tensor
    center: Tensor


def point_classification_loss(cls: Tensor, attention: Tensor, point_labels: Tensor) -> Tensor:
    """[N] cross-entropy of attention-scaled logits against the multi-hot point labels.

    z = cls * sigmoid(attention); the target appends a background column set
    where the proposal holds no point; every set class contributes a term.
    """
    if (cls.dim() != 2 or attention.shape != cls.shape[:1]
            or point_labels.shape != (cls.shape[0], cls.shape[1] - 1)):
        raise ValueError(f"expected cls [N, C+1], attention [N], point_labels [N, C]; got "
                         f"{list(cls.shape)}, {list(attention.shape)}, {list(point_labels.shape)}")
    logits = cls * torch.sigmoid(attention).unsqueeze(1)
    labels = point_labels.to(logits.dtype)
    background = (labels.sum(dim=1) == 0).to(logits.dtype)
    target = torch.cat((labels, background.unsqueeze(1)), dim=1)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


def center_loss(center: Tensor, center_labels: Tensor) -> Tensor:
    """[N] squared error between sigmoid(center) and the center label w."""
    if center.dim() != 1 or center_labels.shape != center.shape:
        raise ValueError(f"expected center [N] and center_labels [N]; got "
                         f"{list(center.shape)}, {list(center_labels.shape)}")
    return (torch.sigmoid(center) - center_labels.to(center.dtype)).square()


def per_video_mean(values: Tensor, video_index: Tensor, num_videos: int, counts: Tensor | None = None) -> Tensor:
    """[V] mean of `values` [N] over the proposals of each video (video_index [N] in [0, V)).

    `counts` ([V], proposals per video) may come from the caller, who then vouches
    for `video_index`: checking it here reads values back from the device, a host
    synchronisation per call that a training step on a GPU should not pay.
    """
    if values.dim() != 1 or video_index.shape != values.shape:
        raise ValueError(f"expected values [N] and video_index [N]; got "
                         f"{list(values.shape)}, {list(video_index.shape)}")
    if video_index.is_floating_point() or video_index.dtype == torch.bool:
        raise ValueError(f"video_index must be an integer tensor, got {video_index.dtype}")
    if counts is None:
        counts = checked_counts(video_index.cpu().numpy(), num_videos)
        counts = torch.from_numpy(counts).to(values.device)
    sums = torch.zeros(num_videos, dtype=values.dtype, device=values.device).index_add(0, video_index, values)
    return sums / counts.to(values.dtype)


def checked_counts(video_index: np.ndarray, num_videos: int) -> np.ndarray:
    """Proposals per video, on the host; every video needs at least one (its mean loss is undefined otherwise)."""
    if video_index.size and (video_index.min() < 0 or video_index.max() >= num_videos):
        raise ValueError(f"video_index must lie in [0, {num_videos}), got {video_index.min()}..{video_index.max()}")
    counts = np.bincount(video_index, minlength=num_videos)
    if (counts == 0).any():
        raise ValueError(f"videos {np.flatnonzero(counts == 0).tolist()} have no proposals: "
                         "their mean loss is undefined")
    return counts


def tspnet_loss(heads: ProposalHeads, point_labels: Tensor, center_labels: Tensor, video_index: Tensor,
                num_videos: int, cls_weight: float = 1.0, center_weight: float = 20.0,
                counts: Tensor | None = None) -> LossTerms:
    """Mean over videos of (cls_weight * classification + center_weight * center), each a per-video mean.

    `counts`: see `per_video_mean`.
    """
    classification = per_video_mean(point_classification_loss(heads.cls, heads.attention, point_labels),
                                     video_index, num_videos, counts)
    center = per_video_mean(center_loss(heads.center, center_labels), video_index, num_videos, counts)
    total = (cls_weight * classification + center_weight * center).mean()
    return LossTerms(total=total, classification=classification.mean().detach(), center=center.mean().detach())
