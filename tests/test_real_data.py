"""Real THUMOS14, GTEA and BEOID annotations and P-MIL proposals (../shared/data): registry checksums, the
fetch stage over a loopback HTTP server and from a local mirror, its refusals, SF-Net's point files, the
proposal import, and `dvc exp run evaluate_base` from local copies without features. Every test skips when
../shared is absent (the `shared_data` fixture)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.dvc_repo import TINY, commit, copy_repo, dvc, set_params
from tests.reference.authors_model import AuthorsModel
from tests.loopback_http import LoopbackServer
from tests.reference.sfnet_loop import sfnet_frame_labels
from tspnet import evaluate, pipeline, sources
from tspnet.datasets import Dataset
from tspnet.fetch import fetch_dataset
from tspnet.files import DataError
from tspnet.pipeline import run_proposals

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
# The registry's file groups and their copies in ../shared/data/thumos14.
COPIES = {"gt": "gt.json", "points": "point_labels.csv", "fps": "fps.json", "ambiguous": "Ambiguous_test.txt",
          "durations": "annotations_npy/duration.npy", "duration_videos": "annotations_npy/videoname.npy"}
STREAM_DIM = 2  # tiny stand-in features: only their lengths matter here
# SF-Net's files for GTEA and BEOID: registry group -> the copy in ../shared/data/<name>.
SFNET_COPIES = {"gt": "groundtruth.json", "video_order": "annotations_npy/videoname.npy",
                **{f"single_frames[{k - 1}]": f"single_frames/{{upper}}{k}.txt" for k in range(1, 5)}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Every test downloads into its own cache (the `cache` fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("cache")


def thumos14_entry() -> dict:
    return copy.deepcopy(PARAMS["datasets"]["thumos14"])


def local_entry(shared: Path) -> dict:
    """The registry entry with every annotation source pointing at the reference copy (checksums kept)."""
    entry = thumos14_entry()
    for group, name in COPIES.items():
        entry["sources"][group] = {"path": str(shared / "thumos14" / name), "sha256": entry["sources"][group]["sha256"]}
    return entry


def test_registry_checksums_match_the_reference_copies(shared_data: Path):
    for group, name in COPIES.items():
        assert PARAMS["datasets"]["thumos14"]["sources"][group]["sha256"] == sha(
            (shared_data / "thumos14" / name).read_bytes()), group
    for split in ("train", "test"):
        assert PARAMS["locators"]["pmil"]["sources"][split]["sha256"] == sha(
            (shared_data / "proposals" / "pmil_base" / f"{split}.json").read_bytes()), split


def registry_source(entry: dict, group: str) -> dict:
    if group.startswith("single_frames["):
        return entry["sources"]["single_frames"][int(group[len("single_frames["):-1])]
    return entry["sources"][group]


@pytest.mark.parametrize("name", ["gtea", "beoid"])
def test_sfnet_registry_entries_match_the_reference_copies(shared_data: Path, name: str):
    entry = PARAMS["datasets"][name]
    for group, copy_name in SFNET_COPIES.items():
        source = registry_source(entry, group)
        copy_path = shared_data / name / copy_name.format(upper=name.upper())
        assert source["sha256"] == sha(copy_path.read_bytes()), group
        assert source["url"].startswith("https://raw.githubusercontent.com/Flowerfan/SF-Net/"
                                        "a82bc04bd65cc4426cfd0c7665f236b93c37a78c/data/"), group
        if group != "gt":  # SF-Net's data/<NAME>-Annotations/... keeps the file names
            assert source["url"].endswith(f"/{name.upper()}-Annotations/{copy_name.format(upper=name.upper())}"
                                          .replace("annotations_npy/", ""))
    assert entry["sources"]["gt"]["url"].endswith(f"/data/{name}_groundtruth.json")


def test_registry_class_orders_are_the_reference_ones(shared_data: Path):
    """Classifier rows follow the registry: TSPNet's class_lists.json order, which is SF-Net's classlist.npy."""
    lists = json.loads((shared_data / "class_lists.json").read_text())
    for name, key in (("thumos14", "THUMOS14"), ("gtea", "GTEA"), ("beoid", "BEOID")):
        assert PARAMS["datasets"][name]["classes"] == sorted(lists[key], key=lists[key].get), name
    for name in ("gtea", "beoid"):
        classlist = [c.decode() for c in np.load(shared_data / name / "annotations_npy/classlist.npy")]
        assert PARAMS["datasets"][name]["classes"] == classlist, name


def local_copies(shared: Path, root: Path) -> Path:
    """A folder of local copies under their upstream file names: ../shared/data plus links for renamed files."""
    root.mkdir()
    (root / "shared").symlink_to(shared)
    for name in ("gtea", "beoid"):
        (root / f"{name}_groundtruth.json").symlink_to(shared / name / "groundtruth.json")
    for split in ("train", "test"):
        (root / f"detection_result_base_{split}.json").symlink_to(shared / "proposals/pmil_base" / f"{split}.json")
    return root


def sfnet_features(shared: Path, name: str, root: Path, dims: int = 4) -> Path:
    """Stand-in SF-Net layout features, features/<split>/<video>.npy, one row per 16 frames of each video."""
    database = json.loads((shared / name / "groundtruth.json").read_text())["database"]
    rng = np.random.default_rng(0)
    for video, entry in database.items():
        split = {"training": "train", "validation": "test"}[entry["subset"]]
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / f"{video}.npy", rng.standard_normal((entry["num_frames"] // 16, dims), np.float32))
    return root


@pytest.mark.parametrize("name, videos", [("gtea", (21, 7)), ("beoid", (46, 12))])
def test_fetch_sfnet_datasets_from_the_real_files(shared_data: Path, tmp_path: Path, name: str, videos):
    entry = copy.deepcopy(PARAMS["datasets"][name])
    entry["mirror"] = str(local_copies(shared_data, tmp_path / "copies"))
    entry["sources"]["features"] = str(sfnet_features(shared_data, name, tmp_path / "features"))
    entry["feature_dim"] = 4
    info = fetch_dataset(name, entry, tmp_path / "ds", progress=False)
    assert (len(info.videos["train"]), len(info.videos["test"])) == videos
    database = json.loads((shared_data / name / "groundtruth.json").read_text())["database"]
    fps = json.loads((tmp_path / "ds" / "fps.json").read_text())
    assert fps == {v: float(e["fps"]) for v, e in database.items()}
    assert all(info.durations[v] >= e["duration"] for v, e in database.items())
    # The point table holds exactly SF-Net's labels of the seeded annotator draw.
    order = [n.decode() for n in np.load(shared_data / name / "annotations_npy/videoname.npy")]
    files = sorted((shared_data / name / "single_frames").glob("*.txt"))
    expected = sfnet_frame_labels(files, order, set(info.videos["train"]), fps, info.num_snippets,
                                  list(info.classes), seed=1)
    points = Dataset(tmp_path / "ds").points()
    got = {v: [(int(t), int(c)) for t, c in zip(g["time"], g["class_index"])] for v, g in points.groupby("video")}
    assert got == {v: p for v, p in expected.items() if p}
    assert len(points) == sum(len(p) for p in expected.values()) > 300


def test_fetch_thumos14_and_import_pmil_from_local_copies(shared_data: Path, tmp_path: Path):
    """The registry's URLs untouched, only the mirror params set: nothing is downloaded."""
    copies = local_copies(shared_data, tmp_path / "copies")
    entry = thumos14_entry()
    entry["mirror"] = str(copies)
    info = fetch_dataset("thumos14", entry, tmp_path / "ds", progress=False)
    assert len(info.videos["test"]) == 210 and len(info.durations) == 410
    locators = copy.deepcopy(PARAMS["locators"])
    locators["pmil"]["mirror"] = str(copies)
    run_proposals({"locator": "pmil", "invalid": "clip"}, tmp_path / "ds", tmp_path / "locator",
                  tmp_path / "proposals", tmp_path / "metrics.json", locators=locators)
    assert json.loads((tmp_path / "metrics.json").read_text())["proposals.test.read"] == 31587


