"""The fetch stage on a small generated `source: files` dataset: layout, split mapping, validation errors."""

from __future__ import annotations

import copy
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.reference.fetch_loop import largest_mismatch
from tspnet import sources
from tspnet.datasets import Dataset
from tspnet.fetch import fetch_dataset, largest_length_mismatch
from tspnet.files import DataError

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["Jump", "Run", "Throw"]
# video: (subset in the source ground truth, duration s, fps, [(label, start, end)])
VIDEOS = {
    "val_1": ("validation", 32.0, 30.0, [("Jump", 2.0, 6.0), ("Run", 10.0, 20.0)]),
    "val_2": ("validation", 16.0, 25.0, [("Throw", 1.0, 4.0)]),
    "val_bad": ("validation", 20.0, 30.0, [("Run", 1.0, 2.0)]),  # excluded
    "tst_1": ("test", 24.0, 30.0, [("Run", 3.0, 9.0)]),
    "tst_2": ("test", 12.8, 24.0, [("Jump", 5.0, 8.0)]),
    "other": ("holdout", 10.0, 30.0, []),  # a subset the entry does not map
}
STREAMS = {"rgb": 3, "flow": 2}


def snippets(duration: float) -> int:
    return int(duration * 25 / 16)  # 32 s -> 50, 16 s -> 25, 24 s -> 37, 12.8 s -> 20


def write_features(root: Path, layout: str, rng: np.random.Generator) -> None:
    for video, (subset, duration, _, _) in VIDEOS.items():
        split = {"validation": "train", "test": "test"}.get(subset)
        if split is None:
            continue
        arrays = {s: rng.standard_normal((snippets(duration), d)).astype(np.float32) for s, d in STREAMS.items()}
        if layout == "lacp":
            for stream, array in arrays.items():
                (root / split / stream).mkdir(parents=True, exist_ok=True)
                np.save(root / split / stream / f"{video}.npy", array)
        else:
            (root / split).mkdir(parents=True, exist_ok=True)
            np.save(root / split / f"{video}.npy", np.concatenate([arrays["rgb"], arrays["flow"]], axis=1))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_entry(tmp_path: Path, layout: str = "lacp", features: bool = True) -> dict:
    src = tmp_path / "src"
    src.mkdir()
    database = {v: {"subset": s, "annotations": [{"segment": [str(a), str(b)], "label": c} for c, a, b in anns]}
                for v, (s, _, _, anns) in VIDEOS.items()}
    (src / "gt.json").write_text(json.dumps({"database": database}))
    rows = ["Jump,0,60,180,val_1,120", "Run,1,300,600,val_1,450", "Throw,2,25,100,val_2,60", "Run,1,30,60,val_bad,40"]
    (src / "points.csv").write_text("class,class_index,start_frame,stop_frame,video_id,point\n" + "\n".join(rows))
    (src / "fps.json").write_text(json.dumps({v: fps for v, (_, _, fps, _) in VIDEOS.items()}))
    (src / "ambiguous.txt").write_text("tst_1  10.0 11.5\nunknown_video  1.0 2.0\n")
    (src / "durations.json").write_text(json.dumps({v: d for v, (_, d, _, _) in VIDEOS.items()}))
    if features:
        write_features(src / "pack" / "features", layout, np.random.default_rng(0))
    return {
        "source": "files", "classes": CLASSES, "feature_fps": 25, "snippet_frames": 16, "feature_layout": layout,
        "feature_dim": 5, "tiou_thresholds": [0.3, 0.5], "filter_ambiguous": True,
        "splits": {"train": "validation", "test": "test"}, "exclude": ["val_bad"], "length_tolerance_s": 1.0,
        "sources": {"features": str(src / "pack") if features else None, "gt": str(src / "gt.json"),
                    "points": str(src / "points.csv"), "fps": str(src / "fps.json"),
                    "ambiguous": str(src / "ambiguous.txt"), "durations": str(src / "durations.json")},
    }


