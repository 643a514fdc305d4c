"""Where input files come from: a local path, an HTTP(S) URL or Google Drive; checked, cached, unpacked.

A *source* is one value in params.yaml (a dataset's file group, a locator's
results file):

    null                                   absent
    "data/features" or "/abs/gt.json"      a local file or directory (relative to the
                                           repository root), used in place
    "https://host/path/gt.json"            downloaded (a drive.google.com link goes through gdown)
    {path: ..., copy: true, sha256: ...}   local; `copy` asks the consumer to copy it
    {url: ..., sha256: ...}                downloaded over HTTP(S)
    {gdrive: <file id or share link>, sha256: ...}   downloaded with gdown

Downloads land in a cache outside DVC's outputs (`$TSPNET_CACHE`, default
`~/.cache/tspnet`), so a rerun does not download again. A download is written
to a `.partial` file, resumed with an HTTP Range request after an
interruption (or restarted when the server ignores the range), checked
against its sha256 and only then renamed into place: a file under its final
name is always complete and verified. A `.tar`, `.tar.gz` or `.zip` archive
(recognised by its content) is unpacked once into the cache; an archive
member that would land outside the target, a link, or a device or other
special file is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from tspnet import console
from tspnet.files import DataError, atomic_dir

log = logging.getLogger(__name__)

CACHE_ENV = "TSPNET_CACHE"
SOURCE_KINDS = ("path", "url", "gdrive")
SOURCE_OPTIONS = ("copy", "sha256")
GDRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
CHUNK = 1 << 20  # bytes per read while downloading and hashing
DOWNLOAD_ATTEMPTS = 3  # transfers per download before giving up (each resumes the last)
RETRY_BACKOFF_S = 2.0  # wait before attempt k+1: k times this
TIMEOUT_S = 60.0  # seconds without a byte before a transfer counts as interrupted
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class SourceError(DataError):
    """A source cannot be read, downloaded, verified or unpacked."""


@dataclass(frozen=True)
class Source:
    """One parsed source: where it is, what it must hash to, and whether the consumer copies it."""

    kind: str  # "path", "url" or "gdrive"
    location: str  # a path, a URL, or a Google Drive file id / share link
    sha256: str | None = None
    copy: bool = False
    where: str = "source"  # the params key it came from, for messages

    def describe(self) -> str:
        return f"{self.where} ({self.kind} {self.location})"


def parse_source(spec: Any, where: str) -> Source | None:
    """A Source from its params value (see the module docstring); None for `null`."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return _source_from_string(spec, where, sha256=None, copy=False)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a path, a URL or a mapping with one of {SOURCE_KINDS}, got {spec!r}")
    kinds = [k for k in SOURCE_KINDS if k in spec]
    if len(kinds) != 1:
        raise ValueError(f"{where}: a source mapping needs exactly one of {SOURCE_KINDS}, got keys {sorted(spec)}")
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind, *SOURCE_OPTIONS})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (a {kind} source takes {[kind, *SOURCE_OPTIONS]})")
    location = spec[kind]
    if not isinstance(location, str) or not location.strip():
        raise ValueError(f"{where}.{kind}: expected a non-empty string, got {location!r}")
    copy = spec.get("copy", False)
    if not isinstance(copy, bool):
        raise ValueError(f"{where}.copy: expected true or false, got {copy!r}")
    sha256 = _checked_sha256(spec.get("sha256"), f"{where}.sha256")
    if kind == "path":
        return Source("path", location, sha256, copy, where)
    if kind == "gdrive":
        return Source("gdrive", location.strip(), sha256, copy, where)
    source = _source_from_string(location, where, sha256, copy)
    if source.kind == "path":
        raise ValueError(f"{where}.url: {location!r} is not an http(s) URL")
    return source


def _source_from_string(text: str, where: str, sha256: str | None, copy: bool) -> Source:
    text = text.strip()
    if not text:
        raise ValueError(f"{where}: empty source")
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https"):
        kind = "gdrive" if parsed.hostname in GDRIVE_HOSTS else "url"
        return Source(kind, text, sha256, copy, where)
    if len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive, i.e. a path
        raise ValueError(f"{where}: unsupported scheme {parsed.scheme!r} in {text!r} (use a path, http(s) or gdrive)")
    return Source("path", text, sha256, copy, where)


