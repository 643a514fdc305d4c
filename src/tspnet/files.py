"""Reading and writing files safely.

Every output is written to a temporary sibling and renamed into place, so an
interrupted stage never leaves a half-written file. Every input is validated
and a failure names the file (and, where the caller knows them, the video and
the field).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class DataError(ValueError):
    """An input file is missing, malformed or inconsistent with the dataset."""


def describe(path: str | os.PathLike, video: str | None = None, field: str | None = None) -> str:
    """`file`, `file, video X`, `file, video X, field Y`: the prefix of every validation message."""
    parts = [str(path)]
    if video is not None:
        parts.append(f"video {video}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; swap it in for `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def positive_numbers(path: str | os.PathLike, table: Any, videos: list[str] | None, field: str) -> dict[str, float]:
    """{video: value} from a JSON object of positive numbers (fps, seconds), validated.

    `videos=None` takes every entry; otherwise only those videos, skipping the ones the table lacks.
    """
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a JSON object mapping video id to {field}")
    out = {}
    for video in table if videos is None else [v for v in videos if v in table]:
        try:
            value = float(table[video])
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise DataError(describe(path, str(video), field) + f": {table[video]!r} is not a positive number")
        out[str(video)] = value
    return out


def _finite_or_raise(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"refusing to write a non-finite number ({obj}) to JSON")
    if isinstance(obj, dict):
        for value in obj.values():
            _finite_or_raise(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _finite_or_raise(value)
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically; NaN and infinity are refused (they are not JSON)."""
    _finite_or_raise(obj)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, allow_nan=False)
            f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing or malformed file is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays uncompressed and atomically. Object arrays are refused: readers never unpickle."""
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(f"{path}: array {name!r} has dtype object, which would need pickle to read")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | os.PathLike, fields: dict[str, str]) -> dict[str, np.ndarray]:
    """Load named arrays from an .npz without pickle.

    `fields` maps each required array to the numpy dtype kind it must have
    ('f' float, 'i' signed int, 'u' unsigned, 'b' bool, 'U' str).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in fields if name not in archive.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}")
            out = {name: archive[name] for name in fields}
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    for name, kind in fields.items():
        if out[name].dtype.kind != kind:
            raise DataError(describe(path, field=name) + f": dtype {out[name].dtype}, expected kind {kind!r}")
        if kind == "f" and not np.all(np.isfinite(out[name])):
            raise DataError(describe(path, field=name) + ": contains NaN or infinity")
    return out


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load one .npy array without pickle (memory-mapped when asked)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from exc
