"""tspnet.losses: hand-computed values, and the batched loss against the authors' per-video loop."""

from __future__ import annotations

import math

import pytest
import torch

from tests.reference.model_loop import authors_video_loss
from tspnet.losses import center_loss, per_video_mean, point_classification_loss, tspnet_loss
from tspnet.model import ProposalHeads

LOG_E_PLUS_2 = math.log(math.e + 2)  # log(e^1 + e^0 + e^0) = log(4.71828...) = 1.5514447...
LN3 = math.log(3.0)  # sigmoid(ln 3) = 3 / (3 + 1) = 0.75


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_point_loss_by_hand() -> None:
    # Two proposals, C = 2 (logits: class 0, class 1, background); attention 0 -> sigmoid 0.5.
    cls = tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = tensor([[1.0, 0.0], [0.0, 0.0]])
    losses = point_classification_loss(cls, tensor([0.0, 0.0]), labels)
    # Proposal 0: z = [1, 0, 0], target [1, 0, 0]: -(1 - log(e + 2)) = 0.5514447...
    # Proposal 1: no point -> target [0, 0, 1]: z = [0, 0, 0], -log(1 / 3) = log 3 = 1.0986122...
    torch.testing.assert_close(losses, tensor([LOG_E_PLUS_2 - 1.0, LN3]), rtol=1e-12, atol=0)


def test_attention_scales_the_logits() -> None:
    # attention ln 3 -> 0.75; z = 0.75 * [4, 0, 0] = [3, 0, 0]; label class 1: -(0 - log(e^3 + 2)).
    losses = point_classification_loss(tensor([[4.0, 0.0, 0.0]]), tensor([LN3]), tensor([[0.0, 1.0]]))
    torch.testing.assert_close(losses, tensor([math.log(math.exp(3.0) + 2.0)]), rtol=1e-12, atol=0)


def test_two_points_in_one_proposal_add_both_terms() -> None:
    # z = [1, 0, 0], target [1, 1, 0]: -(1 - log(e + 2)) - (0 - log(e + 2)) = 2 log(e + 2) - 1 = 2.1028894...
    losses = point_classification_loss(tensor([[2.0, 0.0, 0.0]]), tensor([0.0]), tensor([[1.0, 1.0]]))
    torch.testing.assert_close(losses, tensor([2 * LOG_E_PLUS_2 - 1.0]), rtol=1e-12, atol=0)


def test_center_loss_by_hand() -> None:
    # sigmoid(0) = 0.5 vs 0.4 -> 0.01; sigmoid(ln 3) = 0.75 vs 1 -> 0.0625.
    losses = center_loss(tensor([0.0, LN3]), tensor([0.4, 1.0]))
    torch.testing.assert_close(losses, tensor([0.01, 0.0625]), rtol=1e-12, atol=0)


def test_per_video_mean_by_hand() -> None:
    # Video 0: (1 + 2) / 2 = 1.5; video 1: 3; video 2: 10. Proposals need not be grouped.
    means = per_video_mean(tensor([10.0, 1.0, 3.0, 2.0]), torch.tensor([2, 0, 1, 0]), 3)
    assert means.tolist() == [1.5, 3.0, 10.0]


def test_per_video_mean_rejects_bad_indices() -> None:
    with pytest.raises(ValueError, match=r"videos \[1\] have no proposals"):
        per_video_mean(tensor([1.0, 2.0]), torch.tensor([0, 2]), 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        per_video_mean(tensor([1.0, 2.0]), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="integer"):
        per_video_mean(tensor([1.0, 2.0]), tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="values"):
        per_video_mean(tensor([1.0, 2.0]), torch.tensor([0]), 1)


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="point_labels"):
        point_classification_loss(tensor([[1.0, 0.0, 0.0]]), tensor([0.0]), tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="center_labels"):
        center_loss(tensor([0.0, 1.0]), tensor([0.4]))


def test_total_by_hand() -> None:
    # Video 0 = the two proposals of test_point_loss_by_hand, center logits 0 with labels 0.4:
    #   classification (0.5514447 + 1.0986123) / 2 = 0.8250285, center (0.01 + 0.01) / 2 = 0.01
    # Video 1 = the two-point proposal, center logit ln 3 with label 1:
    #   classification 2.1028894, center 0.0625
    # total = ((0.8250285 + 20 * 0.01) + (2.1028894 + 20 * 0.0625)) / 2 = (1.0250285 + 3.3528894) / 2
    heads = ProposalHeads(cls=tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]),
                          attention=tensor([0.0, 0.0, 0.0]), center=tensor([0.0, 0.0, LN3]))
    labels = tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    centers = tensor([0.4, 0.4, 1.0])
    video_index = torch.tensor([0, 0, 1])
    cls0 = (LOG_E_PLUS_2 - 1.0 + LN3) / 2
    cls1 = 2 * LOG_E_PLUS_2 - 1.0
    terms = tspnet_loss(heads, labels, centers, video_index, 2)
    torch.testing.assert_close(terms.total, tensor((cls0 + 0.2 + cls1 + 1.25) / 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms.classification, tensor((cls0 + cls1) / 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms.center, tensor((0.01 + 0.0625) / 2), rtol=1e-12, atol=0)
    # Weights: 2 x classification only.
    weighted = tspnet_loss(heads, labels, centers, video_index, 2, cls_weight=2.0, center_weight=0.0)
    torch.testing.assert_close(weighted.total, tensor(cls0 + cls1), rtol=1e-12, atol=0)


def random_heads(counts: list[int], classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    total = sum(counts)
    cls = (2 * torch.randn(total, classes + 1, generator=generator)).requires_grad_()
    attention = torch.randn(total, generator=generator).requires_grad_()
    center = torch.randn(total, generator=generator).requires_grad_()
    labels = (torch.rand(total, classes, generator=generator) < 0.35).float()
    centers = torch.where(labels.sum(1) > 0, torch.rand(total, generator=generator), torch.full((total,), 0.4))
    return cls, attention, center, labels, centers


def test_batched_loss_and_gradients_equal_the_per_video_average() -> None:
    counts = [5, 1, 9]  # three videos of different sizes, so a global mean would differ
    cls, attention, center, labels, centers = random_heads(counts, classes=4, seed=2)
    video_index = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))

    terms = tspnet_loss(ProposalHeads(cls, attention, center), labels, centers, video_index, 3)
    batched_grads = torch.autograd.grad(terms.total, (cls, attention, center))

    per_video = []
    for rows in torch.split(torch.arange(sum(counts)), counts):
        point, saliency = authors_video_loss(cls[rows].T.unsqueeze(0), attention[rows].reshape(1, 1, -1),
                                             center[rows].reshape(1, 1, -1), labels[rows], centers[rows])
        per_video.append(1.0 * point + 20.0 * saliency)
    expected = sum(per_video) / 3
    expected_grads = torch.autograd.grad(expected, (cls, attention, center))

    torch.testing.assert_close(terms.total, expected, rtol=1e-6, atol=0)
    assert not terms.classification.requires_grad and not terms.center.requires_grad
    for got, want in zip(batched_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * want.abs().max())
