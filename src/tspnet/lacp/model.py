"""LACP's network (LACP.md section 2), over many videos in one forward.

The authors run one video per forward: Conv1d(D, H, kernel 3, padding 1) ->
ReLU (the embedding F) -> Dropout -> Conv1d(H, C+1, kernel 1, no bias) ->
sigmoid, then the fused CAS Q and top-k pooled video scores.

Why the batched form here gives the same numbers:
- A kernel-3 convolution with zero padding is one linear map of each
  snippet's window `[x[t-1], x[t], x[t+1]]`, with x = 0 outside the video:
  `Linear(3D, H)` whose weight is the Conv1d weight `[H, D, 3]` with its taps
  laid side by side (`conv_to_linear`). A kernel-1 convolution is a Linear.
- Videos are *packed*: their snippets back to back as rows of one [N, D]
  matrix. The window of a video's first snippet gets zeros instead of the
  previous video's last row (and likewise at its last snippet), so every row
  sees exactly the neighbours it has in a one-video forward; nothing is
  computed on padding.
- Everything per video (top-k pooling over the video's own T, full-video
  means) runs on a small [B, T_max, C] copy of the probabilities, padded with
  -1, below every probability, so padding never reaches a top-k; k is each
  video's own `max(1, T // r_act)` (the authors' `T // r_act` is 0, and the
  score NaN, for T < r_act: LACP.md quirk 5).

The layers are created as the authors' Conv1d modules, in their order, and
converted, so that a seed draws the authors' initial weights. Dropout (p 0.7,
on the embedding, before the classifier) draws its mask faster on the CPU
(`dropout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_to_linear(weight: Tensor) -> Tensor:
    """Conv1d weight [H, D, K] -> Linear weight [H, K*D] over the window `[x[t-1], x[t], x[t+1]]`."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


def linear_to_conv(weight: Tensor, kernel: int) -> Tensor:
    """Linear weight [H, K*D] -> Conv1d weight [H, D, K] (the inverse of `conv_to_linear`)."""
    return weight.reshape(weight.shape[0], kernel, -1).permute(0, 2, 1).contiguous()


@dataclass(frozen=True)
class Packing:
    """Where each video's snippets sit among the packed rows: video b is rows offsets[b] : offsets[b] + lengths[b]."""

    lengths: Tensor  # [B] int64
    offsets: Tensor  # [B] int64
    video: Tensor  # [N] int64, the video of each row
    position: Tensor  # [N] int64, the row's snippet index within its video

    @classmethod
    def of(cls, lengths: Tensor | np.ndarray | list[int]) -> "Packing":
        lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        if lengths.dim() != 1 or len(lengths) == 0 or int(lengths.min()) < 1:
            raise ValueError(f"packing needs at least one video of at least one snippet, got lengths {lengths.tolist()}")
        offsets = torch.cumsum(lengths, 0) - lengths
        video = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        position = torch.arange(int(lengths.sum())) - offsets[video]
        return cls(lengths, offsets, video, position)

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    @property
    def num_rows(self) -> int:
        return len(self.video)

    def to(self, device: torch.device) -> "Packing":
        return Packing(*(t.to(device) for t in (self.lengths, self.offsets, self.video, self.position)))

    def padded(self, rows: Tensor, fill: float) -> Tensor:
        """[N, K] packed rows -> [B, T_max, K], `fill` beyond each video's end."""
        out = rows.new_full((self.num_videos, int(self.lengths.max()), rows.shape[1]), fill)
        return out.index_put((self.video, self.position), rows)


