"""tspnet.postprocess: hand-computed cases for each inference rule, the project's two deliberate
differences, randomized agreement with the authors' loops, and the real P-MIL test proposals."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from tspnet.files import DataError
from tspnet.postprocess import (
    AbaCounts,
    Detections,
    adapt_boundaries,
    aligned_confidence,
    base_detections,
    drop_ambiguous_mask,
    localize,
    read_ambiguous,
    select_classes,
    soft_nms,
    video_class_scores,
)
from tspnet.units import round_proposal_snippets, seconds_to_snippets
from tests.reference.postprocess_loop import (
    base_detections_loop,
    boundary_adaption_loop,
    filter_segments_loop,
    localize_loop,
    soft_nms_loop,
)

SPS = 25 / 16  # THUMOS14 snippets per second


def assert_same_detections(fast: Detections, loop: Detections) -> None:
    """Same detections in the same order; the values are bit-identical (the contract is 1e-9)."""
    for name in ("video", "label", "start", "end", "score"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(loop, name), err_msg=name)


# ------------------------------------------------------------- steps 2 and 3


def test_video_class_scores_weigh_by_attention_and_drop_background():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    attention = np.array([1.0, 0.5])
    # v_0 = (0.6 * 1 + 0.2 * 0.5) / (1.5 + 1e-6) = 0.7 / 1.500001
    # v_1 = (0.3 * 1 + 0.2 * 0.5) / (1.5 + 1e-6) = 0.4 / 1.500001
    np.testing.assert_allclose(video_class_scores(probs, attention), [0.7 / 1.500001, 0.4 / 1.500001], rtol=1e-12)


def test_select_classes_keeps_scores_at_threshold_ascending_else_the_best():
    assert select_classes(np.array([0.3, 0.05, 0.1]), 0.1).tolist() == [0, 2]  # 0.1 >= 0.1 is kept
    assert select_classes(np.array([0.4667, 0.2667]), 0.3).tolist() == [0]
    # None reaches 0.1: v = [0.05, 0.08] / (1 + 1e-6), so the single best class, 1.
    scores = video_class_scores(np.array([[0.05, 0.08, 0.87]]), np.array([1.0]))
    assert select_classes(scores, 0.1).tolist() == [1]


def test_aligned_confidence_is_prob_times_attention_times_center():
    # [0.5, 0.2, 0.3] * 0.8 * 0.5 = [0.2, 0.08, 0.12]
    out = aligned_confidence(np.array([[0.5, 0.2, 0.3]]), np.array([0.8]), np.array([0.5]))
    np.testing.assert_allclose(out, [[0.2, 0.08, 0.12]], rtol=1e-14)


# -------------------------------------------------------------------- step 4


def test_aba_moves_the_visited_proposal_and_locks_its_group():
    # A = [0, 10], B = [1, 11], C = [2, 10], D = [20, 30]; scores 0.9, 0.6, 0.3, 0.5.
    # IoU(A, B) = 9 / (10 + 10 - 9) = 9/11; IoU(A, C) = 8 / (10 + 8 - 8) = 4/5; D touches nothing.
    # Visit order A, B, D, C. Visit A: group {A, B, C} (IoU 1, 9/11, 4/5 > 0.4), sum 144/55,
    # u = [55, 45, 44] / 144; s * u = [0.9 * 55, 0.6 * 45, 0.3 * 44] / 144 = [49.5, 27, 13.2] / 144,
    # v = [49.5, 27, 13.2] / 89.7; A -> [(27 * 1 + 13.2 * 2) / 89.7, (49.5 * 10 + 27 * 11 + 13.2 * 10) / 89.7]
    #                               = [53.4 / 89.7, 924 / 89.7].
    # B and C are locked and keep their boundaries; D is visited alone (v = [1]) and stays.
    segments = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 10.0], [20.0, 30.0]])
    adapted, counts = adapt_boundaries(segments, np.array([0.9, 0.6, 0.3, 0.5]), 0.4)
    np.testing.assert_allclose(adapted[0], [53.4 / 89.7, 924 / 89.7], rtol=1e-12)
    np.testing.assert_array_equal(adapted[1:], segments[1:])
    assert counts == AbaCounts(0, 0)


def test_aba_locked_proposal_keeps_its_boundaries_even_when_it_outscores_later_visits():
    # E = [0, 10] 0.9, F = [2, 12] 0.8, G = [8, 20] 0.7. IoU(E, F) = 8/12 > 0.4, IoU(E, G) = 2/20,
    # IoU(F, G) = 4/18. Visit E: group {E, F}; F is locked although it scores more than G.
    # G is then visited: its group is {G} alone, so it stays. E -> weights u = [1, 2/3] / (5/3)
    # = [0.6, 0.4], s * u = [0.54, 0.32], v = [0.54, 0.32] / 0.86: E = [0.32 * 2, 0.54 * 10 + 0.32 * 12] / 0.86.
    segments = np.array([[0.0, 10.0], [2.0, 12.0], [8.0, 20.0]])
    adapted, _ = adapt_boundaries(segments, np.array([0.9, 0.8, 0.7]), 0.4)
    np.testing.assert_allclose(adapted[0], [0.64 / 0.86, 9.24 / 0.86], rtol=1e-12)
    np.testing.assert_array_equal(adapted[1:], segments[1:])


def test_aba_groups_only_iou_strictly_above_the_threshold():
    # IoU([0, 10], [0, 4]) = 4 / 10 = 0.4: not above 0.4, both stay; above 0.39 they merge:
    # u = [1, 0.4] / 1.4, s * u = [0.9, 0.32] / 1.4, v = [0.9, 0.32] / 1.22 -> end (9 + 1.28) / 1.22.
    segments = np.array([[0.0, 10.0], [0.0, 4.0]])
    scores = np.array([0.9, 0.8])
    np.testing.assert_array_equal(adapt_boundaries(segments, scores, 0.4)[0], segments)
    np.testing.assert_allclose(adapt_boundaries(segments, scores, 0.39)[0][0], [0.0, 10.28 / 1.22], rtol=1e-12)


def test_aba_zero_length_proposals_form_groups_of_one_and_are_counted():
    # The authors' 0/0 IoU makes [5, 5] collapse to [0, 0]. Here it overlaps nothing
    # (not even the identical [5, 5]) and keeps its boundaries. [4, 6] has IoU 2/10 with [0, 10].
    segments = np.array([[5.0, 5.0], [0.0, 10.0], [4.0, 6.0], [5.0, 5.0]])
    scores = np.array([0.9, 0.5, 0.4, 0.8])
    adapted, counts = adapt_boundaries(segments, scores, 0.4)
    np.testing.assert_array_equal(adapted, segments)
    assert counts == AbaCounts(zero_length=2, zero_score_groups=0)
    loop, loop_counts = boundary_adaption_loop(segments, scores, 0.4)
    np.testing.assert_array_equal(adapted, loop)
    assert loop_counts == counts


def test_aba_all_zero_scores_weigh_by_iou_and_are_counted():
    # argsort([0, 0])[::-1] visits row 1 first: group {0, 1}, IoU [9/11, 1], u = [9/20, 11/20];
    # sum(s * u) = 0, so v = u: [9/20 * 0 + 11/20 * 1, 9/20 * 10 + 11/20 * 11] = [0.55, 10.55].
    segments = np.array([[0.0, 10.0], [1.0, 11.0]])
    adapted, counts = adapt_boundaries(segments, np.zeros(2), 0.4)
    np.testing.assert_allclose(adapted, [[0.0, 10.0], [0.55, 10.55]], rtol=1e-12)
    assert counts == AbaCounts(zero_length=0, zero_score_groups=1)


# -------------------------------------------------------------------- step 5


def test_soft_nms_decays_with_plus_one_lengths():
    # X = [0, 9] 0.9, Y = [5, 14] 0.8, Z = [20, 24] 0.7 (lengths end - start + 1: 10, 10, 5).
    # Select X; IoU(X, Y) = (9 - 5 + 1) / (10 + 10 - 5) = 1/3, Y -> 0.8 * exp(-(1/9) / 0.3) = 0.8 * exp(-1/2.7)
    # = 0.55235; IoU(X, Z) = 0, Z stays 0.7. Then Z (0.7 > 0.552), IoU(Z, Y) = 0; then Y.
    order, scores = soft_nms(np.array([[0.0, 9.0], [5.0, 14.0], [20.0, 24.0]]), np.array([0.9, 0.8, 0.7]), 0.3)
    assert order.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.8 * math.exp(-1 / 2.7)], rtol=1e-14)


def test_soft_nms_touching_segments_overlap_by_one_snippet():
    # [0, 4] and [4, 8]: plain intersection 0, but with +1 lengths inter = 4 - 4 + 1 = 1 and
    # IoU = 1 / (5 + 5 - 1) = 1/9, so 0.5 -> 0.5 * exp(-(1/81) / 0.3).
    order, scores = soft_nms(np.array([[0.0, 4.0], [4.0, 8.0]]), np.array([1.0, 0.5]), 0.3)
    assert order.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [1.0, 0.5 * math.exp(-1 / 24.3)], rtol=1e-14)


def test_soft_nms_ties_break_by_the_authors_row_swapping():
    # Disjoint segments (no decay), scores [0.5, 0.6, 0.5, 0.9]. Select row 3 (0.9): rows 0 and 3
    # swap and row 0 is dropped, leaving [1, 2, 0]. Select 1 (0.6), leaving [2, 0]; the tie 0.5 / 0.5
    # goes to the first row, 2. A stable sort by score would give [3, 1, 0, 2].
    segments = np.array([[0.0, 1.0], [10.0, 11.0], [20.0, 21.0], [30.0, 31.0]])
    scores = np.array([0.5, 0.6, 0.5, 0.9])
    order, decayed = soft_nms(segments, scores, 0.3)
    assert order.tolist() == [3, 1, 2, 0]
    np.testing.assert_array_equal(decayed, [0.9, 0.6, 0.5, 0.5])
    assert soft_nms_loop(segments, scores, 0.3)[0].tolist() == [3, 1, 2, 0]


def test_soft_nms_keeps_every_detection_and_handles_empty_input():
    order, scores = soft_nms(np.empty((0, 2)), np.empty(0), 0.3)
    assert order.size == 0 and scores.size == 0
    order, scores = soft_nms(np.array([[3.0, 3.0]]), np.array([-0.1]), 0.3)
    assert order.tolist() == [0] and scores.tolist() == [-0.1]


# -------------------------------------------------------------------- step 6


def write_ambiguous(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ambiguous_filter_rounds_half_even_and_ranges_that_touch_do_not_share(tmp_path):
    assert 1.6 * SPS == 2.5 and 4.16 * SPS == 6.5  # exact binary halves
    # [1.6 s, 4.16 s] -> snippets [round(2.5), round(6.5)) = [2, 6) (half to even; half up gives [3, 7)).
    path = write_ambiguous(tmp_path / "ambiguous.txt", ["vid_a  1.6 4.16"])
    video = np.array(["vid_a"] * 8 + ["vid_b"])
    start = np.array([0.0, 0.0, 6.0, 5.9, 1.99, 2.5, 2.5, 1.0, 0.0])
    end = np.array([2.99, 3.0, 9.0, 9.0, 2.01, 2.9, 3.1, 7.0, 3.0])
    # [0, 2) touches [2, 6): kept.     [0, 3) shares 2: dropped (kept under half-up).
    # [6, 9) touches: kept (dropped under half-up, which ends at 7).   [5, 9) shares 5: dropped.
    # [1, 2) touches: kept.             [2, 2) is empty: kept.          [2, 3): dropped.
    # [1, 7) covers it: dropped.        another video: kept.
    expected = [False, True, False, True, False, False, True, True, False]
    drop = drop_ambiguous_mask(video, start, end, read_ambiguous(path), SPS)
    assert drop.tolist() == expected
    assert filter_segments_loop(video, start, end, path, SPS).tolist() == expected


def test_ambiguous_filter_without_segments_drops_nothing():
    empty = pd.DataFrame({"video": pd.Series([], dtype=object), "start": [], "end": []})
    assert not drop_ambiguous_mask(np.array(["v"]), np.array([0.0]), np.array([9.0]), empty, SPS).any()


def test_read_ambiguous_parses_the_thumos_layout(tmp_path):
    path = write_ambiguous(tmp_path / "a.txt", ["video_test_0000278  0.0 1.4", "", "video_test_0000293  50.6 54.6"])
    table = read_ambiguous(path)
    assert table["video"].tolist() == ["video_test_0000278", "video_test_0000293"]
    assert table["start"].tolist() == [0.0, 50.6] and table["end"].tolist() == [1.4, 54.6]


@pytest.mark.parametrize(
    "line, message",
    [
        ("vid 1.0", "expected 'video start end'"),
        ("vid 1.0 2.0 3.0", "expected 'video start end'"),
        ("vid one 2.0", "must be numbers"),
        ("vid nan 2.0", "must be finite"),
        ("vid 3.0 2.0", "start 3.0 > end 2.0"),
    ],
)
def test_read_ambiguous_names_file_and_line(tmp_path, line, message):
    path = write_ambiguous(tmp_path / "bad.txt", ["vid 0.0 1.0", line])
    with pytest.raises(DataError, match=rf"bad\.txt, line 2: .*{message}"):
        read_ambiguous(path)


def test_read_ambiguous_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_ambiguous(tmp_path / "absent.txt")


# -------------------------------------------------------------- containers


def test_detections_concat_select_and_validation():
    a = Detections([0, 0], [1, 2], [0.0, 1.0], [2.0, 3.0], [0.5, 0.4])
    b = Detections([1], [0], [5.0], [6.0], [0.9])
    both = Detections.concat([a, b])
    assert len(both) == 3 and both.video.dtype == np.int64 and both.score.dtype == np.float64
    picked = both.select(np.array([True, False, True]))
    assert picked.label.tolist() == [1, 0] and picked.start.tolist() == [0.0, 5.0]
    assert len(Detections.concat([])) == 0
    with pytest.raises(ValueError, match="differ in length"):
        Detections([0], [1, 2], [0.0], [1.0], [0.5])
    with pytest.raises(ValueError, match="bool mask"):
        both.select(np.array([1, 0, 1]))


def test_arguments_are_validated():
    segments = np.array([[0.0, 1.0]])
    with pytest.raises(ValueError, match="end < start"):
        soft_nms(np.array([[2.0, 1.0]]), np.array([0.5]), 0.3)
    with pytest.raises(ValueError, match="NaN"):
        adapt_boundaries(segments, np.array([math.nan]), 0.4)
    with pytest.raises(ValueError, match="IoU threshold"):
        adapt_boundaries(segments, np.array([0.5]), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(segments, np.array([0.5]), 0.0)
    with pytest.raises(ValueError, match="video_index"):
        base_detections(np.array([0.5]), segments, np.array([0]), np.array([0.5]))
    with pytest.raises(ValueError, match="probs"):
        localize(np.array([0]), segments, np.ones((2, 3)), np.ones(1), np.ones(1))


def test_empty_split_gives_no_detections():
    empty = np.empty(0, dtype=np.int64)
    assert len(localize(empty, np.empty((0, 2)), np.empty((0, 3)), np.empty(0), np.empty(0))) == 0
    assert len(base_detections(empty, np.empty((0, 2)), empty, np.empty(0))) == 0


# ---------------------------------------------------- randomized vs the loops


def random_segments(rng: np.random.Generator, n: int) -> np.ndarray:
    """Segments on a coarse grid: many duplicates, touching ends and zero lengths."""
    start = rng.integers(0, 40, n) / rng.choice([1, 2, 4], n)
    length = rng.integers(0, 14, n) / rng.choice([1, 2], n)
    segments = np.column_stack([start, start + length])
    copies = rng.random(n) < 0.2
    segments[copies] = segments[rng.integers(0, n, copies.sum())]
    return segments


def random_scores(rng: np.random.Generator, n: int, tied: bool) -> np.ndarray:
    if tied:
        return rng.choice([0.0, 0.1, 0.5, 0.9, 0.25], n)
    return rng.random(n)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [True, False])
def test_aba_and_soft_nms_equal_the_loops(seed, tied):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        segments, scores = random_segments(rng, n), random_scores(rng, n, tied)
        threshold = float(rng.choice([0.0, 0.4, 0.7]))
        adapted, counts = adapt_boundaries(segments, scores, threshold)
        loop, loop_counts = boundary_adaption_loop(segments, scores, threshold)
        np.testing.assert_array_equal(adapted, loop)
        assert counts == loop_counts
        sigma = float(rng.choice([0.3, 0.05]))
        order, decayed = soft_nms(adapted, scores, sigma)
        loop_order, loop_decayed = soft_nms_loop(adapted, scores, sigma)
        np.testing.assert_array_equal(order, loop_order)
        np.testing.assert_array_equal(decayed, loop_decayed)


def random_split(rng: np.random.Generator, tied: bool):
    n = int(rng.integers(1, 200))
    video_index = rng.integers(0, int(rng.integers(1, 7)), n) * 3  # sparse, unsorted video ids
    segments = random_segments(rng, n)
    classes = 4
    probs = rng.dirichlet(np.full(classes + 1, 0.5), n)
    if tied:
        probs[rng.random(n) < 0.3] = probs[0]
    attention = rng.choice([0.2, 0.5, 1.0], n) if tied else rng.random(n)
    center = rng.choice([0.0, 0.5, 1.0], n) if tied else rng.random(n)
    return video_index, segments, probs, attention, center


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [True, False])
def test_localize_equals_the_per_video_loop(seed, tied, caplog):
    rng = np.random.default_rng(100 + seed)
    for _ in range(5):
        video_index, segments, probs, attention, center = random_split(rng, tied)
        threshold = float(rng.choice([0.1, 0.3, 0.9]))  # 0.9: mostly the single-best fallback
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tspnet.postprocess"):
            fast = localize(video_index, segments, probs, attention, center, class_threshold=threshold)
        loop, counts = localize_loop(video_index, segments, probs, attention, center, class_threshold=threshold)
        assert_same_detections(fast, loop)
        if counts != AbaCounts():
            assert f"{counts.zero_length} zero-length" in caplog.text
            assert f"{counts.zero_score_groups} groups with all-zero scores" in caplog.text


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [True, False])
def test_base_detections_equal_the_per_group_loop(seed, tied):
    rng = np.random.default_rng(200 + seed)
    for _ in range(5):
        n = int(rng.integers(1, 300))
        video_index = rng.integers(0, 5, n)
        labels = rng.integers(0, 3, n)
        segments = random_segments(rng, n)
        scores = rng.choice([-0.1, 0.0, 0.3, 0.7, 1.1], n) if tied else rng.normal(0.5, 0.4, n)
        assert_same_detections(
            base_detections(video_index, segments, labels, scores),
            base_detections_loop(video_index, segments, labels, scores),
        )


@pytest.mark.parametrize("seed", range(4))
def test_ambiguous_filter_equals_the_set_loop(seed, tmp_path):
    rng = np.random.default_rng(300 + seed)
    lines = []
    for video in ("v0", "v1", "v2"):
        for _ in range(int(rng.integers(0, 4))):
            a = 0.32 * int(rng.integers(0, 60))  # multiples of 0.32 s land on half snippets
            lines.append(f"{video}  {a:.2f} {a + 0.32 * int(rng.integers(0, 12)):.2f}")
    path = write_ambiguous(tmp_path / "ambiguous.txt", lines)
    n = 400
    video = rng.choice(["v0", "v1", "v2", "v3"], n)
    start = rng.integers(-4, 120, n) / rng.choice([1, 2, 4, 10], n)
    end = start + rng.integers(0, 20, n) / rng.choice([1, 2, 4, 10], n)
    np.testing.assert_array_equal(
        drop_ambiguous_mask(video, start, end, read_ambiguous(path), SPS),
        filter_segments_loop(video, start, end, path, SPS),
    )


# ------------------------------------------------------------- real proposals


def load_pmil_test(shared_data):
    results = json.loads((shared_data / "proposals" / "pmil_base" / "test.json").read_text())["results"]
    videos = sorted(results)
    classes = sorted({p["label"] for rows in results.values() for p in rows})
    rows = [(i, p) for i, video in enumerate(videos) for p in results[video]]
    video_index = np.array([i for i, _ in rows])
    labels = np.array([classes.index(p["label"]) for _, p in rows])
    scores = np.array([p["score"] for _, p in rows], dtype=np.float64)
    seconds = np.array([p["segment"] for _, p in rows], dtype=np.float64)
    segments = round_proposal_snippets(seconds_to_snippets(seconds, 25, 16))
    return np.array(videos), video_index, labels, scores, segments, len(classes)


def test_pmil_test_proposals_are_free_of_ambiguous_segments(shared_data):
    videos, video_index, _, _, segments, _ = load_pmil_test(shared_data)
    ambiguous = read_ambiguous(shared_data / "thumos14" / "Ambiguous_test.txt")
    assert len(ambiguous) > 0 and set(ambiguous["video"]) & set(videos)
    drop = drop_ambiguous_mask(videos[video_index], segments[:, 0], segments[:, 1], ambiguous, SPS)
    assert not drop.any()


def test_pmil_test_proposals_fast_equals_loop_on_some_videos(shared_data):
    _, video_index, labels, scores, segments, classes = load_pmil_test(shared_data)
    sizes = np.bincount(video_index)
    chosen = np.r_[np.arange(6), np.argmax(sizes)]  # six videos and the largest (1005 proposals)
    rows = np.flatnonzero(np.isin(video_index, chosen))
    video_index, labels, scores, segments = video_index[rows], labels[rows], scores[rows], segments[rows]
    assert_same_detections(
        base_detections(video_index, segments, labels, scores),
        base_detections_loop(video_index, segments, labels, scores),
    )
    # Stand-in model outputs as in bench/bench_postprocess.py: the label's probability grows with the score.
    q = (scores - scores.min()) / (scores.max() - scores.min())
    probs = np.repeat(((1 - q) / (classes + 1))[:, None], classes + 1, axis=1)
    probs[np.arange(len(q)), labels] += q
    ones = np.ones(len(q))
    fast = localize(video_index, segments, probs, ones, ones)
    loop, _ = localize_loop(video_index, segments, probs, ones, ones)
    assert_same_detections(fast, loop)
