"""Training loop: batching rules, subsampling, determinism, saliency updates."""

import numpy as np
import pandas as pd
import pytest
import torch

from tspnet.labels import assign_labels
from tspnet.proposals import Proposals
from tspnet.train import BatchSampler, TrainConfig, batch_rows, train_tspnet, video_groups


def config(**overrides):
    values = dict(iterations=30, batch_videos=3, max_proposals=3000, lr=1e-3, weight_decay=1e-3, dropout=0.5,
                  roi_bins=12, widen_ratio=0.25, cls_weight=1.0, center_weight=20.0, soft_value=0.4,
                  update_every=10, update_threshold=0.8, log_every=5, rows_per_forward=8192)
    values.update(overrides)
    return TrainConfig(**values)


def test_every_video_is_seen_every_pass_including_the_remainder():
    # Deliberate difference: 7 videos in batches of 3 -> passes of 3 + 3 + 1, none skipped.
    sampler = BatchSampler(np.arange(7), 3, torch.Generator().manual_seed(0))
    passes = [[sampler.next() for _ in range(3)] for _ in range(2)]
    for batches in passes:
        assert [len(b) for b in batches] == [3, 3, 1]
        assert sorted(v for b in batches for v in b) == list(range(7))
    assert passes[0] != passes[1]  # reshuffled


def test_fewer_videos_than_the_batch_size_gives_one_batch_of_all():
    # The authors' epoch arithmetic divides by zero here.
    sampler = BatchSampler(np.array([4, 9]), 10, torch.Generator().manual_seed(0))
    assert sorted(sampler.next()) == [4, 9] and sorted(sampler.next()) == [4, 9]


def test_subsampling_keeps_proposals_and_labels_together():
    # Deliberate difference: the authors subsample proposals but not their labels. Here one row
    # index selects the pooled feature and the labels of a proposal alike.
    slices = [slice(0, 10), slice(10, 12)]
    rows, index = batch_rows([0, 1], slices, max_proposals=4, generator=torch.Generator().manual_seed(1))
    assert len(rows) == 6 and index.tolist() == [0, 0, 0, 0, 1, 1]
    assert len(set(rows[:4].tolist())) == 4 and set(rows[:4].tolist()) <= set(range(10))
    assert rows[4:].tolist() == [10, 11]


def toy_problem(seed=0, videos=6, per_video=40, num_classes=2, dim=8):
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 80, (videos, per_video))
    lengths = rng.uniform(1, 20, (videos, per_video))
    proposals = Proposals([f"v{i}" for i in range(videos)], np.repeat(np.arange(videos), per_video),
                          starts.ravel(), (starts + lengths).ravel(), np.zeros(videos * per_video, np.int64),
                          np.ones(videos * per_video))
    rows = [(f"v{v}", int(rng.integers(num_classes)), float(rng.uniform(10, 90))) for v in range(videos) for _ in range(2)]
    points = pd.DataFrame({"point_id": np.arange(len(rows)), "video": [r[0] for r in rows],
                           "class_index": [r[1] for r in rows], "time": [r[2] for r in rows]})
    labels = assign_labels(proposals, points, num_classes, 0.4)
    pooled = torch.from_numpy(rng.standard_normal((len(proposals), 3 * dim)).astype(np.float32))
    # Make the task learnable: action proposals carry their class in the features.
    pooled[:, :num_classes] += torch.from_numpy(labels.point_label * 2.0)
    return pooled, proposals, points, labels


def test_training_is_deterministic_and_learns():
    pooled, proposals, points, labels = toy_problem()
    first = train_tspnet(pooled, proposals, points, labels, 2, config(), seed=5, show_progress=False)
    second = train_tspnet(pooled, proposals, points, labels, 2, config(), seed=5, show_progress=False)
    assert first.history == second.history
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    longer = train_tspnet(pooled, proposals, points, labels, 2, config(iterations=200, update_every=0), seed=5,
                          show_progress=False)
    assert longer.history[-1]["loss"] < longer.history[0]["loss"]


def test_saliency_updates_run_on_schedule_and_regenerate_labels():
    pooled, proposals, points, labels = toy_problem()
    result = train_tspnet(pooled, proposals, points, labels, 2, config(update_threshold=0.0), seed=0,
                          show_progress=False)
    assert [u["step"] for u in result.updates] == [10, 20, 30]
    # With every center score above 0, every point remembered by a proposal moves.
    assert result.updates[-1]["moved_points"] > 0
    assert not np.array_equal(result.points["time"].to_numpy(), points["time"].to_numpy())
    expected = assign_labels(proposals, result.points, 2, 0.4)
    np.testing.assert_array_equal(result.labels.center_label, expected.center_label)


def test_videos_without_proposals_are_skipped():
    pooled, proposals, points, labels = toy_problem(videos=3)
    proposals.videos.append("empty")  # a fourth video with no rows
    result = train_tspnet(pooled, proposals, points, labels, 2, config(iterations=4, update_every=0), seed=0,
                          show_progress=False)
    assert len(result.history) == 1


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        TrainConfig.from_params({**config().__dict__, "iterations": 0}, {"soft_value": 0.4})


def test_video_groups_split_large_batches_between_whole_videos():
    # 4 videos of 3, 5, 2, 9 rows, at most 8 rows per forward: [3] + [5] would be 8: one group;
    # then 2 alone (2 + 9 > 8), then the 9-row video alone although larger than the limit.
    assert video_groups(np.array([3, 5, 2, 9]), 8) == [(0, 2), (2, 3), (3, 4)]
    assert video_groups(np.array([3, 5, 2, 9]), 100) == [(0, 4)]


def test_a_grouped_step_equals_the_single_forward_step():
    from tspnet.train import build_optimizer, label_tensors, train_step
    from tspnet.model import TSPNet

    pooled, proposals, points, labels = toy_problem(videos=5, per_video=30)
    slices = proposals.video_slices()
    rows, video_index = batch_rows([4, 0, 2], slices, 3000, torch.Generator().manual_seed(0))
    results = []
    for rows_per_forward in (10_000, 40):  # one forward, or three groups of one video
        torch.manual_seed(0)
        model = TSPNet(8, 2, dropout=0.0)
        terms = train_step(model, build_optimizer(model, config()), pooled, label_tensors(labels, pooled.device),
                           rows, video_index, 3, config(rows_per_forward=rows_per_forward))
        results.append((terms, [p.detach().clone() for p in model.parameters()]))
    (one, after_one), (grouped, after_grouped) = results
    for a, b in zip(one, grouped):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(after_one, after_grouped):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
