"""LACP's losses (LACP.md section 4), each term by hand, and the runs of pseudo labels they read."""

import math

import numpy as np
import pytest
import torch

from tspnet.lacp.losses import (BatchRuns, background_point_loss, completeness_runs, feature_contrast_loss,
                                point_loss, sample_snippets, score_contrast_loss, video_loss)
from tspnet.lacp.model import Packing


def runs_of(column, classes=(0,)):
    pseudo = np.asarray(column, dtype=np.float32)[:, None]
    return completeness_runs(pseudo, classes)


def feature_items(runs):
    return list(zip(runs.feature_first.tolist(), runs.feature_last.tolist(), runs.feature_action.tolist()))


def score_items(runs):
    return list(zip(runs.score_first.tolist(), runs.score_last.tolist(), runs.score_action.tolist()))


def test_video_loss_is_the_mean_bce_over_classes():
    scores, labels = torch.tensor([[0.8, 0.5]]), torch.tensor([[1.0, 0.0]])
    expected = (-math.log(0.8) - math.log(0.5)) / 2
    assert video_loss(scores, labels).item() == pytest.approx(expected, rel=1e-6)


def test_point_loss_by_hand():
    # T = 3, one class: snippets 0 and 2 carry a point of class 0; snippet 1 none (not counted).
    cas = torch.tensor([[0.5, 0.5], [0.9, 0.9], [0.8, 0.1]])
    points = torch.tensor([[1.0], [0.0], [1.0]])
    # Snippet 0: focal 0.25 * -ln 0.5 on both columns; snippet 2: 0.04 * -ln 0.8 + 0.01 * -ln 0.9.
    first = 2 * 0.25 * math.log(2)
    second = 0.04 * -math.log(0.8) + 0.01 * -math.log(0.9)
    assert point_loss(cas, points, Packing.of([3])).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_point_loss_clamps_the_log_like_pytorch_bce():
    cas, points = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0]])
    assert point_loss(cas, points, Packing.of([1])).item() == pytest.approx(100.0)  # (1 - 0)^2 * 100


def test_background_point_loss_by_hand_and_zero_without_background_points():
    cas = torch.tensor([[0.2, 0.9], [0.5, 0.5], [0.7, 0.3]])
    background = torch.tensor([True, False, False])
    expected = 0.04 * -math.log(0.8) + 0.01 * -math.log(0.9)  # target 0 on the action, 1 on the background
    losses = background_point_loss(cas, torch.cat([background, torch.tensor([False])]),
                                   Packing.of([3, 1]))
    # Video 1 has no background point: 0, not the authors' division by zero (quirk 8).
    torch.testing.assert_close(losses, torch.tensor([expected, 0.0]), rtol=1e-6, atol=0)


def test_runs_between_two_action_instances():
    runs = runs_of([0, 1, 1, 0, 0, 1, 1, 0])
    # The action run [5, 6] ends at T-2, so the one-snippet background [7, 7] after it is left out of the
    # feature list, and skipped by the background score (a run of snippet T-1 alone).
    assert feature_items(runs) == [(0, 0, False), (1, 2, True), (3, 4, False), (5, 6, True)]
    assert score_items(runs) == [(1, 2, True), (5, 6, True), (0, 0, False), (3, 4, False)]
    # Outer ranges: [1, 2] (L = 2): [max(0, int(0.5)), 1) and (2, min(7, int(2.5))] = {0}.
    assert runs.score_outer_start[0] == 0 and runs.score_outer_end[0] == 2


def test_a_run_reaching_the_last_snippet_is_cut_at_t_minus_two():
    runs = runs_of([0, 0, 1, 1, 0, 0, 1, 1])
    assert feature_items(runs) == [(0, 1, False), (2, 3, True), (4, 5, False), (6, 6, True)]
    assert score_items(runs) == [(2, 3, True), (6, 6, True), (0, 1, False), (4, 5, False)]
    background_to_end = runs_of([1, 1, 0, 0, 0, 0, 0, 0])
    # Background score run [2, 7] is cut to [2, 6]; the feature list keeps [2, 7]; one action run: no group.
    assert score_items(background_to_end) == [(0, 1, True), (2, 6, False)]
    assert feature_items(background_to_end) == []


