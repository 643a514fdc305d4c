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
against its sha256 and checked for what the consumer needs (JSON that
parses, a .npy header, an archive signature; never an HTML page such as a
Google Drive quota or virus-scan page or a captive portal), and only then
renamed into place: a file under its final name is always complete and
verified, and a failed check deletes the download and names the URL and the
param. A cached file is checked again (cheaply) each time it is reused, so a
cache written by an older version cannot poison a run either.

A `.tar`, `.tar.gz` or `.zip` archive (recognised by its content) is unpacked
once into the cache, safely (`tspnet.archives`). A refused or
unreadable download is deleted with everything unpacked from it; the
temporaries of a killed unpack are removed by the next run.

Without internet, a *mirror* (a local folder of copies, one registry param
per dataset or locator) stands in for the URLs: a URL source is looked up
there by its upstream file name (the last part of the URL path), anywhere
below the folder, and used only if its sha256 matches; this happens before
any download. A URL whose host cannot be reached (no DNS answer, connection
refused, no route) fails at once, without the retries meant for transfers
that break off half way, with one message that says which param to set.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from tspnet import console
from tspnet.archives import ArchiveDiskFull, ArchiveError, UnpackLimits, archive_format, unpack
from tspnet.files import DataError, ParamsError, atomic_dir, flat, is_disk_full, remove_stale_temporaries

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
JSON_PARSE_MAX_BYTES = 256 << 20  # a landing JSON download is parsed whole up to this size, else its start is checked


# What a consumer needs a source's file to be; checked before a download enters the cache.
CONTENT_KINDS = {
    "json": "a JSON file",
    "csv": "a CSV text file",
    "text": "a text file",
    "npy": "a numpy .npy array",
    "json|npy": "a JSON file or a numpy .npy array",
    "archive": "a .tar, .tar.gz or .zip archive",
    "checkpoint": "a PyTorch checkpoint (torch.save's file)",
}


class SourceError(DataError):
    """A source cannot be read, downloaded, verified or unpacked."""


class SourceUnreachable(SourceError):
    """The host of a URL cannot be reached at all (no network, DNS failure, connection refused)."""

    def __init__(self, source: "Source", reason: str) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"{source.describe()}: cannot reach {urllib.parse.urlparse(source.location).hostname} "
                         f"({reason}). Without internet, download the file elsewhere and set {source.where} "
                         "to its local path.")


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
        raise ParamsError(f"{where}: expected a path, a URL or a mapping with one of {SOURCE_KINDS}, got {spec!r}")
    kinds = [k for k in SOURCE_KINDS if k in spec]
    if len(kinds) != 1:
        raise ParamsError(f"{where}: a source mapping needs exactly one of {SOURCE_KINDS}, got keys {sorted(spec)}")
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind, *SOURCE_OPTIONS})
    if unknown:
        raise ParamsError(f"{where}: unknown keys {unknown} (a {kind} source takes {[kind, *SOURCE_OPTIONS]})")
    location = spec[kind]
    if not isinstance(location, str) or not location.strip():
        raise ParamsError(f"{where}.{kind}: expected a non-empty string, got {location!r}")
    copy = spec.get("copy", False)
    if not isinstance(copy, bool):
        raise ParamsError(f"{where}.copy: expected true or false, got {copy!r}")
    sha256 = _checked_sha256(spec.get("sha256"), f"{where}.sha256")
    if kind == "path":
        return Source("path", location, sha256, copy, where)
    if kind == "gdrive":
        return Source("gdrive", location.strip(), sha256, copy, where)
    source = _source_from_string(location, where, sha256, copy)
    if source.kind == "path":
        raise ParamsError(f"{where}.url: {location!r} is not an http(s) URL")
    return source


def _source_from_string(text: str, where: str, sha256: str | None, copy: bool) -> Source:
    text = text.strip()
    if not text:
        raise ParamsError(f"{where}: empty source")
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https"):
        kind = "gdrive" if parsed.hostname in GDRIVE_HOSTS else "url"
        return Source(kind, text, sha256, copy, where)
    if len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive, i.e. a path
        raise ParamsError(f"{where}: unsupported scheme {parsed.scheme!r} in {text!r} (use a path, http(s) or gdrive)")
    return Source("path", text, sha256, copy, where)


