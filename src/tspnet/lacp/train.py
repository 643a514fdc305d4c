"""LACP training (LACP.md sections 3.4 and 5), batched.

Each iteration: `videos_per_step` training videos (16), one forward over all
of them packed (`tspnet.lacp.model`), each video's loss as in section 4, the
mean over the videos, one backward, one Adam step (lr 1e-4, betas 0.9/0.999,
weight decay 5e-4). Every `search_every` iterations (10), after that
iteration's step, the search pass: an eval-mode forward over every training
video, then the optimal sequence search (`tspnet.lacp.search`), whose pseudo
labels become the *stored* labels.

When stored labels reach the loss (quirk 1, `label_refresh`): the authors'
loader copies the dataset, and with it the stored labels, only when its
iterator is rebuilt, every N // 16 iterations (N training videos); a step
sees the labels of the latest search finished before its iterator was
built. `loader` (default) reproduces that schedule step for step: refreshes
at iterations 1, 1 + p, 1 + 2p, ... with p = max(1, N // videos_per_step).
`search` makes every search visible from the next iteration on (what the
authors' code would do with 0 loader workers).

Deliberate differences, each a fix of an authors' accident:
- Sampling (quirk 2): videos come from a stream of shuffled passes, each
  pass every video once, `videos_per_step` per step across pass boundaries;
  the authors' iterator is rebuilt every N // 16 steps, so 8 of 200 videos
  are skipped per pass, and it divides by zero for N < 16.
- Seeding once (quirk 4): the torch seed (`base.seed`) is set once before
  the network is built; the numpy draws (sampling order, feature-contrast
  snippets) come from generators seeded from the same seed, not from the
  global RNG the authors reseed in each dataset constructor.
- Videos without any point (quirk 7: select_seed crashes on them) are left
  out of training and the search, and counted.
- Points are placed at snippet floor(frame * feature_fps / (fps * 16)), as
  theirs, but a point on the very last frame (snippet T) is moved to T-1
  instead of indexing past the end.
The final model is the result; nothing here ever sees the test split
(quirk 20: the authors keep the best of 20 test evaluations).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from tspnet.console import progress
from tspnet.datasets import Dataset
from tspnet.files import DataError
from tspnet.lacp.config import LACPConfig
from tspnet.lacp.losses import (BatchRuns, CompletenessRuns, background_point_loss, completeness_runs,
                                feature_contrast_loss, point_loss, sample_snippets, score_contrast_loss, video_loss)
from tspnet.lacp.model import LACPNet, Packing, fused_cas, predict, video_scores

log = logging.getLogger(__name__)

LOSS_NAMES = ("video", "point", "background", "score_contrast", "feature_contrast")


@dataclass
class TrainingSet:
    """The training videos LACP learns from, packed back to back, with their point matrices and video labels."""

    videos: list[str]
    features: torch.Tensor  # [N, D]
    offsets: np.ndarray  # [V]
    lengths: np.ndarray  # [V]
    points: list[np.ndarray]  # [T_i, C] float32 0/1
    labels: np.ndarray  # [V, C] float32 multi-hot, from the ground truth
    classes: list[np.ndarray] = field(default_factory=list)  # each video's ground-truth classes
    without_points: list[str] = field(default_factory=list)  # training videos left out

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = [np.flatnonzero(row) for row in self.labels]

    def __len__(self) -> int:
        return len(self.videos)

    def rows(self, videos: np.ndarray) -> torch.Tensor:
        return torch.cat([torch.arange(int(self.offsets[v]), int(self.offsets[v] + self.lengths[v])) for v in videos])


def point_matrix(snippets: np.ndarray, classes: np.ndarray, length: int, num_classes: int) -> np.ndarray:
    """[T, C] with a 1 at each (snippet, class) point; snippets past the end are moved to T-1."""
    matrix = np.zeros((length, num_classes), dtype=np.float32)
    matrix[np.minimum(snippets, length - 1), classes] = 1.0
    return matrix


def video_labels(ground_truth: pd.DataFrame, videos: list[str], classes: tuple[str, ...]) -> np.ndarray:
    labels = np.zeros((len(videos), len(classes)), dtype=np.float32)
    index = {v: i for i, v in enumerate(videos)}
    rows = ground_truth["video"].map(index)
    known = rows.notna().to_numpy()
    class_index = ground_truth["label"].map({c: i for i, c in enumerate(classes)})
    unknown = class_index.isna().to_numpy() & known
    if unknown.any():
        first = ground_truth.loc[unknown].iloc[0]
        raise DataError(f"ground truth, video {first['video']}: label {first['label']!r} is not a class of the dataset")
    labels[rows[known].astype(int).to_numpy(), class_index[known].astype(int).to_numpy()] = 1.0
    return labels


def training_set(dataset: Dataset, show_progress: bool = True) -> TrainingSet:
    """The training split's features, points (snippet floor(time)) and ground-truth video labels."""
    info = dataset.info
    points = dataset.points()
    videos = list(info.videos["train"])
    with_points = set(points["video"])
    kept = [v for v in videos if v in with_points]
    without = [v for v in videos if v not in with_points]
    if not kept:
        raise DataError(f"{dataset.points_path}: no training video has a point; LACP learns from points")
    if without:
        log.warning("locate: %d training video(s) without any point are left out of LACP training (e.g. %s)",
                    len(without), without[0])
    store = dataset.feature_store("train", kept, progress=show_progress)
    lengths = store.lengths.numpy()
    snippets = np.floor(points["time"].to_numpy(np.float64)).astype(np.int64)
    by_video = pd.Series(np.arange(len(points))).groupby(points["video"].to_numpy()).indices
    matrices = [point_matrix(snippets[by_video[v]], points["class_index"].to_numpy()[by_video[v]], int(t),
                             info.num_classes) for v, t in zip(kept, lengths)]
    labels = video_labels(dataset.ground_truth("train"), kept, info.classes)
    return TrainingSet(kept, store.features, store.offsets.numpy(), lengths, matrices, labels,
                       without_points=without)


