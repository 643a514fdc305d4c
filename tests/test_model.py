"""tspnet.model: contrast pooling, the heads, and the batched path against the authors' per-video structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference.model_loop import (Video, authors_forward, batched_inputs, oracle_video_roi,
                                        per_video_training_loss)
from tspnet.losses import tspnet_loss
from tspnet.model import ProposalHeads, TSPNet, contrast_pool, proposal_features

DIM, CLASSES = 8, 3


def test_contrast_pool_by_hand() -> None:
    # 12 bins, D = 2. Parts: bins [0, 2), [2, 10), [10, 12).
    channel0 = [3, 1, 5, 2, 7, 0, 4, 4, 6, 1, 2, 9]  # f_l = 3, f_in = 7, f_r = 9
    channel1 = [0, -2, -1, -5, -3, -1, -4, -2, -6, -1, 8, 1]  # f_l = 0, f_in = -1, f_r = 8
    roi = torch.tensor([channel0, channel1], dtype=torch.float32).T.unsqueeze(0)  # [1, 12, 2]
    pooled = contrast_pool(roi)
    # [f_in - f_l, f_in, f_in - f_r] per channel: [7 - 3, -1 - 0, 7, -1, 7 - 9, -1 - 8]
    assert pooled.tolist() == [[4.0, -1.0, 7.0, -1.0, -2.0, -9.0]]


def test_contrast_pool_needs_six_bins() -> None:
    with pytest.raises(ValueError, match="bins >= 6"):
        contrast_pool(torch.zeros(1, 5, 2))


def test_head_shapes() -> None:
    torch.manual_seed(0)
    model = TSPNet(DIM, CLASSES)
    heads = model(torch.randn(7, 3 * DIM))
    assert isinstance(heads, ProposalHeads)
    assert heads.cls.shape == (7, CLASSES + 1)
    assert heads.attention.shape == (7,) and heads.center.shape == (7,)
    assert model.fusion[2].p == 0.5
    with pytest.raises(ValueError, match=r"shape \[N, 24\]"):
        model(torch.randn(7, DIM))


def test_rejects_bad_construction() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        TSPNet(DIM, 0)
    with pytest.raises(ValueError, match="dropout"):
        TSPNet(DIM, CLASSES, dropout=1.0)


def test_initial_weights_match_the_authors_conv1d_heads() -> None:
    """Same seed, same construction order: Linear heads draw exactly the authors' Conv1d(k=1) weights."""

    def conv_head(outputs: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv1d(DIM, DIM // 2, 1), nn.ReLU(), nn.Conv1d(DIM // 2, outputs, 1))

    torch.manual_seed(3)
    authors = [nn.Sequential(nn.Linear(3 * DIM, DIM), nn.ReLU(), nn.Dropout(0.5)),
               conv_head(CLASSES + 1), conv_head(1), conv_head(1)]
    torch.manual_seed(3)
    model = TSPNet(DIM, CLASSES)
    ours = [model.fusion, model.classifier, model.attention, model.center]
    for theirs, mine in zip(authors, ours):
        for a, b in zip(theirs.parameters(), mine.parameters()):
            assert torch.equal(a.reshape(b.shape), b)


def random_videos(seed: int, dtype: torch.dtype, count: int = 4) -> list[Video]:
    """Videos of 1..40 snippets with 1..12 proposals; some proposals hold no point, some hold two."""
    rng = np.random.default_rng(seed)
    videos = []
    for length in [1, *rng.integers(2, 41, size=count - 1)]:
        proposals_count = int(rng.integers(1, 13))
        start = rng.uniform(-0.2 * length, length, size=proposals_count)
        span = rng.uniform(0.05, 1.5 * length, size=proposals_count)
        labels = (rng.random((proposals_count, CLASSES)) < 0.3).astype(np.float64)
        centers = np.where(labels.sum(1) > 0, rng.random(proposals_count), 0.4)
        videos.append(Video(
            features=torch.from_numpy(rng.normal(size=(length, DIM))).to(dtype),
            proposals=torch.from_numpy(np.stack([start, start + span], 1)),
            point_labels=torch.from_numpy(labels).to(dtype),
            center_labels=torch.from_numpy(centers).to(dtype),
        ))
    return videos


def make_model(dtype: torch.dtype) -> TSPNet:
    torch.manual_seed(11)
    return TSPNet(DIM, CLASSES).to(dtype).eval()


TOLERANCES = [(torch.float32, 1e-5), (torch.float64, 1e-10)]


@pytest.mark.parametrize("dtype, tolerance", TOLERANCES)
def test_network_matches_the_per_video_structure(dtype: torch.dtype, tolerance: float) -> None:
    videos = random_videos(seed=5, dtype=dtype)
    model = make_model(dtype)
    features, segments, offsets, lengths, _ = batched_inputs(videos)
    with torch.no_grad():
        heads = model(proposal_features(features, segments, offsets, lengths))
        per_video = [authors_forward(model, oracle_video_roi(v.features, v.proposals).unsqueeze(0))
                     for v in videos]
    expected_cls = torch.cat([cls[0].T for cls, _, _ in per_video])
    expected_attention = torch.cat([attention.reshape(-1) for _, attention, _ in per_video])
    expected_center = torch.cat([center.reshape(-1) for _, _, center in per_video])
    for got, expected in ((heads.cls, expected_cls), (heads.attention, expected_attention),
                          (heads.center, expected_center)):
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_proposal_features_in_chunks_equal_one_pass(dtype: torch.dtype) -> None:
    features, segments, offsets, lengths, _ = batched_inputs(random_videos(seed=9, dtype=dtype))
    whole = proposal_features(features, segments, offsets, lengths, chunk=len(segments))
    assert not whole.requires_grad and whole.dtype == dtype
    for chunk in (1, 4):
        assert torch.equal(proposal_features(features, segments, offsets, lengths, chunk=chunk), whole)
    out = torch.empty(len(segments), 3 * DIM, dtype=torch.bfloat16)
    assert proposal_features(features, segments, offsets, lengths, chunk=4, out=out) is out
    assert torch.equal(out, whole.to(torch.bfloat16))
    with pytest.raises(ValueError, match="out must have shape"):
        proposal_features(features, segments, offsets, lengths, out=out[1:])


@pytest.mark.parametrize("dtype, tolerance", TOLERANCES)
def test_batched_training_loss_and_gradients_match_per_video_loop(dtype: torch.dtype, tolerance: float) -> None:
    videos = random_videos(seed=21, dtype=dtype)
    model = make_model(dtype)

    model.zero_grad()
    expected_total, expected_cls, expected_center = per_video_training_loss(model, videos)
    expected_total.backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    features, segments, offsets, lengths, video_index = batched_inputs(videos)
    heads = model(proposal_features(features, segments, offsets, lengths))
    labels = torch.cat([v.point_labels for v in videos])
    centers = torch.cat([v.center_labels for v in videos])
    terms = tspnet_loss(heads, labels, centers, video_index, len(videos))
    terms.total.backward()

    torch.testing.assert_close(terms.total, expected_total, rtol=tolerance, atol=0)
    torch.testing.assert_close(terms.classification, expected_cls, rtol=tolerance, atol=0)
    torch.testing.assert_close(terms.center, expected_center, rtol=tolerance, atol=0)
    for param, expected in zip(model.parameters(), expected_grads):
        torch.testing.assert_close(param.grad, expected, rtol=tolerance, atol=tolerance * expected.abs().max())
