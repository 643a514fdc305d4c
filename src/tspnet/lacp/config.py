"""LACP's hyperparameters: params.yaml `locate.lacp`, checked once, with the names LACP.md uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from tspnet.files import DataError
from tspnet.lacp.losses import FEATURE_CONTRAST_MODES
from tspnet.lacp.proposals import ProposalConfig

LABEL_REFRESH = ("loader", "search")
TRAIN_CLASSES = ("predicted", "ground_truth")
LOSS_TERMS = ("video", "point", "background", "score_contrast", "feature_contrast")
WHERE = "locate.lacp"


@dataclass(frozen=True)
class LACPConfig:
    # network (LACP.md 2)
    hidden: int = 2048
    dropout: float = 0.7
    r_act: int = 8
    # training (5)
    iterations: int = 2000
    videos_per_step: int = 16
    lr: float = 1e-4
    weight_decay: float = 5e-4
    loss_weights: tuple[float, ...] = (1.0, 0.5, 1.0, 1.0, 1.0)  # LOSS_TERMS order
    # pseudo labels and the sequence search (3)
    search_every: int = 10
    label_refresh: str = "loader"
    bkg_threshold: float = 0.95
    act_threshold: float = 0.1
    budget: int = 25
    prune_threshold: float = 0.1
    outer_ratio: float = 0.25
    # feature contrast (4)
    temperature: float = 0.1
    samples_per_run: int = 3
    feature_contrast: str = "last_class"
    # proposals (6)
    class_threshold: float = 0.5
    train_classes: str = "predicted"
    scale: int = 24
    cas_thresholds: tuple[float, ...] = ProposalConfig.cas_thresholds
    agnostic_thresholds: tuple[float, ...] = ProposalConfig.agnostic_thresholds
    video_score_weight: float = 0.2
    nms_iou: float = 0.7
    nms_proposals: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LACPConfig":
        if not isinstance(params, dict):
            raise DataError(f"{WHERE}: expected a mapping of LACP hyperparameters, got {params!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        missing = sorted(names - set(params))
        if unknown or missing:
            raise DataError(f"{WHERE}: " + "; ".join(
                part for part in (f"unknown keys {unknown}" if unknown else "",
                                  f"missing keys {missing}" if missing else "") if part))
        weights = params["loss_weights"]
        if not isinstance(weights, dict) or sorted(weights) != sorted(LOSS_TERMS):
            raise DataError(f"{WHERE}.loss_weights: expected a mapping with keys {list(LOSS_TERMS)}, got {weights!r}")
        try:
            config = cls(
                hidden=int(params["hidden"]), dropout=float(params["dropout"]), r_act=int(params["r_act"]),
                iterations=int(params["iterations"]), videos_per_step=int(params["videos_per_step"]),
                lr=float(params["lr"]), weight_decay=float(params["weight_decay"]),
                loss_weights=tuple(float(weights[k]) for k in LOSS_TERMS),
                search_every=int(params["search_every"]), label_refresh=str(params["label_refresh"]),
                bkg_threshold=float(params["bkg_threshold"]), act_threshold=float(params["act_threshold"]),
                budget=int(params["budget"]), prune_threshold=float(params["prune_threshold"]),
                outer_ratio=float(params["outer_ratio"]), temperature=float(params["temperature"]),
                samples_per_run=int(params["samples_per_run"]), feature_contrast=str(params["feature_contrast"]),
                class_threshold=float(params["class_threshold"]), train_classes=str(params["train_classes"]),
                scale=int(params["scale"]),
                cas_thresholds=tuple(float(t) for t in params["cas_thresholds"]),
                agnostic_thresholds=tuple(float(t) for t in params["agnostic_thresholds"]),
                video_score_weight=float(params["video_score_weight"]), nms_iou=float(params["nms_iou"]),
                nms_proposals=params["nms_proposals"],
            )
        except (TypeError, ValueError) as exc:
            raise DataError(f"{WHERE}: a value has the wrong type ({exc})") from exc
        config.validate()
        return config

    def validate(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise DataError(f"{WHERE}.{key}: must be {what}, got {getattr(self, key)!r}")

        for key in ("hidden", "r_act", "iterations", "videos_per_step", "search_every", "budget", "samples_per_run",
                    "scale"):
            need(getattr(self, key) >= 1, key, "an integer of at least 1")
        need(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        need(self.lr > 0, "lr", "positive")
        need(self.weight_decay >= 0, "weight_decay", "at least 0")
        need(all(math.isfinite(w) and w >= 0 for w in self.loss_weights), "loss_weights", "finite and at least 0")
        need(self.label_refresh in LABEL_REFRESH, "label_refresh", f"one of {LABEL_REFRESH}")
        need(self.feature_contrast in FEATURE_CONTRAST_MODES, "feature_contrast", f"one of {FEATURE_CONTRAST_MODES}")
        need(self.train_classes in TRAIN_CLASSES, "train_classes", f"one of {TRAIN_CLASSES}")
        for key in ("bkg_threshold", "act_threshold", "class_threshold", "nms_iou"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "in [0, 1]")
        need(self.outer_ratio >= 0, "outer_ratio", "at least 0")
        need(self.temperature > 0, "temperature", "positive")
        need(math.isfinite(self.prune_threshold), "prune_threshold", "a finite number")
        need(math.isfinite(self.video_score_weight), "video_score_weight", "a finite number")
        need(len(self.cas_thresholds) + len(self.agnostic_thresholds) > 0, "cas_thresholds",
             "non-empty (or agnostic_thresholds non-empty)")
        need(all(math.isfinite(t) for t in self.cas_thresholds + self.agnostic_thresholds), "cas_thresholds",
             "finite numbers (agnostic_thresholds too)")
        need(isinstance(self.nms_proposals, bool), "nms_proposals", "true or false")

    def proposal_config(self) -> ProposalConfig:
        return ProposalConfig(class_threshold=self.class_threshold, scale=self.scale,
                              cas_thresholds=self.cas_thresholds, agnostic_thresholds=self.agnostic_thresholds,
                              outer_ratio=self.outer_ratio, video_score_weight=self.video_score_weight)

    def weight(self, term: str) -> float:
        return self.loss_weights[LOSS_TERMS.index(term)]
