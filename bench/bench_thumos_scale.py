"""Benchmark: the pipeline at THUMOS14 scale, on the `synthetic_thumos14` preset (params.yaml).

410 videos (200 train, 210 test) with THUMOS14's lengths and 2 x 1024-d
features: about 137k snippets, 1.1 GB of float32, written to a work
directory under /tmp (never inside the repository), removed afterwards
unless --keep.

Timed, each in this process, as the DVC stages run them:
- fetch: generate the dataset (tspnet.pipeline.run_fetch);
- proposals: import both splits' proposals (run_proposals);
- labels: center and point labels of the training proposals (run_labels);
target: the three together within 60 s.

Then the same dataset as a user's real one: fetch of a `source: files` entry
that reads the generated files, features in place, so that every feature
file is validated and fingerprinted by content (sha256) for the manifest.
Timed against the same fetch without fingerprints (the straightforward
baseline, which recorded size and mtime only: a stat per file), with the
fingerprint's throughput next to other hashes of hashlib and zlib over the
same files, and the cost later stages pay to verify a file before reading it
(every test video read with and without the check). Target: this fetch, with
proposals and labels, also within 60 s. The files are in the page cache
(just written): the figures are hashing and validation, not disk speed.

Proposals: the built-in base locator is too slow to train at this size on
two CPU cores, so a stand-in writes base-locator-like proposals as the
locate stage would (ActivityNet results JSON, seconds, no NMS), untimed
against the target: per video a lognormal count averaging 150 (as P-MIL's
on THUMOS14), two thirds noisy copies of ground-truth instances at several
scales (mostly labelled with the instance's class), one third background
segments of P-MIL-like lengths, scores higher for the copies.

Then, in a child process (its peak resident memory, ru_maxrss, is the
figure): the training split's pooled feature cache is built once
(tspnet.train.pooled_features) and one full training epoch runs --
200 videos / 10 per batch = 20 iterations of tspnet.train.train_tspnet with
the params.yaml settings, except that the epoch ends with one saliency point
update (params.yaml: every 200 iterations), so that its forward over every
proposal is timed and counts in the peak. Every feature file read is
counted: all reads happen while the cache is built, none during training.
Target: peak RSS under 1.5x the dataset's feature size (both splits).

The straightforward path here is the file count: the authors read every
video's features in every step; the check is that training reads none
(exit code 1 otherwise, or when a stage fails).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tspnet import evaluate  # noqa: E402
from tspnet.datasets import Dataset  # noqa: E402
from tspnet.params import load_params  # noqa: E402
from tspnet.pipeline import run_fetch, run_labels, run_proposals, split_ground_truth  # noqa: E402
from tspnet.fetch import fetch_dataset  # noqa: E402

DATASET = "synthetic_thumos14"
STAGES_TARGET_S = 60.0
RSS_TARGET = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory, outside the repository (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    parser.add_argument("--per-video", type=float, default=150.0, help="mean stand-in proposals per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: bench/out/thumos_scale.json)")
    parser.add_argument("--child-train", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ stand-in proposals
SNIPPET_S = 16 / 25


def noisy_copies(instances: pd.DataFrame, count: int, classes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """`count` copies of random instances: scaled 0.5x to 2x, centres moved by N(0, length / 3),
    80% keeping the instance's class, scores in [0.3, 1)."""
    chosen = instances.iloc[rng.integers(len(instances), size=count)]
    start, end = chosen["start"].to_numpy(), chosen["end"].to_numpy()
    length = end - start
    scaled = length * rng.choice([0.5, 0.75, 1.0, 1.5, 2.0], size=count) * np.exp(0.15 * rng.standard_normal(count))
    middle = (start + end) / 2 + rng.normal(0, length / 3)
    labels = np.where(rng.random(count) < 0.8, chosen["label"].to_numpy(), rng.choice(classes, size=count))
    return pd.DataFrame({"label": labels, "start": middle - scaled / 2, "end": middle + scaled / 2,
                         "score": rng.uniform(0.3, 1.0, count)})