def test_an_action_run_of_the_last_snippet_alone_is_skipped_and_constant_columns_give_nothing():
    runs = runs_of([0, 0, 0, 0, 0, 0, 0, 1])
    assert score_items(runs) == [(0, 6, False)]
    assert feature_items(runs) == []
    for constant in ([0] * 6, [1] * 6):
        empty = runs_of(constant)
        assert score_items(empty) == [] and feature_items(empty) == []


def test_runs_cover_only_the_videos_classes_in_class_order():
    pseudo = np.zeros((6, 3), np.float32)
    pseudo[[1, 4], 0] = 1
    pseudo[[1, 2, 4], 2] = 1
    runs = completeness_runs(pseudo, [2, 0])
    # Class 0: b [0,0], a [1,1], b [2,3], a [4,4] (ends at T-2: no background after); class 2 likewise.
    assert runs.feature_class.tolist() == [0] * 4 + [2] * 4
    assert runs.feature_group.tolist() == [0] * 4 + [1] * 4
    assert runs_of([0, 1, 0, 1], classes=()).score_first.size == 0


def test_score_contrast_by_hand():
    # Class 0, pseudo labels [0, 1, 1, 0], Q[:, 0] = [0.1, 0.8, 0.6, 0.2].
    # Action run [1, 2]: inner 0.7, outer {0}: 0.1 -> OIC 0.6, term 0.4.
    # Background runs of the complement: [0, 0] (1 - Q: 0.9, outer empty -> OIC 0.9, term 0.1); [3, 3] skipped.
    # (L_sa + L_sb)^2 = (0.4 + 0.1)^2 = 0.25; a second video without visible labels: 0.
    cas = torch.tensor([[0.1, 0.5], [0.8, 0.5], [0.6, 0.5], [0.2, 0.5], [0.3, 0.5]])
    runs = BatchRuns.of([runs_of([0, 1, 1, 0]), None])
    loss = score_contrast_loss(cas, Packing.of([4, 1]), runs)
    torch.testing.assert_close(loss, torch.tensor([0.25, 0.0]), rtol=1e-6, atol=1e-7)


def test_score_contrast_averages_over_the_runs_of_all_classes():
    cas = torch.tensor([[0.1, 0.3, 0.5], [0.8, 0.3, 0.5], [0.6, 0.9, 0.5], [0.2, 0.3, 0.5]])
    pseudo = np.array([[0, 0], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    # Class 1, action [2, 2]: inner 0.9, outer [int(1.75), 2) U (2, int(2.25)] = {1}: 0.3 -> term 0.4.
    # Background of class 1: [0, 1]: 1 - Q = 0.7, 0.7 -> inner 0.7, outer (1, int(1.5)] = {} -> term 0.3.
    # Class 0 as above: action term 0.4, background term 0.1.
    # L_sa = (0.4 + 0.4) / 2, L_sb = (0.1 + 0.3) / 2 -> (0.4 + 0.2)^2.
    runs = BatchRuns.of([completeness_runs(pseudo, [0, 1])])
    loss = score_contrast_loss(cas, Packing.of([4]), runs)
    assert loss.item() == pytest.approx(0.36, rel=1e-5)


def test_feature_sampling_ranges():
    rng = np.random.default_rng(0)
    assert sample_snippets(np.array([5]), np.array([5]), 3, rng).tolist() == [[5, 5, 5]]
    assert sample_snippets(np.array([5]), np.array([6]), 3, rng).tolist() == [[5, 5, 6]]  # s, s, s+1
    draws = sample_snippets(np.zeros(500, np.int64), np.full(500, 8), 3, rng)  # n = 9: [0, 3), [3, 6), [6, 9)
    assert [set(draws[:, i].tolist()) for i in range(3)] == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}]
    draws = sample_snippets(np.full(500, 10), np.full(500, 13), 3, rng)  # n = 4: [10, 11), [11, 12), [12, 14)
    assert [set(draws[:, i].tolist()) for i in range(3)] == [{10}, {11}, {12, 13}]


