"""What each DVC stage reads and writes: the glue between params, files and the library.

One function per stage; the scripts in stages/ parse their arguments and call
these. Every output is written atomically, and every metrics file carries the
run's identity (tspnet.records).

Library modules are imported inside the stage function that uses them, not at
the top of this module: every stage imports this module, and dvc.yaml lists as
a stage's code dependencies exactly the modules its function imports
(tests/test_deps.py), so a change to the evaluation does not retrain.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tspnet.files import DataError, ParamsError, atomic_dir, atomic_path, load_npz, save_npz, write_json
from tspnet.records import mark_not_computed, no_features, not_computed, not_computed_reason, status_of

if TYPE_CHECKING:
    import torch

    from tspnet import archives, evaluate, postprocess, sources
    from tspnet.datasets import Dataset
    from tspnet.proposals import Proposals
    from tspnet.labels import ProposalLabels
    from tspnet.model import TSPNet

log = logging.getLogger(__name__)

BUILTIN_LOCATOR = "builtin"
MAX_PROPOSALS_PER_VIDEO = 50_000  # params.yaml proposals.max_per_video, for callers that pass no such key
# Proposals post-processed per call of postprocess.localize, whole videos each (videos are independent,
# so the detections are the same): one step of the progress bar.
POSTPROCESS_ROWS = 100_000


# ---------------------------------------------------------------------------------- fetch
def run_fetch(params: dict[str, Any], out: Path) -> None:
    from tspnet.archives import UnpackLimits
    from tspnet.fetch import fetch_dataset
    from tspnet.params import dataset_entry

    name, entry = dataset_entry(params)
    fetch_dataset(name, entry, out, limits=UnpackLimits.from_params(params.get("archives")))


# ---------------------------------------------------------------------------------- locate
LOCATE_METHODS = ("builtin", "lacp")
LACP_STATS = "lacp_stats.json"  # in the locate stage's output: LACP's counts, or why it did not run


def run_locate(base: dict, locate: dict, locator_name: str, dataset_dir: Path, out: Path) -> None:
    """Train the `locate.method` locator (or load its checkpoint) and write its raw proposals of both splits.

    With another locator chosen in `proposals.locator`, nothing is trained. Beside
    the proposals, LACP_STATS holds LACP's own counts and losses, or a record
    saying why LACP did not run; `run_evaluate_lacp` turns it into `lacp.*`.
    """
    from tspnet.activitynet import write_results
    from tspnet.datasets import Dataset
    from tspnet.params import setup_torch

    method = str(locate.get("method"))
    if method not in LOCATE_METHODS:
        raise DataError(f"locate.method: {method!r} is not one of {LOCATE_METHODS}")
    if locate.get("checkpoint") is not None and method != "lacp":
        raise DataError(f"locate.checkpoint is set, but it holds LACP weights and locate.method is {method!r}: "
                        "set locate.method to lacp, or locate.checkpoint to null")
    with atomic_dir(out) as tmp:
        if locator_name != BUILTIN_LOCATOR:
            log.info("locate: proposals.locator is %r, so no locator is trained here", locator_name)
            write_json(tmp / "locator.json", {"locator": locator_name, "trained": False})
            write_json(tmp / LACP_STATS, not_computed("lacp", f"proposals.locator is {locator_name}"))
            return
        device = setup_torch(base)
        dataset = Dataset(dataset_dir)
        dataset.require_features()
        if method == "builtin":
            from tspnet.locator import LocatorConfig, run_locator

            tables = run_locator(dataset, LocatorConfig.from_params(locate["builtin"]), int(base["seed"]))
            note: dict[str, Any] = {"locator": BUILTIN_LOCATOR, "method": method, "trained": True}
            write_json(tmp / LACP_STATS, not_computed("lacp", "locate.method is builtin"))
        else:
            tables, note = run_lacp(base, locate, dataset, device, tmp)
        for split, table in tables.items():
            write_results(tmp / f"{split}.json", table, version=f"tspnet locate ({method})")
        write_json(tmp / "locator.json", {**note, **{f"{s}_proposals": len(t) for s, t in tables.items()}})


def run_lacp(base: dict, locate: dict, dataset: Dataset, device: torch.device, out: Path
             ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """LACP: trained on the points (or the weights of `locate.checkpoint`), raw proposals of both splits, and
    its test detections after its own NMS (`lacp_detections.json`, evaluated by `run_evaluate_lacp`)."""
    from tspnet import sources
    from tspnet.activitynet import write_results
    from tspnet.lacp.checkpoint import load_checkpoint, save_checkpoint
    from tspnet.lacp.config import LACPConfig
    from tspnet.lacp.proposals import nms_table, predicted_classes, propose
    from tspnet.lacp.train import train_lacp, training_set, video_labels
    from tspnet.params import uses_bf16

    config = LACPConfig.from_params(locate["lacp"])
    bf16 = uses_bf16(base, device)
    info = dataset.info
    stats: dict[str, Any] = {}
    checkpoint = sources.parse_source(locate.get("checkpoint"), "locate.checkpoint")
    if checkpoint is not None:
        path = sources.materialize(checkpoint, expect="checkpoint", unpack=False)  # a zip archive: keep it whole
        model = load_checkpoint(path, int(info.feature_dim), info.num_classes, config.hidden, config.dropout)
        model = model.to(device)
        note = {"locator": BUILTIN_LOCATOR, "method": "lacp", "trained": False, "checkpoint": checkpoint.describe(),
                "checkpoint_sha256": sources.sha256_file(path)}
    else:
        data = training_set(dataset)
        result = train_lacp(data, config, int(base["seed"]), device, bf16)
        history = pd.DataFrame(result.history)
        with atomic_path(out / "lacp_history.csv") as tmp:
            history.to_csv(tmp, index=False, float_format="%.6g")
        model = result.model
        note = {"locator": BUILTIN_LOCATOR, "method": "lacp", "trained": True, "searches": result.searches}
        stats.update({"lacp.videos_without_points": len(data.without_points),
                      **{f"lacp.train_{k}" if k == "loss" else f"lacp.train_{k}_loss": v
                         for k, v in result.history[-1].items() if k not in ("step", "labels_from")}})
        del data
    save_checkpoint(out / "lacp_model.pt", model)

    tables, scores = {}, {}
    for split in ("train", "test"):
        store = dataset.feature_store(split, progress=True)
        chosen = None
        if split == "train" and config.train_classes == "ground_truth":
            chosen = video_labels(dataset.ground_truth("train"), store.videos, info.classes)
        tables[split], scores[split] = propose(model, store, info.classes, config.proposal_config(), config.r_act,
                                               info.feature_fps, info.snippet_frames, chosen, bf16)
        del store
    if config.nms_proposals:
        tables = {split: nms_table(table, config.nms_iou) for split, table in tables.items()}

    # LACP's own figure, as its authors report it: its NMS, the test split, no other filtering.
    detections = tables["test"] if config.nms_proposals else nms_table(tables["test"], config.nms_iou)
    write_results(out / "lacp_detections.json", detections, version="LACP after its NMS")
    truth = video_labels(dataset.ground_truth("test"), list(info.videos["test"]), info.classes)
    decided = predicted_classes(scores["test"], config.class_threshold)
    stats = {"lacp.test_video_accuracy": float((decided == truth).all(axis=1).mean()),
             "lacp.test_detections": len(detections),
             **{f"lacp.{s}_proposals_per_video": len(t) / max(1, len(info.videos[s])) for s, t in tables.items()},
             **stats}
    write_json(out / LACP_STATS, stats)
    return tables, note


def run_evaluate_lacp(dataset_dir: Path, locator_dir: Path, metrics_path: Path,
                      identity: dict[str, Any] | None = None) -> None:
    """LACP's own mAP as its authors report it (`lacp.*`): its test detections after its NMS; or the record
    saying why LACP did not run (the built-in locator, or another locator's proposals)."""
    from tspnet import evaluate
    from tspnet.datasets import Dataset
    from tspnet.files import read_json

    stats = read_json(locator_dir / LACP_STATS)
    if status_of(stats, "lacp") is not None:
        write_json(metrics_path, {**(identity or {}), **stats})
        return
    dataset = Dataset(dataset_dir)
    evaluation = evaluate_split(dataset, evaluate.load_results(locator_dir / "lacp_detections.json"))
    print(evaluate.format_table(evaluation, "LACP, its own NMS (test)"))
    write_json(metrics_path, {**(identity or {}), **prefixed("lacp", evaluation.summary()), **stats})


# ---------------------------------------------------------------------------------- proposals
def locator_results_path(locator_name: str, locators: dict[str, Any], locator_dir: Path, split: str,
                         dataset_name: str, progress: bool = True,
                         limits: archives.UnpackLimits | None = None) -> Path:
    """The results JSON of a split: the built-in locator's, or a registry entry's source (fetched if remote)."""
    from tspnet import sources

    if locator_name == BUILTIN_LOCATOR:
        return locator_dir / f"{split}.json"
    if locator_name not in locators:
        raise ParamsError(f"proposals.locator: unknown locator {locator_name!r} (params.yaml `locators` has "
                          f"{sorted(locators)})")
    entry = locators[locator_name] or {}
    where = f"locators.{locator_name}"
    if entry.get("dataset") != dataset_name:
        raise ParamsError(f"{where}.dataset is {entry.get('dataset')!r}, but the pipeline runs on dataset "
                          f"{dataset_name!r}: choose a locator of that dataset, or set {where}.dataset")
    split_sources = {s: sources.parse_source((entry.get("sources") or {}).get(s), f"{where}.sources.{s}")
                     for s in ("train", "test")}
    source = split_sources[split]
    if source is None:
        raise DataError(f"{where}.sources.{split} is not set: point it at the locator's {split} proposals "
                        "(ActivityNet results JSON in seconds, no NMS) as a path, an http(s) URL or {gdrive: id}")
    mirror = sources.parse_mirror(entry.get("mirror"), f"{where}.mirror")
    try:
        path = sources.materialize(source, progress, "json", limits, mirror=mirror)
    except sources.SourceUnreachable as exc:
        others = [s for s in split_sources.values() if s is not None]
        raise DataError(sources.offline_help(exc, others, mirror, f"{where}.mirror")) from None
    if not path.is_file():
        raise DataError(f"{source.describe()}: {path} is not a file (expected an ActivityNet results JSON)")
    return path


def run_proposals(proposals_params: dict, dataset_dir: Path, locator_dir: Path, out: Path,
                  metrics_path: Path, locators: dict[str, Any] | None = None,
                  archives: dict[str, Any] | None = None, identity: dict[str, Any] | None = None) -> None:
    """Import the chosen locator's proposals of both splits (the `locators` registry names external ones).

    A video with more than `proposals.max_per_video` proposals is refused
    before its proposals are parsed (`activitynet.load_results`).
    """
    from tspnet.activitynet import load_results
    from tspnet.archives import UnpackLimits
    from tspnet.datasets import Dataset
    from tspnet.proposals import import_proposals

    info = Dataset(dataset_dir).info
    locator_name = str(proposals_params["locator"])
    limit = int(proposals_params.get("max_per_video", MAX_PROPOSALS_PER_VIDEO))
    metrics: dict[str, Any] = dict(identity or {})
    with atomic_dir(out) as tmp:
        for split in ("train", "test"):
            source = locator_results_path(locator_name, locators or {}, locator_dir, split, info.name,
                                          limits=UnpackLimits.from_params(archives))
            table = load_results(source, max_per_video=(limit, "proposals.max_per_video"))
            proposals, report = import_proposals(table, info, split, str(proposals_params["invalid"]), str(source))
            proposals.save(tmp / f"{split}.npz")
            metrics.update(report.metrics(f"proposals.{split}"))
            metrics[f"proposals.{split}.per_video"] = report.imported / max(1, len(info.videos[split]))
    write_json(metrics_path, metrics)


# ---------------------------------------------------------------------------------- labels
def save_labels(path: Path, labels: ProposalLabels) -> None:
    save_npz(path, point_label=labels.point_label, center_label=labels.center_label,
             point_id=labels.point_id, num_points=labels.num_points)


def load_labels(path: Path, num_proposals: int, num_classes: int) -> ProposalLabels:
    from tspnet.labels import ProposalLabels

    arrays = load_npz(path, {"point_label": "f", "center_label": "f", "point_id": "i", "num_points": "i"})
    labels = ProposalLabels(arrays["point_label"].astype(np.float32), arrays["center_label"],
                            arrays["point_id"].astype(np.int64), arrays["num_points"].astype(np.int64))
    if labels.point_label.shape != (num_proposals, num_classes) or len(labels.center_label) != num_proposals:
        raise DataError(f"{path}: labels for {labels.point_label.shape} proposals x classes, expected "
                        f"({num_proposals}, {num_classes}); rerun the labels stage")
    return labels


def run_labels(labels_params: dict, dataset_dir: Path, proposals_dir: Path, out: Path, metrics_path: Path,
               identity: dict[str, Any] | None = None) -> None:
    from tspnet.datasets import Dataset
    from tspnet.labels import assign_labels
    from tspnet.proposals import Proposals

    dataset = Dataset(dataset_dir)
    proposals = Proposals.load(proposals_dir / "train.npz")
    points = dataset.points()
    labels = assign_labels(proposals, points, dataset.info.num_classes, float(labels_params["soft_value"]))
    with atomic_dir(out) as tmp:
        save_labels(tmp / "train.npz", labels)
    counts = labels.counts()
    covered = np.isin(points["point_id"].to_numpy(), labels.point_id)
    metrics = {f"labels.{k}": v for k, v in counts.items()}
    metrics["labels.points"] = len(points)
    metrics["labels.points_remembered_by_no_proposal"] = int((~covered).sum())
    log.info("labels: %s", ", ".join(f"{k} {v}" for k, v in metrics.items()))
    write_json(metrics_path, {**(identity or {}), **metrics})


# ---------------------------------------------------------------------------------- train
MOVED_POINTS_COLUMNS = ("point_id", "video", "class_index", "frame", "original_time", "final_time")


def run_train(base: dict, train_params: dict, labels_params: dict, dataset_dir: Path, proposals_dir: Path,
              labels_dir: Path, out: Path, metrics_path: Path, live_dir: Path, plots_dir: Path,
              identity: dict[str, Any] | None = None) -> None:
    """Train TSPNet, or, with `train.checkpoint` set, load the authors' released weights instead; without
    features, write every output as "not computed" instead (tspnet.records)."""
    from tspnet import sources
    from tspnet.datasets import Dataset

    dataset = Dataset(dataset_dir)
    if not dataset.info.has_features:
        reason = no_features(dataset.info.name)
        log.warning("train: not computed: %s", reason)
        write_train_not_computed(reason, out, metrics_path, live_dir, plots_dir, identity or {})
        return
    checkpoint = sources.parse_source(train_params.get("checkpoint"), "train.checkpoint")
    if checkpoint is not None:
        run_load_checkpoint(train_params, checkpoint, dataset_dir, proposals_dir, labels_dir, out, metrics_path,
                            live_dir, plots_dir, identity or {})
        return

    from dvclive import Live

    from tspnet import plots
    from tspnet.params import setup_torch, uses_bf16
    from tspnet.proposals import Proposals
    from tspnet.precision import cache_dtype
    from tspnet.train import TrainConfig, bound_heap_memory, pooled_features, train_tspnet

    bound_heap_memory()
    device = setup_torch(base)
    config = TrainConfig.from_params(train_params, labels_params)
    proposals = Proposals.load(proposals_dir / "train.npz")
    points = dataset.points()
    labels = load_labels(labels_dir / "train.npz", len(proposals), dataset.info.num_classes)
    bf16 = uses_bf16(base, device)
    pooled = pooled_features(dataset, "train", proposals, config.roi_bins, config.widen_ratio, device,
                             dtype=cache_dtype(bf16))

    with Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        def log_step(step: int, record: dict) -> None:
            live.step = step
            for key, value in record.items():
                live.log_metric(f"train/{key}", value)

        result = train_tspnet(pooled, proposals, points, labels, dataset.info.num_classes, config,
                              int(base["seed"]), log_step, bf16=bf16)
    # dvclive's own summary is no declared output: a run that trains nothing would leave it stale.
    # The final losses are in metrics/train.json.
    (live_dir / "metrics.json").unlink(missing_ok=True)

    write_model_outputs(out, result.model, points, result.points["time"].to_numpy(), labels, result.labels)
    plots.write_loss_plot(result.history, plots_dir)
    plots.write_center_label_plot(labels.center_label, result.labels.center_label, plots_dir)
    final = result.history[-1]
    metrics = {f"train.{k}": v for k, v in final.items() if k != "step"}
    if result.updates:
        last = result.updates[-1]
        metrics.update({"train.moved_points": last["moved_points"], "train.mean_point_shift": last["mean_shift"]})
    write_json(metrics_path, {**(identity or {}), **metrics})


def write_train_not_computed(reason: str, out: Path, metrics_path: Path, live_dir: Path, plots_dir: Path,
                             identity: dict[str, Any]) -> None:
    """Every output of `train`, each saying "not computed" and why: DVC needs them all, none holds a number."""
    from tspnet import plots

    with atomic_dir(out) as tmp:
        save_not_computed_model(tmp / "model.pt", reason)
        with atomic_path(tmp / "points.csv") as path:
            pd.DataFrame(columns=list(MOVED_POINTS_COLUMNS)).to_csv(path, index=False)
        save_npz(tmp / "center_labels.npz", not_computed=np.array(reason))
    with atomic_dir(live_dir / "plots" / "metrics") as tmp:
        (tmp / "train").mkdir()
        for name in plots.TRAIN_LOSSES:
            (tmp / "train" / f"{name}.tsv").write_text(f"step\t{name}\n", encoding="utf-8")
    (live_dir / "metrics.json").unlink(missing_ok=True)
    plots.write_not_computed(plots_dir, plots.TRAIN_PLOTS, reason)
    write_json(metrics_path, {**identity, **not_computed("train", reason)})


def write_model_outputs(out: Path, model: TSPNet, points: pd.DataFrame, final_time: np.ndarray,
                        initial: ProposalLabels, final: ProposalLabels) -> None:
    """data/model: the network, the points before and after updating, the center labels before and after."""
    with atomic_dir(out) as tmp:
        save_model(tmp / "model.pt", model)
        moved = points[["point_id", "video", "class_index", "frame"]].assign(
            original_time=points["time"].to_numpy(), final_time=final_time)
        with atomic_path(tmp / "points.csv") as path:
            moved.to_csv(path, index=False, float_format="%.6f")
        save_npz(tmp / "center_labels.npz", initial=initial.center_label, final=final.center_label,
                 initial_points=initial.num_points, final_points=final.num_points)


CHECKPOINT_VERDICT, CHECKPOINT_REASON = "not trained here", "loaded from train.checkpoint"
CHECKPOINT_STATUS = f"{CHECKPOINT_VERDICT}: {CHECKPOINT_REASON}"  # metrics/train.json's train.status


def run_load_checkpoint(train_params: dict, source: sources.Source, dataset_dir: Path, proposals_dir: Path,
                        labels_dir: Path, out: Path, metrics_path: Path, live_dir: Path, plots_dir: Path,
                        identity: dict[str, Any]) -> None:
    """The train stage's outputs from the authors' released weights: nothing is trained, no point moves."""
    from tspnet import checkpoint, plots, sources
    from tspnet.datasets import Dataset
    from tspnet.proposals import Proposals

    dataset = Dataset(dataset_dir)
    info = dataset.info
    path = sources.materialize(source, expect="checkpoint", unpack=False)  # torch.save writes a zip: keep it whole
    if not path.is_file():
        raise DataError(f"{source.describe()}: {path} is not a file (expected the authors' state dict)")
    state = checkpoint.read_state_dict(path, source.describe())
    # Without features (infer will ask for them) D comes from the checkpoint itself.
    feature_dim = info.feature_dim or checkpoint.infer_feature_dim(state) or 2048
    rows = checkpoint.class_rows(info.classes, train_params.get("checkpoint_classes"), "train.checkpoint_classes")
    model = checkpoint.tspnet_from_state_dict(state, feature_dim, info.num_classes, source.describe(), rows,
                                              float(train_params["dropout"]))
    log.info("train: loaded %s (%d-d features, %d classes); not training", source.describe(), feature_dim,
             info.num_classes)
    proposals = Proposals.load(proposals_dir / "train.npz")
    points = dataset.points()
    labels = load_labels(labels_dir / "train.npz", len(proposals), info.num_classes)
    write_model_outputs(out, model, points, points["time"].to_numpy(), labels, labels)
    (live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)  # dvc.yaml's plot folder: no steps
    plots.write_csv(plots_dir / "train_losses.csv", plots.loss_table([]))
    plots.write_note_figure(plots_dir / "train_losses.png", "Training losses",
                            f"{CHECKPOINT_STATUS}\n({source.kind} {source.location})")
    plots.write_center_label_plot(labels.center_label, labels.center_label, plots_dir)
    write_json(metrics_path, {**identity, **not_computed("train", CHECKPOINT_REASON, verdict=CHECKPOINT_VERDICT)})


def save_model(path: Path, model: TSPNet) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"state_dict": state, "feature_dim": model.feature_dim, "num_classes": model.num_classes})


