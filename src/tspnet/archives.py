"""Safe unpacking of `.tar`, `.tar.gz` and `.zip` archives, recognised by their content.

Members are streamed one by one into a directory the caller provides (and
removes on failure): a member that would land outside it, a link, or a device
or other special file is refused, and so is an archive that unpacks to more
than `archives.max_unpacked_gib` or `archives.max_ratio` times its own size
(a zip bomb stops while it unpacks, not after).
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tspnet.files import DataError, flat, is_disk_full

GIB = 1 << 30
CHUNK = 1 << 20  # bytes per read while copying a member


class ArchiveError(DataError):
    """An archive cannot be read, or holds what must not be unpacked."""


class ArchiveDiskFull(ArchiveError):
    """The disk filled up while unpacking (what was written is the caller's to remove)."""


@dataclass(frozen=True)
class UnpackLimits:
    """params.yaml `archives`: the most an archive may unpack to, in bytes and in bytes per archive byte."""

    max_bytes: int = 64 * GIB
    max_ratio: float = 100.0

    @classmethod
    def from_params(cls, archives: dict[str, Any] | None) -> "UnpackLimits":
        if not archives:
            return cls()
        return cls(int(float(archives["max_unpacked_gib"]) * GIB), float(archives["max_ratio"]))



def archive_format(path: Path) -> str | None:
    """'zip', 'tar' or 'tar.gz' from the file's first bytes; None for anything else."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def unpack(archive: Path, dest: Path, where: str = "archive", limits: UnpackLimits = UnpackLimits()) -> None:
    """Unpack a zip or (gzipped) tar archive into the existing directory `dest`, refusing unsafe members.

    Members are streamed and counted: past `limits` the unpack stops with an
    error (the caller's temporary directory then goes with everything in it).
    """
    kind = archive_format(archive)
    budget = _Budget(archive, where, limits)
    try:
        if kind == "zip":
            _unpack_zip(archive, dest, where, budget)
        elif kind in ("tar", "tar.gz"):
            _unpack_tar(archive, dest, where, budget)
        else:
            raise ArchiveError(f"{where}: {archive} is not a zip, tar or tar.gz archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        if is_disk_full(exc):
            raise ArchiveDiskFull(f"{where}: the disk is full while unpacking {archive} into {dest.parent} "
                                  f"({budget.written} bytes written, all removed): free some space there and rerun"
                                  ) from None
        raise ArchiveError(f"{where}: {archive} is not a readable archive ({flat(exc)}); if it was downloaded, it is "
                          "deleted and fetched again on the next run") from None


class _Budget:
    """Bytes an archive may still unpack to: the smaller of archives.max_unpacked_gib and max_ratio x its size."""

    def __init__(self, archive: Path, where: str, limits: UnpackLimits):
        self.archive, self.where, self.limits = archive, where, limits
        self.size = archive.stat().st_size
        self.limit = min(limits.max_bytes, int(limits.max_ratio * max(self.size, 1)))
        self.written = 0

    def spend(self, count: int) -> None:
        self.written += count
        if self.written > self.limit:
            by_ratio = self.limit < self.limits.max_bytes
            rule = (f"archives.max_ratio = {self.limits.max_ratio:g} times its {self.size} bytes" if by_ratio else
                    f"archives.max_unpacked_gib = {self.limits.max_bytes / GIB:g} GiB")
            raise ArchiveError(f"{self.where}: {self.archive} unpacks to more than {self.limit} bytes "
                              f"({rule}); refusing to unpack it (a zip bomb?) and nothing was kept. If you trust "
                              "this archive, raise the limit in params.yaml (archives)")


def _copy_member(stream, target: Path, budget: _Budget) -> None:
    """Write one member's bytes to `target` (a new file with the umask's mode), counting them against the budget."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for block in iter(lambda: stream.read(CHUNK), b""):
            budget.spend(len(block))
            out.write(block)


def _refuse(where: str, archive: Path, member: str, problem: str) -> ArchiveError:
    return ArchiveError(f"{where}: {archive}: member {member!r} {problem}; refusing to unpack "
                       "(archives may hold only regular files and directories inside the target)")


def _member_target(name: str, dest: Path, where: str, archive: Path) -> Path:
    root = dest.resolve()
    target = (root / name).resolve()
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or not target.is_relative_to(root):
        raise _refuse(where, archive, name, "would land outside the target directory")
    return target


def _unpack_tar(archive: Path, dest: Path, where: str, budget: _Budget) -> None:
    # One pass over the stream: each member is checked, then written (a .tar.gz is decompressed once).
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.issym() or member.islnk():
                raise _refuse(where, archive, member.name, f"is a link (to {member.linkname!r})")
            if not (member.isfile() or member.isdir()):
                raise _refuse(where, archive, member.name, "is a device, pipe or other special file")
            target = _member_target(member.name, dest, where, archive)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if member.size > budget.limit - budget.written:  # declared too large: refused before writing
                budget.spend(member.size)
            _copy_member(tar.extractfile(member), target, budget)


def _unpack_zip(archive: Path, dest: Path, where: str, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:  # check every member before writing any
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(where, archive, info.filename, "is a symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse(where, archive, info.filename, "is a device, pipe or other special file")
            _member_target(info.filename, dest, where, archive)
        if sum(info.file_size for info in members) > budget.limit:  # as declared; the copy counts what comes
            budget.spend(sum(info.file_size for info in members))
        for info in members:
            target = _member_target(info.filename, dest, where, archive)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as stream:
                    _copy_member(stream, target, budget)
