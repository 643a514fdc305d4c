"""tspnet.evaluate and `python -m tspnet evaluate`: hand-computed APs, the oracle, the real THUMOS14 files."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.reference.evaluate_loop import evaluate_loop
from tspnet.cli import main
from tspnet.evaluate import (
    DEFAULT_TIOU_THRESHOLDS,
    GroundTruth,
    evaluate_detections,
    format_table,
    load_ground_truth,
    load_results,
    write_results,
)
from tspnet.files import DataError


def make_gt(rows: list[tuple], videos: list[str] | None = None) -> GroundTruth:
    """rows: (video, label, start, end); videos default to those of the rows, in order."""
    frame = pd.DataFrame(rows, columns=["video", "label", "start", "end"]).astype({"start": float, "end": float})
    return GroundTruth(frame, videos if videos is not None else list(dict.fromkeys(frame["video"])))


def make_preds(rows: list[tuple]) -> pd.DataFrame:
    """rows: (video, label, start, end, score)."""
    return pd.DataFrame(rows, columns=["video", "label", "start", "end", "score"]).astype(
        {"start": float, "end": float, "score": float}
    )


def ap_at(gt: GroundTruth, preds: pd.DataFrame, thresholds, label: str = "a") -> np.ndarray:
    """AP (%) of one class at each threshold, checked against the oracle on the way."""
    evaluation = evaluate_detections(gt, preds, thresholds)
    classes, oracle = evaluate_loop(gt, preds, thresholds)
    assert classes == evaluation.classes
    np.testing.assert_allclose(evaluation.ap, oracle, rtol=0, atol=1e-9)
    return evaluation.ap[:, evaluation.classes.index(label)]


# ----------------------------------------------------------------------------- hand-computed cases


def test_two_gts_three_predictions_interpolated():
    gt = make_gt([("v", "a", 0, 10), ("v", "a", 20, 30)])
    preds = make_preds([("v", "a", 0, 10, 0.9), ("v", "a", 40, 50, 0.8), ("v", "a", 20, 28, 0.7)])
    # rank  tIoU         tp fp  precision  recall
    #  1    1.0 (gt 0)   1  0   1/1        1/2
    #  2    0.0          0  1   1/2        1/2
    #  3    0.8 (gt 1)   1  0   2/3        2/2
    # Envelope from the right: 1, 1, 2/3. Recall steps: 0->1/2 at precision 1, 1/2->1 at 2/3 (the
    # dip to 1/2 is lifted). AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333...
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [100 * (0.5 + 0.5 * 2 / 3)], atol=1e-12)
    # At 0.9 the third is a false positive: AP = 0.5 * 1 = 0.5.
    np.testing.assert_allclose(ap_at(gt, preds, [0.9]), [50.0], atol=1e-12)


def test_false_positive_first_lowers_precision_of_the_later_hit():
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 50, 60, 0.9), ("v", "a", 0, 10, 0.1)])
    # precision 0, 1/2; recall 0, 1 -> AP = 1 * 1/2.
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [50.0], atol=1e-12)


def test_prediction_takes_the_higher_tiou_ground_truth():
    # p1 [4,14]: tIoU with A [0,10] = 6/14 = 0.43, with B [5,15] = 9/11 = 0.82 -> takes B.
    # p2 [10,20]: tIoU with B = 5/15 = 0.33, with A = 0 -> B is taken: false positive at 0.3.
    # (Had p1 taken A, p2 would be a hit.) tp 1, 0: precision 1, 1/2; recall 1/2, 1/2 -> AP 0.5.
    gt = make_gt([("v", "a", 0, 10), ("v", "a", 5, 15)])
    preds = make_preds([("v", "a", 4, 14, 0.9), ("v", "a", 10, 20, 0.8)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.3]), [50.0], atol=1e-12)


def test_locked_ground_truth_lets_the_next_one_match():
    # p1 [4,14] takes B (0.82). p2 [5,15]: B (tIoU 1) is locked, A [0,10] has 5/15 = 0.33.
    # At 0.3: tp 1, 1 -> AP 1. At 0.5: A is below the threshold -> tp 1, 0 -> AP 0.5.
    gt = make_gt([("v", "a", 0, 10), ("v", "a", 5, 15)])
    preds = make_preds([("v", "a", 4, 14, 0.9), ("v", "a", 5, 15, 0.8)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.3, 0.5]), [100.0, 50.0], atol=1e-12)


def test_tiou_exactly_on_the_threshold_is_a_match():
    # [0,2] in [0,4]: 2/4 = 0.5 exactly; [0,3] in [0,10]: 3/10 rounds to the same double as 0.3.
    gt = make_gt([("v", "a", 0, 4), ("w", "a", 0, 10)])
    preds = make_preds([("v", "a", 0, 2, 0.9), ("w", "a", 0, 3, 0.8)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.3, 0.5, 0.5000001]), [100.0, 50.0, 0.0], atol=1e-12)


def test_duplicates():
    # Duplicate predictions: the second finds its ground truth locked (tp 1, 0). Recall is full at
    # rank 1 with precision 1, so AP stays 1.
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 0, 10, 0.9), ("v", "a", 0, 10, 0.8)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [100.0], atol=1e-12)
    # Duplicate ground truth: one prediction can only match one of them: recall 1/2, AP 0.5.
    gt = make_gt([("v", "a", 0, 10), ("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 0, 10, 0.9)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [50.0], atol=1e-12)


def test_prediction_on_a_video_without_ground_truth_is_a_false_positive():
    # "u" is in the subset but has no instance: its prediction counts (precision 0, 1/2 -> AP 0.5),
    # and so does a prediction on a video holding only another class ("w").
    gt = make_gt([("v", "a", 0, 10), ("w", "b", 0, 10)], videos=["u", "v", "w"])
    preds = make_preds([("u", "a", 0, 10, 0.9), ("v", "a", 0, 10, 0.5)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [50.0], atol=1e-12)
    preds = make_preds([("w", "a", 0, 10, 0.9), ("v", "a", 0, 10, 0.5)])
    evaluation = evaluate_detections(gt, preds, [0.5])
    assert evaluation.ignored_predictions == {"video_outside_subset": 0, "label_not_in_ground_truth": 0}
    # Class "b" has no prediction: AP 0, and it still counts in the mean: (50 + 0) / 2.
    np.testing.assert_allclose(evaluation.ap, [[50.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(evaluation.mAP(), [25.0], atol=1e-12)


def test_score_ties_break_as_the_official_argsort():
    # Equal scores: the official order is scores.argsort()[::-1], whichever way numpy breaks the tie.
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 0, 10, 0.5), ("v", "a", 20, 30, 0.5)])
    hit_first = np.array([0.5, 0.5]).argsort()[::-1][0] == 0
    np.testing.assert_allclose(ap_at(gt, preds, [0.5]), [100.0 if hit_first else 50.0], atol=1e-12)


def test_zero_length_segments_never_match():
    # A deliberate choice: identical zero-length segments have tIoU 0 (the official code gets 0/0).
    gt = make_gt([("v", "a", 5, 5), ("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 5, 5, 0.9)])
    np.testing.assert_allclose(ap_at(gt, preds, [0.1]), [0.0], atol=1e-12)


def test_ignored_videos_and_labels_are_counted_and_logged(caplog):
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds(
        [
            ("v", "a", 0, 10, 0.5),
            ("elsewhere", "a", 0, 10, 0.9),  # outside the subset
            ("elsewhere", "zzz", 0, 10, 0.9),  # outside the subset (counted once, as such)
            ("v", "zzz", 0, 10, 0.9),  # unknown class
            ("v", "zzz", 0, 10, 0.8),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="tspnet.evaluate"):
        evaluation = evaluate_detections(gt, preds, [0.5])
    assert evaluation.ignored_predictions == {"video_outside_subset": 2, "label_not_in_ground_truth": 2}
    assert evaluation.num_predictions == 1
    np.testing.assert_allclose(evaluation.ap, [[100.0]])
    assert "ignoring 2 predictions on 1 videos outside" in caplog.text
    assert "ignoring 2 predictions whose label" in caplog.text


def test_summary_keys_and_averages():
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds([("v", "a", 0, 6, 0.9)])  # tIoU 0.6: a hit up to 0.6, then AP 0
    summary = evaluate_detections(gt, preds).summary()
    assert list(summary) == [f"map@{t:g}" for t in DEFAULT_TIOU_THRESHOLDS] + [
        "avg_0.1_0.5", "avg_0.3_0.7", "avg_0.1_0.7"
    ]
    assert summary["map@0.6"] == 100.0 and summary["map@0.7"] == 0.0
    assert summary["avg_0.1_0.5"] == 100.0
    np.testing.assert_allclose(summary["avg_0.3_0.7"], 400 / 5)  # (100 * 4 + 0) / 5
    np.testing.assert_allclose(summary["avg_0.1_0.7"], 600 / 7)
    # Only the averages whose whole range is evaluated.
    assert list(evaluate_detections(gt, preds, [0.3, 0.5, 0.7]).summary()) == ["map@0.3", "map@0.5", "map@0.7"]
    partial = evaluate_detections(gt, preds, [0.1, 0.2, 0.3, 0.4, 0.5, 0.55]).summary()
    assert "avg_0.1_0.5" in partial and "avg_0.3_0.7" not in partial


def test_per_class_and_table():
    gt = make_gt([("v", "a", 0, 10), ("v", "b", 0, 10)])
    preds = make_preds([("v", "a", 0, 10, 0.9), ("v", "b", 0, 2, 0.9)])  # b: tIoU 0.2
    evaluation = evaluate_detections(gt, preds, [0.1, 0.5])
    table = evaluation.per_class()
    assert list(table.columns) == ["class", "tiou", "ap"]
    assert table.to_dict("records") == [
        {"class": "a", "tiou": 0.1, "ap": 100.0},
        {"class": "b", "tiou": 0.1, "ap": 100.0},
        {"class": "a", "tiou": 0.5, "ap": 100.0},
        {"class": "b", "tiou": 0.5, "ap": 0.0},
    ]
    text = format_table(evaluation, "demo")
    assert text.splitlines()[0] == "demo"
    assert "100.00" in text and "50.00" in text


def test_bad_thresholds_and_empty_ground_truth():
    gt = make_gt([("v", "a", 0, 10)])
    preds = make_preds([])
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detections(gt, preds, [0.0, 0.5])
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detections(gt, preds, [])
    with pytest.raises(ValueError, match="no instance"):
        evaluate_detections(make_gt([], videos=["v"]), preds, [0.5])
    np.testing.assert_array_equal(evaluate_detections(gt, preds, [0.5]).ap, [[0.0]])


# ----------------------------------------------------------------------------- files


def write(tmp_path, name: str, obj) -> str:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def test_ground_truth_with_string_segments_and_subsets(tmp_path):
    path = write(tmp_path, "gt.json", {"database": {
        "t1": {"subset": "test", "annotations": [{"segment": ["18.6", "24.8"], "label": "HighJump"}]},
        "t2": {"subset": "test", "annotations": []},
        "v1": {"subset": "train", "annotations": [{"segment": [1, 2.5], "label": "Diving"}]},
    }})
    gt = load_ground_truth(path, "test")
    assert gt.videos == ["t1", "t2"]
    assert gt.instances.to_dict("records") == [{"video": "t1", "label": "HighJump", "start": 18.6, "end": 24.8}]
    assert gt.instances["start"].dtype == np.float64
    everything = load_ground_truth(path, None)
    assert everything.videos == ["t1", "t2", "v1"] and everything.classes == ["Diving", "HighJump"]


GOOD_ANNOTATION = {"segment": [1, 2], "label": "a"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ({"results": {}}, "'database'"),
        ({"database": {"x": {"subset": "test", "annotations": {}}}}, "video x, field 'annotations'"),
        ({"database": {"x": {"annotations": [GOOD_ANNOTATION]}}}, "video x, field 'subset'"),
        ({"database": {"x": {"subset": "test", "annotations": [{"segment": [3, 2], "label": "a"}]}}},
         re.escape("video x, field 'annotations[0].segment': end 2.0 is before start 3.0")),
        ({"database": {"x": {"subset": "test", "annotations": [{"segment": ["1", "two"], "label": "a"}]}}},
         re.escape("field 'annotations[0].segment': expected a number")),
        ({"database": {"x": {"subset": "test", "annotations": [{"segment": ["nan", "2"], "label": "a"}]}}},
         "not a finite number"),
        ({"database": {"x": {"subset": "test", "annotations": [{"segment": [1], "label": "a"}]}}},
         "expected \\[start, end\\]"),
        ({"database": {"x": {"subset": "test", "annotations": [{"segment": [1, 2], "label": 3}]}}},
         "field 'annotations\\[0\\].label'"),
        ({"database": {"x": {"subset": "train", "annotations": [GOOD_ANNOTATION]}}}, "no video in subset 'test'"),
    ],
)
def test_malformed_ground_truth(tmp_path, content, message):
    path = write(tmp_path, "gt.json", content)
    with pytest.raises(DataError, match=message) as info:
        load_ground_truth(path, "test")
    assert str(info.value).startswith(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"database": {}}, "'results'"),
        ({"results": {"x": {}}}, "video x: expected a list"),
        ({"results": {"x": [{"label": "a", "score": True, "segment": [0, 1]}]}}, "field '\\[0\\].score'"),
        ('{"results": {"x": [{"label": "a", "score": Infinity, "segment": [0, 1]}]}}', "not a finite number"),
        ({"results": {"x": [{"label": "a", "score": 1, "segment": [2, 1]}]}}, "end 1.0 is before start 2.0"),
        ({"results": {"x": [{"score": 1, "segment": [0, 1]}]}}, "field '\\[0\\].label'"),
    ],
)
def test_malformed_results(tmp_path, content, message):
    path = write(tmp_path, "results.json", content)
    with pytest.raises(DataError, match=message) as info:
        load_results(path)
    assert str(info.value).startswith(path)


def test_results_round_trip_negative_scores_and_first_appearance_order(tmp_path):
    detections = make_preds([("b", "x", 1.5, 2.0, -0.1), ("a", "y", 0.0, 3.25, 0.7), ("b", "y", 4.0, 5.0, 1.2)])
    path = tmp_path / "out" / "results.json"
    write_results(path, detections, version="test-version")
    raw = json.loads(path.read_text())
    assert raw["version"] == "test-version" and list(raw["results"]) == ["b", "a"]
    assert raw["results"]["b"][0] == {"label": "x", "score": -0.1, "segment": [1.5, 2.0]}
    back = load_results(path)
    # File order is video by video: b's two detections, then a's.
    pd.testing.assert_frame_equal(back, detections.iloc[[0, 2, 1]].reset_index(drop=True))
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left behind
    assert load_results(write(tmp_path, "empty.json", {"results": {}})).empty


def test_write_results_refuses_bad_detections(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_results(tmp_path / "r.json", make_preds([("a", "x", 0.0, float("nan"), 1.0)]))
    with pytest.raises(ValueError, match="lack columns"):
        write_results(tmp_path / "r.json", make_preds([]).drop(columns="score"))


# ----------------------------------------------------------------------------- fast vs oracle


def random_case(seed: int) -> tuple[GroundTruth, pd.DataFrame]:
    """Grid-aligned segments (exact tIoU ties, tIoUs on thresholds), few distinct scores (score ties),
    videos with many instances (long tIoU rows, where numpy's argsort is not stable), long
    predictions covering several instances, and predictions to ignore."""
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d"]
    videos = [f"v{i}" for i in range(6)]
    gt_rows = []
    for video in videos[:5]:  # v5: in the subset, no instance
        for label in rng.choice(classes, size=2, replace=False):
            for _ in range(rng.integers(1, 30)):
                start = rng.integers(0, 60) * 0.5
                gt_rows.append((video, label, start, start + rng.integers(0, 8) * 0.5))
    pred_rows = []
    for _ in range(400):
        video = rng.choice(videos + ["outside"])
        label = rng.choice(classes + ["unknown"])
        start = rng.integers(0, 60) * 0.5
        length = rng.integers(0, 30) * 0.5 if rng.random() < 0.3 else rng.integers(1, 6) * 0.5
        pred_rows.append((video, label, start, start + length, rng.integers(0, 12) / 4 - 0.5))
    return make_gt(gt_rows, videos), make_preds(pred_rows)


@pytest.mark.parametrize("seed", range(8))
def test_fast_matches_the_oracle_on_random_cases(seed):
    gt, preds = random_case(seed)
    thresholds = [0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 1.0]
    evaluation = evaluate_detections(gt, preds, thresholds)
    classes, oracle = evaluate_loop(gt, preds, thresholds)
    assert evaluation.classes == classes
    np.testing.assert_allclose(evaluation.ap, oracle, rtol=0, atol=1e-9)
    assert oracle.max() > 0  # the case has hits


# ----------------------------------------------------------------------------- the command


def test_command_writes_summary_and_drops_ambiguous(tmp_path, capsys):
    pytest.importorskip("tspnet.postprocess", reason="tspnet.postprocess (ambiguous filter) is not written yet")
    gt = write(tmp_path, "gt.json", {"database": {
        "v": {"subset": "test", "annotations": [{"segment": ["0", "10"], "label": "a"}]},
    }})
    # Ambiguous [20, 22] s -> snippets range(round(31.25), round(34.375)) = 31, 32, 33. The prediction
    # [19.2, 20.48] s -> [30.0, 32.0] snippets -> range(30, 32) shares 31: dropped. [0, 10] stays.
    results = write(tmp_path, "results.json", {"results": {"v": [
        {"label": "a", "score": 0.9, "segment": [19.2, 20.48]},
        {"label": "a", "score": 0.5, "segment": [0, 10]},
    ]}})
    ambiguous = write(tmp_path, "ambiguous.txt", "v  20.0 22.0\n")
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--ground-truth", gt, "--predictions", results, "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["map@0.5"] == 50.0  # the false positive ranks first
    assert main(args + ["--ambiguous", ambiguous]) == 0
    assert json.loads(out.read_text())["map@0.5"] == 100.0
    assert "dropped 1 of 2 predictions" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path):
    gt = write(tmp_path, "gt.json", {"database": {"v": {"subset": "test", "annotations": [GOOD_ANNOTATION]}}})
    results = write(tmp_path, "r.json", {"results": {"v": [{"label": "a", "score": 1, "segment": [1, 2]}]}})
    done = subprocess.run(
        [sys.executable, "-m", "tspnet", "evaluate", "--ground-truth", gt, "--predictions", results],
        capture_output=True, text=True, check=True,
    )
    assert "100.00" in done.stdout


def test_command_reports_bad_files(tmp_path, capsys):
    gt = write(tmp_path, "gt.json", {"database": {"v": {"subset": "test", "annotations": [GOOD_ANNOTATION]}}})
    assert main(["evaluate", "--ground-truth", gt, "--predictions", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    assert main(["evaluate", "--ground-truth", gt, "--predictions", gt, "--subset", "train"]) == 2
    assert "no video in subset 'train'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real THUMOS14 files


def real_files(shared_data) -> tuple[str, str, str]:
    thumos = shared_data / "thumos14"
    return (str(thumos / "gt.json"), str(shared_data / "proposals" / "pmil_base" / "test.json"),
            str(thumos / "Ambiguous_test.txt"))


def test_real_thumos14_command_matches_the_oracle(shared_data, tmp_path):
    """P-MIL base test proposals against THUMOS14 test: command == API, and API == oracle on a
    deterministic quarter of the classes (the full oracle run is in bench/bench_evaluate.py)."""
    gt_path, results_path, _ = real_files(shared_data)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--ground-truth", gt_path, "--predictions", results_path, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())

    gt = load_ground_truth(gt_path, "test")
    assert len(gt.videos) == 210 and len(gt.instances) == 3311
    preds = load_results(results_path)
    assert len(preds) == 31587
    evaluation = evaluate_detections(gt, preds)
    assert evaluation.ignored_predictions["video_outside_subset"] > 0  # videos 270 and 1496
    for t, value in zip(DEFAULT_TIOU_THRESHOLDS, evaluation.mAP()):
        assert summary[f"map@{t:g}"] == pytest.approx(value, abs=1e-9)

    some = evaluation.classes[::4]
    subset_gt = GroundTruth(gt.instances[gt.instances["label"].isin(some)], gt.videos)
    classes, oracle = evaluate_loop(subset_gt, preds, DEFAULT_TIOU_THRESHOLDS)
    assert classes == some
    columns = [evaluation.classes.index(name) for name in some]
    np.testing.assert_allclose(evaluation.ap[:, columns], oracle, rtol=0, atol=1e-6)


def test_real_thumos14_ambiguous_filter_drops_nothing(shared_data, tmp_path, capsys):
    """METHOD.md: the released P-MIL proposals are already free of ambiguous segments."""
    pytest.importorskip("tspnet.postprocess", reason="tspnet.postprocess (ambiguous filter) is not written yet")
    gt_path, results_path, ambiguous = real_files(shared_data)
    plain, filtered = tmp_path / "plain.json", tmp_path / "filtered.json"
    argv = ["evaluate", "--ground-truth", gt_path, "--predictions", results_path]
    assert main(argv + ["--out", str(plain)]) == 0
    assert main(argv + ["--out", str(filtered), "--ambiguous", ambiguous]) == 0
    assert "dropped 0 of 31587 predictions" in capsys.readouterr().out
    assert json.loads(filtered.read_text()) == json.loads(plain.read_text())
