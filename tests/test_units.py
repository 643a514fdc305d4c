"""Units (METHOD.md "Units"): seconds, frames and snippets."""

import numpy as np

from tspnet import units


def test_seconds_to_snippets_uses_feature_fps_over_16():
    # 19.2 s * 25 / 16 = 30 snippets; 0.64 s is exactly one snippet.
    assert units.seconds_to_snippets([19.2, 0.64], 25, 16).tolist() == [30.0, 1.0]
    assert units.snippets_to_seconds(30.0, 25, 16) == 19.2


def test_frames_to_snippets_uses_the_videos_own_fps():
    # frame 2151 at 30 fps: 2151 * 25 / (30 * 16) = 112.03125 snippets.
    assert units.frames_to_snippets(2151, 30.0, 25, 16) == 2151 * (25 / (30.0 * 16))
    assert abs(float(units.frames_to_snippets(2151, 30.0, 25, 16)) - 112.03125) < 1e-12
    # Per-video fps arrays broadcast.
    out = units.frames_to_snippets([480, 480], [30.0, 24.0], 25, 16)
    np.testing.assert_allclose(out, [25.0, 31.25])


def test_proposal_rounding_is_pythons_round_not_numpys():
    # 0.005 is stored as 0.005000000000000000104: Python rounds it up, numpy's scaled rint gives 0.0.
    values = np.array([0.005, 0.015, 2.675, 30.0])
    assert units.round_proposal_snippets(values).tolist() == [round(v, 2) for v in values.tolist()]
    assert units.round_proposal_snippets(values)[0] == 0.01
    assert np.round(0.005, 2) == 0.0  # the numpy behaviour we avoid
