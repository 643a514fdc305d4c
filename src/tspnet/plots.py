"""Plots: DVC plot data (CSV) and offline PNGs of the same numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tspnet.evaluate import Evaluation  # noqa: E402
from tspnet.files import atomic_path  # noqa: E402

BASE_COLOR, TSPNET_COLOR = "#8c8c8c", "#1f77b4"
# A fixed PNG "Software" entry keeps the bytes identical across runs and matplotlib builds.
PNG_METADATA = {"Software": "tspnet"}


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
