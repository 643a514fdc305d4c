"""Materialise a dataset in the on-disk layout of `tspnet.datasets` (stage `fetch`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tspnet import synthetic
from tspnet.datasets import DatasetInfo
from tspnet.files import atomic_dir

log = logging.getLogger(__name__)


def fetch_dataset(name: str, entry: dict[str, Any], out: Path, progress: bool = True) -> DatasetInfo:
    """Build `out` from the registry entry; the directory appears only once complete."""
    source = entry.get("source")
    with atomic_dir(out) as tmp:
        if source == "synthetic":
            info = synthetic.generate(
                tmp, name, list(entry["classes"]), float(entry["feature_fps"]), int(entry["snippet_frames"]),
                synthetic.SyntheticConfig.from_params(entry["generator"]),
                tiou_thresholds=list(entry["tiou_thresholds"]),
                filter_ambiguous=bool(entry.get("filter_ambiguous", False)), progress=progress,
            )
        else:
            raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
    log.info("dataset %s: %d train / %d test videos, %d classes, %s-d features", name,
             len(info.videos["train"]), len(info.videos["test"]), info.num_classes, info.feature_dim)
    return info