def test_unreachable_locator_sources_name_the_mirror_param(shared_data: Path, tmp_path: Path):
    fetch_dataset("thumos14", local_entry(shared_data), tmp_path / "ds", progress=False)
    locators = copy.deepcopy(PARAMS["locators"])
    with socket.socket() as s:  # a loopback port nothing listens on: refused, whether or not there is internet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for split in ("train", "test"):
        locators["pmil"]["sources"][split]["url"] = f"http://127.0.0.1:{port}/x/detection_result_base_{split}.json"
    with pytest.raises(DataError) as info:
        run_proposals({"locator": "pmil", "invalid": "clip"}, tmp_path / "ds", tmp_path / "locator",
                      tmp_path / "proposals", tmp_path / "metrics.json", locators=locators)
    message = str(info.value)
    assert "cannot reach 127.0.0.1 (connection refused)" in message and "set locators.pmil.mirror" in message
    assert "will need a copy there too: locators.pmil.sources.test (detection_result_base_test.json)" in message


# ----------------------------------------------------------------------------- fetch over HTTP


@pytest.fixture(scope="module")
def features_archive(shared_data: Path) -> bytes:
    """A .tar.gz of stand-in LACP-layout features for all 410 videos, as long as the W-TALC durations say."""
    names = [n.decode() for n in np.load(shared_data / "thumos14/annotations_npy/videoname.npy")]
    seconds = dict(zip(names, np.load(shared_data / "thumos14/annotations_npy/duration.npy").ravel().tolist()))
    database = json.loads((shared_data / "thumos14/gt.json").read_text())["database"]
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for video, entry in database.items():
            for stream in ("rgb", "flow"):
                array = rng.standard_normal((int(seconds[video] * 25 / 16), STREAM_DIM)).astype(np.float32)
                data = io.BytesIO()
                np.save(data, array)
                info = tarfile.TarInfo(f"features/{entry['subset']}/{stream}/{video}.npy")
                info.size = len(data.getvalue())
                tar.addfile(info, io.BytesIO(data.getvalue()))
    return buffer.getvalue()