def save_not_computed_model(path: Path, reason: str) -> None:
    """A model file that holds no weights, only why: `load_model` reports it, `infer` passes it on."""
    save_checkpoint(path, {"not_computed": reason})


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    import torch

    # Through a buffer: torch names the archive's root folder after the file, and the
    # temporary file's random name would change the bytes of every save.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def model_not_computed(path: Path) -> str | None:
    """Why the model file holds no weights (the train stage could not train), or None."""
    reason = read_checkpoint(path).get("not_computed")
    return None if reason is None else str(reason)


def load_model(path: Path, dropout: float = 0.5) -> TSPNet:
    from tspnet.model import TSPNet

    checkpoint = read_checkpoint(path)
    if "not_computed" in checkpoint:
        raise DataError(f"{path}: holds no model, the train stage did not compute one: {checkpoint['not_computed']}")
    try:
        model = TSPNet(int(checkpoint["feature_dim"]), int(checkpoint["num_classes"]), dropout)
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a TSPNet checkpoint of this project ({' '.join(str(exc).split())[:200]}); "
                        "rerun `dvc repro train`") from None
    return model.eval()


def read_checkpoint(path: Path) -> Any:
    """torch.load with weights_only=True; a damaged or foreign file is a DataError naming it, never a traceback
    (and never torch's advice to retry with weights_only=False)."""
    import pickle
    import zipfile

    import torch

    from tspnet import files

    if not path.is_file():
        raise DataError(f"{path}: file not found; run `dvc repro train`")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise DataError(f"{path}: the file is empty (an interrupted copy?); rerun `dvc repro train`")
    if not head.startswith((b"PK", b"\x80")):  # torch's zip format, or a legacy pickle stream
        raise DataError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}); rerun `dvc repro train`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"{path}: holds Python objects besides tensors, which this project never unpickles (a "
                        "foreign or tampered file?); rerun `dvc repro train`, or use a checkpoint saved by this "
                        "project") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, OSError) and files.is_disk_full(exc):
            raise
        first = " ".join(str(exc).split()).split(". ")[0]  # torch's first sentence says what broke
        raise DataError(f"{path}: truncated or damaged checkpoint ({first}); rerun `dvc repro train`") from None