def _checked_sha256(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # An unquoted checksum of digits only (or digits and one `e`) is a number to YAML.
        raise ParamsError(f"{where}: expected 64 hexadecimal digits in quotes, got the number {value!r}: YAML "
                          f"reads an unquoted checksum made of digits as a number; quote it ({where.rsplit('.', 1)[-1]}"
                          ": '<the 64 digits>')")
    if not isinstance(value, str) or not SHA256_PATTERN.match(value.strip().lower()):
        raise ParamsError(f"{where}: expected 64 hexadecimal digits or null, got {value!r}")
    return value.strip().lower()


# ----------------------------------------------------------------------------- materialising


def cache_dir() -> Path:
    """Where downloads and unpacked archives live: $TSPNET_CACHE, else ~/.cache/tspnet."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tspnet").expanduser().resolve()


def materialize(source: Source, progress: bool = True, expect: str | None = None,
                limits: UnpackLimits | None = None, mirror: "Mirror | None" = None, unpack: bool = True) -> Path:
    """A local file or directory with the source's content: downloaded, verified and unpacked as needed.

    `expect` (a key of CONTENT_KINDS, or None for anything but an HTML page)
    is what a download must be before it is cached; local files are the
    consumer's to validate. An archive is unpacked within `limits`, unless
    `unpack` is False (a torch checkpoint is a zip file). With a mirror, a URL
    source is taken from it when a copy is there (see `find_in_mirror`).
    """
    found = find_in_mirror(source, mirror) if mirror is not None else None
    if found is not None:
        path = found
    elif source.kind == "path":
        path = Path(source.location).expanduser()
        if not path.exists():
            raise SourceError(f"{source.where}: {path.resolve()} does not exist")
        path = path.resolve()
        if source.sha256 is not None:
            if path.is_dir():
                raise SourceError(f"{source.where}: a sha256 applies to a file, but {path} is a directory")
            verify_sha256(path, source, delete=False)
    elif source.kind == "url":
        path = download_url(source, progress, expect)
    else:
        path = download_gdrive(source, progress, expect)
    if not (unpack and path.is_file() and archive_format(path)):
        return path
    try:
        return unpacked(path, source, limits or UnpackLimits())
    except SourceError as exc:
        if source.kind == "path" or found is not None:
            raise
        path.unlink(missing_ok=True)  # never keep a download that cannot be unpacked
        raise SourceError(f"{exc} The download was deleted from the cache.") from None


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


def download_url(source: Source, progress: bool = True, expect: str | None = None) -> Path:
    """Download an HTTP(S) URL into the cache (resuming a partial file), verify it, land it atomically."""
    name = PurePosixPath(urllib.parse.urlparse(source.location).path).name
    final = _download_target(source, name)
    with _locked(final.parent):
        if _reusable(final, source, expect):
            return final
        partial = final.with_name(final.name + ".partial")
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                _http_transfer(source, partial, progress, TIMEOUT_S)
                break
            except _Interrupted as exc:
                log.warning("%s: %s (attempt %d of %d)", source.describe(), exc, attempt, DOWNLOAD_ATTEMPTS)
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise SourceError(f"{source.describe()}: the download failed {DOWNLOAD_ATTEMPTS} times "
                                      f"(last: {flat(exc)}). {_kept_part(partial)}") from None
                time.sleep(RETRY_BACKOFF_S * attempt)
        if source.sha256 is not None:
            verify_sha256(partial, source, delete=True)
        problem = content_problem(partial, expect)
        if problem is not None:
            raise _refuse_download(source, partial, problem)
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
        reason = unreachable_reason(exc)
        if reason is not None:  # no network or no such host: retrying in seconds will not help
            raise SourceUnreachable(source, reason) from None
        raise _Interrupted(f"cannot connect ({flat(exc)})") from None
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
                # read1: what has arrived, so that the bytes before a stall are kept for the resume
                for block in iter(lambda: response.read1(CHUNK), b""):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            raise _Interrupted(f"connection lost after {received} of {total or '?'} bytes "
                               f"({flat(repr(exc))})") from None
        except OSError as exc:
            if is_disk_full(exc):
                raise _disk_full(source, received, partial) from None
            raise
    if total is not None and received != total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def download_gdrive(source: Source, progress: bool = True, expect: str | None = None) -> Path:
    """Download a Google Drive file with gdown (which resumes its own partial file), verify, land atomically."""
    import gdown

    final = _download_target(source, "gdrive")
    with _locked(final.parent):
        if _reusable(final, source, expect):
            return final
        staging = final.with_name(final.name + ".download")
        # A share link goes in as a URL; a bare file id as `id`.
        target = {"url": source.location} if "/" in source.location else {"id": source.location}
        try:
            gdown.download(output=str(staging), quiet=not progress, resume=True, **target)
        except (gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError, OSError) as exc:
            if is_disk_full(exc):
                raise _disk_full(source, 0, final.parent) from None
            raise SourceError(f"{source.describe()}: Google Drive download failed "
                              f"({' '.join(str(exc).split())}). Partial bytes stay in {final.parent}; rerun the "
                              "stage to resume.") from None
        if not staging.is_file():
            raise SourceError(f"{source.describe()}: gdown reported success but wrote no file at {staging}")
        if source.sha256 is not None:
            verify_sha256(staging, source, delete=True)
        problem = content_problem(staging, expect)
        if problem is not None:
            raise _refuse_download(source, staging, problem)
        os.replace(staging, final)
    return final


# ----------------------------------------------------------------------------- content checks


def content_problem(path: Path, expect: str | None, thorough: bool = True) -> str | None:
    """Why the file at `path` is not what a consumer expecting `expect` needs, or None.

    Never an HTML page. `thorough` parses a whole JSON file (when a download
    lands); otherwise only the first bytes are looked at (when a cached file
    is reused).
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    wanted = CONTENT_KINDS.get(expect, "the expected file") if expect else "the expected file"
    if not head:
        return f"the file is empty, not {wanted}"
    if _looks_like_html(head):
        page = "an XML document" if head.lstrip().lower().startswith(b"<?xml") else "an HTML page"
        return (f"the server sent {page}, not {wanted} (a Google Drive quota or virus-scan page, an error or login "
                "page, or a captive portal?)")
    if expect is None:
        return None
    kinds = expect.split("|")
    problems = [_kind_problem(path, head, kind, thorough) for kind in kinds]
    if all(problems):
        return problems[0] if len(problems) == 1 else f"not {wanted} ({'; '.join(problems)})"
    return None


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml")) or (
        start.startswith(b"<") and b"<html" in start)


