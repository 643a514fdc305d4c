"""LACP.md 3.2: pseudo background points and pseudo action points, hand-computed and against the loop oracle."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference.lacp_search_loop import select_seeds_loop
from tspnet.lacp.pseudo import select_seeds, select_seeds_packed


def make_cas(background, classes: int) -> np.ndarray:
    """A [T, C+1] CAS whose background column is `background` (the class columns do not matter here)."""
    b = np.asarray(background, dtype=np.float32)
    return np.concatenate([np.full((len(b), classes), 0.5, dtype=np.float32), b[:, None]], axis=1)


def make_points(length: int, classes: int, labels: dict[int, list[int]]) -> np.ndarray:
    points = np.zeros((length, classes), dtype=np.float32)
    for t, cs in labels.items():
        points[t, cs] = 1
    return points


def check(background, labels, classes, expected_bkg, expected_copies):
    """Run both versions; `expected_copies`: {snippet: point it copies the row of}."""
    cas = make_cas(background, classes)
    points = make_points(len(background), classes, labels)
    act, bkg = select_seeds(cas, points)
    expected_act = points.copy()
    for t, source in expected_copies.items():
        expected_act[t] = points[source]
    assert act.dtype == np.float32 and bkg.dtype == bool
    assert np.flatnonzero(bkg).tolist() == expected_bkg
    np.testing.assert_array_equal(act, expected_act)
    loop_act, loop_bkg = select_seeds_loop(cas, points)
    np.testing.assert_array_equal(loop_bkg, bkg)
    np.testing.assert_array_equal(loop_act, act)


def test_high_snippets_before_and_in_a_gap_walks_stop_on_background():
    # points at 3 (classes 0 and 1) and 7 (class 1); P marks a point
    #   t:  0     1     2    3(P) 4     5     6     7(P) 8    9
    b = [0.2, 0.96, 0.5, 0.0, 0.05, 0.97, 0.98, 0.0, 0.1, 0.3]
    # before 3: one high snippet (1) -> background [0, 1]; the walk left from 3 stops at 2 (0.5 > 0.1)
    # gap 4..6: two high (5, 6) -> background [5, 6]; walk right from 3 takes 4 (0.05), stops on 5 (background);
    #   walk left from 7 stops at once on 6 (background)
    # after 7: no high snippet -> argmax of (0.1, 0.3) is 9 -> background [9, 9]; the walk right from 7 takes 8
    #   (b = float32(0.1) <= 0.1 in float32) and stops on 9 (background)
    check(b, {3: [0, 1], 7: [1]}, classes=2, expected_bkg=[0, 1, 5, 6, 9], expected_copies={4: 3, 8: 7})


def test_points_at_both_ends_gap_of_one_and_one_high_snippet():
    # points at 0, 2, 3, 8 = T-1: no region before or after
    #   t:  0(P) 1    2(P) 3(P) 4     5     6    7     8(P)
    b = [0.0, 0.3, 0.0, 0.0, 0.05, 0.95, 0.4, 0.02, 0.0]
    # gap {1} (2 - 0 = 2 > 1): no high -> its argmax, 1, is background; 2 -> 3 is no gap
    # gap 4..7: exactly one high snippet (5, b = float32(0.95) >= 0.95 in float32) -> only 5 is background
    # walks: 3 -> 4 (0.05), stop on 5; 8 -> 7 (0.02), stop on 6 (0.4 > 0.1); 6 stays unlabelled
    check(b, {0: [0], 2: [1], 3: [0], 8: [1]}, classes=2, expected_bkg=[1, 5], expected_copies={4: 3, 7: 8})


def test_no_high_snippet_argmax_rules_and_walks_stop_on_threshold():
    #   t:  0    1    2    3     4(P) 5     6    7
    b = [0.3, 0.6, 0.2, 0.05, 0.0, 0.08, 0.7, 0.9]
    # before 4: none >= 0.95 -> [0, argmax = 1]; walk left from 4 takes 3 (0.05), stops at 2 (0.2, not background)
    # after 4: none >= 0.95 -> [argmax = 7, 7]; walk right takes 5 (0.08), stops at 6 (0.7, not background)
    check(b, {4: [0]}, classes=1, expected_bkg=[0, 1, 7], expected_copies={3: 4, 5: 4})


def test_high_snippets_after_the_last_point_and_first_argmax_on_ties():
    #   t:  0    1    2(P) 3     4    5     6    7
    b = [0.4, 0.4, 0.0, 0.05, 0.2, 0.96, 0.5, 0.99]
    # before 2: tie 0.4/0.4 -> the first argmax, 0 -> background [0, 0]; walk left from 2 stops at 1 (0.4)
    # after 2: high at 5 and 7 -> background from the first high, [5, 7] (6 included, though 0.5)
    # walk right from 2 takes 3 (0.05), stops at 4 (0.2)
    check(b, {2: [0]}, classes=1, expected_bkg=[0, 5, 6, 7], expected_copies={3: 2})


def test_two_high_snippets_in_a_gap_mark_everything_between_them():
    #   t:  0(P) 1    2     3    4     5(P)
    b = [0.0, 0.01, 0.96, 0.2, 0.97, 0.0]
    # gap 1..4: high 2 and 4 -> background [2, 4] (3 included); walk 0 -> 1 (0.01) stops on 2
    check(b, {0: [0], 5: [0]}, classes=1, expected_bkg=[2, 3, 4], expected_copies={1: 0})


def test_every_snippet_a_point_gives_no_background():
    check([0.5, 0.99, 0.5], {0: [0], 1: [0], 2: [1]}, classes=2, expected_bkg=[], expected_copies={})
    check([0.3], {0: [1]}, classes=2, expected_bkg=[], expected_copies={})


def test_bad_input():
    with pytest.raises(ValueError, match="no point"):
        select_seeds(make_cas([0.5, 0.5], 1), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match=r"cas \[T, C\+1\]"):
        select_seeds(make_cas([0.5, 0.5], 2), np.ones((2, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        select_seeds(make_cas([np.nan, 0.5], 1), np.ones((2, 1), np.float32))


def random_video(rng: np.random.Generator, length: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A background column mixing high, low, middle values and exact thresholds; a few multi-class points."""
    kind = rng.integers(0, 5, size=length)
    b = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                  [rng.uniform(0.95, 1.0, length), rng.uniform(0.0, 0.1, length),
                   np.float32(0.95) * np.ones(length), np.float32(0.1) * np.ones(length)],
                  rng.uniform(0.0, 1.0, length)).astype(np.float32)
    if rng.random() < 0.2:
        b = np.round(b, 1).astype(np.float32)  # many exact ties
    points = (rng.random((length, classes)) < rng.uniform(0.02, 0.4)).astype(np.float32)
    if not points.any():
        points[rng.integers(length), rng.integers(classes)] = 1
    cas = np.concatenate([rng.random((length, classes)).astype(np.float32), b[:, None]], axis=1)
    return cas, points