def contrast_case():
    """Class 0 with runs b a b a b over snippet vectors (1, 0) for background and (0, 1) for action;
    class 2 with a single action run."""
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    pseudo = np.zeros((6, 3), np.float32)
    pseudo[[1, 3], 0] = 1
    pseudo[[4, 5], 2] = 1
    runs = completeness_runs(pseudo, [0, 2])
    return embedding, runs


def test_feature_contrast_by_hand():
    embedding, runs = contrast_case()
    # Class 0: runs [0,0] b, [1,1] a, [2,2] b, [3,3] a, then the background after [3, 3] runs to T-1 uncut.
    assert feature_items(runs)[:5] == [(0, 0, False), (1, 1, True), (2, 2, False), (3, 3, True), (4, 5, False)]
    batch = BatchRuns.of([runs])
    samples = np.repeat(batch.feature_first[:, None], 3, axis=1)
    # tau = 1: S = e between runs of one kind, 1 between a and b (orthogonal). For each action run j:
    # p_j = e / (e + 3) (three background runs); L = -log p = log(1 + 3 / e).
    loss = feature_contrast_loss(embedding, Packing.of([6]), BatchRuns.of([runs]), samples, 1.0, "last_class")
    # Class 2 has one action run [4, 5]: no group; the last class with two action runs is class 0.
    assert runs.num_groups == 1
    assert loss.item() == pytest.approx(math.log(1 + 3 / math.e), rel=1e-6)
    loss = feature_contrast_loss(embedding, Packing.of([6]), batch, samples, 0.1, "last_class")
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-10)), rel=2e-3)  # p near 1 in float32


def test_feature_contrast_keeps_the_last_class_or_sums():
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    pseudo = np.zeros((7, 3), np.float32)
    pseudo[[1, 3], 0] = 1  # class 0: b a b a b -> p = e / (e + 3)
    pseudo[[1, 3, 5], 2] = 1  # class 2: b a b a b a b... ([5, 5] then the run [6, 6] is b, T-1: left out)
    runs = completeness_runs(pseudo, [0, 2])
    assert runs.num_groups == 2
    class_0 = math.log(1 + 3 / math.e)
    # Class 2: runs b a b a b a (the background [6, 6] after [5, 5] = T-2 is left out):
    # each action j: numerator 2e, denominator 2e + 3.
    class_2 = math.log(1 + 3 / (2 * math.e))
    packing = Packing.of([7])
    full = BatchRuns.of([runs])
    samples = np.repeat(full.feature_first[:, None], 3, axis=1)
    assert feature_contrast_loss(embedding, packing, full, samples, 1.0, "sum").item() == pytest.approx(
        class_0 + class_2, rel=1e-6)
    assert feature_contrast_loss(embedding, packing, full, samples, 1.0, "last_class").item() == pytest.approx(
        class_2, rel=1e-6)
    last = BatchRuns.of([runs], last_group_only=True)  # what training passes in last_class mode
    samples = np.repeat(last.feature_first[:, None], 3, axis=1)
    assert feature_contrast_loss(embedding, packing, last, samples, 1.0, "last_class").item() == pytest.approx(
        class_2, rel=1e-6)


def test_batch_runs_place_each_video_in_the_batch():
    embedding, runs = contrast_case()
    batch = BatchRuns.of([None, runs, runs])
    assert set(batch.feature_video.tolist()) == {1, 2}
    assert batch.feature_group.max() == 1  # one group per video, numbered across the batch
    both = torch.cat([torch.zeros(2, 2), embedding, embedding])
    samples = np.repeat(batch.feature_first[:, None], 3, axis=1)
    loss = feature_contrast_loss(both, Packing.of([2, 6, 6]), batch, samples, 1.0, "last_class")
    expected = math.log(1 + 3 / math.e)
    torch.testing.assert_close(loss, torch.tensor([0.0, expected, expected]), rtol=1e-6, atol=0)