# ---------------------------------------------------------------------------------- infer
def detections_table(detections: postprocess.Detections, videos: list[str], classes: tuple[str, ...],
                     snippets_per_second: float) -> pd.DataFrame:
    """Detections in seconds, ready for `activitynet.write_results`."""
    return pd.DataFrame({
        "video": np.asarray(videos, dtype=object)[detections.video],
        "label": np.asarray(classes, dtype=object)[detections.label],
        "start": detections.start / snippets_per_second,
        "end": detections.end / snippets_per_second,
        "score": detections.score,
    })


def localize_by_videos(proposals: Proposals, probs: np.ndarray, attention: np.ndarray, center: np.ndarray,
                       infer_params: dict, rows_per_call: int = POSTPROCESS_ROWS) -> postprocess.Detections:
    """postprocess.localize over groups of whole videos (about `rows_per_call` proposals each), with progress."""
    from tspnet import postprocess
    from tspnet.console import progress
    from tspnet.train import video_groups

    bounds = np.concatenate([[0], np.cumsum(proposals.counts())])
    parts = []
    with progress(None, "post-processing test", "proposal", total=len(proposals)) as bar:
        for first, last in video_groups(proposals.counts(), rows_per_call):
            rows = slice(int(bounds[first]), int(bounds[last]))
            if rows.stop > rows.start:
                parts.append(postprocess.localize(
                    proposals.video_index[rows], proposals.segments[rows], probs[rows], attention[rows], center[rows],
                    class_threshold=float(infer_params["class_threshold"]), aba_iou=float(infer_params["aba_iou"]),
                    nms_sigma=float(infer_params["nms_sigma"])))
            bar.update(rows.stop - rows.start)
    return postprocess.Detections.concat(parts)


