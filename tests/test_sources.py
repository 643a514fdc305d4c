"""Sources: parsing, downloads (loopback HTTP, mocked gdown), checksums, resume, safe unpacking."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.loopback_http import LoopbackServer
from tspnet import sources
from tests.test_archives import tar_bytes, zip_bytes
from tspnet.sources import SourceError, materialize, parse_source

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes: several chunks' worth for a half-way drop


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Every test downloads into its own cache (the `cache` fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("cache")


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def downloads(cache: Path) -> list[str]:
    """Every file left in the download cache (lock files aside)."""
    root = cache / "downloads"
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.name != ".lock") if root.exists() else []


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("spec, kind, location, copy", [
    ("data/features", "path", "data/features", False),
    ("/abs/gt.json", "path", "/abs/gt.json", False),
    ("https://host/a/gt.json", "url", "https://host/a/gt.json", False),
    ("https://drive.google.com/file/d/ABC123/view?usp=sharing", "gdrive",
     "https://drive.google.com/file/d/ABC123/view?usp=sharing", False),
    ({"path": "f", "copy": True}, "path", "f", True),
    ({"url": "http://h/x.tar.gz"}, "url", "http://h/x.tar.gz", False),
    ({"gdrive": "1NqaDRo782bGZKo662I0rI_cvpDT67VQU"}, "gdrive", "1NqaDRo782bGZKo662I0rI_cvpDT67VQU", False),
])
def test_parse_source_forms(spec, kind, location, copy):
    source = parse_source(spec, "datasets.x.sources.gt")
    assert (source.kind, source.location, source.copy, source.where) == (kind, location, copy, "datasets.x.sources.gt")


def test_parse_source_null_and_checksum():
    assert parse_source(None, "k") is None
    digest = "AB" * 32
    assert parse_source({"url": "https://h/f", "sha256": digest}, "k").sha256 == digest.lower()


@pytest.mark.parametrize("spec, message", [
    ({"path": "a", "url": "http://b"}, "exactly one of"),
    ({"path": "a", "colour": "red"}, "unknown keys ['colour']"),
    ({"url": "not/a/url"}, "is not an http(s) URL"),
    ({"url": "https://h/f", "sha256": "abc"}, "64 hexadecimal digits"),
    ({"path": "a", "copy": "yes"}, "expected true or false"),
    ("ftp://host/file", "unsupported scheme 'ftp'"),
    (42, "expected a path, a URL or a mapping"),
    ("  ", "empty source"),
])
def test_parse_source_rejects(spec, message):
    with pytest.raises(ValueError, match="datasets.x.sources.gt") as info:
        parse_source(spec, "datasets.x.sources.gt")
    assert message in str(info.value)


def test_cache_dir_follows_the_environment(cache: Path):
    assert sources.cache_dir() == cache.resolve()


# ----------------------------------------------------------------------------- local paths


def test_local_path_is_used_in_place_and_checked(tmp_path: Path):
    path = tmp_path / "gt.json"
    path.write_bytes(b"{}")
    assert materialize(parse_source({"path": str(path), "sha256": sha(b"{}")}, "k"), progress=False) == path
    with pytest.raises(SourceError, match=r"k \(path .*sha256 is .* expected 0{64}.*set k.sha256") as info:
        materialize(parse_source({"path": str(path), "sha256": "0" * 64}, "k"), progress=False)
    assert "deleted" not in str(info.value) and path.exists()  # a user's own file is never deleted
    with pytest.raises(SourceError, match="does not exist"):
        materialize(parse_source(str(tmp_path / "missing.json"), "k"), progress=False)


# ----------------------------------------------------------------------------- HTTP downloads


def test_download_verifies_lands_and_is_cached(server: LoopbackServer, cache: Path):
    url = server.add("/data/gt.json", PAYLOAD)
    source = parse_source({"url": url, "sha256": sha(PAYLOAD)}, "k")
    path = materialize(source, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert path == cache.resolve() / "downloads" / sha(PAYLOAD) / "gt.json"
    assert materialize(source, progress=False) == path
    assert len(server.requests) == 1  # the second call used the cache
    assert downloads(cache) == ["gt.json"]


@pytest.mark.parametrize("faults, expected", [
    (["corrupt"], sha(PAYLOAD)),  # the server sends damaged bytes
    ([], "f" * 64),  # params carry the wrong checksum
])
def test_checksum_mismatch_fails_and_leaves_nothing(server: LoopbackServer, cache: Path, faults, expected):
    url = server.add("/gt.json", PAYLOAD, faults)
    source = parse_source({"url": url, "sha256": expected}, "datasets.thumos14.sources.gt")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False)
    message = str(info.value)
    assert "datasets.thumos14.sources.gt" in message and f"expected {expected}" in message
    assert "bad copy was deleted" in message and "set datasets.thumos14.sources.gt.sha256" in message
    assert downloads(cache) == []


def test_corrupt_download_is_fetched_again_on_the_next_run(server: LoopbackServer, cache: Path):
    source = parse_source({"url": server.add("/f.bin", PAYLOAD, ["corrupt"]), "sha256": sha(PAYLOAD)}, "k")
    with pytest.raises(SourceError):
        materialize(source, progress=False)
    assert materialize(source, progress=False).read_bytes() == PAYLOAD
    assert server.ranges("/f.bin") == [None, None]  # a clean restart, not a resume of bad bytes


def test_interrupted_transfer_resumes_with_a_range_request(server: LoopbackServer, cache: Path):
    source = parse_source({"url": server.add("/f.bin", PAYLOAD, ["drop"]), "sha256": sha(PAYLOAD)}, "k")
    assert materialize(source, progress=False).read_bytes() == PAYLOAD
    # The first transfer stopped half way (5,120 of 10,240 bytes); the second asked for the rest.
    assert server.ranges("/f.bin") == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert downloads(cache) == ["f.bin"]


def test_repeated_interruptions_fail_then_the_next_run_resumes(server: LoopbackServer, cache: Path):
    drops = ["drop"] * sources.DOWNLOAD_ATTEMPTS
    source = parse_source({"url": server.add("/f.bin", PAYLOAD, drops), "sha256": sha(PAYLOAD)}, "k")
    with pytest.raises(SourceError, match="failed 3 times.*rerun the stage to resume"):
        materialize(source, progress=False)
    assert downloads(cache) == ["f.bin.partial"]  # only the resumable part, never a file under the final name
    assert materialize(source, progress=False).read_bytes() == PAYLOAD
    assert server.ranges("/f.bin")[-1] is not None
    assert downloads(cache) == ["f.bin"]


def test_server_that_ignores_ranges_restarts_cleanly(server: LoopbackServer, cache: Path):
    source = parse_source({"url": server.add("/f.bin", PAYLOAD, ["drop", "ignore_range"]),
                           "sha256": sha(PAYLOAD)}, "k")
    assert materialize(source, progress=False).read_bytes() == PAYLOAD
    assert server.ranges("/f.bin") == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_server_errors_are_retried(server: LoopbackServer):
    source = parse_source({"url": server.add("/f.bin", PAYLOAD, ["error500"]), "sha256": sha(PAYLOAD)}, "k")
    assert materialize(source, progress=False).read_bytes() == PAYLOAD
    assert len(server.ranges("/f.bin")) == 2


def test_http_error_names_the_source(server: LoopbackServer):
    with pytest.raises(SourceError, match=r"datasets.x.sources.fps \(url .*/nope.json\): HTTP 404"):
        materialize(parse_source(server.url("/nope.json"), "datasets.x.sources.fps"), progress=False)


def test_downloaded_archive_is_unpacked(server: LoopbackServer, cache: Path):
    archive = tar_bytes({"features/train/a.npy": b"A", "features/test/b.npy": b"BB"}, gzip=True)
    path = materialize(parse_source(server.add("/features.tar.gz", archive), "k"), progress=False)
    assert path.is_dir() and path.parent == cache.resolve() / "unpacked"
    assert (path / "features" / "test" / "b.npy").read_bytes() == b"BB"


# ----------------------------------------------------------------------------- Google Drive


def test_gdrive_download_goes_through_gdown(monkeypatch: pytest.MonkeyPatch, cache: Path):
    import gdown

    calls = []

    def fake_download(**kwargs):  # gdown's documented call: output path, resume, and id= or url=
        calls.append(kwargs)
        Path(kwargs["output"]).write_bytes(PAYLOAD)
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    by_id = materialize(parse_source({"gdrive": "FILEID", "sha256": sha(PAYLOAD)}, "k"), progress=False)
    assert by_id.read_bytes() == PAYLOAD and by_id.name == "gdrive"
    assert calls[0]["id"] == "FILEID" and calls[0]["resume"] is True and "url" not in calls[0]
    link = "https://drive.google.com/file/d/FILEID/view?usp=sharing"
    materialize(parse_source(link, "k"), progress=False)
    assert calls[1]["url"] == link and "id" not in calls[1]
    with pytest.raises(SourceError, match="sha256 is"):
        materialize(parse_source({"gdrive": "OTHER", "sha256": "0" * 64}, "k"), progress=False)
    assert not any(p.name.startswith("gdrive") for p in (cache / "downloads" / ("0" * 64)).iterdir()
                   if p.name != ".lock")


def test_gdrive_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    import gdown

    def failing(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Cannot retrieve the public link of the file.")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(SourceError, match=r"k \(gdrive ID\): Google Drive download failed .*public link"):
        materialize(parse_source({"gdrive": "ID"}, "k"), progress=False)


# ----------------------------------------------------------------------------- mirrors


def mirror_with(root: Path, files: dict[str, bytes]) -> sources.Mirror:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return sources.parse_mirror(str(root), "datasets.x.mirror")


def test_a_mirror_copy_is_used_by_name_and_checksum_without_a_request(server: LoopbackServer, tmp_path: Path):
    mirror = mirror_with(tmp_path / "copies", {"deep/er/gt.json": PAYLOAD, "other/gt.json.bak": b"x"})
    source = parse_source({"url": server.add("/repo/data/gt.json", PAYLOAD), "sha256": sha(PAYLOAD)}, "k")
    assert materialize(source, progress=False, mirror=mirror) == mirror.path / "deep/er/gt.json"
    assert server.requests == []  # no download was attempted


def test_a_mirror_is_searched_through_links(server: LoopbackServer, tmp_path: Path):
    mirror_with(tmp_path / "elsewhere", {"sub/gt.json": PAYLOAD})
    (tmp_path / "copies").mkdir()
    (tmp_path / "copies" / "linked").symlink_to(tmp_path / "elsewhere")
    source = parse_source({"url": server.add("/gt.json", PAYLOAD), "sha256": sha(PAYLOAD)}, "k")
    found = materialize(source, progress=False, mirror=sources.parse_mirror(str(tmp_path / "copies"), "m"))
    assert found.read_bytes() == PAYLOAD and server.requests == []


def test_the_copy_with_the_right_checksum_wins_among_files_of_one_name(tmp_path: Path):
    mirror = mirror_with(tmp_path / "copies", {"a/videoname.npy": b"gtea", "b/videoname.npy": b"beoid"})
    source = parse_source({"url": "https://h/r/videoname.npy", "sha256": sha(b"beoid")}, "k")
    assert materialize(source, progress=False, mirror=mirror) == mirror.path / "b/videoname.npy"


def test_a_wrong_copy_in_the_mirror_is_an_error_naming_both_checksums(server: LoopbackServer, tmp_path: Path):
    mirror = mirror_with(tmp_path / "copies", {"gt.json": b"stale"})
    source = parse_source({"url": server.add("/gt.json", PAYLOAD), "sha256": sha(PAYLOAD)},
                          "datasets.x.sources.gt")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False, mirror=mirror)
    message = str(info.value)
    assert f"{mirror.path / 'gt.json'} has sha256 {sha(b'stale')}" in message
    assert f"datasets.x.sources.gt.sha256 is {sha(PAYLOAD)}" in message and "datasets.x.mirror" in message
    assert server.requests == []  # a wrong copy is not silently replaced by a download


def test_without_a_checksum_one_copy_is_used_and_two_are_ambiguous(tmp_path: Path):
    mirror = mirror_with(tmp_path / "copies", {"train.json": b"{}"})
    source = parse_source("https://h/r/train.json", "locators.x.sources.train")
    assert materialize(source, progress=False, mirror=mirror) == mirror.path / "train.json"
    mirror_with(tmp_path / "copies", {"old/train.json": b"{ }"})
    with pytest.raises(SourceError, match=r"holds several files named train.json .*train.sha256 is not set"):
        materialize(source, progress=False, mirror=mirror)


def test_a_file_missing_from_the_mirror_is_downloaded(server: LoopbackServer, tmp_path: Path):
    mirror = mirror_with(tmp_path / "copies", {"fps.json": b"{}"})
    source = parse_source({"url": server.add("/gt.json", PAYLOAD), "sha256": sha(PAYLOAD)}, "k")
    assert materialize(source, progress=False, mirror=mirror).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_a_mirror_must_be_a_directory(tmp_path: Path):
    assert sources.parse_mirror(None, "datasets.x.mirror") is None
    with pytest.raises(SourceError, match=r"datasets.x.mirror: .*missing is not a directory"):
        sources.parse_mirror(str(tmp_path / "missing"), "datasets.x.mirror")
    with pytest.raises(ValueError, match=r"datasets.x.mirror: expected a directory or null"):
        sources.parse_mirror(3, "datasets.x.mirror")


# ----------------------------------------------------------------------------- unreachable hosts


def refusing_url(path: str) -> str:
    """A URL on a loopback port nothing listens on: the connection is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_a_refused_connection_fails_at_once_without_retries(monkeypatch: pytest.MonkeyPatch, cache: Path):
    attempts = []
    real_urlopen = sources.urllib.request.urlopen
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: attempts.append(1) or real_urlopen(*a, **k))
    source = parse_source({"url": refusing_url("/data/gt.json"), "sha256": sha(PAYLOAD)}, "datasets.x.sources.gt")
    with pytest.raises(sources.SourceUnreachable) as info:
        materialize(source, progress=False)
    assert len(attempts) == 1
    message = str(info.value)
    assert "cannot reach 127.0.0.1 (connection refused)" in message and "set datasets.x.sources.gt" in message
    assert "partial" not in message and downloads(cache) == []


