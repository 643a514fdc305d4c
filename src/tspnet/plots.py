"""Plots: DVC plot data (CSV) and offline PNGs of the same numbers."""

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

BASE_COLOR, TSPNET_COLOR = "#8c8c8c", "#1f77b4"
# A fixed PNG "Software" entry keeps the bytes identical across runs and matplotlib builds.
PNG_METADATA = {"Software": "tspnet"}

# Each stage's plots: file stem -> the CSV's columns (None: a PNG only). A stage that cannot
# compute them writes each as "not computed" (`write_not_computed`), so DVC finds all its outputs.
TRAIN_LOSSES = ("loss", "classification_loss", "center_loss")
TRAIN_PLOTS = {"train_losses": None, "center_labels": ("center_label", "initial", "final")}
EVALUATE_PLOTS = {"map_vs_tiou": ("tiou", "base", "tspnet"), "per_class_ap": ("class", "base", "tspnet"),
                  "alignment": ("best_tiou", "base_score", "aligned_score")}


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")


def save_figure(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)


def write_map_plots(plots_dir: Path, base: Evaluation, tspnet: Evaluation) -> None:
    """mAP vs tIoU and per-class AP (mean over tIoU), base locator vs TSPNet."""
    curve = pd.DataFrame({"tiou": base.tiou_thresholds, "base": base.mAP(), "tspnet": tspnet.mAP()})
    write_csv(plots_dir / "map_vs_tiou.csv", curve)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.plot(curve["tiou"], curve["base"], "o-", color=BASE_COLOR, label="base locator")
    axis.plot(curve["tiou"], curve["tspnet"], "o-", color=TSPNET_COLOR, label="TSPNet")
    axis.set(xlabel="tIoU threshold", ylabel="mAP (%)", title="mAP vs tIoU (test)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "map_vs_tiou.png")

    per_class = pd.DataFrame({"class": tspnet.classes, "base": base.ap.mean(axis=0),
                              "tspnet": tspnet.ap.mean(axis=0)})
    write_csv(plots_dir / "per_class_ap.csv", per_class)
    figure, axis = plt.subplots(figsize=(max(5.5, 0.45 * len(per_class) + 2), 3.8))
    x = np.arange(len(per_class))
    axis.bar(x - 0.2, per_class["base"], 0.4, color=BASE_COLOR, label="base locator")
    axis.bar(x + 0.2, per_class["tspnet"], 0.4, color=TSPNET_COLOR, label="TSPNet")
    axis.set_xticks(x, per_class["class"], rotation=45, ha="right")
    axis.set(ylabel="AP (%), mean over tIoU", title="Per-class AP (test)")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "per_class_ap.png")


def write_loss_plot(history: list[dict], path: Path) -> None:
    """Training losses per logged step (the same numbers dvclive writes as plot data)."""
    table = pd.DataFrame(history)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for column, style in (("loss", "-"), ("classification_loss", "--"), ("center_loss", ":")):
        axis.plot(table["step"], table[column], style, label=column.replace("_", " "))
    axis.set(xlabel="iteration", ylabel="loss (mean over the batch's videos)", title="Training losses",
             yscale="log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def write_center_label_plot(initial: np.ndarray, final: np.ndarray, plots_dir: Path) -> None:
    """Histogram of the training proposals' center labels before and after saliency point updating."""
    edges = np.linspace(0.0, 1.0, 21)
    before, _ = np.histogram(initial, bins=edges)
    after, _ = np.histogram(final, bins=edges)
    table = pd.DataFrame({"center_label": (edges[:-1] + edges[1:]) / 2, "initial": before, "final": after})
    write_csv(plots_dir / "center_labels.csv", table)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    width = edges[1] - edges[0]
    axis.bar(table["center_label"] - width / 4, before, width / 2, color=BASE_COLOR, label="initial points")
    axis.bar(table["center_label"] + width / 4, after, width / 2, color=TSPNET_COLOR, label="after updating")
    axis.set(xlabel="center label w", ylabel="training proposals", yscale="log",
             title="Center labels before and after saliency point updating")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, plots_dir / "center_labels.png")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def write_alignment_plot(best_iou: np.ndarray, base_score: np.ndarray, aligned_score: np.ndarray,
                         plots_dir: Path) -> dict[str, float]:
    """Confidence against quality for every test proposal, before (base) and after (TSPNet) realignment.

    Returns the Spearman correlation of each confidence with the proposal's best tIoU.
    """
    table = pd.DataFrame({"best_tiou": best_iou, "base_score": base_score, "aligned_score": aligned_score})
    write_csv(plots_dir / "alignment.csv", table)
    correlations = {"spearman_base": spearman(best_iou, base_score),
                    "spearman_tspnet": spearman(best_iou, aligned_score)}
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    for axis, column, name, color, key in (
            (axes[0], "base_score", "base locator score", BASE_COLOR, "spearman_base"),
            (axes[1], "aligned_score", "TSPNet aligned confidence", TSPNET_COLOR, "spearman_tspnet")):
        axis.scatter(table["best_tiou"], table[column], s=3, alpha=0.3, color=color, linewidths=0)
        axis.set(xlabel="best tIoU with ground truth of its class", ylabel=name,
                 title=f"Spearman {correlations[key]:.3f}")
        axis.grid(alpha=0.3)
    figure.suptitle("Confidence-quality alignment of the test proposals")
    figure.tight_layout()
    save_figure(figure, plots_dir / "alignment.png")
    return correlations


def write_not_computed(plots_dir: Path, stems: dict[str, tuple[str, ...] | None], reason: str) -> None:
    """Each plot as "not computed": a PNG that says why, and its CSV with the header only (no points)."""
    for stem, columns in stems.items():
        if columns is not None:
            write_csv(plots_dir / f"{stem}.csv", pd.DataFrame(columns=list(columns)))
        figure = plt.figure(figsize=(5.5, 1.6))
        figure.text(0.5, 0.5, f"{stem.replace('_', ' ')}\nnot computed: {reason}", ha="center", va="center",
                    wrap=True)
        save_figure(figure, plots_dir / f"{stem}.png")
