"""Real THUMOS14 annotations and P-MIL proposals (../shared/data): registry checksums, the fetch stage
over a loopback HTTP server, its refusals, the proposal import, and `dvc repro evaluate_base` without
features. Every test skips when ../shared is absent (the `shared_data` fixture)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.dvc_repo import copy_repo, dvc, set_params
from tests.loopback_http import LoopbackServer
from tspnet import evaluate, sources
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
def test_dvc_repro_with_pmil_and_no_features(shared_data: Path, tmp_path: Path):
    work = copy_repo(tmp_path / "repo")
    tiou_thresholds = PARAMS["datasets"]["thumos14"]["tiou_thresholds"]
    set_params(work, {"dataset": "thumos14", "datasets.thumos14": local_entry(shared_data),
                      "proposals.locator": "pmil", "locators": pmil_locators(shared_data)})
    result = dvc(["repro"], work)  # the cache: $TSPNET_CACHE from the autouse fixture

    # The whole pipeline runs; what needs features records that it was not computed.
    stages = ("fetch", "locate", "proposals", "labels", "train", "infer", "evaluate_base", "evaluate")
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
    imported = json.loads((work / "metrics/proposals.json").read_text())["proposals.test.imported"]
    assert len(detections) == imported - metrics["base.dropped_ambiguous"]  # soft-NMS rescores, never drops

    reason = "not computed: no features (datasets.thumos14.sources.features)"  # names the param to set
    identity = {"run.dataset": "thumos14", "run.locator": "pmil", "run.seed": 0}
    assert json.loads((work / "metrics/train.json").read_text()) == {**identity, "train.status": reason}
    headline = json.loads((work / "metrics/headline.json").read_text())
    assert headline == {**identity, "base.avg_0.1_0.7": metrics["base.avg_0.1_0.7"],
                        "tspnet.status": reason, "gain.status": reason}
