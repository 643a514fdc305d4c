"""LACP's proposal generation (LACP.md section 6) and its NMS."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.reference.lacp_proposals_loop import nms_loop, upsample_loop, video_proposals_loop
from tspnet.datasets import FeatureStore
from tspnet.lacp.model import LACPNet
from tspnet.lacp.proposals import (ProposalConfig, nms, nms_table, predicted_classes, propose, seconds_factor,
                                   select_classes, upsample, video_proposals)

REPO_PARAMS = "params.yaml"


def test_upsampling_interpolates_and_extrapolates_the_tail_by_hand():
    values = np.array([[0.0], [0.5], [0.25]], dtype=np.float32)
    # Positions 0, 0.5, ..., 2.5; past snippet 2 the last slope (-0.25 per snippet) continues.
    np.testing.assert_array_equal(upsample(values, 2)[:, 0], [0.0, 0.25, 0.5, 0.375, 0.25, 0.125])
    rising = np.array([[0.5], [1.0]], dtype=np.float32)
    # scale 4: the last 3 samples leave [0, 1] (quirk 16).
    np.testing.assert_array_equal(upsample(rising, 4)[:, 0], [0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375])
    assert upsample(np.zeros((7, 2), np.float32), 24).shape == (168, 2)  # 24 T samples
    np.testing.assert_array_equal(upsample(np.array([[0.3]]), 3)[:, 0], [0.3, 0.3, 0.3])  # one snippet: constant


def test_upsampling_agrees_with_the_position_by_position_oracle():
    rng = np.random.default_rng(0)
    for length in (1, 2, 5, 37, 200):
        values = rng.random((length, 3)).astype(np.float32)
        np.testing.assert_array_equal(upsample(values, 24), upsample_loop(values, 24))


def test_seconds_grid():
    # 1/24 snippet of 16 frames at 25 fps: 0.02667 s; 24 samples = one snippet = 0.64 s.
    assert seconds_factor(10, 24, 25.0, 16) == pytest.approx(16 / 600)
    assert 24 * seconds_factor(10, 24, 25.0, 16) == pytest.approx(0.64)
    assert 24 * seconds_factor(66, 24, 15.0, 16) == pytest.approx(16 / 15)  # GTEA: 15 fps
    assert 24 * seconds_factor(87, 24, 30.0, 16) == pytest.approx(16 / 30)  # BEOID: 30 fps


def test_threshold_lists_in_params_are_the_authors_aranges():
    lacp = yaml.safe_load(open(REPO_PARAMS))["locate"]["lacp"]
    # Bit for bit: a threshold one ulp off could keep or drop a sample that sits exactly on it.
    assert lacp["cas_thresholds"] == np.arange(0, 0.25, 0.025).tolist()
    assert lacp["agnostic_thresholds"] == np.arange(0.5, 0.725, 0.025).tolist()
    assert len(lacp["cas_thresholds"]) == 10 and len(lacp["agnostic_thresholds"]) == 9
    defaults = ProposalConfig()
    assert list(defaults.cas_thresholds) == lacp["cas_thresholds"]
    assert list(defaults.agnostic_thresholds) == lacp["agnostic_thresholds"]


def test_candidates_and_outer_inner_scores_by_hand():
    # scale 1 (no upsampling) to compute by hand; one class, video score 0.5 (+0.2 * 0.5 = +0.1).
    score = np.array([0.05, 0.3, 0.6, 0.3, 0.05, 0.2])
    agnostic = np.array([0.2, 0.6, 0.9, 0.55, 0.1, 0.1])
    cas = np.stack([score, 1 - agnostic], axis=1).astype(np.float32)
    config = ProposalConfig(scale=1, cas_thresholds=(0.0, 0.1), agnostic_thresholds=(0.5, 0.6))
    label, start, end, value = video_proposals(cas, np.array([0.5], np.float32), np.array([0]), config, 25.0, 16)
    # CAS 0.0: the whole video, inner 0.25, outer empty.
    # CAS 0.1 (zeroed below): [1, 3] inner 0.4, outer {0} -> zeroed 0; [5, 5] inner 0.2, outer {4} -> zeroed 0.
    # Agnostic 0.5: g >= 0.5 on [1, 3], scored on the unzeroed class score: 0.4 - 0.05.
    # Agnostic 0.6: [1, 2]: inner 0.45; L = 2, outer [int(0.5), 1) U (2, int(2.5)] = {0}: 0.05.
    np.testing.assert_array_equal(label, [0, 0, 0, 0, 0])
    np.testing.assert_allclose(value, [0.35, 0.5, 0.3, 0.45, 0.5], atol=1e-7)
    np.testing.assert_allclose(np.stack([start, end], 1) / 0.64, [[0, 6], [1, 4], [5, 6], [1, 4], [1, 3]])


def test_a_class_positive_only_at_sample_zero_gives_nothing():
    """The authors test the positive indices' truthiness: [0] is falsy (quirk 17, reproduced)."""
    config = ProposalConfig(scale=1, cas_thresholds=(0.1,), agnostic_thresholds=())
    only_first = np.array([[0.3, 0.5], [0.01, 0.5], [0.01, 0.5]], dtype=np.float32)
    assert len(video_proposals(only_first, np.ones(1, np.float32), np.array([0]), config, 25.0, 16)[0]) == 0
    second = only_first[[1, 0, 2]]
    assert len(video_proposals(second, np.ones(1, np.float32), np.array([0]), config, 25.0, 16)[0]) == 1