def served_entry(server: LoopbackServer, shared: Path, archive: bytes, faults: dict[str, list[str]] | None = None,
                 archive_path: str = "/features.tar.gz") -> dict:
    """The registry entry with every source served by `server` (checksums from the registry)."""
    faults = faults or {}
    entry = thumos14_entry()
    entry["feature_dim"] = 2 * STREAM_DIM  # the stand-in features' size, not I3D's 2048
    for group, name in COPIES.items():
        url = server.add(f"/{group}/{Path(name).name}", (shared / "thumos14" / name).read_bytes(), faults.get(group))
        entry["sources"][group]["url"] = url
    entry["sources"]["features"] = {"url": server.add(archive_path, archive, faults.get("features")),
                                    "sha256": sha(archive)}
    return entry


def test_fetch_thumos14_over_http(shared_data: Path, features_archive: bytes, tmp_path: Path):
    with LoopbackServer() as server:
        entry = served_entry(server, shared_data, features_archive)
        info = fetch_dataset("thumos14", entry, tmp_path / "ds", progress=False)
    dataset = Dataset(tmp_path / "ds")
    gt = json.loads((shared_data / "thumos14/gt.json").read_text())["database"]
    assert len(info.videos["train"]) == sum(e["subset"] == "train" for e in gt.values())
    assert set(info.videos["test"]) == {v for v, e in gt.items() if e["subset"] == "test"} - set(entry["exclude"])
    assert info.feature_dim == 2 * STREAM_DIM and len(info.num_snippets) == len(gt)
    point_rows = (shared_data / "thumos14/point_labels.csv").read_text().strip().count("\n")
    assert len(dataset.points()) == point_rows
    ambiguous = [line.split()[0] for line in (shared_data / "thumos14/Ambiguous_test.txt").read_text().splitlines()]
    kept = (tmp_path / "ds" / "ambiguous.txt").read_text().splitlines()
    assert len(kept) == sum(v in info.videos["test"] for v in ambiguous)
    video = info.videos["test"][0]
    assert dataset.read_features("test", video).shape == (info.num_snippets[video], 2 * STREAM_DIM)