class LACPNet(nn.Module):
    """Packed features [N, D] -> (embedding F [N, H], probabilities P = sigmoid(logits) [N, C+1]).

    Column C of P is the background. `fused_cas` and `video_scores` complete
    the authors' forward.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 2048, dropout: float = 0.7):
        super().__init__()
        self.feature_dim, self.num_classes, self.hidden = int(feature_dim), int(num_classes), int(hidden)
        # The authors' modules, in their construction order, for their initial weights.
        conv = nn.Conv1d(feature_dim, hidden, kernel_size=3, stride=1, padding=1)
        classifier = nn.Conv1d(hidden, num_classes + 1, kernel_size=1, stride=1, padding=0, bias=False)
        self.embed = nn.Linear(3 * feature_dim, hidden)
        self.classifier = nn.Linear(hidden, num_classes + 1, bias=False)
        self.dropout = float(dropout)
        with torch.no_grad():
            self.embed.weight.copy_(conv_to_linear(conv.weight))
            self.embed.bias.copy_(conv.bias)
            self.classifier.weight.copy_(classifier.weight[:, :, 0])

    def forward(self, features: Tensor, packing: Packing) -> tuple[Tensor, Tensor]:
        embedding = torch.relu_(self.embed(windows(features, packing)))  # in place: autograd keeps the result
        probs = torch.sigmoid(self.classifier(dropout(embedding, self.dropout, self.training)))
        return embedding, probs


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """nn.Dropout(p): each element kept with probability 1 - p and scaled by 1 / (1 - p).

    On the CPU the keep mask is drawn as `torch.rand(...) < 1 - p` (the same
    Bernoulli draw, up to float32's 2^-24 resolution), about 3x faster than
    torch's CPU `bernoulli_` kernel, which took a third of a training step.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep = 1.0 - p
    mask = (torch.rand(x.shape, dtype=x.dtype, device=x.device) < keep).to(x.dtype).mul_(1.0 / keep)
    return x * mask


def windows(features: Tensor, packing: Packing) -> Tensor:
    """[N, 3D]: each row's `[x[t-1], x[t], x[t+1]]`, zeros beyond its own video's ends."""
    rows, dim = features.shape
    out = features.new_empty((rows, 3 * dim))
    out[:, dim:2 * dim] = features
    out[1:, :dim] = features[:-1]
    out[:-1, 2 * dim:] = features[1:]
    out[packing.offsets, :dim] = 0.0
    out[packing.offsets + packing.lengths - 1, 2 * dim:] = 0.0
    return out


def fused_cas(probs: Tensor) -> Tensor:
    """Q [.., C+1]: action columns times (1 - background); the background column as it is."""
    background = probs[..., -1:]
    return torch.cat((probs[..., :-1] * (1.0 - background), background), dim=-1)


def topk_sizes(lengths: Tensor, r_act: int) -> Tensor:
    """k = max(1, T // r_act) per video (the authors' k is 0 below r_act snippets: quirk 5)."""
    return torch.clamp(torch.div(lengths, r_act, rounding_mode="floor"), min=1)


def video_scores(probs: Tensor, packing: Packing, r_act: int, labels: Tensor | None = None) -> Tensor:
    """[B, C] video scores v from the unfused P.

    Without labels (inference): the mean of each class's k largest P over the
    video. With multi-hot `labels` [B, C] (training, the search pass): that
    top-k mean where the label is 1 and the plain mean of P over the video
    where it is 0 (quirk 6).
    """
    actions = probs[:, :-1]
    padded = packing.padded(actions, -1.0)  # below every probability: padding never enters a top-k
    k = topk_sizes(packing.lengths, r_act)
    top = padded.topk(int(k.max()), dim=1).values  # [B, k_max, C]
    keep = torch.arange(top.shape[1], device=top.device)[None, :] < k[:, None]
    topk_mean = (top * keep[..., None]).sum(dim=1) / k[:, None]
    if labels is None:
        return topk_mean
    video_mean = actions.new_zeros((packing.num_videos, actions.shape[1])).index_add(0, packing.video, actions)
    video_mean = video_mean / packing.lengths[:, None]
    return topk_mean * labels + video_mean * (1 - labels)


def pack_rows(lengths: np.ndarray, max_rows: int) -> list[list[int]]:
    """Consecutive groups of videos of at most `max_rows` snippets each (a longer video goes alone)."""
    groups: list[list[int]] = []
    rows = 0
    for i, length in enumerate(np.asarray(lengths).tolist()):
        if groups and rows + length <= max_rows:
            groups[-1].append(i)
            rows += length
        else:
            groups.append([i])
            rows = length
    return groups


@torch.no_grad()
def predict(model: LACPNet, features: Tensor, offsets: np.ndarray, lengths: np.ndarray, r_act: int,
            labels: np.ndarray | None = None, max_rows: int = 8192, bf16: bool = False
            ) -> tuple[list[np.ndarray], np.ndarray]:
    """Eval-mode fused CAS Q [T_i, C+1] (float32) of every video, and video scores v [V, C].

    `features` [N, D] holds the videos back to back (`offsets`, `lengths`, as
    a FeatureStore); `labels` [V, C] switches v to its training form. Videos
    go through the network `max_rows` snippets at a time.
    """
    from tspnet.precision import autocast

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cas_out: list[np.ndarray] = []
    scores_out = []
    for group in pack_rows(lengths, max_rows):
        packing = Packing.of(lengths[group]).to(device)
        first, last = group[0], group[-1]
        if offsets[last] - offsets[first] == lengths[group[:-1]].sum():  # back to back: a view, no copy
            rows = features[int(offsets[first]):int(offsets[last] + lengths[last])]
        else:
            rows = features[torch.cat([torch.arange(int(offsets[i]), int(offsets[i] + lengths[i])) for i in group])]
        with autocast(device, bf16):
            _, probs = model(rows.to(device), packing)
        probs = probs.float()
        group_labels = None if labels is None else torch.as_tensor(labels[group], dtype=probs.dtype, device=device)
        scores_out.append(video_scores(probs, packing, r_act, group_labels).cpu().numpy())
        cas = fused_cas(probs).cpu().numpy()
        cas_out += np.split(cas, np.cumsum(lengths[group])[:-1])
    model.train(was_training)
    return cas_out, np.concatenate(scores_out)