def drop_ambiguous(detections: postprocess.Detections, dataset: Dataset, videos: list[str]
                   ) -> tuple[postprocess.Detections, int]:
    from tspnet import postprocess

    if not dataset.info.filter_ambiguous:
        return detections, 0
    ambiguous = postprocess.read_ambiguous(dataset.ambiguous_path)
    drop = postprocess.drop_ambiguous_mask(np.asarray(videos, dtype=str)[detections.video], detections.start,
                                           detections.end, ambiguous, dataset.info.snippets_per_second)
    return detections.select(~drop), int(drop.sum())


def run_infer(base: dict, infer_params: dict, train_params: dict, dataset_dir: Path, proposals_dir: Path,
              model_dir: Path, out: Path, metrics_path: Path, identity: dict[str, Any] | None = None) -> None:
    """TSPNet's test detections; when there is no model or no features, a "not computed" record instead.

    The network inputs are streamed (never all held: memory grows with one forward batch and the
    per-proposal outputs), and each long loop shows progress."""
    from tspnet.datasets import Dataset

    dataset = Dataset(dataset_dir)
    reason = model_not_computed(model_dir / "model.pt")
    if reason is None and not dataset.info.has_features:
        reason = no_features(dataset.info.name)
    if reason is not None:
        log.warning("infer: not computed: %s", reason)
        with atomic_dir(out) as tmp:
            mark_not_computed(tmp, reason)
        write_json(metrics_path, {**(identity or {}), **not_computed("infer", reason)})
        return

    import torch

    from tspnet import postprocess
    from tspnet.activitynet import write_results
    from tspnet.params import setup_torch, uses_bf16
    from tspnet.proposals import Proposals
    from tspnet.train import pooled_parts, predict_parts

    device = setup_torch(base)
    proposals = Proposals.load(proposals_dir / "test.npz")
    model = load_model(model_dir / "model.pt").to(device)
    dataset.require_features()
    bf16 = uses_bf16(base, device)
    # Streamed: float32 inputs a part at a time; under bf16, autocast rounds them as the bf16 cache would.
    parts = pooled_parts(dataset, "test", proposals, int(train_params["roi_bins"]), float(train_params["widen_ratio"]),
                         device)
    heads = predict_parts(model, parts, len(proposals), int(infer_params["batch_proposals"]), bf16)
    probs = torch.softmax(heads.cls, dim=1).double().cpu().numpy()
    attention = torch.sigmoid(heads.attention).double().cpu().numpy()
    center = torch.sigmoid(heads.center).double().cpu().numpy()
    detections = localize_by_videos(proposals, probs, attention, center, infer_params)
    before = len(detections)
    detections, dropped = drop_ambiguous(detections, dataset, proposals.videos)
    aligned = postprocess.aligned_confidence(probs, attention, center)
    with atomic_dir(out) as tmp:
        write_results(tmp / "tspnet.json", detections_table(
            detections, proposals.videos, dataset.info.classes, dataset.info.snippets_per_second))
        # Per-proposal scores for the confidence-quality alignment plot.
        save_npz(tmp / "proposal_scores.npz", video_index=proposals.video_index, start=proposals.start,
                 end=proposals.end, label=proposals.label, base_score=proposals.score,
                 aligned_score=aligned[np.arange(len(proposals)), proposals.label],
                 center_score=center, attention=attention)
    write_json(metrics_path, {**(identity or {}), "infer.detections": len(detections),
                              "infer.dropped_ambiguous": dropped, "infer.detections_before_filter": before})


