"""Time units (METHOD.md, "Units").

The model works in snippets: 16-frame chunks of the video resampled to the
feature frame rate (25 fps on the paper's datasets). Annotations arrive in
seconds (ground truth, proposals, ambiguous segments) or in frames at each
video's own frame rate (points). The multiplications below keep the authors'
order of operations so that the floating-point results match theirs.
"""

from __future__ import annotations

import numpy as np


def snippets_per_second(feature_fps: float, snippet_frames: int) -> float:
    return feature_fps / float(snippet_frames)


def seconds_to_snippets(seconds, feature_fps: float, snippet_frames: int):
    return np.asarray(seconds, dtype=np.float64) * snippets_per_second(feature_fps, snippet_frames)


def snippets_to_seconds(snippets, feature_fps: float, snippet_frames: int):
    return np.asarray(snippets, dtype=np.float64) / snippets_per_second(feature_fps, snippet_frames)


def frames_to_snippets(frames, video_fps, feature_fps: float, snippet_frames: int):
    """A frame index at the video's own fps, in snippets: `frame * feature_fps / (fps * 16)`."""
    factor = feature_fps / (np.asarray(video_fps, dtype=np.float64) * snippet_frames)
    return np.asarray(frames, dtype=np.float64) * factor


def round_proposal_snippets(values) -> np.ndarray:
    """Round snippet coordinates to 2 decimals with Python's `round`, as the authors' import does.

    numpy's `round` scales by 100 and rounds the product, which differs from
    Python's correctly rounded `round(x, 2)` on a few binary ties.
    """
    flat = np.asarray(values, dtype=np.float64)
    return np.array([round(v, 2) for v in flat.ravel().tolist()], dtype=np.float64).reshape(flat.shape)