class VideoStream:
    """`per_step` video indices at a time from back-to-back shuffled passes over `count` videos."""

    def __init__(self, count: int, per_step: int, rng: np.random.Generator):
        self.count, self.per_step, self.rng = count, per_step, rng
        self.queue = np.zeros(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while len(self.queue) < self.per_step:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.count)])
        batch, self.queue = self.queue[:self.per_step], self.queue[self.per_step:]
        return batch


def refresh_period(config: LACPConfig, num_videos: int) -> int:
    """Iterations between two moments at which stored pseudo labels become visible to the loss."""
    if config.label_refresh == "search":
        return 1
    return max(1, num_videos // config.videos_per_step)


def search_config(config: LACPConfig):
    from tspnet.lacp.search import SearchConfig

    return SearchConfig(budget=config.budget, prune_threshold=config.prune_threshold, outer_ratio=config.outer_ratio,
                        bkg_threshold=config.bkg_threshold, act_threshold=config.act_threshold)


def search_pass(model: LACPNet, data: TrainingSet, config: LACPConfig, bf16: bool = False,
                show_progress: bool = False) -> list[CompletenessRuns]:
    """Eval-mode CAS of every training video, the sequence search, and the runs its labels give the loss."""
    from tspnet.lacp.search import search_pseudo_labels

    cas, _ = predict(model, data.features, data.offsets, data.lengths, config.r_act, data.labels, bf16=bf16)
    labels = search_pseudo_labels(cas, data.points, search_config(config), show_progress=show_progress)
    return [completeness_runs(pseudo, classes, config.outer_ratio) for pseudo, classes in zip(labels, data.classes)]


def background_points(cas: np.ndarray, points: list[np.ndarray], config: LACPConfig) -> np.ndarray:
    """[N] bool: pseudo background points of each video (LACP.md 3.2) from its rows of the packed CAS."""
    from tspnet.lacp.pseudo import select_seeds

    parts, start = [], 0
    for matrix in points:
        _, background = select_seeds(cas[start:start + len(matrix)], matrix, config.bkg_threshold,
                                     config.act_threshold)
        parts.append(np.asarray(background, dtype=bool))
        start += len(matrix)
    return np.concatenate(parts)


@dataclass
class Batch:
    """One step's videos, packed, with every target the loss needs."""

    videos: np.ndarray
    packing: Packing
    features: torch.Tensor  # [N, D]
    points: torch.Tensor  # [N, C]
    point_list: list[np.ndarray]
    labels: torch.Tensor  # [B, C]
    runs: BatchRuns


def make_batch(data: TrainingSet, videos: np.ndarray, visible: list[CompletenessRuns | None],
               config: LACPConfig, device: torch.device) -> Batch:
    point_list = [data.points[v] for v in videos]
    runs = BatchRuns.of([visible[v] for v in videos], last_group_only=config.feature_contrast == "last_class")
    return Batch(videos, Packing.of(data.lengths[videos]).to(device), data.features[data.rows(videos)].to(device),
                 torch.from_numpy(np.concatenate(point_list)).to(device), point_list,
                 torch.from_numpy(data.labels[videos]).to(device), runs)


def loss_terms(model: LACPNet, batch: Batch, config: LACPConfig, rng: np.random.Generator,
               bf16: bool = False) -> dict[str, torch.Tensor]:
    """Per-video loss terms [B] of one training-mode forward over the batch."""
    from tspnet.precision import autocast

    with autocast(batch.features.device, bf16):
        embedding, probs = model(batch.features, batch.packing)
    embedding, probs = embedding.float(), probs.float()
    cas = fused_cas(probs)
    scores = video_scores(probs, batch.packing, config.r_act, batch.labels)
    # Pseudo background points from this forward's CAS, dropout included (quirk 13).
    background = background_points(cas.detach().cpu().numpy(), batch.point_list, config)
    samples = sample_snippets(batch.runs.feature_first, batch.runs.feature_last, config.samples_per_run, rng)
    return {
        "video": video_loss(scores, batch.labels),
        "point": point_loss(cas, batch.points, batch.packing),
        "background": background_point_loss(cas, torch.from_numpy(background).to(cas.device), batch.packing),
        "score_contrast": score_contrast_loss(cas, batch.packing, batch.runs),
        "feature_contrast": feature_contrast_loss(embedding, batch.packing, batch.runs, samples,
                                                  config.temperature, config.feature_contrast),
    }


def total_loss(terms: dict[str, torch.Tensor], config: LACPConfig) -> torch.Tensor:
    """The mean over the batch of each video's weighted sum of its terms."""
    return sum(config.weight(name) * terms[name] for name in LOSS_NAMES).mean()


def train_step(model: LACPNet, optimizer: torch.optim.Optimizer, batch: Batch, config: LACPConfig,
               rng: np.random.Generator, bf16: bool = False) -> dict[str, float]:
    model.train()
    terms = loss_terms(model, batch, config, rng, bf16)
    loss = total_loss(terms, config)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    record = {name: float(value.detach().mean()) for name, value in terms.items()}
    record["loss"] = float(loss.detach())
    return record


def build_optimizer(model: LACPNet, config: LACPConfig) -> torch.optim.Adam:
    """The authors' Adam; the fused kernel (the same update, one pass over each tensor) where torch has it."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                            fused=True)


@dataclass
class LACPResult:
    model: LACPNet
    history: list[dict[str, float]]
    searches: int


def train_lacp(data: TrainingSet, config: LACPConfig, seed: int, device: torch.device | None = None,
               bf16: bool = False, show_progress: bool = True,
               log_step: Callable[[int, dict[str, float]], None] | None = None) -> LACPResult:
    """Train LACP from scratch on `data`; the final model is the result."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    model = LACPNet(data.features.shape[1], data.labels.shape[1], config.hidden, config.dropout).to(device)
    optimizer = build_optimizer(model, config)
    order_rng, sample_rng = np.random.default_rng(seed).spawn(2)
    stream = VideoStream(len(data), config.videos_per_step, order_rng)
    period = refresh_period(config, len(data))
    visible: list[CompletenessRuns | None] = [None] * len(data)
    latest: list[CompletenessRuns] | None = None
    visible_from = latest_from = 0  # the iteration whose search gave the labels (0: none yet)
    history, searches = [], 0
    bar = progress(range(1, config.iterations + 1), "locate: LACP", "step", show_progress)
    for step in bar:
        if latest is not None and (step - 1) % period == 0:
            visible, visible_from = latest, latest_from
        batch = make_batch(data, stream.next(), visible, config, device)
        record = {"step": step, **train_step(model, optimizer, batch, config, sample_rng, bf16),
                  "labels_from": visible_from}
        history.append(record)
        if log_step is not None:
            log_step(step, record)
        if step % config.search_every == 0:
            latest, latest_from = search_pass(model, data, config, bf16), step
            searches += 1
        bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
    return LACPResult(model.eval(), history, searches)