def test_fetch_in_place_writes_the_layout(tmp_path: Path):
    entry = make_entry(tmp_path)
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    root = tmp_path / "ds"
    assert info.videos == {"train": ("val_1", "val_2"), "test": ("tst_1", "tst_2")}
    assert info.num_snippets == {"val_1": 50, "val_2": 25, "tst_1": 37, "tst_2": 20}
    assert info.feature_dim == 5 and info.durations["tst_2"] == 12.8
    assert info.feature_root == str((tmp_path / "src" / "pack" / "features").resolve())
    assert len(info.feature_fingerprint) == 2 * 4 and not (root / "features").exists()

    gt = json.loads((root / "gt.json").read_text())["database"]
    assert list(gt) == ["val_1", "val_2", "tst_1", "tst_2"]  # excluded and unmapped videos are gone
    assert gt["val_1"]["subset"] == "train" and gt["val_1"]["annotations"][1]["segment"] == [10.0, 20.0]
    assert json.loads((root / "fps.json").read_text()) == {"val_1": 30.0, "val_2": 25.0, "tst_1": 30.0, "tst_2": 24.0}
    assert (root / "ambiguous.txt").read_text() == "tst_1  10.0 11.5\n"
    dataset = Dataset(root)
    assert dataset.points()["video"].tolist() == ["val_1", "val_1", "val_2"]
    features = dataset.read_features("test", "tst_2")
    rgb = np.load(tmp_path / "src/pack/features/test/rgb/tst_2.npy")
    assert features.shape == (20, 5) and np.array_equal(features[:, :3], rgb)


def test_copy_mode_makes_the_dataset_self_contained(tmp_path: Path):
    entry = make_entry(tmp_path, layout="sfnet")
    entry["sources"]["features"] = {"path": entry["sources"]["features"], "copy": True}
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert info.feature_root is None and info.feature_fingerprint == {}
    expected = np.load(tmp_path / "src/pack/features/train/val_2.npy")
    shutil.rmtree(tmp_path / "src" / "pack")
    assert np.array_equal(Dataset(tmp_path / "ds").read_features("train", "val_2"), expected)


def test_features_from_an_archive(tmp_path: Path, cache: Path):
    entry = make_entry(tmp_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "pack", arcname="THUMOS14")
    archive = tmp_path / "features.tar.gz"
    archive.write_bytes(buffer.getvalue())
    entry["sources"]["features"] = str(archive)
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert Path(info.feature_root).is_relative_to(cache.resolve() / "unpacked")
    assert Path(info.feature_root).name == "features" and info.num_snippets["val_1"] == 50


def test_without_features_the_manifest_keeps_durations(tmp_path: Path):
    info = fetch_dataset("toy", make_entry(tmp_path, features=False), tmp_path / "ds", progress=False)
    assert not info.has_features and info.feature_root is None
    # tst_1's duration (24 s) bounds its proposals: 24 * 25/16 = 37.5 snippets.
    assert info.lengths_in_snippets(["tst_1"]).tolist() == [37.5]


def test_durations_shorter_than_the_annotations_are_raised_and_not_checked(tmp_path: Path, caplog):
    entry = make_entry(tmp_path)
    table = json.loads(Path(entry["sources"]["durations"]).read_text())
    table["val_1"] = 15.0  # its last instance ends at 20 s; its features cover 50 snippets = 32 s
    Path(entry["sources"]["durations"]).write_text(json.dumps(table))
    with caplog.at_level(logging.WARNING):
        info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert info.durations["val_1"] == 20.0
    assert "val_1 (15.00 -> 20.00 s)" in caplog.text


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "test/flow/tst_1.npy").unlink(),
     r"features/test/flow/tst_1.npy, video tst_1: feature file not found \(1 file\(s\) of 1 video\(s\) missing"),
    (lambda f: np.save(f / "train/rgb/val_2.npy", np.zeros((25, 4), np.float32)),
     r"rgb/val_2.npy, video val_2, field 'shape': 4 dims, but video val_1 has 3 in the same stream"),
    (lambda f: np.save(f / "train/flow/val_2.npy", np.zeros((24, 2), np.float32)),
     r"flow/val_2.npy, video val_2, field 'shape': 24 snippets, but train/rgb/val_2.npy has 25"),
    (lambda f: np.save(f / "test/rgb/tst_2.npy", np.full((20, 3), np.nan, np.float32)),
     r"rgb/tst_2.npy, video tst_2: features contain NaN or infinity \(first at snippet 0\)"),
    (lambda f: np.save(f / "test/rgb/tst_2.npy", np.zeros((22, 3), np.float32))
     or np.save(f / "test/flow/tst_2.npy", np.zeros((22, 2), np.float32)),
     # 22 snippets cover 22 * 16/25 = 14.08 s of a 12.8 s video: off by +1.28 s > 1.0 s.
     r"rgb/tst_2.npy, video tst_2, field 'shape': 22 snippets cover 14.08 s, the video lasts 12.80 s "
     r"\(off by \+1.28 s, the largest mismatch.*datasets.toy.length_tolerance_s = 1.0"),
])
def test_bad_features_are_refused_before_anything_is_written(tmp_path: Path, damage, message):
    entry = make_entry(tmp_path)
    damage(tmp_path / "src" / "pack" / "features")
    with pytest.raises(DataError, match=message):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_feature_dim_must_match_the_registry(tmp_path: Path):
    entry = make_entry(tmp_path, layout="sfnet")
    entry["feature_dim"] = 2048
    with pytest.raises(DataError, match=r"features have 5 dims in all \(5\), datasets.toy.feature_dim says 2048"):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)