def test_a_dns_failure_fails_at_once(monkeypatch: pytest.MonkeyPatch):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(sources.SourceUnreachable, match=r"cannot reach raw.example.org \(DNS lookup failed: "
                                                        r"Name or service not known\)"):
        materialize(parse_source("https://raw.example.org/x/gt.json", "k"), progress=False)


def test_a_failure_with_nothing_received_does_not_mention_a_partial_file(server: LoopbackServer, cache: Path):
    source = parse_source(server.add("/f.bin", PAYLOAD, ["error500"] * sources.DOWNLOAD_ATTEMPTS), "k")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False)
    assert "failed 3 times" in str(info.value) and "Nothing was received" in str(info.value)
    assert ".partial" not in str(info.value) and downloads(cache) == []


def test_offline_help_names_the_mirror_param_and_what_else_needs_a_copy(tmp_path: Path, cache: Path,
                                                                        server: LoopbackServer):
    mirror = mirror_with(tmp_path / "copies", {"fps.json": b"{}"})
    local = tmp_path / "points.csv"
    local.write_text("x")
    cached = parse_source({"url": server.add("/ambiguous.txt", b"a"), "sha256": sha(b"a")}, "d.sources.ambiguous")
    materialize(cached, progress=False)  # already in the download cache
    failed = parse_source({"url": "https://host/r/gt.json", "sha256": sha(b"g")}, "d.sources.gt")
    others = [failed, parse_source({"url": "https://host/r/fps.json", "sha256": sha(b"{}")}, "d.sources.fps"),
              parse_source(str(local), "d.sources.points"), cached,
              parse_source({"url": "https://host/r/duration.npy"}, "d.sources.durations"),
              parse_source({"gdrive": "FILEID"}, "d.sources.features")]
    text = sources.offline_help(sources.SourceUnreachable(failed, "DNS lookup failed: no name"), others, mirror,
                                "d.mirror")
    assert text.startswith("d.sources.gt (url https://host/r/gt.json): cannot reach host (DNS lookup failed")
    assert "put a copy of gt.json, under that name, in the folder d.mirror names" in text
    assert "`dvc exp run -S d.mirror=/path/to/copies`" in text
    assert text.count("will need a copy there too: d.sources.durations (duration.npy).") == 1  # not fps, points
    assert "set these to local paths: d.sources.features." in text and "\n" not in text


def test_an_archive_can_be_kept_whole(tmp_path: Path):
    path = tmp_path / "best_model.pkl"
    path.write_bytes(zip_bytes({"archive/data.pkl": b"x"}))  # torch.save writes a zip file
    source = parse_source(str(path), "train.checkpoint")
    assert materialize(source, progress=False, unpack=False) == path
    assert materialize(source, progress=False).is_dir()
