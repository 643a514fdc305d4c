"""Straightforward loops for the feature checks of the fetch stage (oracles for the vectorised ones)."""

from __future__ import annotations

import math


def first_nonfinite_row(rows) -> int | None:
    """The first row index holding a NaN or infinity, visiting every value in order."""
    for index, row in enumerate(rows):
        for value in row:
            if not math.isfinite(float(value)):
                return index
    return None


def largest_mismatch(videos, num_snippets, durations, feature_fps, snippet_frames):
    """(video, seconds) of the largest |feature length - duration|, the first such video on ties."""
    best_video, best = None, 0.0
    for video in videos:
        covered = num_snippets[video] * snippet_frames / feature_fps
        mismatch = covered - durations[video]
        if best_video is None or abs(mismatch) > abs(best):
            best_video, best = video, mismatch
    return best_video, best