@pytest.mark.parametrize("edit, message", [
    (lambda e, s: (s / "gt.json").write_text(json.dumps({"database": {"tst_1": {
        "subset": "test", "annotations": [{"segment": [1, 2], "label": "Swim"}]}}})),
     r"gt.json, video tst_1, field 'annotations\[0\].label': unknown class 'Swim'"),
    (lambda e, s: e.update(splits={"train": "training", "test": "test"}),
     r"no video of subset 'training' for the train split \(subsets present: \['holdout', 'test', 'validation'\]"),
    (lambda e, s: (s / "points.csv").write_text("class,class_index,start_frame,stop_frame,video_id,point\n"
                                                 "Swim,0,1,2,val_1,1\n"),
     r"points.csv, video val_1, field 'class', row 2: unknown class"),
    (lambda e, s: (s / "points.csv").write_text("class,class_index,start_frame,stop_frame,video_id,point\n"
                                                 "Jump,0,1,2,val_1,961\n"),
     # val_1 has 50 snippets at 30 fps: frames up to 50 * 16 * 30/25 = 960.
     r"points.csv, video val_1, field 'point', row 2: frame lies past the end of the video's features"),
    (lambda e, s: (s / "durations.json").write_text(json.dumps({"val_1": 32.0})),
     r"durations.json, video val_2, field 'duration': missing \(3 video\(s\)"),
    (lambda e, s: (s / "fps.json").write_text(json.dumps({"val_1": 0})),
     r"fps.json, video val_1, field 'fps': 0 is not a positive number"),
    (lambda e, s: e["sources"].update(ambiguous=None),
     r"datasets.toy.sources.ambiguous: the ambiguous segments"),
    (lambda e, s: np.save(s / "durations.npy", np.ones(3)) or e["sources"].update(durations=str(s / "durations.npy")),
     r"durations.npy: a numpy array of durations .* set datasets.toy.sources.duration_videos"),
])
def test_bad_annotations_are_refused(tmp_path: Path, edit, message):
    entry = make_entry(tmp_path)
    edit(entry, tmp_path / "src")
    with pytest.raises(DataError, match=message):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_w_talc_durations(tmp_path: Path):
    entry = make_entry(tmp_path)
    names = np.array([v.encode() for v in VIDEOS], dtype="S8")
    np.save(tmp_path / "duration.npy", np.array([[d] for _, d, _, _ in VIDEOS.values()]))  # W-TALC's [N, 1]
    np.save(tmp_path / "videoname.npy", names)
    entry["sources"].update(durations=str(tmp_path / "duration.npy"), duration_videos=str(tmp_path / "videoname.npy"))
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert info.durations == {"val_1": 32.0, "val_2": 16.0, "tst_1": 24.0, "tst_2": 12.8}