def test_agrees_with_the_loop_oracle_on_random_videos():
    rng = np.random.default_rng(0)
    for trial in range(600):
        length = int(rng.integers(1, 60)) if trial % 4 else int(rng.integers(60, 400))
        cas, points = random_video(rng, length, int(rng.integers(1, 4)))
        act, bkg = select_seeds(cas, points)
        loop_act, loop_bkg = select_seeds_loop(cas, points)
        np.testing.assert_array_equal(bkg, loop_bkg, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(act, loop_act, err_msg=f"trial {trial}")
        # points, background and pseudo action points are disjoint; every gap of >= 1 snippet has background
        labelled = points.any(axis=1)
        pseudo_action = act.any(axis=1) & ~labelled
        assert not (bkg & labelled).any() and not (bkg & pseudo_action).any()
        point_at = np.flatnonzero(labelled)
        for left, right in zip(point_at[:-1], point_at[1:]):
            assert right - left <= 1 or bkg[left + 1: right].any()


def test_thresholds_are_parameters():
    b = [0.0, 0.5, 0.85, 0.3]
    cas, points = make_cas(b, 1), make_points(4, 1, {0: [0]})
    # bkg_threshold 0.8: 2 is high -> [2, 3]; act_threshold 0.6: the walk from 0 takes 1 (0.5), stops on 2
    act, bkg = select_seeds(cas, points, bkg_threshold=0.8, act_threshold=0.6)
    assert np.flatnonzero(bkg).tolist() == [2, 3]
    assert act[:, 0].tolist() == [1, 1, 0, 0]


def test_packed_videos_agree_with_one_video_at_a_time():
    rng = np.random.default_rng(1)
    for trial in range(100):
        classes = int(rng.integers(1, 4))
        videos = [random_video(rng, int(rng.integers(1, 40)), classes) for _ in range(int(rng.integers(1, 8)))]
        act, bkg = select_seeds_packed(np.concatenate([v[0] for v in videos]),
                                       np.concatenate([v[1] for v in videos]), [len(v[0]) for v in videos])
        expected = [select_seeds_loop(*v) for v in videos]
        np.testing.assert_array_equal(act, np.concatenate([e[0] for e in expected]), err_msg=f"trial {trial}")
        np.testing.assert_array_equal(bkg, np.concatenate([e[1] for e in expected]), err_msg=f"trial {trial}")


def test_packed_bad_input_names_the_video():
    cas = make_cas([0.5] * 5, 1)
    points = make_points(5, 1, {0: [0], 4: [0]})
    with pytest.raises(ValueError, match="video 1 of the batch has no point"):
        select_seeds_packed(cas, points, [1, 3, 1])
    with pytest.raises(ValueError, match="do not add up"):
        select_seeds_packed(cas, points, [2, 2])