def tar_with(member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 1 if kind == tarfile.REGTYPE else 0
    return info


def zip_with(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, b"x")
    return buffer.getvalue()


@pytest.mark.parametrize("case, message", [
    ("corrupt gt", r"datasets.thumos14.sources.gt \(url .*gt.json\): sha256 is [0-9a-f]{64}, expected 09ec8671"),
    ("wrong checksum", r"datasets.thumos14.sources.points .*expected 0{64}.*set datasets.thumos14.sources"
                       r".points.sha256"),
    ("interrupted", r"datasets.thumos14.sources.features .*failed 3 times.*rerun the stage to resume"),
    ("../ member", r"member '../escape.npy' would land outside the target directory; refusing to unpack"),
    ("symlink member", r"member 'features/link.npy' is a link \(to '/etc/passwd'\); refusing to unpack"),
    ("device member", r"member 'features/dev' is a device, pipe or other special file; refusing to unpack"),
    ("zip ../ member", r"member '../escape.npy' would land outside the target directory; refusing to unpack"),
])
def test_fetch_refusals_leave_nothing_behind(shared_data: Path, features_archive: bytes, tmp_path: Path,
                                             cache: Path, case: str, message: str):
    archive, faults, path = features_archive, {}, "/features.tar.gz"
    if case == "corrupt gt":
        faults = {"gt": ["corrupt"]}
    elif case == "interrupted":
        faults = {"features": ["drop"] * sources.DOWNLOAD_ATTEMPTS}
    elif case == "../ member":
        archive = tar_with(member("../escape.npy"))
    elif case == "symlink member":
        archive = tar_with(member("features/link.npy", tarfile.SYMTYPE, "/etc/passwd"))
    elif case == "device member":
        archive = tar_with(member("features/dev", tarfile.CHRTYPE))
    elif case == "zip ../ member":
        archive, path = zip_with("../escape.npy"), "/features.zip"
    with LoopbackServer() as server:
        entry = served_entry(server, shared_data, archive, faults, path)
        if case == "wrong checksum":
            entry["sources"]["points"]["sha256"] = "0" * 64
        with pytest.raises(DataError, match=message):
            fetch_dataset("thumos14", entry, tmp_path / "ds", progress=False)
        assert not (tmp_path / "ds").exists()
        finals = [p for p in (cache / "downloads").rglob("*")
                  if p.is_file() and p.name != ".lock" and p.suffix != ".partial"]
        assert all(sha(p.read_bytes()) == p.parent.name for p in finals)  # whatever landed is verified
        if case.endswith("member"):  # no half-unpacked tree in the cache either
            assert [p for p in (cache / "unpacked").glob("*") if p.name != ".lock"] == []
        assert not (tmp_path / "escape.npy").exists() and not (cache / "escape.npy").exists()
        if case == "interrupted":  # the next run resumes the kept part and completes
            info = fetch_dataset("thumos14", entry, tmp_path / "ds", progress=False)
            assert info.has_features and server.ranges(path)[-1] is not None


# ----------------------------------------------------------------------------- P-MIL proposals, no features


def pmil_locators(shared: Path) -> dict:
    locators = copy.deepcopy(PARAMS["locators"])
    for split in ("train", "test"):
        locators["pmil"]["sources"][split] = {"path": str(shared / "proposals/pmil_base" / f"{split}.json"),
                                              "sha256": locators["pmil"]["sources"][split]["sha256"]}
    return locators


def test_pmil_proposals_import_without_features(shared_data: Path, tmp_path: Path):
    info = fetch_dataset("thumos14", local_entry(shared_data), tmp_path / "ds", progress=False)
    assert not info.has_features and len(info.durations) == sum(len(v) for v in info.videos.values())
    run_proposals({"locator": "pmil", "invalid": "clip"}, tmp_path / "ds", tmp_path / "locator",
                  tmp_path / "proposals", tmp_path / "metrics.json", locators=pmil_locators(shared_data))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for split in ("train", "test"):
        raw = json.loads((shared_data / "proposals/pmil_base" / f"{split}.json").read_text())["results"]
        outside = sum(len(p) for v, p in raw.items() if v not in info.videos[split])
        assert metrics[f"proposals.{split}.read"] == sum(len(p) for p in raw.values())
        assert metrics[f"proposals.{split}.other_videos"] == outside
        assert {v for v in raw if v not in info.videos[split]} <= set(PARAMS["datasets"]["thumos14"]["exclude"])
        assert metrics[f"proposals.{split}.imported"] + metrics[f"proposals.{split}.zero_length"] + outside == \
            metrics[f"proposals.{split}.read"]


def test_a_locator_of_another_dataset_is_refused(shared_data: Path, tmp_path: Path):
    fetch_dataset("thumos14", local_entry(shared_data), tmp_path / "ds", progress=False)
    locators = pmil_locators(shared_data)
    locators["pmil"]["dataset"] = "gtea"
    with pytest.raises(ValueError, match="locators.pmil.dataset is 'gtea', but the pipeline runs on dataset "
                                         "'thumos14'"):
        run_proposals({"locator": "pmil", "invalid": "clip"}, tmp_path / "ds", tmp_path / "locator",
                      tmp_path / "proposals", tmp_path / "metrics.json", locators=locators)


# ----------------------------------------------------------------------------- the DVC pipeline


@pytest.mark.pipeline
def test_dvc_exp_run_from_local_copies_without_features(shared_data: Path, tmp_path: Path):
    """README, "Without internet": the one command, with the registry's URLs, the reference copies as mirror.
    The whole pipeline runs; what needs features records that it was not computed."""
    work = copy_repo(tmp_path / "repo")
    copies = local_copies(shared_data, tmp_path / "copies")
    tiou_thresholds = PARAMS["datasets"]["thumos14"]["tiou_thresholds"]
    result = dvc(["exp", "run", "-S", "dataset=thumos14", "-S", "proposals.locator=pmil",
                  "-S", f"datasets.thumos14.mirror={copies}", "-S", f"locators.pmil.mirror={copies}"], work)

    # The whole pipeline runs; what needs features records that it was not computed.
    stages = ("fetch", "locate", "evaluate_lacp", "proposals", "labels", "train", "infer", "evaluate_base",
              "evaluate")
    assert [s for s in stages if f"Running stage '{s}'" in result.stdout] == list(stages)
    manifest = json.loads((work / "data/dataset/dataset.json").read_text())
    assert manifest["feature_dim"] is None and manifest["name"] == "thumos14"
    assert json.loads((work / "data/locator/locator.json").read_text())["trained"] is False
    metrics = json.loads((work / "metrics/base.json").read_text())
    detections = evaluate.load_results(work / "data/base_detections/base.json")
    ground_truth = evaluate.load_ground_truth(shared_data / "thumos14/gt.json", subset="test")
    direct = evaluate.evaluate_detections(ground_truth, detections, tiou_thresholds)
    for key, value in direct.summary().items():
        assert metrics[f"base.{key}"] == pytest.approx(value, abs=1e-9), key
    assert metrics["base.avg_0.1_0.7"] == pytest.approx(43.15, abs=0.005)  # the README's table
    imported = json.loads((work / "metrics/proposals.json").read_text())["proposals.test.imported"]
    assert len(detections) == imported - metrics["base.dropped_ambiguous"]  # soft-NMS rescores, never drops

    reason = "not computed: no features (datasets.thumos14.sources.features)"  # names the param to set
    identity = {"run.dataset": "thumos14", "run.locator": "pmil", "run.seed": 0}
    assert json.loads((work / "metrics/train.json").read_text()) == {**identity, "train.status": reason}
    headline = json.loads((work / "metrics/headline.json").read_text())
    assert headline == {**identity, "base.avg_0.1_0.7": metrics["base.avg_0.1_0.7"],
                        "tspnet.status": reason, "gain.status": reason}


# The base locator of the GTEA chain below: LACP, the paper's, kept tiny.
GTEA_LOCATOR = {"locate.method": "lacp", "locate.lacp.iterations": 10, "locate.lacp.search_every": 5,
                "locate.lacp.hidden": 32}
GTEA_DIM = 16  # stand-in features; the registry's 2048 is overridden


@pytest.mark.pipeline
def test_gtea_chain_from_sfnet_files_then_the_authors_weights(shared_data: Path, tmp_path: Path):
    """`dvc exp run -S dataset=gtea -S datasets.gtea.sources.features=DIR` (+ the mirror, offline): fetch from
    SF-Net's real files through labels; then train.checkpoint, a state dict in the authors' layout, to the end."""
    work = copy_repo(tmp_path / "repo")
    set_params(work, {**TINY, **GTEA_LOCATOR, "datasets.gtea.feature_dim": GTEA_DIM})
    commit(work, "tiny GTEA settings")
    copies = local_copies(shared_data, tmp_path / "copies")
    features = sfnet_features(shared_data, "gtea", tmp_path / "features", GTEA_DIM)
    gtea = ["-S", "dataset=gtea", "-S", f"datasets.gtea.sources.features={features}",
            "-S", f"datasets.gtea.mirror={copies}"]

    result = dvc(["exp", "run", "labels", *gtea], work)
    assert all(f"Running stage '{s}'" in result.stdout for s in ("fetch", "locate", "proposals", "labels"))
    manifest = json.loads((work / "data/dataset/dataset.json").read_text())
    assert manifest["name"] == "gtea" and manifest["feature_dim"] == GTEA_DIM
    assert len(manifest["videos"]["train"]) == 21 and len(manifest["videos"]["test"]) == 7
    order = [n.decode() for n in np.load(shared_data / "gtea/annotations_npy/videoname.npy")]
    fps = {v: 15.0 for v in order}
    expected = sfnet_frame_labels(sorted((shared_data / "gtea/single_frames").glob("*.txt")), order,
                                  set(manifest["videos"]["train"]), fps, manifest["num_snippets"],
                                  PARAMS["datasets"]["gtea"]["classes"], seed=1)
    labels = json.loads((work / "metrics/labels.json").read_text())
    assert labels["labels.points"] == sum(len(p) for p in expected.values())

    torch.manual_seed(0)
    authors = AuthorsModel(GTEA_DIM, len(PARAMS["datasets"]["gtea"]["classes"]))
    torch.save(authors.state_dict(), tmp_path / "best_model.pkl")
    result = dvc(["exp", "run", *gtea, "-S", f"train.checkpoint={tmp_path / 'best_model.pkl'}"], work)
    assert all(f"Running stage '{s}'" in result.stdout for s in ("train", "infer", "evaluate_base", "evaluate"))
    train_metrics = json.loads((work / "metrics/train.json").read_text())
    assert train_metrics["train.status"] == pipeline.CHECKPOINT_STATUS and train_metrics["run.dataset"] == "gtea"
    assert "lacp.avg_0.1_0.7" in json.loads((work / "metrics/lacp.json").read_text())
    pooled = torch.randn(13, 3 * GTEA_DIM)
    loaded = pipeline.load_model(work / "data/model/model.pt")
    torch.testing.assert_close(loaded(pooled).cls, authors.heads(pooled)[0], rtol=1e-5, atol=1e-6)
    assert "tspnet.avg_0.1_0.7" in json.loads((work / "metrics/tspnet.json").read_text())
    points = (work / "data/model/points.csv").read_text().splitlines()
    assert len(points) == labels["labels.points"] + 1  # unmoved: nothing was trained
    assert "up to date" in dvc(["status"], work).stdout
