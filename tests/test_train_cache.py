"""tspnet.train's pooled-feature cache, batched prediction and single training step."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import tspnet.roi as roi
import tspnet.train as train
from tspnet.datasets import FeatureStore
from tspnet.labels import assign_labels
from tspnet.losses import tspnet_loss
from tspnet.model import TSPNet, proposal_features
from tspnet.proposals import Proposals

DIM, CLASSES = 8, 3


class StubDataset:
    """What pooled_features reads of a Dataset, from in-memory features."""

    def __init__(self, features: list[torch.Tensor], names: list[str]):
        self.features = dict(zip(names, features))
        self.info = SimpleNamespace(feature_dim=DIM)

    def require_features(self) -> None:
        pass

    def feature_store(self, split: str, videos: list[str]) -> FeatureStore:
        parts = [self.features[v] for v in videos]
        lengths = torch.tensor([len(p) for p in parts])
        return FeatureStore(list(videos), torch.cat(parts), torch.cumsum(lengths, 0) - lengths, lengths)


def toy_split(seed: int = 0):
    """5 videos of 3..40 snippets; video 2 has no proposals, the others 1..9."""
    rng = np.random.default_rng(seed)
    names = [f"v{i}" for i in range(5)]
    lengths = [3, 40, 17, 25, 9]
    counts = [4, 9, 0, 1, 6]
    features = [torch.from_numpy(rng.normal(size=(t, DIM)).astype(np.float32)) for t in lengths]
    start = np.concatenate([rng.uniform(0, t, n) for t, n in zip(lengths, counts)])
    end = start + rng.uniform(0.1, 12, len(start))
    index = np.repeat(np.arange(5), counts)
    proposals = Proposals(names, index, start, end, np.zeros(len(start), np.int64), np.ones(len(start)))
    return StubDataset(features, names), proposals, features


def reference_cache(features: list[torch.Tensor], proposals: Proposals) -> torch.Tensor:
    """One proposal_features call over all videos back to back."""
    lengths = torch.tensor([len(f) for f in features])
    offsets = torch.cumsum(lengths, 0) - lengths
    index = torch.from_numpy(proposals.video_index)
    return proposal_features(torch.cat(features), torch.from_numpy(proposals.segments), offsets[index], lengths[index])


@pytest.mark.parametrize("block_rows, videos_per_chunk", [(1, 1), (2, 2), (3, 32), (10_000, 32)])
def test_pooled_cache_does_not_depend_on_how_it_is_cut(monkeypatch, block_rows: int, videos_per_chunk: int):
    dataset, proposals, features = toy_split()
    # BLOCK_BYTES bounds the RoI output per product: 12 bins x 8 dims x 4 bytes per proposal.
    monkeypatch.setattr(roi, "BLOCK_BYTES", block_rows * 12 * DIM * 4)
    cache = train.pooled_features(dataset, "train", proposals, 12, 0.25, torch.device("cpu"), videos_per_chunk,
                                  show_progress=False)
    expected = reference_cache(features, proposals)
    assert cache.shape == (20, 3 * DIM) and cache.dtype == torch.float32
    assert torch.equal(cache, expected)  # bit for bit: every cut computes each row alone


def test_a_bfloat16_cache_is_the_float32_cache_rounded_once():
    dataset, proposals, features = toy_split()
    cache = train.pooled_features(dataset, "train", proposals, 12, 0.25, torch.device("cpu"), 2,
                                  show_progress=False, dtype=torch.bfloat16)
    assert cache.dtype == torch.bfloat16
    assert torch.equal(cache, reference_cache(features, proposals).to(torch.bfloat16))


def test_predict_does_not_depend_on_the_batch_and_keeps_the_mode():
    torch.manual_seed(0)
    model = TSPNet(DIM, CLASSES).train()
    pooled = torch.randn(23, 3 * DIM)
    whole = train.predict(model, pooled, batch=100)
    pieces = train.predict(model, pooled, batch=4)  # 4 + 4 + ... + 3 rows
    assert model.training
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    model.eval()
    torch.testing.assert_close(whole.center, model(pooled).center.detach(), rtol=1e-6, atol=1e-6)


def step_problem():
    dataset, proposals, features = toy_split(seed=3)
    pooled = reference_cache(features, proposals)
    points = pd.DataFrame({"point_id": [0, 1, 2], "video": ["v0", "v1", "v4"], "class_index": [0, 2, 1],
                           "time": [1.5, 20.0, 4.0]})
    labels = assign_labels(proposals, points, CLASSES, 0.4)
    config = train.TrainConfig(iterations=1, batch_videos=4, max_proposals=3000, lr=1e-3, weight_decay=1e-3,
                               dropout=0.0, roi_bins=12, widen_ratio=0.25, cls_weight=1.0, center_weight=20.0,
                               soft_value=0.4, update_every=0, update_threshold=0.8, log_every=1)
    rows, video_index = train.batch_rows([0, 1, 3, 4], proposals.video_slices(), 3000, torch.Generator())
    return pooled, labels, config, rows, video_index


def test_train_step_is_one_forward_loss_backward_and_adam_step_then_frees_the_gradients():
    pooled, labels, config, rows, video_index = step_problem()
    targets = train.label_tensors(labels, torch.device("cpu"))
    torch.manual_seed(1)
    model = TSPNet(DIM, CLASSES, dropout=0.0)
    by_hand = copy.deepcopy(model)

    terms = train.train_step(model, train.build_optimizer(model, config), pooled, targets, rows, video_index, 4,
                             config)
    assert all(p.grad is None for p in model.parameters())

    # The same step written out, with torch's default (not fused) Adam: the same arithmetic.
    optimizer = torch.optim.Adam(by_hand.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rows_t = torch.from_numpy(rows)
    expected = tspnet_loss(by_hand(pooled[rows_t]), targets[0][rows_t], targets[1][rows_t],
                           torch.from_numpy(video_index), 4, config.cls_weight, config.center_weight)
    expected.total.backward()
    optimizer.step()
    torch.testing.assert_close(terms.total, expected.total, rtol=1e-6, atol=0)
    for got, want in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
