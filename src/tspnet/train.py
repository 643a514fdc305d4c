"""TSPNet training (METHOD.md, "Training loop").

Adam over `iterations` steps; each step averages the per-video loss over a
batch of videos, drawn without replacement and reshuffled every pass. Every
training video is seen each pass: the last batch of a pass may be smaller
(the authors' arithmetic skips the remainder, and divides by zero with fewer
videos than the batch size). A video with more than `max_proposals` proposals
contributes a random subset -- of its proposals *and* their labels (the
authors subsample the proposals only). Every `update_every` steps, saliency
point updating moves the points and regenerates the labels.

Speed: the network's input for a proposal (its contrast-pooled RoI feature)
depends only on the features and the proposal, never on the weights, so it
is computed once for every proposal and kept in memory; a step gathers the
rows of its batch and runs one forward over all of them.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from tspnet.console import progress

from tspnet.datasets import Dataset
from tspnet.labels import ProposalLabels, assign_labels, update_point_times
from tspnet.losses import LossTerms, checked_counts, tspnet_loss
from tspnet.model import ProposalHeads, TSPNet, proposal_features
from tspnet.precision import autocast
from tspnet.proposals import Proposals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_videos: int
    max_proposals: int
    lr: float
    weight_decay: float
    dropout: float
    roi_bins: int
    widen_ratio: float
    cls_weight: float
    center_weight: float
    soft_value: float
    update_every: int
    update_threshold: float
    log_every: int
    rows_per_forward: int = 8192

    @classmethod
    def from_params(cls, train: dict, labels: dict) -> "TrainConfig":
        config = cls(
            iterations=int(train["iterations"]), batch_videos=int(train["batch_videos"]),
            max_proposals=int(train["max_proposals"]), lr=float(train["lr"]),
            weight_decay=float(train["weight_decay"]), dropout=float(train["dropout"]),
            roi_bins=int(train["roi_bins"]), widen_ratio=float(train["widen_ratio"]),
            cls_weight=float(train["cls_weight"]), center_weight=float(train["center_weight"]),
            soft_value=float(labels["soft_value"]), update_every=int(train["update_every"]),
            update_threshold=float(train["update_threshold"]), log_every=int(train["log_every"]),
            rows_per_forward=int(train["rows_per_forward"]),
        )
        if min(config.iterations, config.batch_videos, config.max_proposals, config.rows_per_forward) < 1:
            raise ValueError("train: iterations, batch_videos, max_proposals and rows_per_forward must be at least 1")
        return config


def pooled_features(dataset: Dataset, split: str, proposals: Proposals, bins: int, widen_ratio: float,
                    device: torch.device, videos_per_chunk: int = 32, show_progress: bool = True,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N, 3D] network inputs of every proposal, computed a few videos at a time.

    Pooled in float32 from the float32 features, kept in `dtype`: bfloat16 under
    base.precision bf16 (`tspnet.precision.cache_dtype`), the very rounding that
    autocast would apply when the first layer reads them, in half the memory.
    """
    dataset.require_features()
    slices = proposals.video_slices()
    out = torch.empty((len(proposals), 3 * int(dataset.info.feature_dim)), dtype=dtype, device=device)
    segments = torch.from_numpy(proposals.segments)
    chunks = range(0, len(proposals.videos), videos_per_chunk)
    for first in progress(chunks, f"RoI features {split}", "chunk", show_progress):
        videos = proposals.videos[first:first + videos_per_chunk]
        rows = slice(slices[first].start, slices[first + len(videos) - 1].stop)
        if rows.stop == rows.start:
            continue
        store = dataset.feature_store(split, videos).to(device)
        local = torch.from_numpy(proposals.video_index[rows] - first)
        proposal_features(store.features, segments[rows].to(device), store.offsets[local], store.lengths[local],
                          bins, widen_ratio, out=out[rows])
        del store
    release_freed_memory()
    return out


# `pooled_parts` delivers this many bytes of network inputs ([rows, 3D] float32) at a time.
PART_BYTES = 16 << 20


