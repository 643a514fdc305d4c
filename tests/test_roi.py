"""tspnet.roi: 1-D RoI Align against hand-computed values and the per-video loop oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference.roi_loop import video_roi_align
from tspnet.roi import roi_align, widen_segments

# One video of T = 4 snippets, D = 1: f = [1, 2, 4, 8]. Extended by zeros, the
# value at position u (snippet i sits at u = i) is the linear interpolation
#   g(u) = 1 + u on [-1, 1], 2 + 2 (u - 1) on [1, 2], 4 + 4 (u - 2) on [2, 3],
#   8 (4 - u) on [3, 4], 0 outside [-1, 4].
# A segment [s, e] with L = e - s is widened to [s - L/4, e + L/4] and its
# positions start at s - L/4 - 0.5; len = max(widened length, 1), bin = len / bins,
# S = ceil(bin) samples per bin at start + b * bin + (k + 0.5) * bin / S.
VIDEO = [1.0, 2.0, 4.0, 8.0]
HAND_CASES = {
    # L = 0.4 -> widened [0.9, 1.5], length 0.6 clamped to 1; bins = 2: bin 0.5, S = 1;
    # start 0.4; u = 0.65, 1.15 -> g = 1.65, 2 + 2 * 0.15 = 2.3.
    "shorter than one snippet": ([1.0, 1.4], 2, [1.65, 2.3]),
    # L = 2 -> widened [-0.5, 2.5], len 3, bin 1.5, S = 2; start -1.0.
    # bin 0: u = -0.625, 0.125 -> (0.375 + 1.125) / 2 = 0.75  (the first sample mixes in the zero before snippet 0)
    # bin 1: u = 0.875, 1.625 -> (1.875 + 3.25) / 2 = 2.5625
    "touching the start": ([0.0, 2.0], 2, [0.75, 2.5625]),
    # L = 2 -> widened [2.5, 5.5], start 2.0, bin 1.5, S = 2.
    # bin 0: u = 2.375, 3.125 -> (5.5 + 7) / 2 = 6.25;  bin 1: u = 3.875, 4.625 -> (1 + 0) / 2 = 0.5
    "past the end": ([3.0, 5.0], 2, [6.25, 0.5]),
    # L = 4 -> widened [-1, 5], len 6, bins = 12: bin 0.5, S = 1, u = -1.25 + 0.5 b.
    "whole video, 12 bins": ([0.0, 4.0], 12, [0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 7, 6, 2, 0]),
    "beyond the video": ([10.0, 11.0], 2, [0.0, 0.0]),
}


@pytest.mark.parametrize("name", HAND_CASES)
def test_hand_computed_values_in_a_shared_store(name: str) -> None:
    segment, bins, expected = HAND_CASES[name]
    # The video sits between two others whose large values must never leak in.
    store = torch.tensor([[1000.0], [3000.0]] + [[v] for v in VIDEO] + [[5000.0]], dtype=torch.float64)
    out = roi_align(store, torch.tensor([segment], dtype=torch.float64), torch.tensor([2]), torch.tensor([4]),
                    bins=bins)
    np.testing.assert_allclose(out[0, :, 0].numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", HAND_CASES)
def test_oracle_reproduces_hand_computed_values(name: str) -> None:
    segment, bins, expected = HAND_CASES[name]
    out = video_roi_align(np.array([[v] for v in VIDEO]), np.array([segment]), bins=bins)
    np.testing.assert_allclose(out[0, :, 0], expected, rtol=0, atol=1e-12)


def test_widen_segments() -> None:
    # L = 4: [2 - 1, 6 + 1]; L = 0: unchanged.
    widened = widen_segments(torch.tensor([[2.0, 6.0], [3.0, 3.0]], dtype=torch.float64))
    assert widened.tolist() == [[1.0, 7.0], [3.0, 3.0]]


def random_videos(seed: int, dtype: torch.dtype, dim: int = 5) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Videos of 1..60 snippets; proposals of length 0.01..2T anywhere around the video, plus [0, T]."""
    rng = np.random.default_rng(seed)
    videos = []
    for length in [1, 2, *rng.integers(1, 61, size=6)]:
        count = int(rng.integers(1, 15))
        span = np.exp(rng.uniform(np.log(0.01), np.log(2 * length), size=count))
        start = rng.uniform(-0.3 * length, 1.2 * length, size=count)
        proposals = np.concatenate([np.stack([start, start + span], 1), [[0.0, float(length)]]])
        features = torch.from_numpy(rng.normal(size=(length, dim))).to(dtype)
        videos.append((features, proposals))
    return videos


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_oracle_on_many_videos_in_one_store(dtype: torch.dtype, tolerance: float) -> None:
    videos = random_videos(seed=7, dtype=dtype)
    store = torch.cat([features for features, _ in videos])
    lengths = torch.tensor([len(features) for features, _ in videos])
    offsets = torch.cumsum(lengths, 0) - lengths
    counts = torch.tensor([len(proposals) for _, proposals in videos])
    segments = torch.from_numpy(np.concatenate([proposals for _, proposals in videos]))
    # Shuffle the proposals: the store does not need them grouped by video.
    order = torch.randperm(len(segments), generator=torch.Generator().manual_seed(0))
    video_of = torch.repeat_interleave(torch.arange(len(videos)), counts)[order]

    fast = roi_align(store, segments[order], offsets[video_of], lengths[video_of])

    expected = np.concatenate([video_roi_align(f.double().numpy(), p) for f, p in videos])[order.numpy()]
    assert fast.dtype == dtype and fast.shape == (len(segments), 12, 5)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fast.double().numpy(), expected, rtol=tolerance, atol=tolerance * scale)


