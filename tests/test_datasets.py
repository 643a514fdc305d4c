"""The dataset layout: manifest compatibility, lengths, feature checks, points, in-place features."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.reference.fetch_loop import first_nonfinite_row
from tspnet import datasets
from tspnet.datasets import (Dataset, DatasetInfo, read_points_table, scan_feature_file,
                             validate_points, write_manifest)
from tspnet.files import DataError

OLD_MANIFEST_KEYS = ["name", "classes", "feature_fps", "snippet_frames", "feature_layout", "feature_dim",
                     "tiou_thresholds", "filter_ambiguous", "videos", "num_snippets"]


def make_info(**overrides) -> DatasetInfo:
    fields = dict(name="toy", classes=("Jump", "Run"), feature_fps=25.0, snippet_frames=16, feature_layout="lacp",
                  videos={"train": ("v1", "v2"), "test": ("t1",)}, num_snippets={"v1": 50, "v2": 20, "t1": 30},
                  feature_dim=6)
    fields.update(overrides)
    return DatasetInfo(**fields)


# ----------------------------------------------------------------------------- the manifest


def test_manifest_without_new_fields_is_unchanged_and_still_reads():
    info = make_info()
    assert list(info.to_json()) == OLD_MANIFEST_KEYS  # a synthetic manifest stays byte-identical
    old = {k: v for k, v in info.to_json().items()}
    assert DatasetInfo.from_json(old) == info


def test_manifest_round_trips_the_real_data_fields():
    info = make_info(durations={"v1": 32.0, "v2": 12.8, "t1": 19.2}, feature_root="/data/features",
                     feature_fingerprint={"train/rgb/v1.npy": (1024, "ab" * 32)})
    obj = json.loads(json.dumps(info.to_json()))
    assert DatasetInfo.from_json(obj) == info


@pytest.mark.parametrize("overrides, message", [
    (dict(durations={"v1": 0.0}), "'durations': 0.0 is not a positive duration"),
    (dict(durations={"v1": float("nan")}), "is not a positive duration"),
    (dict(feature_dim=None, num_snippets={}, feature_root="/x"), "set, but the dataset has no features"),
])
def test_manifest_validation(overrides, message):
    with pytest.raises(DataError, match=message):
        make_info(**overrides).validate()


def test_lengths_in_snippets_from_features_then_durations():
    assert make_info().lengths_in_snippets(["t1", "v1"]).tolist() == [30.0, 50.0]
    # Without features: 32 s * 25/16 = 50 snippets, 12.8 s -> 20.
    no_features = make_info(feature_dim=None, num_snippets={}, durations={"v1": 32.0, "v2": 12.8})
    assert no_features.lengths_in_snippets(["v1", "v2"]).tolist() == [50.0, 20.0]
    assert no_features.lengths_in_snippets(["v1", "t1"]) is None  # t1 has no duration
    assert make_info(feature_dim=None, num_snippets={}).lengths_in_snippets(["v1"]) is None


# ----------------------------------------------------------------------------- feature files


def test_scan_feature_file_finds_the_first_bad_row_like_a_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(datasets, "FINITE_CHECK_ROWS", 7)  # blocks of 7 rows: bad rows fall on every offset
    rng = np.random.default_rng(0)
    for trial in range(40):
        array = rng.standard_normal((int(rng.integers(1, 40)), 3)).astype(np.float32)
        for _ in range(int(rng.integers(0, 3))):
            array[rng.integers(len(array)), rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
        path = tmp_path / f"{trial}.npy"
        np.save(path, array)
        expected = first_nonfinite_row(array)
        if expected is None:
            assert scan_feature_file(path, "v") == array.shape
        else:
            with pytest.raises(DataError, match=rf"{trial}.npy, video v: .*NaN or infinity \(first at snippet "
                                                rf"{expected}\)"):
                scan_feature_file(path, "v")


@pytest.mark.parametrize("array, message", [
    (np.zeros(5, np.float32), "field 'shape': expected \\[snippets, dims\\]"),
    (np.zeros((5, 2), np.int64), "field 'dtype': expected floating point"),
    (np.zeros((0, 2), np.float32), "empty array"),
])
def test_scan_feature_file_rejects_bad_arrays(tmp_path: Path, array, message):
    np.save(tmp_path / "v.npy", array)
    with pytest.raises(DataError, match=message):
        scan_feature_file(tmp_path / "v.npy", "v")


def write_features(root: Path, info: DatasetInfo, rng: np.random.Generator) -> None:
    for split, videos in info.videos.items():
        for video in videos:
            for stream, dims in (("rgb", 4), ("flow", 2)):
                folder = root / split / stream
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{video}.npy", rng.standard_normal((info.num_snippets[video], dims)).astype(np.float32))


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*.npy")}


def test_features_read_in_place_and_changes_are_caught(tmp_path: Path):
    outside = tmp_path / "elsewhere"
    write_features(outside, make_info(), np.random.default_rng(1))
    info = make_info(feature_root=str(outside), feature_fingerprint=fingerprint(outside))
    write_manifest(tmp_path / "ds", info)
    dataset = Dataset(tmp_path / "ds")
    features = dataset.read_features("train", "v1")
    expected = np.concatenate([np.load(outside / "train/rgb/v1.npy"), np.load(outside / "train/flow/v1.npy")], 1)
    assert np.array_equal(features, expected)

    path = outside / "train" / "flow" / "v1.npy"
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert np.array_equal(dataset.read_features("train", "v1"), expected)  # touched, same content: still valid
    changed = np.load(path)
    changed[0, 0] += 1.0
    np.save(path, changed)  # same size, and the old timestamp restored: only the content tells
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with pytest.raises(DataError, match=r"flow/v1.npy, video v1: this feature file changed content \(same size.*"
                                        r"dvc repro -f fetch"):
        dataset.read_features("train", "v1")


def test_missing_features_name_the_param_to_set(tmp_path: Path):
    write_manifest(tmp_path, make_info(name="thumos14", feature_dim=None, num_snippets={}))
    dataset = Dataset(tmp_path)
    for call in (lambda: dataset.read_features("test", "t1"), lambda: dataset.feature_store("train")):
        with pytest.raises(DataError, match=r"fetched without features.*datasets\.thumos14\.sources\.features"):
            call()


# ----------------------------------------------------------------------------- points


def write_points(path: Path, rows: list[str]) -> None:
    path.write_text("class,class_index,start_frame,stop_frame,video_id,point\n" + "".join(r + "\n" for r in rows))


def test_points_past_the_duration_are_refused_and_rows_keep_their_file_numbers(tmp_path: Path):
    info = make_info(feature_dim=None, num_snippets={}, durations={"v1": 10.0, "v2": 10.0, "t1": 10.0})
    fps = {"v1": 30.0, "v2": 30.0}
    path = tmp_path / "points.csv"
    # v1 lasts 10 s at 30 fps: frame 300 is its end (kept), frame 301 lies past it.
    write_points(path, ["Run,1,0,10,gone,5", "Jump,0,280,310,v1,300", "Run,1,290,310,v2,301"])
    table = read_points_table(path)
    table = table[table["video_id"] != "gone"]  # filtering keeps the file's row numbers
    with pytest.raises(DataError, match=r"points.csv, video v2, field 'point', row 4: frame lies past the end of "
                                        r"the video's duration \(1 row\(s\) in all\)"):
        validate_points(table, path, info, fps)
    points = validate_points(table.iloc[:1], path, info, fps)
    assert points["time"].tolist() == [300 * 25 / (30 * 16)]  # frame 300 = 15.625 snippets


def test_points_of_unknown_classes_name_file_video_and_field(tmp_path: Path):
    path = tmp_path / "points.csv"
    write_points(path, ["Jump,0,0,10,v1,5", "Swim,1,0,10,v2,5"])
    with pytest.raises(DataError, match=r"points.csv, video v2, field 'class', row 3: unknown class"):
        datasets.read_points(path, make_info(), {"v1": 30.0, "v2": 30.0})


def test_points_table_needs_its_columns(tmp_path: Path):
    (tmp_path / "p.csv").write_text("video_id,point\nv1,3\n")
    with pytest.raises(DataError, match="missing columns"):
        read_points_table(tmp_path / "p.csv")

