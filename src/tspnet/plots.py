"""Plots: DVC plot data (CSV) and offline PNGs of the same numbers.

Every CSV is a long ("tidy") table: one row per point of one series, with a column that
names the series (`method`: base locator or TSPNet; `points`: initial or updated; `loss`:
total, classification or center). One DVC plot then draws every series of a file in its
own colour, and `dvc plots diff` adds the run (`rev`) as one more distinction. The DVC
templates that draw them live in `.dvc/plots/` and use the colours defined here, so the
PNGs and the HTML page look alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tspnet.files import atomic_path  # noqa: E402

if TYPE_CHECKING:  # not imported at run time: the train stage, which draws plots too, never evaluates
    from tspnet.evaluate import Evaluation

# The `method` column's values, as the legends show them, and their colours (PNG and HTML).
BASE, TSPNET = "base locator", "TSPNet"
BASE_COLOR, TSPNET_COLOR = "#8c8c8c", "#1f77b4"
METHOD_COLORS = {BASE: BASE_COLOR, TSPNET: TSPNET_COLOR}
# The `points` column of center_labels.csv: labels from the initial points, and after saliency point updating.
INITIAL, UPDATED = "initial", "updated"
POINTS_COLORS = {INITIAL: BASE_COLOR, UPDATED: TSPNET_COLOR}
# The `loss` column of train_losses.csv, from the names train.py logs (and metrics/train.json uses).
LOSS_TERMS = {"loss": "total", "classification_loss": "classification", "center_loss": "center"}
# Best-tIoU bins of the binned alignment curve: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
ALIGNMENT_BIN_EDGES = np.round(np.linspace(0.0, 1.0, 11), 10)
# Center-label histogram bins: [0, 0.05), ..., [0.95, 1.0].
CENTER_LABEL_BIN_EDGES = np.round(np.linspace(0.0, 1.0, 21), 10)
# A fixed PNG "Software" entry keeps the bytes identical across runs and matplotlib builds.
PNG_METADATA = {"Software": "tspnet"}

# Each stage's plots: file stem -> the CSV's columns. A stage that cannot compute them writes
# each as "not computed" (`write_not_computed`), so DVC finds all its outputs.
TRAIN_LOSSES = ("loss", "classification_loss", "center_loss")  # dvclive's series (train/<name>.tsv)
TRAIN_PLOTS = {"train_losses": ("step", "loss", "value"), "center_labels": ("center_label", "points", "proposals")}
EVALUATE_PLOTS = {"map_vs_tiou": ("tiou", "method", "map"), "per_class_ap": ("class", "method", "ap"),
                  "alignment": ("best_tiou", "method", "confidence"),
                  "alignment_binned": ("bin_low", "bin_high", "bin_center", "method", "mean_confidence", "proposals")}
CSV_ONLY = {"alignment_binned"}  # drawn as a panel of alignment.png, no PNG of its own


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")


def save_figure(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)


def by_method(columns: dict[str, np.ndarray], base: np.ndarray, tspnet: np.ndarray, value: str) -> pd.DataFrame:
    """Long table: the shared `columns`, once with the base locator's values and once with TSPNet's."""
    halves = [pd.DataFrame({**columns, "method": method, value: values})
              for method, values in ((BASE, base), (TSPNET, tspnet))]
    return pd.concat(halves, ignore_index=True)


# ----------------------------------------------------------------------------- mAP

def map_table(base: Evaluation, tspnet: Evaluation) -> pd.DataFrame:
    """mAP (%) at each tIoU threshold: columns tiou, method, map."""
    return by_method({"tiou": base.tiou_thresholds}, base.mAP(), tspnet.mAP(), "map")


def per_class_table(base: Evaluation, tspnet: Evaluation) -> pd.DataFrame:
    """Each class's AP (%), mean over the tIoU thresholds: columns class, method, ap."""
    return by_method({"class": np.asarray(tspnet.classes, dtype=object)}, base.ap.mean(axis=0),
                     tspnet.ap.mean(axis=0), "ap")