def test_no_proposals() -> None:
    out = roi_align(torch.ones(3, 4), torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 12, 4)


def one(values) -> torch.Tensor:
    return torch.tensor(values)


@pytest.mark.parametrize("args, message", [
    ((torch.ones(4), one([[0.0, 1.0]]), one([0]), one([4])), "features must be"),
    ((torch.ones(4, 1), one([0.0, 1.0]), one([0]), one([4])), "segments must be"),
    ((torch.ones(4, 1), one([[0, 1]]), one([0]), one([4])), "segments must be"),
    ((torch.ones(4, 1), one([[0.0, 1.0]]), one([0, 0]), one([4])), "offsets must be"),
    ((torch.ones(4, 1), one([[0.0, 1.0]]), one([0]), one([4.0])), "lengths must be"),
    ((torch.ones(4, 1), one([[0.0, 1.0]]), one([0]), one([0])), "length must be >= 1"),
    ((torch.ones(4, 1), one([[0.0, 1.0]]), one([1]), one([4])), "must lie within the 4 feature rows"),
    ((torch.ones(4, 1), one([[0.0, 1.0]]), one([-1]), one([2])), "must lie within"),
    ((torch.ones(4, 1), one([[2.0, 1.0]]), one([0]), one([4])), "segment 0 ends before it starts"),
    ((torch.ones(4, 1), one([[0.0, float("nan")]]), one([0]), one([4])), "NaN"),
])
def test_rejects_bad_arguments(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roi_align(*args)


def test_rejects_bad_bins_and_ratio() -> None:
    args = (torch.ones(4, 1), one([[0.0, 1.0]]), one([0]), one([4]))
    with pytest.raises(ValueError, match="bins"):
        roi_align(*args, bins=0)
    with pytest.raises(ValueError, match="widen_ratio"):
        roi_align(*args, widen_ratio=-0.1)


def long_and_short_proposals(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three videos back to back (float32, with signed zeros); proposals from 0.01 to 300 snippets long,
    so rows hold from 0 (outside the video) to about 40 stored entries."""
    rng = np.random.default_rng(seed)
    lengths = torch.tensor([7, 300, 60])
    features = torch.from_numpy(rng.normal(size=(int(lengths.sum()), 6)).astype(np.float32))
    features[::5, ::2] = -0.0
    features[3:5] = -0.0  # whole rows of -0.0: their products are -0.0
    video = torch.from_numpy(rng.integers(0, 3, size=40))
    span = torch.from_numpy(np.exp(rng.uniform(np.log(0.01), np.log(300), size=40)))
    start = torch.from_numpy(rng.uniform(-5, 1, size=40)) * lengths[video]
    segments = torch.stack((start, start + span), 1)
    offsets = torch.cumsum(lengths, 0) - lengths
    return features, segments, offsets[video], lengths[video]


@pytest.mark.parametrize("block_proposals", [1, 3, 7, 40])
def test_blocked_products_equal_one_product_bit_for_bit(monkeypatch, block_proposals: int) -> None:
    """The speed-up must not move a bit of the float32 pipeline: blocks of rows equal one sparse product."""
    import tspnet.roi as roi

    features, segments, offsets, lengths = long_and_short_proposals(seed=4)
    weights = roi.RoiWeights(features, segments, offsets, lengths)
    whole = weights.product(0, weights.count, features)  # one product over everything (torch.sparse.mm)
    assert whole.shape == (40, 12, 6)
    monkeypatch.setattr(roi, "BLOCK_BYTES", block_proposals * 12 * 6 * 4)
    assert roi.block_proposals(features, 12) == block_proposals
    blocked = roi_align(features, segments, offsets, lengths)
    assert torch.equal(blocked, whole)
    assert torch.equal(torch.signbit(blocked), torch.signbit(whole))  # torch.equal counts -0.0 == 0.0
    # ... and the oracle agrees with both.
    expected = np.concatenate([video_roi_align(features[o:o + n].double().numpy(), s[None].numpy())
                               for s, o, n in zip(segments, offsets.tolist(), lengths.tolist())])
    np.testing.assert_allclose(blocked.double().numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_product_writes_into_the_buffer_it_is_given() -> None:
    from tspnet.roi import RoiWeights

    features, segments, offsets, lengths = long_and_short_proposals(seed=5)
    weights = RoiWeights(features, segments, offsets, lengths)
    buffer = torch.full((5, 12, 6), float("nan"))
    assert weights.product(10, 15, features, out=buffer) is buffer
    assert torch.equal(buffer, weights.product(0, 40, features)[10:15])
    with pytest.raises(ValueError, match="not within"):
        weights.product(30, 41, features)
    with pytest.raises(ValueError, match="out must be"):
        weights.product(10, 14, features, out=buffer)