def test_class_selection():
    np.testing.assert_array_equal(select_classes(np.array([0.2, 0.6, 0.5]), 0.5), [1, 2])
    np.testing.assert_array_equal(select_classes(np.array([0.2, 0.4, 0.1]), 0.5), [1])  # none: the best one
    np.testing.assert_array_equal(predicted_classes(np.array([[0.2, 0.4], [0.9, 0.7]]), 0.5), [[0, 1], [1, 1]])


def test_vectorised_proposals_agree_with_the_authors_loop():
    rng = np.random.default_rng(1)
    config = ProposalConfig()
    total = 0
    for length in (1, 2, 3, 8, 40, 150):
        smooth = np.cumsum(rng.normal(0, 0.15, (length, 5)), axis=0)
        cas = (1 / (1 + np.exp(-smooth))).astype(np.float32)
        scores = rng.random(4).astype(np.float32)
        classes = np.array([3, 0])
        label, start, end, value = video_proposals(cas, scores, classes, config, 25.0, 16)
        rows = np.array(video_proposals_loop(cas, scores, classes, config, 25.0, 16)).reshape(-1, 4)
        np.testing.assert_array_equal(label, rows[:, 0])
        np.testing.assert_array_equal(start, rows[:, 2])
        np.testing.assert_array_equal(end, rows[:, 3])
        np.testing.assert_allclose(value, rows[:, 1], rtol=0, atol=1e-9)
        total += len(label)
    assert total > 200


def test_nms_adds_one_to_lengths_in_seconds():
    # [0, 1] and [0.2, 1.2]: with +1 lengths IoU = 1.8 / 2.2 = 0.82 >= 0.7 -> suppressed (plain IoU 0.67 would keep).
    start, end, score = np.array([0.0, 0.2, 3.0]), np.array([1.0, 1.2, 4.0]), np.array([0.9, 0.8, 0.7])
    np.testing.assert_array_equal(nms(start, end, score, 0.7), [0, 2])
    # [0, 1] and [0.5, 1.5]: 1.5 / 2.5 = 0.6 < 0.7 -> kept, best first.
    np.testing.assert_array_equal(nms(np.array([0.5, 0.0]), np.array([1.5, 1.0]), np.array([0.8, 0.9]), 0.7), [1, 0])


def test_nms_agrees_with_the_authors_loop_and_runs_per_video_and_class():
    rng = np.random.default_rng(2)
    start = np.round(rng.uniform(0, 20, 300), 2)
    end = start + np.round(rng.uniform(0.1, 5, 300), 2)
    score = rng.normal(size=300)
    kept = nms(start, end, score, 0.7)
    rows = [[0, s, a, b] for a, b, s in zip(start, end, score)]
    np.testing.assert_array_equal(np.array(nms_loop(rows, 0.7))[:, 2], start[kept])
    table = pd.DataFrame({"video": ["a"] * 3 + ["b"], "label": ["x", "x", "y", "x"], "start": [0.0, 0.2, 0.0, 0.0],
                          "end": [1.0, 1.2, 1.0, 1.0], "score": [0.5, 0.9, 0.1, 0.2]})
    assert nms_table(table, 0.7)[["video", "label", "score"]].values.tolist() == [["a", "x", 0.9], ["a", "y", 0.1],
                                                                               ["b", "x", 0.2]]


def test_propose_keeps_every_raw_proposal_and_can_use_given_classes():
    torch.manual_seed(0)
    model = LACPNet(4, 3, hidden=8).eval()
    lengths = torch.tensor([30, 12])
    store = FeatureStore(["v0", "v1"], torch.randn(42, 4), torch.tensor([0, 30]), lengths)
    config = ProposalConfig(class_threshold=0.0)  # every class selected
    table, scores = propose(model, store, ("a", "b", "c"), config, 8, 25.0, 16, show_progress=False)
    assert list(table.columns) == ["video", "label", "start", "end", "score"]
    assert scores.shape == (2, 3)
    assert set(table.groupby("video")["label"].nunique()) == {3}
    # The zero CAS threshold gives a whole-video proposal of every class; duplicates are kept (no NMS).
    whole = table[(table["start"] == 0) & np.isclose(table["end"], table["video"].map({"v0": 30, "v1": 12}) * 0.64)]
    assert len(whole) >= 6
    assert table.duplicated(["video", "label", "start", "end"]).any()
    chosen = np.array([[0, 1, 0], [0, 0, 0]], dtype=np.float32)  # v1: no class given -> selection as usual
    given, _ = propose(model, store, ("a", "b", "c"), config, 8, 25.0, 16, chosen, show_progress=False)
    assert set(given[given["video"] == "v0"]["label"]) == {"b"}
    assert set(given[given["video"] == "v1"]["label"]) == {"a", "b", "c"}