def _kind_problem(path: Path, head: bytes, kind: str, thorough: bool) -> str | None:
    from tspnet.files import npy_problem

    if kind == "npy":
        return npy_problem(head)
    if kind == "archive":
        return None if archive_format(path) else f"not a .tar, .tar.gz or .zip archive (it starts with {head[:16]!r})"
    if kind == "checkpoint":  # torch.save's zip archive, or the legacy pickle format (protocol byte 0x80)
        if archive_format(path) == "zip" or head.startswith(b"\x80"):
            return None
        return f"not a PyTorch checkpoint (it starts with {head[:16]!r})"
    if b"\x00" in head:
        return f"binary data, not {CONTENT_KINDS[kind]}"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the end of the head
            return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if kind == "json":
        return _json_problem(path, head, thorough)
    return None


def _json_problem(path: Path, head: bytes, thorough: bool) -> str | None:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start not in (b"{", b"["):
        return f"not JSON (it starts with {head[:16]!r})"
    if thorough and path.stat().st_size <= JSON_PARSE_MAX_BYTES:
        try:
            with open(path, "rb") as f:
                json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"not valid JSON ({flat(exc)})"
    return None


def _refuse_download(source: Source, path: Path, problem: str) -> SourceError:
    """Delete a download that is not what it must be; the error names the param, the URL and what to do."""
    path.unlink(missing_ok=True)
    fix = (f"download it yourself (e.g. in a browser) and set {source.where} to its local path"
           if source.kind == "url" else
           f"wait for Google Drive's download quota to reset, or download it in a browser and set {source.where} "
           "to its local path")
    return SourceError(f"{source.describe()}: {problem}. Nothing was cached; check the address, or {fix}.")


