"""Plot data: the long CSV tables behind `dvc plots`, with hand-computed numbers, and their PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tspnet import plots
from tspnet.evaluate import Evaluation


def evaluation(ap: list[list[float]], classes=("a", "b")) -> Evaluation:
    return Evaluation(tiou_thresholds=np.array([0.1, 0.5]), classes=list(classes), ap=np.array(ap, dtype=float),
                      num_ground_truth=np.ones(len(classes), dtype=int), num_predictions=10)


BASE = evaluation([[40.0, 60.0], [20.0, 30.0]])  # rows: tIoU 0.1, 0.5; columns: classes a, b
TSPNET = evaluation([[50.0, 70.0], [30.0, 50.0]])


def test_map_table_has_one_row_per_method_and_threshold():
    table = plots.map_table(BASE, TSPNET)
    assert list(table.columns) == ["tiou", "method", "map"]
    assert table.to_dict("records") == [
        {"tiou": 0.1, "method": "base locator", "map": 50.0}, {"tiou": 0.5, "method": "base locator", "map": 25.0},
        {"tiou": 0.1, "method": "TSPNet", "map": 60.0}, {"tiou": 0.5, "method": "TSPNet", "map": 40.0}]


def test_per_class_table_averages_over_thresholds():
    table = plots.per_class_table(BASE, TSPNET)
    assert list(table.columns) == ["class", "method", "ap"]
    assert table.to_dict("records") == [
        {"class": "a", "method": "base locator", "ap": 30.0}, {"class": "b", "method": "base locator", "ap": 45.0},
        {"class": "a", "method": "TSPNet", "ap": 40.0}, {"class": "b", "method": "TSPNet", "ap": 60.0}]


def test_alignment_table_lists_every_proposal_once_per_method():
    table = plots.alignment_table(np.array([0.2, 0.9]), np.array([0.5, 0.4]), np.array([0.1, 0.8]))
    assert list(table.columns) == ["best_tiou", "method", "confidence"]
    assert table.to_dict("records") == [
        {"best_tiou": 0.2, "method": "base locator", "confidence": 0.5},
        {"best_tiou": 0.9, "method": "base locator", "confidence": 0.4},
        {"best_tiou": 0.2, "method": "TSPNet", "confidence": 0.1},
        {"best_tiou": 0.9, "method": "TSPNet", "confidence": 0.8}]


def test_binned_alignment_by_hand():
    # Bins [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]: 0.1 opens the second bin, 1.0 closes the last.
    best = np.array([0.0, 0.05, 0.1, 0.95, 1.0, 0.55])
    base = np.array([0.2, 0.4, 0.6, 0.9, 0.7, 0.5])
    aligned = np.array([0.1, 0.3, 0.2, 0.6, 1.0, 0.4])
    table = plots.binned_alignment_table(best, base, aligned)
    assert list(table.columns) == ["bin_low", "bin_high", "bin_center", "method", "mean_confidence", "proposals"]
    expected = pd.DataFrame({
        "bin_low": [0.0, 0.1, 0.5, 0.9] * 2, "bin_high": [0.1, 0.2, 0.6, 1.0] * 2,
        "bin_center": [0.05, 0.15, 0.55, 0.95] * 2,
        "method": ["base locator"] * 4 + ["TSPNet"] * 4,
        "mean_confidence": [0.3, 0.6, 0.5, 0.8, 0.2, 0.2, 0.4, 0.8],
        "proposals": [2, 1, 1, 2] * 2})
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_center_label_table_counts_each_bin():
    initial = np.array([0.0, 0.01, 0.5, 1.0])
    final = np.array([0.5, 0.52, 0.99, 1.0])
    table = plots.center_label_table(initial, final)
    assert list(table.columns) == ["center_label", "points", "proposals"]
    assert len(table) == 40 and table["center_label"].iloc[0] == 0.025 and table["center_label"].iloc[19] == 0.975
    counts = table.set_index(["points", "center_label"])["proposals"]
    assert counts[("initial", 0.025)] == 2 and counts[("initial", 0.525)] == 1 and counts[("initial", 0.975)] == 1
    assert counts[("updated", 0.525)] == 2 and counts[("updated", 0.975)] == 2
    assert counts.groupby(level="points").sum().to_dict() == {"initial": 4, "updated": 4}


def test_loss_table_names_each_term():
    history = [{"step": 10, "loss": 3.0, "classification_loss": 2.0, "center_loss": 1.0},
               {"step": 20, "loss": 1.5, "classification_loss": 1.0, "center_loss": 0.5}]
    table = plots.loss_table(history)
    assert list(table.columns) == ["step", "loss", "value"]
    assert table.to_dict("records") == [
        {"step": 10, "loss": "total", "value": 3.0}, {"step": 20, "loss": "total", "value": 1.5},
        {"step": 10, "loss": "classification", "value": 2.0}, {"step": 20, "loss": "classification", "value": 1.0},
        {"step": 10, "loss": "center", "value": 1.0}, {"step": 20, "loss": "center", "value": 0.5}]


@pytest.mark.parametrize("x, y, expected", [([1, 2, 3, 4], [10, 20, 30, 40], 1.0), ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
                                            ([1, 2, 3], [5, 5, 5], 0.0), ([1, 2, 3, 4], [1, 3, 2, 4], 0.8)])
def test_spearman_by_hand(x, y, expected):
    assert plots.spearman(np.array(x), np.array(y)) == pytest.approx(expected)


def test_writers_write_the_csvs_and_pngs(tmp_path):
    rng = np.random.default_rng(0)
    best = rng.uniform(0, 1, 50)
    plots.write_map_plots(tmp_path, BASE, TSPNET)
    correlations = plots.write_alignment_plot(best, rng.uniform(0, 1, 50), best + rng.normal(0, 0.1, 50), tmp_path)
    plots.write_loss_plot([{"step": s, "loss": 1.0 / s, "classification_loss": 0.6 / s, "center_loss": 0.4 / s}
                           for s in (10, 20, 30)], tmp_path)
    plots.write_center_label_plot(rng.uniform(0, 1, 30), rng.uniform(0, 1, 30), tmp_path)
    assert correlations["spearman_tspnet"] > correlations["spearman_base"]
    for name in ("map_vs_tiou", "per_class_ap", "alignment", "train_losses", "center_labels"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (tmp_path / f"{name}.csv").is_file(), name
    binned = pd.read_csv(tmp_path / "alignment_binned.csv")
    assert binned["proposals"].sum() == 2 * 50
    assert pd.read_csv(tmp_path / "alignment.csv")["method"].value_counts().to_dict() == {"base locator": 50,
                                                                                           "TSPNet": 50}