def write_map_plots(plots_dir: Path, base: Evaluation, tspnet: Evaluation) -> None:
    """mAP vs tIoU and per-class AP (mean over tIoU), base locator vs TSPNet."""
    curve = map_table(base, tspnet)
    write_csv(plots_dir / "map_vs_tiou.csv", curve)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for method, rows in curve.groupby("method", sort=False):
        axis.plot(rows["tiou"], rows["map"], "o-", color=METHOD_COLORS[method], label=method)
    axis.set(xlabel="tIoU threshold", ylabel="mAP (%)", title="mAP vs tIoU (test)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "map_vs_tiou.png")

    per_class = per_class_table(base, tspnet)
    write_csv(plots_dir / "per_class_ap.csv", per_class)
    classes = list(tspnet.classes)
    figure, axis = plt.subplots(figsize=(max(5.5, 0.45 * len(classes) + 2), 3.8))
    x = np.arange(len(classes))
    for offset, (method, rows) in zip((-0.2, 0.2), per_class.groupby("method", sort=False)):
        axis.bar(x + offset, rows["ap"], 0.4, color=METHOD_COLORS[method], label=method)
    axis.set_xticks(x, classes, rotation=45, ha="right")
    axis.set(ylabel="AP (%), mean over tIoU", title="Per-class AP (test)")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "per_class_ap.png")


# ----------------------------------------------------------------------------- training

def loss_table(history: list[dict]) -> pd.DataFrame:
    """Training losses per logged step: columns step, loss (total, classification, center), value."""
    if not history:  # nothing trained (weights loaded from a checkpoint): the columns only
        return pd.DataFrame({"step": pd.Series(dtype=np.int64), "loss": pd.Series(dtype=object),
                             "value": pd.Series(dtype=np.float64)})
    table = pd.DataFrame(history)
    return pd.concat([pd.DataFrame({"step": table["step"], "loss": term, "value": table[key]})
                      for key, term in LOSS_TERMS.items()], ignore_index=True)


def write_loss_plot(history: list[dict], plots_dir: Path) -> None:
    """Training losses per logged step (the same numbers dvclive logs)."""
    table = loss_table(history)
    write_csv(plots_dir / "train_losses.csv", table)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for (term, rows), style in zip(table.groupby("loss", sort=False), ("-", "--", ":")):
        axis.plot(rows["step"], rows["value"], style, label=term)
    axis.set(xlabel="iteration", ylabel="loss (mean over the batch's videos)", title="Training losses",
             yscale="log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "train_losses.png")


def center_label_table(initial: np.ndarray, final: np.ndarray) -> pd.DataFrame:
    """Histogram of the center labels: columns center_label (bin centre), points (initial, updated), proposals."""
    edges = CENTER_LABEL_BIN_EDGES
    centers = np.round((edges[:-1] + edges[1:]) / 2, 10)
    counts = {points: np.histogram(labels, bins=edges)[0] for points, labels in ((INITIAL, initial), (UPDATED, final))}
    return pd.concat([pd.DataFrame({"center_label": centers, "points": points, "proposals": count})
                      for points, count in counts.items()], ignore_index=True)


def write_note_figure(path: Path, title: str, note: str) -> None:
    """A figure that only says why there is nothing to draw (e.g. no training happened)."""
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.axis("off")
    axis.set_title(title)
    axis.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=axis.transAxes)
    save_figure(figure, path)


def write_center_label_plot(initial: np.ndarray, final: np.ndarray, plots_dir: Path) -> None:
    """Histogram of the training proposals' center labels before and after saliency point updating."""
    table = center_label_table(initial, final)
    write_csv(plots_dir / "center_labels.csv", table)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    width = CENTER_LABEL_BIN_EDGES[1] - CENTER_LABEL_BIN_EDGES[0]
    for offset, (points, rows) in zip((-width / 4, width / 4), table.groupby("points", sort=False)):
        axis.bar(rows["center_label"] + offset, rows["proposals"], width / 2, color=POINTS_COLORS[points],
                 label=f"{points} points")
    axis.set(xlabel="center label w", ylabel="training proposals", yscale="log",
             title="Center labels before and after saliency point updating")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "center_labels.png")