def _reusable(final: Path, source: Source, expect: str | None) -> bool:
    """Whether a cached download may be reused; a file that fails the quick check is deleted (fetched again)."""
    if not final.is_file():
        return False
    problem = content_problem(final, expect, thorough=False)
    if problem is None:
        return True
    log.warning("%s: the cached %s is unusable (%s); deleting it and downloading again", source.describe(),
                final, problem)
    final.unlink()
    return False


def _disk_full(source: Source, received: int, partial: Path) -> SourceError:
    return SourceError(f"{source.describe()}: the disk holding the download cache ({cache_dir()}) is full after "
                       f"{received} bytes: free some space, or set {CACHE_ENV} to a larger disk, and rerun (the "
                       f"bytes received so far are kept in {partial} and resumed)")


def _kept_part(partial: Path) -> str:
    size = partial.stat().st_size if partial.exists() else 0
    if size == 0:
        return "Nothing was received; rerun the stage to try again."
    return f"The {size} bytes received are kept in {partial}; rerun the stage to resume."


# Connection errors that say the host cannot be reached at all, as opposed to a transfer breaking off.
UNREACHABLE_ERRNOS = {errno.ECONNREFUSED: "connection refused", errno.ENETUNREACH: "network unreachable",
                      errno.EHOSTUNREACH: "no route to host", errno.EADDRNOTAVAIL: "address not available"}


def unreachable_reason(exc: BaseException) -> str | None:
    """Why a connection attempt shows the host to be unreachable (DNS, refused, no route); None otherwise."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed: {reason.strerror or reason}"
    if isinstance(reason, OSError) and reason.errno in UNREACHABLE_ERRNOS:
        return UNREACHABLE_ERRNOS[reason.errno]
    return None


# ----------------------------------------------------------------------------- mirrors

MIRROR_SEARCH_DEPTH = 4  # folder levels below the mirror searched for a file name


@dataclass(frozen=True)
class Mirror:
    """A local folder of copies of URL sources, and the params key that set it (for messages)."""

    path: Path
    key: str


def parse_mirror(value: Any, key: str) -> Mirror | None:
    """A Mirror from its params value (a directory; relative to the repository root); None for `null`."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParamsError(f"{key}: expected a directory or null, got {value!r}")
    path = Path(value.strip()).expanduser()
    if not path.is_dir():
        raise SourceError(f"{key}: {path.resolve()} is not a directory (the folder holding local copies of this "
                          "entry's downloadable files, under their upstream names)")
    return Mirror(path.resolve(), key)


def upstream_name(source: Source) -> str | None:
    """The file name a URL source has upstream (the last part of its path); None for other kinds."""
    if source.kind != "url":
        return None
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(source.location).path)).name
    return name or None


def mirror_candidates(mirror: Mirror, name: str) -> list[Path]:
    """Files called `name` at or below the mirror (links followed, sorted, at most MIRROR_SEARCH_DEPTH down)."""
    found = []
    for directory, subdirs, files in os.walk(mirror.path, followlinks=True):
        depth = len(Path(directory).relative_to(mirror.path).parts)
        subdirs[:] = sorted(subdirs) if depth < MIRROR_SEARCH_DEPTH else []
        if name in files:
            found.append(Path(directory) / name)
    return sorted(found)