def _checked_sha256(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256_PATTERN.match(value.strip().lower()):
        raise ValueError(f"{where}: expected 64 hexadecimal digits or null, got {value!r}")
    return value.strip().lower()


# ----------------------------------------------------------------------------- materialising


def cache_dir() -> Path:
    """Where downloads and unpacked archives live: $TSPNET_CACHE, else ~/.cache/tspnet."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tspnet").expanduser().resolve()


def materialize(source: Source, progress: bool = True, unpack: bool = True) -> Path:
    """A local file or directory with the source's content: downloaded, verified and unpacked as needed.

    `unpack=False` returns an archive as the file it is (a PyTorch checkpoint is a zip archive).
    """
    if source.kind == "path":
        path = Path(source.location).expanduser()
        if not path.exists():
            raise SourceError(f"{source.where}: {path.resolve()} does not exist")
        path = path.resolve()
        if source.sha256 is not None:
            if path.is_dir():
                raise SourceError(f"{source.where}: a sha256 applies to a file, but {path} is a directory")
            verify_sha256(path, source, delete=False)
    elif source.kind == "url":
        path = download_url(source, progress)
    else:
        path = download_gdrive(source, progress)
    return unpacked(path, source) if unpack and path.is_file() and archive_format(path) else path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, source: Source, delete: bool) -> None:
    """Raise (deleting the file when asked) unless `path` hashes to the source's sha256."""
    actual = sha256_file(path)
    if actual == source.sha256:
        return
    if delete:
        path.unlink()
    raise SourceError(
        f"{source.describe()}: sha256 is {actual}, expected {source.sha256}. The file is corrupt or has "
        f"changed upstream{' (the bad copy was deleted: rerun to download it again)' if delete else ''}. "
        f"If you trust this file, set {source.where}.sha256 to {actual} (or to null to skip the check); "
        "the checksums shipped in params.yaml were computed from the copies distributed with the "
        "project's reference data."
    )


def _download_target(source: Source, name: str) -> Path:
    # Verified content lands under its checksum, so a changed sha256 never reuses a stale file.
    key = source.sha256 or "loc-" + hashlib.sha256(source.location.encode()).hexdigest()[:24]
    return cache_dir() / "downloads" / key / _safe_name(name)


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._")
    return cleaned or "download"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` so parallel experiments do not write one partial file."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Interrupted(Exception):
    """The transfer stopped before the announced end; the partial file is kept for a resume."""


def download_url(source: Source, progress: bool = True) -> Path:
    """Download an HTTP(S) URL into the cache (resuming a partial file), verify it, land it atomically."""
    name = PurePosixPath(urllib.parse.urlparse(source.location).path).name
    final = _download_target(source, name)
    with _locked(final.parent):
        if final.is_file():
            return final
        partial = final.with_name(final.name + ".partial")
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                _http_transfer(source, partial, progress, TIMEOUT_S)
                break
            except _Interrupted as exc:
                log.warning("%s: %s (attempt %d of %d)", source.describe(), exc, attempt, DOWNLOAD_ATTEMPTS)
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise SourceError(
                        f"{source.describe()}: the download failed {DOWNLOAD_ATTEMPTS} times (last: {exc}). The "
                        f"{partial.stat().st_size if partial.exists() else 0} bytes received are kept in "
                        f"{partial}; rerun the stage to resume."
                    ) from None
                time.sleep(RETRY_BACKOFF_S * attempt)
        if source.sha256 is not None:
            verify_sha256(partial, source, delete=True)
        os.replace(partial, final)
    return final


def _http_transfer(source: Source, partial: Path, progress: bool, timeout_s: float) -> None:
    """Append the rest of the URL's body to `partial`, or restart it when the server cannot resume."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    request = urllib.request.Request(source.location, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range is past the end: the partial file is unusable
            partial.unlink()
            raise _Interrupted("the server refused to resume; restarting from the beginning") from None
        if exc.code >= 500:  # the server's trouble, often passing
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        raise SourceError(f"{source.describe()}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Interrupted(f"cannot connect ({exc})") from None
    with response:
        if have and response.status == 200:
            log.info("%s: the server ignored the resume request; restarting", source.describe())
            have = 0
        elif have and not (response.status == 206 and _range_start(response) == have):
            partial.unlink()
            raise _Interrupted(f"unexpected answer to a resume request (HTTP {response.status}, "
                               f"Content-Range {response.headers.get('Content-Range')!r}); restarting")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = have
        try:
            with open(partial, "ab" if have else "wb") as f, console.progress(
                    None, partial.name.removesuffix(".partial"), "B", progress, total=total, initial=have,
                    unit_scale=True, unit_divisor=1024) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            raise _Interrupted(f"connection lost after {received} of {total or '?'} bytes ({exc!r})") from None
    if total is not None and received != total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def download_gdrive(source: Source, progress: bool = True) -> Path:
    """Download a Google Drive file with gdown (which resumes its own partial file), verify, land atomically."""
    import gdown

    final = _download_target(source, "gdrive")
    with _locked(final.parent):
        if final.is_file():
            return final
        staging = final.with_name(final.name + ".download")
        # A share link goes in as a URL; a bare file id as `id`.
        target = {"url": source.location} if "/" in source.location else {"id": source.location}
        try:
            gdown.download(output=str(staging), quiet=not progress, resume=True, **target)
        except (gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError, OSError) as exc:
            raise SourceError(f"{source.describe()}: Google Drive download failed ({exc}). Partial bytes stay "
                              f"in {final.parent}; rerun the stage to resume.") from exc
        if not staging.is_file():
            raise SourceError(f"{source.describe()}: gdown reported success but wrote no file at {staging}")
        if source.sha256 is not None:
            verify_sha256(staging, source, delete=True)
        os.replace(staging, final)
    return final


# ----------------------------------------------------------------------------- archives


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


def unpacked(archive: Path, source: Source) -> Path:
    """The archive's content in the cache, unpacked once per (path, size, mtime) of the archive."""
    info = archive.stat()
    key = hashlib.sha256(f"{archive}\0{info.st_size}\0{info.st_mtime_ns}".encode()).hexdigest()[:24]
    target = cache_dir() / "unpacked" / key
    with _locked(target.parent):
        if not target.is_dir():
            log.info("%s: unpacking %s into %s", source.where, archive, target)
            with atomic_dir(target) as tmp:
                unpack(archive, tmp, source.where)
    return target


def unpack(archive: Path, dest: Path, where: str = "archive") -> None:
    """Unpack a zip or (gzipped) tar archive into the existing directory `dest`, refusing unsafe members."""
    kind = archive_format(archive)
    try:
        if kind == "zip":
            _unpack_zip(archive, dest, where)
        elif kind in ("tar", "tar.gz"):
            _unpack_tar(archive, dest, where)
        else:
            raise SourceError(f"{where}: {archive} is not a zip, tar or tar.gz archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise SourceError(f"{where}: {archive} is not a readable archive ({exc})") from exc


def _refuse(where: str, archive: Path, member: str, problem: str) -> SourceError:
    return SourceError(f"{where}: {archive}: member {member!r} {problem}; refusing to unpack "
                       "(archives may hold only regular files and directories inside the target)")


def _check_member_path(name: str, dest: Path, where: str, archive: Path) -> None:
    root = dest.resolve()
    target = (root / name).resolve()
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or not target.is_relative_to(root):
        raise _refuse(where, archive, name, "would land outside the target directory")


def _unpack_tar(archive: Path, dest: Path, where: str) -> None:
    # One pass over the stream: each member is checked, then extracted (a .tar.gz is decompressed once).
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.issym() or member.islnk():
                raise _refuse(where, archive, member.name, f"is a link (to {member.linkname!r})")
            if not (member.isfile() or member.isdir()):
                raise _refuse(where, archive, member.name, "is a device, pipe or other special file")
            _check_member_path(member.name, dest, where, archive)
            tar.extract(member, dest, filter="data")


def _unpack_zip(archive: Path, dest: Path, where: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:  # check every member before writing any
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(where, archive, info.filename, "is a symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse(where, archive, info.filename, "is a device, pipe or other special file")
            _check_member_path(info.filename, dest, where, archive)
        for info in members:
            zf.extract(info, dest)

