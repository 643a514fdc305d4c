"""Oracle for tspnet.model and tspnet.losses: the authors' per-video structure, with the same weights.

One video at a time: RoI features [1, M, 12, D] (the per-video loop oracle by
default), contrast pooling by slicing, the fusion layer, then the heads as
Conv1d(kernel_size=1) over the [1, D, M] sequence (here F.conv1d with the
model's Linear weights, so gradients land on the model's own parameters).
The loss follows the authors' per-video loss, and a training step averages
the per-video totals over the videos.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.reference.roi_loop import video_roi_align


class Video(NamedTuple):
    """One training video: features [T, D], proposals [M, 2] (snippets), point_labels [M, C], center_labels [M]."""

    features: Tensor
    proposals: Tensor
    point_labels: Tensor
    center_labels: Tensor


def oracle_video_roi(features: Tensor, proposals: Tensor) -> Tensor:
    """[M, 12, D] RoI features from the loop oracle, in the dtype of `features`."""
    roi = video_roi_align(features.detach().cpu().double().numpy(), proposals.detach().cpu().double().numpy())
    return torch.from_numpy(roi).to(dtype=features.dtype, device=features.device)


def _conv_head(head: nn.Sequential, x: Tensor) -> Tensor:
    """Linear -> ReLU -> Linear applied as two kernel-1 convolutions over [1, D, M]."""
    first, last = head[0], head[2]
    hidden = F.relu(F.conv1d(x, first.weight.unsqueeze(-1), first.bias))
    return F.conv1d(hidden, last.weight.unsqueeze(-1), last.bias)


def authors_forward(model: nn.Module, roi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """roi [1, M, R, D] -> (cls [1, C+1, M], attention [1, 1, M], center [1, 1, M])."""
    roi_size = roi.shape[2]
    left = roi[:, :, : roi_size // 6, :].max(2)[0]
    inner = roi[:, :, roi_size // 6: roi_size // 6 * 5, :].max(2)[0]
    right = roi[:, :, roi_size // 6 * 5:, :].max(2)[0]
    pooled = torch.cat((inner - left, inner, inner - right), dim=2)
    fused = model.fusion(pooled).transpose(-1, -2)  # [1, D, M]
    return _conv_head(model.classifier, fused), _conv_head(model.attention, fused), _conv_head(model.center, fused)


def authors_video_loss(cls: Tensor, attention: Tensor, center: Tensor, point_labels: Tensor,
                       center_labels: Tensor) -> tuple[Tensor, Tensor]:
    """One video's (point classification loss, saliency loss) from [1, C+1, M] / [1, 1, M] head outputs."""
    scaled = cls.permute(0, 2, 1) * torch.sigmoid(attention).permute(0, 2, 1)  # [1, M, C+1]
    labels = point_labels.to(scaled.dtype).unsqueeze(0)  # [1, M, C]
    target = torch.cat((labels, torch.zeros_like(labels[:, :, :1])), dim=-1)
    target[:, torch.where(labels[0].sum(dim=-1) == 0)[0], -1] = 1
    point_loss = -(target * F.log_softmax(scaled, dim=-1)).sum(dim=-1).mean()
    saliency_loss = torch.mean(torch.square(torch.sigmoid(center).reshape(-1) - center_labels.to(center.dtype)))
    return point_loss, saliency_loss


def per_video_training_loss(model: nn.Module, videos: Sequence[Video],
                            video_roi: Callable[[Tensor, Tensor], Tensor] = oracle_video_roi,
                            cls_weight: float = 1.0, center_weight: float = 20.0) -> tuple[Tensor, Tensor, Tensor]:
    """(total, mean classification term, mean center term) of one step, one forward per video.

    `video_roi(features [T, D], proposals [M, 2]) -> [M, 12, D]` extracts one
    video's RoI features (the loop oracle by default; a benchmark may pass a
    faster per-video kernel).
    """
    totals, point_terms, saliency_terms = [], [], []
    for video in videos:
        with torch.no_grad():
            roi = video_roi(video.features, video.proposals).unsqueeze(0)
        cls, attention, center = authors_forward(model, roi)
        point_loss, saliency_loss = authors_video_loss(cls, attention, center, video.point_labels,
                                                       video.center_labels)
        totals.append(cls_weight * point_loss + center_weight * saliency_loss)
        point_terms.append(point_loss.detach())
        saliency_terms.append(saliency_loss.detach())
    count = len(videos)
    return sum(totals) / count, sum(point_terms) / count, sum(saliency_terms) / count


def batched_inputs(videos: Sequence[Video]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The batched path's inputs: flat features [sum T, D], segments [N, 2], offsets, lengths, video_index [N]."""
    features = torch.cat([video.features for video in videos])
    segments = torch.cat([video.proposals for video in videos])
    counts = torch.tensor([len(video.proposals) for video in videos])
    video_lengths = torch.tensor([len(video.features) for video in videos])
    video_offsets = torch.cumsum(video_lengths, 0) - video_lengths
    video_index = torch.repeat_interleave(torch.arange(len(videos)), counts)
    return features, segments, video_offsets[video_index], video_lengths[video_index], video_index