def find_in_mirror(source: Source, mirror: Mirror) -> Path | None:
    """The mirror's copy of a URL source: its upstream file name, with the source's sha256; None if absent.

    A file of that name whose content differs is an error (naming the file and
    both checksums), so a wrong copy is never used silently; with no sha256 in
    params, a single file of that name is used as it is.
    """
    name = upstream_name(source)
    if name is None:
        return None
    candidates = mirror_candidates(mirror, name)
    if not candidates:
        return None
    if source.sha256 is None:
        if len(candidates) > 1:
            raise SourceError(f"{source.describe()}: {mirror.key} holds several files named {name} "
                              f"({', '.join(map(str, candidates))}) and {source.where}.sha256 is not set to tell "
                              "them apart: keep one, or set the sha256")
        log.warning("%s: using %s from %s without a checksum (%s.sha256 is not set)", source.where, candidates[0],
                    mirror.key, source.where)
        return candidates[0]
    digests = {path: sha256_file(path) for path in candidates}
    for path, digest in digests.items():
        if digest == source.sha256:
            log.info("%s: using %s (%s)", source.where, path, mirror.key)
            return path
    listed = "; ".join(f"{path} has sha256 {digest}" for path, digest in digests.items())
    raise SourceError(f"{source.describe()}: {mirror.key} ({mirror.path}) has a file named {name}, but not the "
                      f"expected one: {listed}; {source.where}.sha256 is {source.sha256}. Replace the copy with "
                      "the upstream file, or, if you trust it, set that sha256 to its checksum.")


def is_available_offline(source: Source, mirror: Mirror | None) -> bool:
    """Whether a source can be materialised without the network: local, already downloaded, or mirrored."""
    if source.kind == "path":
        return True
    name = "gdrive" if source.kind == "gdrive" else PurePosixPath(urllib.parse.urlparse(source.location).path).name
    if _download_target(source, name).is_file():
        return True
    try:
        return mirror is not None and find_in_mirror(source, mirror) is not None
    except SourceError:
        return False


def offline_help(failed: SourceUnreachable, others: list[Source], mirror: Mirror | None, mirror_key: str) -> str:
    """One message for an unreachable URL: the param that points at local copies, and what else will need one."""
    source = failed.source
    need = [s for s in others if s is not source and not is_available_offline(s, mirror)]
    copies = [f"{s.where} ({upstream_name(s)})" for s in need if s.kind == "url"]
    drive = [s.where for s in need if s.kind == "gdrive"]
    folder = f"the folder {mirror_key} names ({mirror.path})" if mirror is not None else "one folder"
    text = (f"{source.describe()}: cannot reach {urllib.parse.urlparse(source.location).hostname} "
            f"({failed.reason}). Without internet, put a copy of {upstream_name(source)}, under that name, in "
            f"{folder} (any subfolder; it is checked against its sha256) and set {mirror_key}: "
            f"`dvc exp run -S {mirror_key}=/path/to/copies`.")
    if copies:
        text += " These sources will need a copy there too: " + ", ".join(copies) + "."
    if drive:
        text += " Google Drive sources are not looked up in a mirror; set these to local paths: " + ", ".join(drive)
        text += "."
    return text


# ----------------------------------------------------------------------------- archives


def unpacked(archive: Path, source: Source, limits: UnpackLimits = UnpackLimits()) -> Path:
    """The archive's content in the cache, unpacked once per (path, size, mtime) of the archive."""
    info = archive.stat()
    key = hashlib.sha256(f"{archive}\0{info.st_size}\0{info.st_mtime_ns}".encode()).hexdigest()[:24]
    target = cache_dir() / "unpacked" / key
    with _locked(target.parent):
        for stale in remove_stale_temporaries(target.parent):  # what killed unpacks left (the lock is ours)
            log.info("removed %s, left by an interrupted unpack", stale)
        if not target.is_dir():
            log.info("%s: unpacking %s into %s", source.where, archive, target)
            try:
                with atomic_dir(target) as tmp:
                    unpack(archive, tmp, source.where, limits)
            except ArchiveDiskFull as exc:
                raise SourceError(f"{exc} (or set {CACHE_ENV} to a larger disk)") from None
            except ArchiveError as exc:
                raise SourceError(str(exc)) from None
    return target