def background_segments(duration: float, count: int, labels: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """`count` segments anywhere, lengths as P-MIL's (lognormal, median 5 snippets), scores in [0, 0.6)."""
    length = np.clip(5 * SNIPPET_S * np.exp(1.1 * rng.standard_normal(count)), SNIPPET_S, duration)
    start = rng.uniform(0, duration, count)
    return pd.DataFrame({"label": rng.choice(labels, size=count), "start": start, "end": start + length,
                         "score": rng.uniform(0.0, 0.6, count)})


def stand_in_proposals(ground_truth: pd.DataFrame, videos: list[str], durations: dict[str, float],
                       classes: tuple[str, ...], per_video: float, rng: np.random.Generator) -> pd.DataFrame:
    """Base-locator-like proposals (video, label, start, end, score in seconds) for `videos`."""
    by_video = dict(tuple(ground_truth.groupby("video")))
    all_classes = np.asarray(classes, dtype=object)
    parts = []
    for video in videos:
        count = max(4, round(per_video * np.exp(0.8 * rng.standard_normal() - 0.32)))  # lognormal, mean per_video
        instances = by_video.get(video)
        near = 0 if instances is None else (2 * count) // 3
        if near:
            parts.append(noisy_copies(instances, near, all_classes, rng).assign(video=video))
        labels = all_classes if instances is None else instances["label"].unique()
        parts.append(background_segments(durations[video], count - near, labels, rng).assign(video=video))
    table = pd.concat(parts, ignore_index=True)
    # Inside the video and on the 0.01 s grid, as locators write them; at least one snippet long.
    duration = table["video"].map(durations).to_numpy()
    start = np.clip(table["start"].to_numpy(), 0, duration - SNIPPET_S)
    end = np.clip(np.maximum(table["end"].to_numpy(), start + SNIPPET_S), 0, duration)
    return table.assign(start=np.round(start, 2), end=np.round(end, 2))


def write_stand_in_proposals(dataset: Dataset, out: Path, per_video: float, seed: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    info = dataset.info
    durations = {v: n / info.snippets_per_second for v, n in info.num_snippets.items()}
    rng = np.random.default_rng(seed)
    total = 0
    for split in ("train", "test"):
        table = stand_in_proposals(split_ground_truth(dataset, split).instances, list(info.videos[split]), durations,
                                   info.classes, per_video, rng)
        evaluate.write_results(out / f"{split}.json", table, version="bench stand-in base locator")
        total += len(table)
    return total


# ------------------------------------------------------------------------------ features read in place
def files_entry(dataset: Dataset) -> dict:
    """A `source: files` registry entry over the generated dataset's own files, features used in place."""
    info, root = dataset.info, dataset.root
    return {
        "source": "files", "classes": list(info.classes), "feature_fps": info.feature_fps,
        "snippet_frames": info.snippet_frames, "feature_layout": info.feature_layout, "feature_dim": info.feature_dim,
        "tiou_thresholds": list(info.tiou_thresholds), "filter_ambiguous": info.filter_ambiguous,
        "splits": {"train": "train", "test": "test"}, "exclude": [], "length_tolerance_s": 1.0,
        "sources": {"features": str(root / "features"), "gt": str(root / "gt.json"),
                    "points": str(root / "point_labels.csv"), "fps": str(root / "fps.json"),
                    "ambiguous": str(root / "ambiguous.txt")},
    }


def hash_seconds(paths: list[Path], algorithm: str) -> float:
    import hashlib
    import zlib

    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            if algorithm in ("crc32", "adler32"):
                value = 0
                for block in iter(lambda: f.read(1 << 20), b""):
                    value = getattr(zlib, algorithm)(block, value)
            else:
                hashlib.file_digest(f, algorithm).digest()
    return time.perf_counter() - started


def in_place_fetch(workdir: Path, dataset: Dataset) -> dict:
    """Fetch with features read in place: with content fingerprints, without; hashes compared; later reads."""
    entry = files_entry(dataset)
    started = time.perf_counter()
    info = fetch_dataset("in_place", entry, workdir / "in_place", progress=False)
    with_fingerprints = time.perf_counter() - started
    from tspnet import fetch as fetch_module

    scan, fingerprint = fetch_module.scan_features, fetch_module.FeatureScan.fingerprint

    def stat_fingerprint(self) -> dict:  # what the manifest recorded before: size and mtime
        return {rel: ((self.root / rel).stat().st_size, (self.root / rel).stat().st_mtime_ns) for rel in self.files}

    # The baseline: the same fetch and validation, fingerprints by stat instead of by content.
    fetch_module.scan_features = lambda *a, **k: scan(*a, **{**k, "fingerprint": False})
    fetch_module.FeatureScan.fingerprint = stat_fingerprint
    try:
        started = time.perf_counter()
        plain = fetch_dataset("in_place", dict(entry), workdir / "in_place_plain", progress=False)
        without = time.perf_counter() - started
    finally:
        fetch_module.scan_features, fetch_module.FeatureScan.fingerprint = scan, fingerprint
    assert plain.num_snippets == info.num_snippets and len(info.feature_fingerprint) == 2 * len(info.num_snippets)
    paths = [Path(info.feature_root) / rel for rel in sorted(info.feature_fingerprint)]
    total = sum(p.stat().st_size for p in paths)
    hashes = {name: hash_seconds(paths, name) for name in ("sha256", "blake2b", "sha1", "md5", "crc32")}
    # Later stages: every test video read with the content check, and from a manifest without it.
    checked = Dataset(workdir / "in_place")
    unchecked = Dataset(workdir / "in_place")
    unchecked.check_unchanged = lambda path, video: None
    videos = list(info.videos["test"])
    reads = {}
    for name, reader in (("verified", checked), ("unverified", unchecked), ("verified_again", checked)):
        started = time.perf_counter()
        for video in videos:
            reader.read_features("test", video)
        reads[name] = time.perf_counter() - started
    return {
        "feature_files": len(paths), "feature_file_bytes": total,
        "fetch_in_place_s": with_fingerprints, "fetch_in_place_stat_only_s": without,
        "fingerprint_overhead_ratio": with_fingerprints / without,
        "hash_s": hashes, "hash_gb_per_s": {k: total / v / 1e9 for k, v in hashes.items()},
        "read_test_features_verified_s": min(reads["verified"], reads["verified_again"]),
        "read_test_features_unverified_s": reads["unverified"],
    }


# ------------------------------------------------------------------------------ the training child
def feature_bytes(dataset: Dataset, splits=("train", "test")) -> int:
    snippets = sum(dataset.info.num_snippets[v] for split in splits for v in dataset.info.videos[split])
    return snippets * int(dataset.info.feature_dim) * 4


def child_train(workdir: Path, params_path: Path) -> dict:
    """Build the pooled cache and train one epoch; count feature reads. Runs in its own process."""
    from tspnet.params import setup_torch
    from tspnet.pipeline import load_labels
    from tspnet.proposals import Proposals
    from tspnet.train import TrainConfig, bound_heap_memory, pooled_features, train_tspnet

    bound_heap_memory()  # as the train stage does (tspnet.pipeline.run_train)
    params = load_params(params_path)
    reads = {"count": 0}
    read_features = Dataset.read_features

    def counted(self, split, video):
        reads["count"] += 1
        return read_features(self, split, video)

    Dataset.read_features = counted  # instrumentation of this child process only
    device = setup_torch({**params["base"], "device": "cpu"})
    dataset = Dataset(workdir / "dataset")
    proposals = Proposals.load(workdir / "proposals" / "train.npz")
    points = dataset.points()
    labels = load_labels(workdir / "labels" / "train.npz", len(proposals), dataset.info.num_classes)
    train_videos = len(dataset.info.videos["train"])
    config = TrainConfig.from_params(params["train"], params["labels"])
    iterations = -(-train_videos // config.batch_videos)  # one epoch: every training video once
    # One saliency point update at the end of the epoch (params.yaml: every 200 iterations), so
    # that its forward over every proposal counts in the peak memory and is timed.
    config = dataclasses.replace(config, iterations=iterations, update_every=iterations)

    started = time.perf_counter()
    pooled = pooled_features(dataset, "train", proposals, config.roi_bins, config.widen_ratio, device,
                             show_progress=False)
    cache_s = time.perf_counter() - started
    reads_cache = reads["count"]
    peak_cache = peak_rss()
    logged = {}

    def log_step(step: int, record: dict) -> None:  # the loop logs the last step before its update
        logged[step] = (time.perf_counter(), peak_rss())

    started = time.perf_counter()
    result = train_tspnet(pooled, proposals, points, labels, dataset.info.num_classes, config,
                          int(params["base"]["seed"]), log_step, show_progress=False)
    finished = time.perf_counter()
    epoch_end, peak_epoch = logged[iterations]
    return {
        "train_videos": train_videos, "train_proposals": len(proposals), "iterations": iterations,
        "batch_videos": config.batch_videos, "max_proposals": config.max_proposals,
        "pooled_cache_bytes": pooled.numel() * pooled.element_size(), "pooled_cache_s": cache_s,
        "epoch_s": epoch_end - started, "step_s": (epoch_end - started) / iterations,
        "saliency_update_s": finished - epoch_end, "moved_points": result.updates[-1]["moved_points"],
        "final_loss": result.history[-1]["loss"],
        "feature_reads_building_cache": reads_cache, "feature_reads_during_training": reads["count"] - reads_cache,
        "peak_rss_cache_bytes": peak_cache, "peak_rss_epoch_bytes": peak_epoch, "peak_rss_bytes": peak_rss(),
        "torch_threads": torch.get_num_threads(),
    }


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


def run_child(workdir: Path, params_path: Path) -> tuple[dict, int]:
    """The training child's report, and its peak RSS as the parent sees it (RUSAGE_CHILDREN)."""
    completed = subprocess.run([sys.executable, __file__, "--child-train", str(workdir), "--params", str(params_path)],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"training child failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return report, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# ------------------------------------------------------------------------------ main
def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def work_directory(requested: Path | None) -> Path:
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="tspnet-thumos-scale-", dir="/tmp"))
    requested = requested.resolve()
    if requested == common.REPO or common.REPO in requested.parents:
        raise ValueError(f"--workdir {requested} lies inside the repository; the data is over 1 GB")
    if requested.exists() and any(requested.iterdir()):
        raise ValueError(f"--workdir {requested} is not empty")
    requested.mkdir(parents=True, exist_ok=True)
    return requested


def run_stages(params: dict, workdir: Path, per_video: float, seed: int) -> tuple[dict, Dataset]:
    """fetch, the stand-in locator, proposals and labels, as the DVC stages run them; their seconds."""
    stages = {"fetch_s": timed(lambda: run_fetch(params, workdir / "dataset"))}
    dataset = Dataset(workdir / "dataset")
    started = time.perf_counter()
    stages["stand_in_proposals"] = write_stand_in_proposals(dataset, workdir / "locator", per_video, seed)
    stages["stand_in_s"] = time.perf_counter() - started
    stages["proposals_s"] = timed(lambda: run_proposals(
        params["proposals"] | {"locator": "builtin"}, workdir / "dataset", workdir / "locator",
        workdir / "proposals", workdir / "metrics" / "proposals.json"))
    stages["labels_s"] = timed(lambda: run_labels(params["labels"], workdir / "dataset", workdir / "proposals",
                                                  workdir / "labels", workdir / "metrics" / "labels.json"))
    return stages, dataset


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_train is not None:
        print(json.dumps(child_train(args.child_train, args.params)))
        return 0
    params = load_params(args.params)
    params["dataset"] = DATASET
    workdir = work_directory(args.workdir)
    print(f"work directory: {workdir}")
    started = time.perf_counter()
    try:
        stages, dataset = run_stages(params, workdir, args.per_video, args.seed)
        in_place = in_place_fetch(workdir, dataset)
        child, child_rss = run_child(workdir, args.params)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall_s = time.perf_counter() - started

    info = dataset.info
    features = feature_bytes(dataset)
    stages_total = stages["fetch_s"] + stages["proposals_s"] + stages["labels_s"]
    rss_ratio = child["peak_rss_bytes"] / features
    results = {
        "benchmark": "thumos_scale", "machine": common.machine(torch.device("cpu")),
        "dataset": DATASET, "videos": {s: len(v) for s, v in info.videos.items()},
        "snippets": sum(info.num_snippets.values()), "feature_dim": info.feature_dim, "feature_bytes": features,
        "train_feature_bytes": feature_bytes(dataset, ("train",)),
        "proposals_source": "stand-in base locator (noisy ground-truth copies + background), not the built-in locator",
        **stages, "stages_total_s": stages_total, "in_place": in_place, "train_child": child,
        "child_peak_rss_bytes_parent_view": child_rss,
        "peak_rss_over_features": rss_ratio, "wall_s": wall_s,
    }
    gb = 1e9
    print(f"\n{DATASET}: {sum(len(v) for v in info.videos.values())} videos, {results['snippets']} snippets, "
          f"{info.feature_dim}-d, {features / gb:.2f} GB of float32 features "
          f"({results['train_feature_bytes'] / gb:.2f} GB train)")
    print(f"proposals: {stages['stand_in_proposals']} from a stand-in base locator (not the built-in locator: too "
          f"slow to train at this size on 2 CPU cores), written in {stages['stand_in_s']:.1f} s")
    print(f"{'stage':<44}{'seconds':>10}")
    for name in ("fetch", "proposals", "labels"):
        print(f"{name:<44}{stages[name + '_s']:>10.2f}")
    print(f"{'fetch + proposals + labels':<44}{stages_total:>10.2f}  (target <= {STAGES_TARGET_S:g} s: "
          f"{'met' if stages_total <= STAGES_TARGET_S else 'NOT MET'})")
    in_place_total = in_place["fetch_in_place_s"] + stages["proposals_s"] + stages["labels_s"]
    print(f"{'fetch, features in place (sha256 each file)':<44}{in_place['fetch_in_place_s']:>10.2f}  "
          f"{in_place['feature_files']} files, {in_place['feature_file_bytes'] / gb:.2f} GB")
    print(f"{'  the same, fingerprints by stat (baseline)':<44}{in_place['fetch_in_place_stat_only_s']:>10.2f}  "
          f"content fingerprints cost {in_place['fingerprint_overhead_ratio']:.2f}x the baseline fetch")
    print(f"{'fetch in place + proposals + labels':<44}{in_place_total:>10.2f}  (target <= {STAGES_TARGET_S:g} s: "
          f"{'met' if in_place_total <= STAGES_TARGET_S else 'NOT MET'})")
    print("hash throughput over the feature files (GB/s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in in_place["hash_gb_per_s"].items()))
    print(f"{'read every test video, verified (sha256)':<44}{in_place['read_test_features_verified_s']:>10.2f}  "
          f"unverified {in_place['read_test_features_unverified_s']:.2f} s: "
          f"{in_place['read_test_features_verified_s'] / in_place['read_test_features_unverified_s']:.2f}x")
    print(f"{'pooled feature cache, built once':<44}{child['pooled_cache_s']:>10.2f}  "
          f"{child['train_proposals']} proposals, {child['pooled_cache_bytes'] / gb:.2f} GB")
    print(f"{'one training epoch (' + str(child['iterations']) + ' iterations)':<44}{child['epoch_s']:>10.2f}  "
          f"{child['step_s']:.2f} s per step of {child['batch_videos']} videos")
    print(f"{'then one saliency point update':<44}{child['saliency_update_s']:>10.2f}  "
          f"forward over every training proposal; {child['moved_points']} points moved")
    print(f"feature files read: {child['feature_reads_building_cache']} video(s) while building the cache, "
          f"{child['feature_reads_during_training']} during training")
    print(f"peak RSS of the training child: {child['peak_rss_bytes'] / gb:.2f} GB = {rss_ratio:.2f}x the feature size "
          f"(target < {RSS_TARGET}x: {'met' if rss_ratio < RSS_TARGET else 'NOT MET'}); by the end of the cache "
          f"{child['peak_rss_cache_bytes'] / gb:.2f} GB, of the epoch {child['peak_rss_epoch_bytes'] / gb:.2f} GB")
    print(f"wall time: {wall_s:.0f} s")
    return common.finish("thumos_scale", results, args.out, child["feature_reads_during_training"] == 0,
                         "training read feature files after the cache was built")


if __name__ == "__main__":
    sys.exit(main())
