"""Atomic outputs and safe inputs."""

import json

import numpy as np
import pytest

from tspnet.files import DataError, atomic_dir, load_npy, load_npz, read_json, save_npz, write_json


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        write_json(target, {"a": float("nan")})  # refused before anything is written
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_interrupted_stage_leaves_no_half_written_directory(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "first.txt").write_text("complete")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["first.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_readers_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_npz_and_npy_never_unpickle(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="objects.npy"):
        load_npy(tmp_path / "objects.npy")
    with pytest.raises(TypeError):
        save_npz(tmp_path / "o.npz", a=np.array([None], dtype=object))
    save_npz(tmp_path / "ok.npz", a=np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="field 'a': contains NaN"):
        load_npz(tmp_path / "ok.npz", {"a": "f"})
    with pytest.raises(DataError, match="dtype float64, expected kind 'i'"):
        load_npz(tmp_path / "ok.npz", {"a": "i"})
