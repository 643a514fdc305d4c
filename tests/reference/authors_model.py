"""Oracle for tspnet.checkpoint: the authors' proposal network in their own module layout.

Straightforwardly as METHOD.md describes it: a Linear fusion over the pooled
[1, M, 3D] features, then the three heads as Conv1d(kernel_size=1) layers
over the fused sequence transposed to [1, D, M]. Its `state_dict()` has the
released checkpoint's keys (`prop_backbone.prop_fusion.0.weight`, ...), with
the center head under either of the two names the loader accepts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_head(feature_dim: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(feature_dim, feature_dim // 2, 1), nn.ReLU(),
                         nn.Conv1d(feature_dim // 2, outputs, 1))


class AuthorsBackbone(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, center_name: str = "prop_center") -> None:
        super().__init__()
        self.prop_fusion = nn.Sequential(nn.Linear(3 * feature_dim, feature_dim), nn.ReLU(), nn.Dropout(0.5))
        self.prop_classifier = _conv_head(feature_dim, num_classes + 1)
        self.prop_attention = _conv_head(feature_dim, 1)
        self.center_name = center_name
        self.add_module(center_name, _conv_head(feature_dim, 1))

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pooled [1, M, 3D] -> (cls [1, C+1, M], attention [1, 1, M], center [1, 1, M])."""
        fused = self.prop_fusion(pooled).transpose(-1, -2)
        return self.prop_classifier(fused), self.prop_attention(fused), getattr(self, self.center_name)(fused)


class AuthorsModel(nn.Module):
    """The authors' TSPNet_Model as far as its weights go: one `prop_backbone`."""

    def __init__(self, feature_dim: int, num_classes: int, center_name: str = "prop_center") -> None:
        super().__init__()
        self.prop_backbone = AuthorsBackbone(feature_dim, num_classes, center_name)

    @torch.no_grad()
    def heads(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[M, 3D] rows -> (cls [M, C+1], attention [M], center [M]), in eval mode."""
        self.eval()
        cls, attention, center = self.prop_backbone(pooled.unsqueeze(0))
        return cls[0].T, attention[0, 0], center[0, 0]
