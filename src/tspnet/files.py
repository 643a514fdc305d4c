"""Reading and writing files safely.

Every output is written to a temporary sibling and renamed into place, so an
interrupted stage never leaves a half-written file. The temporary is locked
(flock) while its writer lives, so that the next writer of the same output
removes what a killed run left behind, and never a live writer's temporary.
Outputs get the usual modes for the user's umask (0644 / 0755 typically), not
the private 0600 / 0700 of a temporary. Every input is validated and a
failure names the file (and, where the caller knows them, the video and the
field).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class DataError(ValueError):
    """An input file is missing, malformed or inconsistent with the dataset."""


class ParamsError(DataError):
    """A params.yaml value is invalid: the message names the key, the value and what is allowed."""


NPY_MAGIC = b"\x93NUMPY"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def flat(value: object) -> str:
    """`value` as text on one line (library messages quoted inside ours may span several)."""
    return " ".join(str(value).split())


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stale_pattern(name: str) -> re.Pattern:
    # mkstemp / mkdtemp names: the prefix, 8 random characters, the suffix.
    return re.compile(rf"^\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)$")


def _remove_if_unlocked(path: Path) -> bool:
    """Remove a temporary whose writer is gone (its flock is free); keep one still being written."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer holds it
    finally:
        os.close(fd)  # closing drops our lock too; the name is removed next
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return True


def remove_stale_temporaries(directory: Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries of killed writers in `directory` (those of output `name`, or all); return them."""
    if not directory.is_dir():
        return []
    pattern = _stale_pattern(name) if name is not None else re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
    removed = [p for p in sorted(directory.iterdir()) if pattern.match(p.name) and _remove_if_unlocked(p)]
    return removed


def _lock(fd: int) -> None:
    """flock a temporary for its writer. Where the filesystem has no flock, others cannot take the lock
    either, so they leave the temporary alone: it is then never removed as stale, which is safe."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """flock `path` (a file or a directory) for as long as the block runs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)


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
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        _lock(fd)  # held until the rename: a live temporary is never taken for stale
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp made it 0600
        os.replace(tmp_path, path)
    finally:
        os.close(fd)
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; swap it in for `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _held(tmp):
            yield tmp
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
            if path.exists() or path.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                with _held(old):
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
        raise DataError(f"{path}: not valid JSON ({flat(exc)})") from exc


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
    with open(path, "rb") as f:
        if not f.read(4).startswith(b"PK"):  # np.load would otherwise try, and advise, pickle
            raise DataError(f"{path}: not an .npz archive (empty or another format); rerun the stage that writes it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in fields if name not in archive.files]
            out = {name: archive[name] for name in fields if name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if is_disk_full(exc):
            raise
        problem = "holds Python objects, which are never unpickled" if "pickle" in str(exc) else flat(exc)
        raise DataError(f"{path}: cannot read ({problem}); rerun the stage that writes it") from None
    if missing:
        raise DataError(f"{path}: missing arrays {missing}")
    for name, kind in fields.items():
        if out[name].dtype.kind != kind:
            raise DataError(describe(path, field=name) + f": dtype {out[name].dtype}, expected kind {kind!r}")
        if kind == "f" and not np.all(np.isfinite(out[name])):
            raise DataError(describe(path, field=name) + ": contains NaN or infinity")
    return out


def npy_problem(head: bytes) -> str | None:
    """Why bytes starting with `head` are not a .npy array, or None when the magic is there."""
    if not head:
        return "the file is empty"
    if not head.startswith(NPY_MAGIC):
        return f"not a .npy array (it starts with {head[:16]!r}, not the .npy magic {NPY_MAGIC!r})"
    return None


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load one .npy array without pickle (memory-mapped when asked); any damage is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        problem = npy_problem(f.read(len(NPY_MAGIC)))
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "pickle" in str(exc) or "Python objects" in str(exc):  # numpy advises loading it unsafely: never
            raise DataError(f"{path}: holds Python objects (a pickled array), which this project never "
                            "unpickles; save plain numbers (np.save of a float or string array)") from None
        raise DataError(f"{path}: damaged or truncated .npy array ({flat(exc)}); re-create or re-download it") from None
    except (OSError, EOFError) as exc:
        if is_disk_full(exc):
            raise
        raise DataError(f"{path}: damaged or truncated .npy array ({flat(exc) or type(exc).__name__}); re-create or "
                        "re-download it") from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content (hex); the hash every checksum and fingerprint of this project uses."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
