"""Oracle for tspnet.lacp.model, .losses and .train: the authors' one-video-at-a-time structure.

Per video: the network as two Conv1d layers over [1, D, T] (with the
model's own weights, reshaped, so that gradients land on its parameters),
then the loss of LACP's train.py walked literally: focal point losses with
a [T, C+1] weighting, pseudo background points from `select_seed` on this
forward's CAS, and for each ground-truth class the transition indices of the
stored pseudo-label column (`-1` prepended, `T-2` appended), each action run
scored with Python ranges and `torch.mean`, a background run after it unless
it ends at T-2, the feature list sampled run by run and the similarity
matrix of each class, the last one kept (or summed); then the same walk over
the complement for the background runs. A step averages the per-video totals.

`samples(video, class, first, last)` supplies the snippets representing a
feature run (the vectorised path draws them; the oracle must use the same).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tspnet.lacp.model import LACPNet, linear_to_conv


def forward_loop(model: LACPNet, features: Tensor, labels: Tensor | None, r_act: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """One video [T, D] -> (v [C], Q [T, C+1], F [T, H]); no dropout (compare in eval mode)."""
    x = features.T[None]
    hidden = F.relu(F.conv1d(x, linear_to_conv(model.embed.weight, 3), model.embed.bias, padding=1))
    logits = F.conv1d(hidden, model.classifier.weight[:, :, None])
    probs = torch.sigmoid(logits)[0].T  # [T, C+1]
    fused = torch.cat((probs[:, :-1] * (1 - probs[:, -1:]), probs[:, -1:]), dim=1)
    k = max(1, probs.shape[0] // r_act)
    top = probs[:, :-1].sort(dim=0, descending=True).values[:k].mean(dim=0)
    if labels is None:
        score = top
    else:
        score = top * labels + probs[:, :-1].mean(dim=0) * (1 - labels)
    return score, fused, hidden[0].T


def oic(sequence: Tensor, start: int, end: int, ratio: float = 0.25) -> Tensor:
    length = end - start + 1
    inner = torch.mean(sequence[start:end + 1])
    outer_start = max(0, int(start - ratio * length))
    outer_end = min(int(sequence.shape[0] - 1), int(end + ratio * length))
    outer = list(range(outer_start, start)) + list(range(end + 1, outer_end + 1))
    return inner - (torch.mean(sequence[outer]) if outer else 0)


def range_indices(column: Tensor) -> list[int]:
    change = column[1:] - column[:-1]
    indices = torch.nonzero(change).squeeze(1).tolist()
    if not indices:
        return []
    if change[indices[0]] != 1:
        indices = [-1] + indices
    if change[indices[-1]] != -1:
        indices = indices + [change.shape[0] - 1]
    return indices


def video_loss_loop(score: Tensor, fused: Tensor, embedding: Tensor, labels: Tensor, points: Tensor,
                    pseudo: Tensor | None, select_seed: Callable, samples: Callable, weights: tuple[float, ...],
                    temperature: float = 0.1, feature_mode: str = "last_class", ratio: float = 0.25) -> dict:
    """The authors' Total_loss for one video; terms and the weighted total."""
    length = fused.shape[0]
    loss_video = F.binary_cross_entropy(score, labels).mean()
    anno = torch.cat((points, torch.zeros(length, 1)), dim=1)
    weighting = anno.max(dim=1, keepdim=True)[0]
    focal = ((1 - fused) * anno + fused * (1 - anno)) ** 2
    loss_point = (focal * F.binary_cross_entropy(fused, anno, reduction="none") * weighting).sum() / weighting.sum()
    _, background = select_seed(fused.detach().numpy(), points.numpy())
    background = torch.from_numpy(np.asarray(background, dtype=np.float32))[:, None]
    target = torch.zeros_like(anno)
    target[:, -1] = 1
    focal = ((1 - fused) * target + fused * (1 - target)) ** 2
    count = background.sum()
    loss_background = ((focal * F.binary_cross_entropy(fused, target, reduction="none") * background).sum() / count
                       if count > 0 else torch.zeros(()))
    loss_action_score = loss_background_score = loss_feature = torch.zeros(())
    if pseudo is not None:
        classes = torch.nonzero(labels).squeeze(1).tolist()
        total, action_count = torch.zeros(()), 0
        for c in classes:
            bounds = range_indices(pseudo[:, c])
            if not bounds:
                continue
            kinds, vectors = [], []
            if bounds[0] > -1:
                kinds.append(0)
                vectors.append(embedding[samples(c, 0, bounds[0])].mean(dim=0))
            pairs = len(bounds) // 2
            for i in range(pairs):
                if bounds[2 * i + 1] - bounds[2 * i] < 1:
                    continue
                start, end = bounds[2 * i] + 1, bounds[2 * i + 1]
                kinds.append(1)
                vectors.append(embedding[samples(c, start, end)].mean(dim=0))
                if bounds[2 * i + 1] != length - 2:
                    after_end = length - 1 if i == pairs - 1 else bounds[2 * i + 2]
                    kinds.append(0)
                    vectors.append(embedding[samples(c, bounds[2 * i + 1] + 1, after_end)].mean(dim=0))
                total = total + 1 - oic(fused[:, c], start, end, ratio)
                action_count += 1
            if sum(kinds) > 1:
                stacked = torch.stack(vectors)
                stacked = stacked / torch.norm(stacked, dim=1, p=2)[:, None]
                kind = torch.tensor(kinds, dtype=torch.float32)
                similarity = torch.exp(stacked @ stacked.T / temperature).clone().fill_diagonal_(0)
                p = (similarity * kind[:, None]).sum(dim=0) / similarity.sum(dim=0)
                value = (-kind * torch.log(p)).sum() / kind.sum()
                loss_feature = loss_feature + value if feature_mode == "sum" else value
        if action_count:
            loss_action_score = total / action_count
        total, background_count = torch.zeros(()), 0
        for c in classes:
            bounds = range_indices(1 - pseudo[:, c])
            for i in range(len(bounds) // 2):
                if bounds[2 * i + 1] - bounds[2 * i] < 1:
                    continue
                total = total + 1 - oic(1 - fused[:, c], bounds[2 * i] + 1, bounds[2 * i + 1], ratio)
                background_count += 1
        if background_count:
            loss_background_score = total / background_count
    loss_score = (loss_action_score + loss_background_score) ** 2
    terms = {"video": loss_video, "point": loss_point, "background": loss_background, "score_contrast": loss_score,
             "feature_contrast": loss_feature}
    terms["total"] = sum(w * terms[name] for w, name in zip(weights, list(terms)))
    return terms
