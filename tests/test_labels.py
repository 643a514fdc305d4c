"""Center labels, point labels, saliency point updating (METHOD.md "Labels for training")."""

import numpy as np
import pandas as pd
import pytest

from tspnet.labels import assign_labels, update_point_times
from tspnet.proposals import Proposals


def make_proposals(segments, videos=("v1",), video_index=None):
    segments = np.asarray(segments, dtype=np.float64)
    n = len(segments)
    index = np.zeros(n, np.int64) if video_index is None else np.asarray(video_index, np.int64)
    return Proposals(list(videos), index, segments[:, 0].copy(), segments[:, 1].copy(),
                     np.zeros(n, np.int64), np.ones(n))


def make_points(rows):
    """rows: (video, class_index, time) in file order; point ids are the row numbers."""
    return pd.DataFrame({"point_id": np.arange(len(rows)), "video": [r[0] for r in rows],
                         "class_index": [r[1] for r in rows], "time": [float(r[2]) for r in rows]})


def test_hand_computed_labels():
    proposals = make_proposals([[0, 10], [2, 6], [4.5, 5.5], [7, 9], [8, 9]])
    points = make_points([("v1", 1, 5.0), ("v1", 0, 8.0), ("v1", 2, 6.0)])
    labels = assign_labels(proposals, points, num_classes=3, soft_value=0.4)
    # [0,10]: all three points inside; the first (t=5) sets w = 1 - 2|5/10 - 0.5| = 1.
    # [2,6]:  t=5 inside, t=6 is not (6 < 6 is false): w = 1 - 2|3/4 - 0.5| = 0.5.
    # [4.5,5.5]: t=5 at the middle: w = 1.   [7,9]: t=8 at the middle: w = 1.
    # [8,9]:  t=8 sits on the edge (strict inclusion): background, w = soft value 0.4.
    np.testing.assert_allclose(labels.center_label, [1.0, 0.5, 1.0, 1.0, 0.4])
    np.testing.assert_array_equal(labels.point_label, [[1, 1, 1], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(labels.point_id, [0, 0, 0, 1, -1])
    np.testing.assert_array_equal(labels.num_points, [3, 1, 1, 1, 0])
    assert labels.counts() == {"action_proposals": 4, "background_proposals": 1, "multi_point_proposals": 1}


def test_first_point_in_file_order_wins():
    proposals = make_proposals([[0, 10]])
    # File order: t=8 first. w = 1 - 2|0.8 - 0.5| = 0.4, remembered point id 0, even though t=5 is central.
    labels = assign_labels(proposals, make_points([("v1", 0, 8.0), ("v1", 1, 5.0)]), 2, 0.4)
    assert labels.center_label[0] == pytest.approx(0.4)
    assert labels.point_id[0] == 0
    np.testing.assert_array_equal(labels.point_label[0], [1, 1])


def test_points_only_label_their_own_video():
    proposals = make_proposals([[0, 10], [0, 10]], videos=("a", "b"), video_index=[0, 1])
    labels = assign_labels(proposals, make_points([("b", 0, 2.5), ("elsewhere", 0, 5.0)]), 1, 0.4)
    # Video b: w = 1 - 2|0.25 - 0.5| = 0.5; video a has no point: background.
    np.testing.assert_allclose(labels.center_label, [0.4, 0.5])
    np.testing.assert_array_equal(labels.point_id, [-1, 0])


def test_center_label_order_of_operations_matches_the_authors():
    # (t - s) / (e - s) first, then 1 - |. - 0.5| * 2: bit-identical to the authors' expression.
    rng = np.random.default_rng(0)
    s = np.round(rng.uniform(0, 50, 200), 2)
    e = s + np.round(rng.uniform(0.5, 20, 200), 2)
    t = s + (e - s) * rng.uniform(0.01, 0.99, 200)
    for i in range(200):
        labels = assign_labels(make_proposals([[s[i], e[i]]]), make_points([("v1", 0, t[i])]), 1, 0.4)
        weight = (t[i] - s[i]) / (e[i] - s[i])
        assert labels.center_label[0] == 1 - np.abs(weight - 0.5) * 2


def test_saliency_update_moves_points_toward_confident_middles():
    proposals = make_proposals([[3, 9], [4, 6], [0, 10], [20, 30]])
    points = make_points([("v1", 0, 5.0), ("v1", 0, 25.0)])
    labels = assign_labels(proposals, points, 1, 0.4)
    center = np.array([0.9, 0.85, 0.5, 0.7])  # [0,10] and [20,30] stay under the 0.8 threshold
    new = update_point_times(points, points["time"].to_numpy(), proposals, labels, center, 0.8)
    # Point 0: a = (0.9, 0.85) / 1.75; shift = (0.9 * (6 - 5) + 0.85 * (5 - 5)) / 1.75 = 0.5142857...
    assert new[0] == pytest.approx(5.0 + 0.9 / 1.75, abs=1e-12)
    assert new[1] == 25.0  # nothing pulls it


def test_saliency_update_adds_the_pull_to_the_original_time():
    # The authors measure the pull from the point's current time but add it to the original one,
    # and a point nobody pulls returns to its original time.
    proposals = make_proposals([[5, 7], [10, 12]])
    points = make_points([("v1", 0, 5.5), ("v1", 0, 11.5)])  # current (already moved) times
    original = np.array([5.0, 11.0])
    labels = assign_labels(proposals, points, 1, 0.4)
    new = update_point_times(points, original, proposals, labels, np.array([1.0, 0.1]), 0.8)
    # Point 0: pull = 6 - 5.5 = 0.5, added to the original 5.0 -> 5.5. Point 1: back to 11.0.
    np.testing.assert_allclose(new, [5.5, 11.0])


def test_saliency_update_matches_a_loop_reference():
    from tests.reference.labels_loop import update_point_times_loop

    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 90, 300)
    proposals = make_proposals(np.stack([starts, starts + rng.uniform(0.5, 15, 300)], 1))
    points = make_points([("v1", int(c), float(t)) for c, t in zip(rng.integers(0, 3, 40), rng.uniform(0, 100, 40))])
    labels = assign_labels(proposals, points, 3, 0.4)
    center = rng.uniform(0.5, 1.0, 300)
    original = points["time"].to_numpy() - 0.3
    fast = update_point_times(points, original, proposals, labels, center, 0.8)
    slow = update_point_times_loop(points, original, proposals, labels, center, 0.8)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
