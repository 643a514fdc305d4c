"""1-D RoI Align over proposals (METHOD.md, "The network", step 1).

The authors widen each proposal by 25% of its length on both sides, zero-pad
the video's [T, D] features by `pad = ceil(0.25 * max length) + 1` rows at
both ends, shift the widened coordinates by `pad - 0.5` and call
`torchvision.ops.roi_align` (output 12 x 1, adaptive sampling,
`aligned=False`). Along time that samples, for each of the 12 bins,
`ceil(len / 12)` evenly spaced points of the widened segment
(`len = max(width, 1)`) and averages their linear interpolations.

Because pad >= 1 and the padding is zero, torchvision's edge rules (0 below
-1 or above the map height, clamping in [-1, 0] and past the last row) all
read zeros, so every sample equals a linear interpolation of the video's own
sequence extended by zeros, taken at `widened coordinate - 0.5`. No padding
is needed: taps outside [0, T) of the proposal's own video are dropped.

RoI Align is linear in the features and the features are never trained, so
the samples of all proposals (of many videos stored back to back in one
[T_total, D] tensor) become one sparse [N * bins, T_total] weight matrix and
sparse-dense products; nothing of size [N, bins, samples, D] is built.

On the CPU the products run a block of proposals at a time
(`RoiWeights.product`), into a buffer the caller reuses. torch's kernel for
CSR @ dense computes every output row on its own: zero, then one scaled
feature row added per stored entry, in column order. A block's rows are the
same rows with the same entries, so any cut gives the same bits as one
product over everything (a test checks it on signed zeros and long rows
too). What the cut saves is memory traffic: one product zero-fills and then
copies a fresh [rows, D] result, which at D = 2048 is most of its time, while
a block of a few MB stays in cache and `tspnet.model.proposal_features`
pools it before it leaves.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def widen_segments(segments: Tensor, ratio: float = 0.25) -> Tensor:
    """[s, e] -> [s - ratio * L, e + ratio * L] with L = e - s, for a [N, 2] tensor."""
    if segments.dim() != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments must have shape [N, 2], got {list(segments.shape)}")
    start, end = segments[:, 0], segments[:, 1]
    length = end - start
    return torch.stack((start - ratio * length, end + ratio * length), dim=1)


def _check_arguments(features: Tensor, segments: Tensor, offsets: Tensor, lengths: Tensor,
                     bins: int, widen_ratio: float) -> None:
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a floating [T_total, D] tensor, got {features.dtype} "
                         f"of shape {list(features.shape)}")
    if segments.dim() != 2 or segments.shape[1] != 2 or not segments.is_floating_point():
        raise ValueError(f"segments must be a floating [N, 2] tensor, got {segments.dtype} "
                         f"of shape {list(segments.shape)}")
    count = segments.shape[0]
    for name, index in (("offsets", offsets), ("lengths", lengths)):
        if index.shape != (count,) or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of shape [{count}] (one per segment), "
                             f"got {index.dtype} of shape {list(index.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not widen_ratio >= 0:
        raise ValueError(f"widen_ratio must be >= 0, got {widen_ratio}")
    if count == 0:
        return
    if not torch.isfinite(segments).all():
        raise ValueError("segments contain NaN or infinity")
    if (segments[:, 1] < segments[:, 0]).any():
        first = int(torch.nonzero(segments[:, 1] < segments[:, 0])[0, 0])
        raise ValueError(f"segment {first} ends before it starts: {segments[first].tolist()}")
    if (lengths < 1).any():
        raise ValueError(f"every video length must be >= 1, got minimum {int(lengths.min())}")
    if (offsets < 0).any() or (offsets + lengths > features.shape[0]).any():
        raise ValueError(f"video rows [offset, offset + length) must lie within the {features.shape[0]} "
                         f"feature rows, got offsets {int(offsets.min())}..{int(offsets.max())} and "
                         f"ends up to {int((offsets + lengths).max())}")


def _sample_grid(widened: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every sample point of every bin: (row = roi * bins + bin, position, 1 / samples in its bin).

    Positions are video-local and already shifted by -0.5, so that the
    feature of snippet i sits at position i (the authors' half-snippet offset).
    """
    device = widened.device
    roi_start = widened[:, 0] - 0.5
    roi_len = torch.clamp(widened[:, 1] - widened[:, 0], min=1.0)
    bin_len = roi_len / bins
    # torchvision's adaptive sampling ratio. The authors take the length in padded
    # coordinates; where len / bins is an exact integer, rounding there may add one
    # sample per bin (as their float32 boxes may), so ties are not bit-reproducible.
    per_bin = torch.ceil(roi_len / bins).long()

    per_roi = per_bin * bins
    roi = torch.repeat_interleave(torch.arange(widened.shape[0], device=device), per_roi)
    first_of_roi = torch.cumsum(per_roi, 0) - per_roi
    within_roi = torch.arange(roi.shape[0], device=device) - first_of_roi[roi]
    roi_per_bin = per_bin[roi]
    bin_index = within_roi // roi_per_bin
    sample = within_roi - bin_index * roi_per_bin
    # Same order of operations as torchvision: start + b * bin + (k + 0.5) * bin / S.
    roi_bin_len = bin_len[roi]
    position = roi_start[roi] + bin_index * roi_bin_len + (sample + 0.5) * roi_bin_len / roi_per_bin
    return roi * bins + bin_index, position, 1.0 / roi_per_bin.double()