def with_ground_truth_field(entry: dict, field: str, column: int) -> dict:
    """The entry with each video's `field` (column of VIDEOS) in its ground truth, as in SF-Net's *_groundtruth.json."""
    gt_path = Path(entry["sources"]["gt"])
    gt = json.loads(gt_path.read_text())
    for video, item in gt["database"].items():
        item[field] = VIDEOS[video][column]
    gt_path.write_text(json.dumps(gt))
    return entry


def test_durations_can_come_from_the_ground_truth(tmp_path: Path):
    entry = with_ground_truth_field(make_entry(tmp_path), "duration", 1)
    entry["sources"]["durations"] = None
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert info.durations == {"val_1": 32.0, "val_2": 16.0, "tst_1": 24.0, "tst_2": 12.8}


def test_registry_entries_without_sources_say_what_is_missing(tmp_path: Path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in ("gtea", "beoid"):
        entry = copy.deepcopy(params["datasets"][name])
        entry["sources"] = {group: None for group in entry["sources"]}
        with pytest.raises(DataError) as info:
            fetch_dataset(name, entry, tmp_path / name, progress=False)
        message = str(info.value)
        for group in ("gt", "points", "single_frames"):
            assert f"datasets.{name}.sources.{group}:" in message
        assert "one of points and single_frames" in message
        assert "features" not in message.split("\n")[0] and "sources.fps" not in message


# ----------------------------------------------------------------------------- SF-Net single-frame points


def single_frame_entry(tmp_path: Path) -> dict:
    """The toy entry with SF-Net single-frame files instead of the point table.

    video_order tst_1, val_1, val_2 draws 1, 1, 0 from two files (seed 1): val_1 takes B2.txt, val_2 A1.txt.
    """
    entry = make_entry(tmp_path)
    src = tmp_path / "src"
    (src / "frames").mkdir()
    (src / "frames" / "A1.txt").write_text("val_1,1.0,Jump\n\nval_2,2.0,Throw\n")
    (src / "frames" / "B2.txt").write_text("val_1,4.05,Jump\n\nval_1,15.0,Run\n\nval_1,32.5,Run\n\n"
                                           "val_2,3.0,Run\n\ntst_1,5.0,Run\n")
    np.save(src / "videoname.npy", np.array([b"tst_1", b"val_1", b"val_2"]))
    entry["sources"].update(points=None, single_frames=[str(src / "frames/B2.txt"), str(src / "frames/A1.txt")],
                            video_order=str(src / "videoname.npy"))
    return entry


def test_single_frame_points_are_converted(tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO):
        fetch_dataset("toy", single_frame_entry(tmp_path), tmp_path / "ds", progress=False)
    # val_1 (30 fps) from B2.txt: 4.05 s -> frame 121 (121.5 floored), 15 s -> 450, 32.5 s -> 975 = 50.78
    # snippets, past its 50 feature rows: dropped. val_2 (25 fps) from A1.txt: 2 s -> frame 50.
    assert (tmp_path / "ds" / "point_labels.csv").read_text() == (
        "class,class_index,start_frame,stop_frame,video_id,point\n"
        "Jump,0,121,121,val_1,121\nRun,1,450,450,val_1,450\nThrow,2,50,50,val_2,50\n")
    assert "dropped 1 point(s) past their video's last snippet (feature rows)" in caplog.text
    assert "B2.txt chosen for 1 video(s)" in caplog.text and "A1.txt chosen for 1 video(s)" in caplog.text
    points = Dataset(tmp_path / "ds").points()
    np.testing.assert_allclose(points["time"], [121 * 25 / (30 * 16), 450 * 25 / (30 * 16), 50 / 16])


def test_a_fixed_annotator_and_a_directory_of_files(tmp_path: Path):
    entry = single_frame_entry(tmp_path)
    entry["sources"].update(single_frames=str(tmp_path / "src" / "frames"), video_order=None)
    entry["annotator"] = 1  # A1.txt, the first in name order, for every video
    fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert (tmp_path / "ds" / "point_labels.csv").read_text().splitlines()[1:] == [
        "Jump,0,30,30,val_1,30", "Throw,2,50,50,val_2,50"]


def test_frame_rates_from_the_ground_truth(tmp_path: Path):
    entry = with_ground_truth_field(single_frame_entry(tmp_path), "fps", 2)
    entry["sources"]["fps"] = None
    fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert json.loads((tmp_path / "ds" / "fps.json").read_text()) == {"val_1": 30.0, "val_2": 25.0, "tst_1": 30.0,
                                                                      "tst_2": 24.0}
    gt_path = Path(entry["sources"]["gt"])
    gt = json.loads(gt_path.read_text())
    del gt["database"]["tst_2"]["fps"]
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"gt.json, video tst_2, field 'fps': missing \(1 video\(s\)\), and "
                                        r"datasets.toy.sources.fps is null"):
        fetch_dataset("toy", entry, tmp_path / "ds2", progress=False)


