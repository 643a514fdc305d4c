"""The built-in base locator (stage `locate`): a point-supervised snippet classifier.

In the spirit of SF-Net and LACP: a small temporal network gives every snippet
a class activation over C actions + background. It learns from

- the annotated points (each point's snippet takes the point's class),
- background snippets mined per video: among the snippets at least
  `point_margin` away from every point, the `background_ratio` fraction with
  the lowest actionness under the current model,
- the video labels implied by the points, through top-k mean pooling.

Proposals are then produced *without post-processing*, as TSPNet expects: for
each class the video is predicted to contain, the class activation is
thresholded at several levels, consecutive snippets above a level form a
segment, and every segment of every level is kept (no NMS, no score cut).
Each segment is scored by its outer-inner contrast (mean activation inside
minus mean activation in a margin around it), which, like real base
locators' scores, is not a probability.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tspnet.console import progress

from tspnet.datasets import Dataset, FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocatorConfig:
    hidden: int
    dropout: float
    epochs: int
    batch_videos: int
    lr: float
    weight_decay: float
    background_ratio: float
    point_margin: int
    video_topk_ratio: float
    class_threshold: float
    act_thresholds: tuple[float, ...]
    outer_ratio: float

    @classmethod
    def from_params(cls, params: dict) -> "LocatorConfig":
        return cls(
            hidden=int(params["hidden"]), dropout=float(params["dropout"]), epochs=int(params["epochs"]),
            batch_videos=int(params["batch_videos"]), lr=float(params["lr"]),
            weight_decay=float(params["weight_decay"]), background_ratio=float(params["background_ratio"]),
            point_margin=int(params["point_margin"]), video_topk_ratio=float(params["video_topk_ratio"]),
            class_threshold=float(params["class_threshold"]),
            act_thresholds=tuple(float(t) for t in params["act_thresholds"]),
            outer_ratio=float(params["outer_ratio"]),
        )


class SnippetClassifier(nn.Module):
    """[B, T, D] features -> [B, T, C+1] class logits (last column: background).

    A temporal convolution of width 3 written as one linear map over each
    snippet and its two neighbours (zero beyond the ends): on the CPU this is
    several times faster than Conv1d for these shapes.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(3 * feature_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(hidden, num_classes + 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        padded = F.pad(features, (0, 0, 1, 1))
        window = torch.cat([padded[:, :-2], features, padded[:, 2:]], dim=-1)
        return self.classify(self.dropout(F.relu(self.embed(window))))


@dataclass
class VideoBatch:
    """Padded features of a few videos, with their point and video-label targets."""

    features: torch.Tensor  # [B, T_max, D]
    mask: torch.Tensor  # [B, T_max] bool, True on real snippets
    point_batch: torch.Tensor  # [P] row in the batch of each point
    point_snippet: torch.Tensor  # [P]
    point_class: torch.Tensor  # [P]
    near_point: torch.Tensor  # [B, T_max] bool: never mined as background
    video_labels: torch.Tensor  # [B, C] multi-hot


def pad_videos(store: FeatureStore, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = store.lengths[rows]
    t_max = int(lengths.max())
    features = store.features.new_zeros((len(rows), t_max, store.features.shape[1]))
    for b, row in enumerate(rows):
        start, length = int(store.offsets[row]), int(store.lengths[row])
        features[b, :length] = store.features[start:start + length]
    mask = torch.arange(t_max)[None, :] < lengths[:, None]
    return features, mask


def make_batch(store: FeatureStore, rows: list[int], points: pd.DataFrame, num_classes: int,
               margin: int) -> VideoBatch:
    features, mask = pad_videos(store, rows)
    videos = [store.videos[r] for r in rows]
    batch_of = {v: b for b, v in enumerate(videos)}
    mine = points[points["video"].isin(batch_of)]
    point_batch = torch.tensor(mine["video"].map(batch_of).to_numpy(), dtype=torch.long)
    lengths = store.lengths[rows][point_batch]
    point_snippet = torch.minimum(torch.tensor(np.floor(mine["time"].to_numpy()), dtype=torch.long), lengths - 1)
    point_class = torch.tensor(mine["class_index"].to_numpy(), dtype=torch.long)
    near = torch.zeros_like(mask)
    for offset in range(-margin, margin + 1):
        near[point_batch, (point_snippet + offset).clamp(0, mask.shape[1] - 1)] = True
    video_labels = torch.zeros((len(rows), num_classes))
    video_labels[point_batch, point_class] = 1.0
    return VideoBatch(features, mask, point_batch, point_snippet, point_class, near, video_labels)


def video_scores(logits: torch.Tensor, mask: torch.Tensor, topk_ratio: float) -> torch.Tensor:
    """[B, C] video-level class probabilities: sigmoid of the top-k mean action logits."""
    lengths = mask.sum(1)
    masked = logits[..., :-1].masked_fill(~mask[..., None], float("-inf"))
    k_max = max(1, math.ceil(int(lengths.max()) * topk_ratio))
    top = masked.topk(k_max, dim=1).values  # [B, k_max, C]
    k = torch.clamp(torch.ceil(lengths * topk_ratio), min=1).long()  # per video
    keep = torch.arange(k_max)[None, :] < k[:, None]
    top = torch.where(keep[..., None], top, torch.zeros_like(top))
    return torch.sigmoid(top.sum(1) / k[:, None])


def locator_loss(logits: torch.Tensor, batch: VideoBatch, config: LocatorConfig) -> torch.Tensor:
    num_classes = logits.shape[-1] - 1
    point_logits = logits[batch.point_batch, batch.point_snippet]
    point_term = F.cross_entropy(point_logits, batch.point_class)

    # Background mining: the least action-like snippets away from every point.
    with torch.no_grad():
        actionness = 1.0 - torch.softmax(logits, dim=-1)[..., -1]
        candidates = batch.mask & ~batch.near_point
        actionness = actionness.masked_fill(~candidates, float("inf"))
        counts = torch.clamp((candidates.sum(1).float() * config.background_ratio).long(), min=0)
        order = actionness.argsort(dim=1)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
        background = (rank < counts[:, None]) & candidates
    if background.any():
        bg_logits = logits[background]
        bg_target = torch.full((bg_logits.shape[0],), num_classes, dtype=torch.long)
        background_term = F.cross_entropy(bg_logits, bg_target)
    else:
        background_term = logits.sum() * 0.0

    scores = video_scores(logits, batch.mask, config.video_topk_ratio)
    video_term = F.binary_cross_entropy(scores.clamp(1e-6, 1 - 1e-6), batch.video_labels)
    return point_term + background_term + video_term


def train_locator(store: FeatureStore, points: pd.DataFrame, num_classes: int, config: LocatorConfig,
                  seed: int, show_progress: bool = True) -> SnippetClassifier:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SnippetClassifier(store.features.shape[1], num_classes, config.hidden, config.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    trainable = sorted(set(points["video"]) & set(store.videos), key=store.videos.index)
    rows = [store.videos.index(v) for v in trainable]
    if not rows:
        raise ValueError("the built-in locator needs training videos with points")
    model.train()
    bar = progress(range(config.epochs), "locate: train", "epoch", show_progress)
    for _ in bar:
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order), config.batch_videos):
            chunk = [rows[i] for i in order[start:start + config.batch_videos]]
            batch = make_batch(store, chunk, points, num_classes, config.point_margin)
            loss = locator_loss(model(batch.features), batch, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


def segments_above(activation: np.ndarray, threshold: float) -> np.ndarray:
    """[K, 2] half-open snippet ranges [s, e) where `activation` stays above `threshold`."""
    above = np.concatenate([[False], activation > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return edges.reshape(-1, 2)


def outer_inner_contrast(activation: np.ndarray, segments: np.ndarray, outer_ratio: float) -> np.ndarray:
    """Mean activation inside each segment minus the mean in a margin of `outer_ratio` x length around it."""
    cumulative = np.concatenate([[0.0], np.cumsum(activation, dtype=np.float64)])
    total = len(activation)
    start, end = segments[:, 0], segments[:, 1]
    inner = (cumulative[end] - cumulative[start]) / (end - start)
    margin = np.maximum(1, np.round((end - start) * outer_ratio)).astype(np.int64)
    left, right = np.maximum(0, start - margin), np.minimum(total, end + margin)
    outer_sum = (cumulative[start] - cumulative[left]) + (cumulative[right] - cumulative[end])
    outer_len = (start - left) + (right - end)
    outer = np.where(outer_len > 0, outer_sum / np.maximum(outer_len, 1), 0.0)
    return inner - outer


@torch.no_grad()
def propose(model: SnippetClassifier, store: FeatureStore, config: LocatorConfig, classes: list[str],
            snippets_per_second: float, show_progress: bool = True) -> pd.DataFrame:
    """Proposals of every video in `store`: video, label, start, end (seconds), score. No NMS."""
    rows_out = []
    for row, video in enumerate(progress(store.videos, "locate: propose", "video", show_progress)):
        features, mask = pad_videos(store, [row])
        logits = model(features)
        probs = torch.softmax(logits, dim=-1)[0].double().numpy()
        scores = video_scores(logits, mask, config.video_topk_ratio)[0].double().numpy()
        kept = np.flatnonzero(scores > config.class_threshold)
        if kept.size == 0:
            kept = np.array([int(scores.argmax())])
        length = probs.shape[0]
        for c in kept:
            for threshold in config.act_thresholds:
                segments = segments_above(probs[:, c], threshold)
                if len(segments) == 0:
                    continue
                contrast = outer_inner_contrast(probs[:, c], segments, config.outer_ratio)
                for (s, e), score in zip(segments.tolist(), contrast.tolist()):
                    rows_out.append((video, classes[c], s / snippets_per_second,
                                     min(e, length) / snippets_per_second, score))
    return pd.DataFrame(rows_out, columns=["video", "label", "start", "end", "score"])


def run_locator(dataset: Dataset, config: LocatorConfig, seed: int, show_progress: bool = True) -> dict[str, pd.DataFrame]:
    """Train on the training split's points, then propose on both splits."""
    points = dataset.points()
    train_store = dataset.feature_store("train", progress=show_progress)
    model = train_locator(train_store, points, dataset.info.num_classes, config, seed, show_progress)
    out = {"train": propose(model, train_store, config, list(dataset.info.classes),
                            dataset.info.snippets_per_second, show_progress)}
    del train_store
    test_store = dataset.feature_store("test", progress=show_progress)
    out["test"] = propose(model, test_store, config, list(dataset.info.classes),
                          dataset.info.snippets_per_second, show_progress)
    for split, table in out.items():
        log.info("locate: %d %s proposals (%.1f per video)", len(table), split,
                 len(table) / max(1, len(dataset.info.videos[split])))
    return out