# ----------------------------------------------------------------------------- alignment

def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def alignment_table(best_iou: np.ndarray, base_score: np.ndarray, aligned_score: np.ndarray) -> pd.DataFrame:
    """Every test proposal twice: columns best_tiou, method, confidence (base score / aligned confidence)."""
    return by_method({"best_tiou": best_iou}, base_score, aligned_score, "confidence")


def binned_alignment_table(best_iou: np.ndarray, base_score: np.ndarray, aligned_score: np.ndarray
                           ) -> pd.DataFrame:
    """Mean confidence of the proposals in each best-tIoU bin (ALIGNMENT_BIN_EDGES; the last bin holds 1.0).

    Columns bin_low, bin_high, bin_center, method, mean_confidence, proposals; empty bins have no row.
    """
    edges = ALIGNMENT_BIN_EDGES
    n_bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, best_iou, side="right") - 1, 0, n_bins - 1)
    proposals = np.bincount(index, minlength=n_bins)
    filled = np.flatnonzero(proposals)
    columns = {"bin_low": edges[filled], "bin_high": edges[filled + 1],
               "bin_center": np.round((edges[filled] + edges[filled + 1]) / 2, 10)}
    means = [np.bincount(index, weights=np.asarray(score, dtype=np.float64), minlength=n_bins)[filled]
             / proposals[filled] for score in (base_score, aligned_score)]
    table = by_method(columns, *means, "mean_confidence")
    table["proposals"] = np.tile(proposals[filled], 2)
    return table


def write_alignment_plot(best_iou: np.ndarray, base_score: np.ndarray, aligned_score: np.ndarray,
                         plots_dir: Path) -> dict[str, float]:
    """Confidence against quality for every test proposal, before (base) and after (TSPNet) realignment,
    and the mean confidence per best-tIoU bin beside it.

    Returns the Spearman correlation of each confidence with the proposal's best tIoU.
    """
    write_csv(plots_dir / "alignment.csv", alignment_table(best_iou, base_score, aligned_score))
    binned = binned_alignment_table(best_iou, base_score, aligned_score)
    write_csv(plots_dir / "alignment_binned.csv", binned)
    correlations = {"spearman_base": spearman(best_iou, base_score),
                    "spearman_tspnet": spearman(best_iou, aligned_score)}
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for axis, score, name, color, key in (
            (axes[0], base_score, "base locator score", BASE_COLOR, "spearman_base"),
            (axes[1], aligned_score, "TSPNet aligned confidence", TSPNET_COLOR, "spearman_tspnet")):
        axis.scatter(best_iou, score, s=3, alpha=0.3, color=color, linewidths=0)
        axis.set(xlabel="best tIoU with ground truth of its class", ylabel=name,
                 title=f"Spearman {correlations[key]:.3f}")
        axis.grid(alpha=0.3)
    for method, rows in binned.groupby("method", sort=False):
        axes[2].plot(rows["bin_center"], rows["mean_confidence"], "o-", color=METHOD_COLORS[method], label=method)
    axes[2].set(xlabel="best tIoU with ground truth of its class (bins of 0.1)", ylabel="mean confidence",
                title="Mean confidence per tIoU bin")
    axes[2].grid(alpha=0.3)
    axes[2].legend()
    figure.suptitle("Confidence-quality alignment of the test proposals")
    figure.tight_layout()
    save_figure(figure, plots_dir / "alignment.png")
    return correlations


def write_not_computed(plots_dir: Path, stems: dict[str, tuple[str, ...]], reason: str) -> None:
    """Each plot as "not computed": a PNG that says why, and its CSV with the header only (no points)."""
    for stem, columns in stems.items():
        write_csv(plots_dir / f"{stem}.csv", pd.DataFrame(columns=list(columns)))
        if stem in CSV_ONLY:
            continue
        figure = plt.figure(figsize=(5.5, 1.6))
        figure.text(0.5, 0.5, f"{stem.replace('_', ' ')}\nnot computed: {reason}", ha="center", va="center",
                    wrap=True)
        save_figure(figure, plots_dir / f"{stem}.png")
