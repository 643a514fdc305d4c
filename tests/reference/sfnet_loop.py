"""Oracle for tspnet.sfnet: SF-Net's single-frame loader, one video and one point at a time.

Follows the structure of SF-Net's `get_labeled_frame_labels`: every file is
read into rows `(video, seconds, class)`; the global numpy generator is
seeded once; then, for every video of `videoname.npy` in order, one file is
drawn with `np.random.choice(range(number of files))`, test videos included;
for a training video each of that file's rows becomes snippet
`int(seconds * fps / 16)` with its class index, and a snippet not below the
number of feature rows is skipped. Files are taken in sorted name order
(SF-Net: directory-listing order). The caller's global numpy state is restored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_rows(path: Path) -> list[tuple[str, float, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            video, seconds, label = (field.strip() for field in line.split(","))
            rows.append((video, float(seconds), label))
    return rows


def sfnet_frame_labels(files: list[Path], video_order: list[str], train_videos: set[str], fps: dict[str, float],
                       num_snippets: dict[str, int], classes: list[str], seed: int = 1, stride: int = 16
                       ) -> dict[str, list[tuple[int, int]]]:
    """{training video: [(snippet, class index), ...] in file order}, as SF-Net labels them."""
    datas = [read_rows(path) for path in sorted(files, key=lambda p: p.name)]
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        labels = {}
        for video in video_order:
            data = datas[np.random.choice(range(len(datas)))]
            if video not in train_videos:
                continue
            points = []
            for name, seconds, label in data:
                if name != video:
                    continue
                position = int(seconds * fps[video] / stride)
                if position >= num_snippets[video]:
                    continue
                points.append((position, classes.index(label)))
            labels[video] = points
        return labels
    finally:
        np.random.set_state(saved)