def pooled_parts(dataset: Dataset, split: str, proposals: Proposals, bins: int, widen_ratio: float,
                 device: torch.device, videos_per_chunk: int = 32, show_progress: bool = True
                 ) -> Iterator[tuple[slice, torch.Tensor]]:
    """The network inputs (float32) of consecutive row ranges, in row order: a few videos' features at a time,
    at most PART_BYTES of inputs per part. Memory stays at one chunk's features and one part; the values
    are those of `pooled_features` (each row is pooled on its own)."""
    dataset.require_features()
    slices = proposals.video_slices()
    feature_dim = int(dataset.info.feature_dim)
    segments = torch.from_numpy(proposals.segments)
    rows_per_pass = max(1, PART_BYTES // (3 * feature_dim * 4))
    # Counted in proposals, so that a video with very many of them shows progress too.
    with progress(None, f"RoI features {split}", "proposal", show_progress, total=len(proposals)) as bar:
        for first in range(0, len(proposals.videos), videos_per_chunk):
            videos = proposals.videos[first:first + videos_per_chunk]
            rows = slice(slices[first].start, slices[first + len(videos) - 1].stop)
            if rows.stop == rows.start:
                continue
            store = dataset.feature_store(split, videos).to(device)
            for start in range(rows.start, rows.stop, rows_per_pass):
                part = slice(start, min(start + rows_per_pass, rows.stop))
                local = torch.from_numpy(proposals.video_index[part] - first)
                yield part, proposal_features(store.features, segments[part].to(device), store.offsets[local],
                                              store.lengths[local], bins, widen_ratio)
                bar.update(part.stop - part.start)
            del store


# Allocations of at least this size are mapped and unmapped directly instead of coming from
# glibc's heap. glibc otherwise raises its threshold as large blocks are freed, and the heap then
# keeps a step's activations after the step: at THUMOS14 scale, about 1.57x the feature size of
# peak memory instead of 1.38x, for a training epoch 2-6% faster (bench/bench_thumos_scale.py).
HEAP_MMAP_THRESHOLD = 4 << 20
M_MMAP_THRESHOLD = -3  # mallopt() parameter number, from glibc's malloc.h


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def bound_heap_memory() -> None:
    """Keep large temporaries out of glibc's heap for the rest of the process (see HEAP_MMAP_THRESHOLD)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)


def release_freed_memory() -> None:
    """Hand memory freed by large temporaries back to the OS (after the cache build, a saliency update)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@torch.no_grad()
def predict(model: TSPNet, pooled: torch.Tensor, batch: int = 20000, bf16: bool = False) -> ProposalHeads:
    """Eval-mode heads (float32) of every row of `pooled`, `batch` rows per forward."""
    was_training = model.training
    model.eval()
    with autocast(pooled.device, bf16):
        parts = [model(pooled[i:i + batch]) for i in range(0, pooled.shape[0], batch)]
    model.train(was_training)
    return ProposalHeads(*(torch.cat([getattr(p, name).float() for p in parts]) for name in ProposalHeads._fields))


@torch.no_grad()
def predict_parts(model: TSPNet, parts: Iterable[tuple[slice, torch.Tensor]], rows: int, batch: int = 20000,
                  bf16: bool = False) -> ProposalHeads:
    """`predict` over the rows that `parts` (e.g. `pooled_parts`) deliver in order, without holding them all.

    Rows are gathered into forwards of `batch` rows, exactly the forwards `predict`
    makes over the whole [rows, 3D] tensor, so the heads are the same (bit for bit
    when a row is a multiple of 64 bytes, i.e. D a multiple of 16 as every real
    feature size: the CPU's GEMM may round differently at other alignments); memory holds
    one forward's inputs instead of every proposal's (the inference stage's
    memory stays linear in a batch, not in the split).
    """
    was_training = model.training
    model.eval()
    outputs, pending, filled = [], [], 0
    for part, values in parts:
        pending.append(values)
        filled += part.stop - part.start
        while filled >= batch or (filled and part.stop == rows):
            block = torch.cat(pending) if len(pending) > 1 else pending[0]
            take = min(batch, filled)
            with autocast(block.device, bf16):
                outputs.append(model(block[:take]))
            rest = block[take:]
            pending, filled = ([rest] if len(rest) else []), len(rest)
    model.train(was_training)
    if not outputs:
        empty = torch.empty(0)
        return ProposalHeads(empty.reshape(0, model.num_classes + 1), empty, empty)
    return ProposalHeads(*(torch.cat([getattr(o, name).float() for o in outputs]) for name in ProposalHeads._fields))


class BatchSampler:
    """Batches of video rows: a fresh permutation each pass, every video once per pass."""

    def __init__(self, videos: np.ndarray, batch_videos: int, generator: torch.Generator):
        self.videos, self.batch_videos, self.generator = videos, batch_videos, generator
        self.queue: list[int] = []

    def next(self) -> list[int]:
        if not self.queue:
            order = torch.randperm(len(self.videos), generator=self.generator).tolist()
            self.queue = [int(self.videos[i]) for i in order]
        batch, self.queue = self.queue[:self.batch_videos], self.queue[self.batch_videos:]
        return batch


def batch_rows(batch: list[int], slices: list[slice], max_proposals: int, generator: torch.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Proposal rows of a batch of videos (a random subset above `max_proposals`) and their batch index."""
    rows, index = [], []
    for position, video in enumerate(batch):
        span = slices[video]
        count = span.stop - span.start
        if count > max_proposals:
            chosen = torch.randperm(count, generator=generator)[:max_proposals].numpy() + span.start
        else:
            chosen = np.arange(span.start, span.stop)
        rows.append(chosen)
        index.append(np.full(len(chosen), position, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(index)


def label_tensors(labels: ProposalLabels, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(point labels [N, C], center labels [N]) as float32 tensors on `device`."""
    return (torch.from_numpy(labels.point_label).to(device),
            torch.from_numpy(labels.center_label).to(device, torch.float32))


def build_optimizer(model: TSPNet, config: TrainConfig) -> torch.optim.Adam:
    """Adam with the config's learning rate and weight decay (L2, added to the gradient).

    fused: the update in one pass per tensor, with no temporaries the size of the weights
    (the same arithmetic; faster, and about 0.1 GB less peak memory at D = 2048).
    """
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)


def video_groups(counts: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive video ranges [first, last) of at most `max_rows` rows (a larger video alone)."""
    groups, first, rows = [], 0, 0
    for video, count in enumerate(counts.tolist()):
        if rows and rows + count > max_rows:
            groups.append((first, video))
            first, rows = video, 0
        rows += count
    groups.append((first, len(counts)))
    return groups


def train_step(model: TSPNet, optimizer: torch.optim.Optimizer, pooled: torch.Tensor,
               targets: tuple[torch.Tensor, torch.Tensor], rows: np.ndarray, video_index: np.ndarray,
               num_videos: int, config: TrainConfig, bf16: bool = False) -> LossTerms:
    """One optimizer step on a batch: batched forwards over its rows of `pooled`, per-video mean losses.

    `targets` are `label_tensors` on the device of `pooled`; `rows` and
    `video_index` come from `batch_rows` (rows grouped by video, in order) and
    are all the host sends. A batch of more than `config.rows_per_forward` rows is
    split into groups of whole videos whose gradients add up: the same loss,
    without the activations of tens of thousands of rows at once.
    """
    device = pooled.device
    # Checked on the host, so that nothing in the step waits for the device.
    counts = checked_counts(video_index, num_videos)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    counts_t = torch.from_numpy(counts).to(device, non_blocking=True)
    rows_t = torch.from_numpy(rows).to(device, non_blocking=True)
    index_t = torch.from_numpy(video_index).to(device, non_blocking=True)
    parts = []
    for first, last in video_groups(counts, config.rows_per_forward):
        share = slice(int(bounds[first]), int(bounds[last]))
        with autocast(device, bf16):
            heads = model(pooled[rows_t[share]])
        terms = tspnet_loss(
            ProposalHeads(*(h.float() for h in heads)), targets[0][rows_t[share]], targets[1][rows_t[share]],
            index_t[share] - first, last - first, config.cls_weight, config.center_weight, counts_t[first:last],
        )
        weight = (last - first) / num_videos  # the group's videos' part of the batch mean
        (terms.total * weight).backward()
        parts.append([weight * t.detach() for t in terms])
    optimizer.step()
    # Applied gradients are dead: freed here, they stay out of the next forward and of
    # saliency updates (the next backward starts from none either way).
    optimizer.zero_grad()
    return LossTerms(*(sum(values) for values in zip(*parts)))


# Rows per forward when a saliency update scores every proposal: small forwards keep the
# activations (about 40 kB per row at D = 2048) to tens of MB on top of the pooled cache.
UPDATE_BATCH = 2048


@dataclass
class TrainResult:
    model: TSPNet
    points: pd.DataFrame  # final point times (after the last saliency update)
    labels: ProposalLabels  # final labels
    history: list[dict] = field(default_factory=list)  # logged steps
    updates: list[dict] = field(default_factory=list)  # one record per saliency point update


def train_tspnet(pooled: torch.Tensor, proposals: Proposals, points: pd.DataFrame, labels: ProposalLabels,
                 num_classes: int, config: TrainConfig, seed: int,
                 log_step: Callable[[int, dict], None] | None = None, show_progress: bool = True,
                 bf16: bool = False) -> TrainResult:
    """Train on pooled proposal features; `labels` are the initial labels from `points`.

    Everything a step needs lives on the device of `pooled`; the host only
    sends the step's row indices, and reads the loss back every `log_every` steps.
    """
    device = pooled.device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TSPNet(pooled.shape[1] // 3, num_classes, config.dropout).to(device)
    optimizer = build_optimizer(model, config)

    slices = proposals.video_slices()
    counts = proposals.counts()
    trainable = np.flatnonzero(counts > 0)
    if trainable.size == 0:
        raise ValueError("no training video has proposals")
    if trainable.size < len(counts):
        log.warning("train: %d training video(s) without proposals are skipped", len(counts) - trainable.size)
    sampler = BatchSampler(trainable, config.batch_videos, generator)
    original_time = points["time"].to_numpy(np.float64).copy()
    points = points.copy()
    result = TrainResult(model, points, labels)

    targets = label_tensors(labels, device)
    model.train()
    bar = progress(range(1, config.iterations + 1), "train", "it", show_progress)
    for step in bar:
        batch = sampler.next()
        rows, video_index = batch_rows(batch, slices, config.max_proposals, generator)
        terms = train_step(model, optimizer, pooled, targets, rows, video_index, len(batch), config, bf16)

        if step % config.log_every == 0 or step == config.iterations:
            record = {"loss": float(terms.total.detach()), "classification_loss": float(terms.classification),
                      "center_loss": float(terms.center)}
            result.history.append({"step": step, **record})
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if log_step is not None:
                log_step(step, record)

        if config.update_every > 0 and step % config.update_every == 0:
            center = torch.sigmoid(predict(model, pooled, UPDATE_BATCH, bf16).center).double().cpu().numpy()
            new_time = update_point_times(points, original_time, proposals, labels, center,
                                          config.update_threshold)
            shift = np.abs(new_time - original_time)
            points["time"] = new_time
            labels = assign_labels(proposals, points, num_classes, config.soft_value)
            targets = label_tensors(labels, device)
            release_freed_memory()
            result.updates.append({"step": step, "moved_points": int((shift > 0).sum()),
                                   "mean_shift": float(shift.mean()) if shift.size else 0.0, **labels.counts()})
            log.info("saliency update at step %d: %d points moved, mean shift %.3f snippets", step,
                     result.updates[-1]["moved_points"], result.updates[-1]["mean_shift"])
    result.points, result.labels = points, labels
    return result