# ---------------------------------------------------------------------------------- evaluate
def run_evaluate_base(infer_params: dict, dataset_dir: Path, proposals_dir: Path, out: Path,
                      metrics_path: Path, identity: dict[str, Any] | None = None) -> None:
    """The base locator's own proposals, soft-NMS and filtering as for TSPNet, evaluated."""
    from tspnet import evaluate, postprocess
    from tspnet.datasets import Dataset
    from tspnet.proposals import Proposals

    dataset = Dataset(dataset_dir)
    proposals = Proposals.load(proposals_dir / "test.npz")
    detections = postprocess.base_detections(proposals.video_index, proposals.segments, proposals.label,
                                             proposals.score, nms_sigma=float(infer_params["nms_sigma"]))
    detections, dropped = drop_ambiguous(detections, dataset, proposals.videos)
    table = detections_table(detections, proposals.videos, dataset.info.classes, dataset.info.snippets_per_second)
    with atomic_dir(out) as tmp:
        evaluate.write_results(tmp / "base.json", table, version="base locator after soft-NMS")
    evaluation = evaluate_split(dataset, table)
    print(evaluate.format_table(evaluation, "base locator (test)"))
    write_json(metrics_path, {**(identity or {}), **prefixed("base", evaluation.summary()),
                              "base.dropped_ambiguous": dropped})


