"""The TSPNet proposal network (METHOD.md, "The network", steps 2-4).

RoI features of each proposal are contrast-pooled into one 3D-wide vector,
fused by Linear(3D, D) -> ReLU -> Dropout, and read by three two-layer heads:
classification (C actions + background), attention and center (saliency).

The authors write the heads as Conv1d(kernel_size=1) over a [1, D, M]
sequence; that is the same map as Linear over [M, D], and both layers draw
their default initial weights from the same distribution, so proposals of
many videos can go through one forward as rows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from tspnet.roi import RoiWeights, block_proposals


class ProposalHeads(NamedTuple):
    """Per-proposal logits: `cls` [N, C+1], `attention` [N], `center` [N]."""

    cls: Tensor
    attention: Tensor
    center: Tensor


def contrast_pool(roi: Tensor) -> Tensor:
    """[N, bins, D] -> [N, 3D]: `[f_in - f_l, f_in, f_in - f_r]`, maxima over the bins of each part.

    The parts are bins [0, bins // 6) (left context), [bins // 6, bins // 6 * 5)
    (inside) and [bins // 6 * 5, bins) (right context).
    """
    if roi.dim() != 3 or roi.shape[1] < 6:
        raise ValueError(f"roi features must have shape [N, bins >= 6, D], got {list(roi.shape)}")
    bins = roi.shape[1]
    inner_start, inner_end = bins // 6, bins // 6 * 5
    left = roi[:, :inner_start].amax(dim=1)
    inner = roi[:, inner_start:inner_end].amax(dim=1)
    right = roi[:, inner_end:].amax(dim=1)
    return torch.cat((inner - left, inner, inner - right), dim=1)


@torch.no_grad()
def proposal_features(features: Tensor, segments: Tensor, offsets: Tensor, lengths: Tensor,
                      bins: int = 12, widen_ratio: float = 0.25, chunk: int | None = None,
                      out: Tensor | None = None) -> Tensor:
    """[N, 3D] network inputs: contrast-pooled RoI features (arguments as in `tspnet.roi.roi_align`).

    RoI features are computed `chunk` proposals at a time (default: a few MB of
    them, `tspnet.roi.block_proposals`) into one reused buffer and pooled at
    once, so nothing of size [N, bins, D] is ever held. The result is written
    into `out` when given ([N, 3D], any floating dtype: pooled in the dtype of
    `features`, then rounded once on the way in). Features are inputs, never
    trained: no graph.
    """
    weights = RoiWeights(features, segments, offsets, lengths, bins, widen_ratio)
    count, dim = weights.count, features.shape[1]
    chunk = block_proposals(features, bins) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if out is None:
        out = torch.empty((count, 3 * dim), dtype=features.dtype, device=features.device)
    elif out.shape != (count, 3 * dim):
        raise ValueError(f"out must have shape [{count}, {3 * dim}], got {list(out.shape)}")
    buffer = torch.empty((min(chunk, count), bins, dim), dtype=features.dtype, device=features.device)
    for first in range(0, count, chunk):
        last = min(first + chunk, count)
        out[first:last] = contrast_pool(weights.product(first, last, features, out=buffer[:last - first]))
    return out


def _head(feature_dim: int, outputs: int) -> nn.Sequential:
    hidden = feature_dim // 2
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class TSPNet(nn.Module):
    """Fusion layer and the classification, attention and center heads over pooled proposal features."""

    def __init__(self, feature_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        if feature_dim < 2:
            raise ValueError(f"feature_dim must be >= 2, got {feature_dim}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        # Created in the authors' order, so a given seed draws the same initial weights.
        self.fusion = nn.Sequential(nn.Linear(3 * feature_dim, feature_dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = _head(feature_dim, num_classes + 1)
        self.attention = _head(feature_dim, 1)
        self.center = _head(feature_dim, 1)

    def forward(self, pooled: Tensor) -> ProposalHeads:
        """pooled: [N, 3D] from `proposal_features`."""
        if pooled.dim() != 2 or pooled.shape[1] != 3 * self.feature_dim:
            raise ValueError(f"pooled features must have shape [N, {3 * self.feature_dim}], "
                             f"got {list(pooled.shape)}")
        fused = self.fusion(pooled)
        return ProposalHeads(
            cls=self.classifier(fused),
            attention=self.attention(fused).squeeze(1),
            center=self.center(fused).squeeze(1),
        )