@pytest.mark.parametrize("edit, error, message", [
    (lambda e: e["sources"].update(points="p.csv"), ValueError,
     r"datasets.toy.sources: points and single_frames are both set; keep one of them"),
    (lambda e: e["sources"].update(video_order=None), DataError,
     r"datasets.toy.sources.video_order: SF-Net's videoname.npy"),
    (lambda e: e.update(annotator=3), DataError, r"datasets.toy.annotator: annotator 3 chosen, but there are 2"),
    (lambda e: e.update(annotator=0), ValueError, r"datasets.toy.annotator: expected 'random' or an annotator"),
    (lambda e: e.update(annotator_seed="1"), ValueError, r"datasets.toy.annotator_seed: expected an integer"),
    (lambda e: e["sources"].update(single_frames=[]), ValueError, r"single_frames: an empty list"),
])
def test_bad_single_frame_settings(tmp_path: Path, edit, error, message):
    entry = single_frame_entry(tmp_path)
    edit(entry)
    with pytest.raises(error, match=message):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)


@pytest.mark.parametrize("edit, message", [
    (lambda e: e.update(colour="red"), r"datasets.toy: unknown keys \['colour'\]"),
    (lambda e: e.pop("exclude"), r"datasets.toy: missing keys \['exclude'\]"),
    (lambda e: e.update(feature_layout="i3d"), r"feature_layout: 'i3d' is not one of"),
    (lambda e: e["sources"].update(labels="x"), r"datasets.toy.sources: unknown file groups \['labels'\]"),
    (lambda e: e.update(source="zenodo"), r"datasets.toy.source: unknown source 'zenodo'"),
    (lambda e: e.update(splits={"train": "test", "test": "test"}), r"datasets.toy.splits: each split needs its own"),
])
def test_bad_registry_entries(tmp_path: Path, edit, message):
    entry = make_entry(tmp_path, features=False)
    edit(entry)
    with pytest.raises(ValueError, match=message):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)


def test_largest_length_mismatch_matches_a_loop():
    rng = np.random.default_rng(3)
    for _ in range(30):
        videos = [f"v{i}" for i in range(int(rng.integers(1, 12)))]
        durations = {v: float(rng.uniform(1, 300)) for v in videos}
        num_snippets = {v: max(1, int(durations[v] * 25 / 16 + rng.normal(0, 3))) for v in videos}
        worst, mismatch = largest_length_mismatch(videos, num_snippets, durations, 25 / 16)
        video, expected = largest_mismatch(videos, num_snippets, durations, 25, 16)
        assert videos[worst] == video and mismatch[worst] == pytest.approx(expected, abs=1e-9)


def test_an_unreachable_host_stops_fetch_with_one_message_naming_the_mirror(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{s.getsockname()[1]}/data"
    entry = make_entry(tmp_path)
    entry["sources"].update(gt=f"{host}/gt.json", fps={"url": f"{host}/fps.json", "sha256": "a" * 64},
                            ambiguous=f"{host}/Ambiguous_test.txt")
    with pytest.raises(DataError) as info:
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    message = str(info.value)
    assert message.startswith(f"datasets.toy.sources.gt (url {host}/gt.json): cannot reach 127.0.0.1 "
                              "(connection refused). Without internet, put a copy of gt.json")
    assert "`dvc exp run -S datasets.toy.mirror=/path/to/copies`" in message
    assert ("will need a copy there too: datasets.toy.sources.fps (fps.json), datasets.toy.sources.ambiguous "
            "(Ambiguous_test.txt).") in message
    assert "partial" not in message and "\n" not in message and not (tmp_path / "ds").exists()