def _weight_matrix(segments: Tensor, offsets: Tensor, lengths: Tensor, total_rows: int,
                   bins: int = 12, widen_ratio: float = 0.25, dtype: torch.dtype = torch.float32) -> Tensor:
    """The sparse CSR [N * bins, total_rows] matrix whose product with the features is the RoI output.

    Arguments as in `roi_align`; weights are accumulated in float64 and cast to `dtype`.
    """
    widened = widen_segments(segments.double(), widen_ratio)
    rows, position, sample_weight = _sample_grid(widened, bins)
    low = torch.floor(position)
    high_weight = position - low
    low = low.long()
    roi = rows // bins
    video_len = lengths[roi]
    video_start = offsets[roi]

    rows = torch.cat((rows, rows))
    taps = torch.cat((low, low + 1))
    weights = torch.cat(((1.0 - high_weight) * sample_weight, high_weight * sample_weight))
    # Taps outside the proposal's own video read the zero extension: drop them.
    inside = (taps >= 0) & (taps < torch.cat((video_len, video_len)))
    columns = taps + torch.cat((video_start, video_start))
    indices = torch.stack((rows[inside], columns[inside]))
    shape = (segments.shape[0] * bins, total_rows)
    matrix = torch.sparse_coo_tensor(indices, weights[inside], shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        # CSR is labelled beta, but CSR @ dense runs about twice as fast as COO @ dense on CPU.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return matrix.to(dtype).to_sparse_csr()


class RoiWeights:
    """The RoI weight matrix of N proposals over a feature store, applied a block of proposals at a time.

    Arguments as in `roi_align`; they are checked here. `product(first, last, features)`
    gives the RoI features of proposals [first, last).
    """

    def __init__(self, features: Tensor, segments: Tensor, offsets: Tensor, lengths: Tensor,
                 bins: int = 12, widen_ratio: float = 0.25):
        _check_arguments(features, segments, offsets, lengths, bins, widen_ratio)
        device = features.device
        self.count, self.bins, self.total_rows = segments.shape[0], bins, features.shape[0]
        matrix = _weight_matrix(segments.to(device), offsets.to(device).long(), lengths.to(device).long(),
                                features.shape[0], bins, widen_ratio, features.dtype)
        self.row_starts = matrix.crow_indices()
        self.columns, self.values = matrix.col_indices(), matrix.values()
        self.entry_starts = self.row_starts.tolist()  # read on the host once, not once per block

    def product(self, first: int, last: int, features: Tensor, out: Tensor | None = None) -> Tensor:
        """[last - first, bins, D] RoI features of proposals [first, last), written into `out` when given."""
        if not 0 <= first <= last <= self.count:
            raise ValueError(f"proposals [{first}, {last}) are not within [0, {self.count})")
        rows = slice(first * self.bins, last * self.bins)
        entries = slice(self.entry_starts[rows.start], self.entry_starts[rows.stop])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            block = torch.sparse_csr_tensor(self.row_starts[rows.start:rows.stop + 1] - entries.start,
                                            self.columns[entries], self.values[entries],
                                            (rows.stop - rows.start, self.total_rows), check_invariants=False)
        shape = (last - first, self.bins, features.shape[1])
        if out is None:
            return torch.sparse.mm(block, features).reshape(shape)
        if out.shape != shape or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous tensor of shape {list(shape)}, got {list(out.shape)}")
        torch.mm(block, features, out=out.view(-1, features.shape[1]))
        return out


# RoI output per sparse product on the CPU: a block this large stays in cache (the module
# docstring says why that matters). On other devices, 64 MB per product, as before the CPU
# was tuned (no GPU was available to tune them).
BLOCK_BYTES = 4 << 20
DEVICE_BLOCK_BYTES = 64 << 20


def block_proposals(features: Tensor, bins: int) -> int:
    """Proposals per product: BLOCK_BYTES of RoI output on the CPU, DEVICE_BLOCK_BYTES elsewhere."""
    budget = BLOCK_BYTES if features.device.type == "cpu" else DEVICE_BLOCK_BYTES
    return max(1, budget // (bins * features.shape[1] * features.element_size()))


def roi_align(features: Tensor, segments: Tensor, offsets: Tensor, lengths: Tensor,
              bins: int = 12, widen_ratio: float = 0.25) -> Tensor:
    """RoI features [N, bins, D] of N proposals over videos stored back to back in `features`.

    features: [T_total, D]; video v occupies rows [offset_v, offset_v + T_v).
    segments: [N, 2] proposal [start, end] in snippets, local to the proposal's video.
    offsets, lengths: [N] integer; the first row and the length T of each proposal's video.
    The result is on the device and in the dtype of `features`.
    """
    weights = RoiWeights(features, segments, offsets, lengths, bins, widen_ratio)
    out = torch.empty((weights.count, bins, features.shape[1]), dtype=features.dtype, device=features.device)
    block = block_proposals(features, bins)
    for first in range(0, weights.count, block):
        last = min(first + block, weights.count)
        weights.product(first, last, features, out=out[first:last])
    return out