def split_ground_truth(dataset: Dataset, split: str = "test") -> evaluate.GroundTruth:
    """The split's instances and every video of the split (videos without instances included)."""
    from tspnet import evaluate

    return evaluate.GroundTruth(dataset.ground_truth(split), list(dataset.info.videos[split]))


def evaluate_split(dataset: Dataset, predictions: pd.DataFrame,
                   ground_truth: evaluate.GroundTruth | None = None) -> evaluate.Evaluation:
    """mAP of `predictions` on the test split (its ground truth read once by callers that evaluate twice)."""
    from tspnet import evaluate

    ground_truth = split_ground_truth(dataset) if ground_truth is None else ground_truth
    return evaluate.evaluate_detections(ground_truth, predictions, list(dataset.info.tiou_thresholds))


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": v for k, v in values.items()}


def run_evaluate(dataset_dir: Path, detections_dir: Path, base_dir: Path, metrics_path: Path, plots_dir: Path,
                 headline_path: Path, identity: dict[str, Any] | None = None, lacp_path: Path | None = None) -> None:
    """TSPNet's mAP, its gain over the base locator, the alignment, the plots, and the run's headline.

    When `infer` computed nothing, the base locator's numbers still make the
    headline, and TSPNet's, the gain and the alignment are "not computed" records.
    LACP's own average (`lacp_path`, stage `evaluate_lacp`) joins the headline when LACP ran.
    """
    from tspnet import evaluate, headline, plots
    from tspnet.datasets import Dataset
    from tspnet.files import read_json
    from tspnet.records import merge_records

    identity = identity or {}
    dataset = Dataset(dataset_dir)
    ground_truth = split_ground_truth(dataset)
    base_eval = evaluate_split(dataset, evaluate.load_results(base_dir / "base.json"), ground_truth)
    base_summary = base_eval.summary()
    reason = not_computed_reason(detections_dir)
    if reason is not None:
        log.warning("evaluate: TSPNet not computed: %s", reason)
        plots.write_not_computed(plots_dir, plots.EVALUATE_PLOTS, reason)
        metrics = {**not_computed("tspnet", reason), **not_computed("gain", reason),
                   **not_computed("alignment", reason)}
    else:
        tspnet_eval = evaluate_split(dataset, evaluate.load_results(detections_dir / "tspnet.json"), ground_truth)
        tspnet_summary = tspnet_eval.summary()
        plots.write_map_plots(plots_dir, base_eval, tspnet_eval)
        alignment = plots.write_alignment_plot(
            *proposal_quality(dataset, detections_dir / "proposal_scores.npz", ground_truth.instances), plots_dir)
        metrics = {**prefixed("tspnet", tspnet_summary),
                   **prefixed("gain", {k: tspnet_summary[k] - base_summary[k] for k in tspnet_summary}),
                   **prefixed("alignment", alignment)}
    write_json(metrics_path, {**identity, **metrics})
    run = {**identity, **prefixed("base", base_summary), **metrics}
    if lacp_path is not None:  # refused if it is another run's (merge_records compares identities)
        run = merge_records({"this run": run, str(lacp_path): read_json(lacp_path)})
    write_json(headline_path, headline.headline_record(run))
    print(headline.format_headline(run))


def proposal_quality(dataset: Dataset, scores_path: Path, instances: pd.DataFrame
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best tIoU with ground truth of its class, base score, aligned score) of every test proposal."""
    from tspnet import evaluate

    scores = load_npz(scores_path, {"video_index": "i", "start": "f", "end": "f", "label": "i",
                                    "base_score": "f", "aligned_score": "f"})
    videos = np.asarray(dataset.info.videos["test"], dtype=object)[scores["video_index"]]
    labels = np.asarray(dataset.info.classes, dtype=object)[scores["label"]]
    segments = np.stack([scores["start"], scores["end"]], axis=1) / dataset.info.snippets_per_second
    best = evaluate.best_tiou(videos, labels, segments, instances)
    return best, scores["base_score"], scores["aligned_score"]
