"""Archives: format by content, the same tree from tar and zip, unsafe members and unreadable files refused."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tspnet.archives import ArchiveError, archive_format, unpack
from tspnet.sources import Source, SourceError, unpacked

PAYLOAD = bytes(range(256)) * 40


def tar_bytes(files: dict[str, bytes], gzip: bool = False, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_bytes(files: dict[str, bytes], modes: dict[str, int] | None = None, deflate: bool = False) -> bytes:
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def test_archive_format_is_read_from_content(tmp_path: Path):
    cases = {"a": tar_bytes({"x": b"1"}), "b": tar_bytes({"x": b"1"}, gzip=True), "c": zip_bytes({"x": b"1"}),
             "d": b'{"database": {}}'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert [archive_format(tmp_path / n) for n in "abcd"] == ["tar", "tar.gz", "zip", None]


@pytest.mark.parametrize("archive, problem", [
    (tar_bytes({"ok.npy": b"1", "../evil.npy": b"2"}), "would land outside the target"),
    (tar_bytes({"/etc/evil.npy": b"2"}), "would land outside the target"),
    (tar_bytes({"ok.npy": b"1"}, extra=[special("link.npy", tarfile.SYMTYPE, "/etc/passwd")]), "is a link"),
    (tar_bytes({"ok.npy": b"1"}, extra=[special("hard.npy", tarfile.LNKTYPE, "ok.npy")]), "is a link"),
    (tar_bytes({}, gzip=True, extra=[special("dev", tarfile.CHRTYPE)]), "is a device, pipe or other special"),
    (tar_bytes({}, extra=[special("pipe", tarfile.FIFOTYPE)]), "is a device, pipe or other special"),
    (zip_bytes({"ok.npy": b"1", "../evil.npy": b"2"}), "would land outside the target"),
    (zip_bytes({"link.npy": b"/etc/passwd"}, {"link.npy": stat.S_IFLNK | 0o777}), "is a symbolic link"),
    (zip_bytes({"dev": b""}, {"dev": stat.S_IFCHR | 0o600}), "is a device, pipe or other special"),
])
def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path: Path, cache: Path, archive: bytes, problem: str):
    path = tmp_path / "features.tar.gz"
    path.write_bytes(archive)
    with pytest.raises(SourceError, match=problem) as info:
        unpacked(path, Source("path", str(path), where="datasets.x.sources.features"))
    assert "datasets.x.sources.features" in str(info.value) and "refusing to unpack" in str(info.value)
    assert [p for p in (cache / "unpacked").iterdir() if p.name != ".lock"] == []
    assert not (tmp_path.parent / "evil.npy").exists() and not (tmp_path / "evil.npy").exists()


def test_zip_and_tar_unpack_the_same_tree(tmp_path: Path):
    files = {"features/train/rgb/v1.npy": b"rgb", "features/train/flow/v1.npy": b"flow"}
    for name, data in (("t", tar_bytes(files)), ("z", zip_bytes(files))):
        (tmp_path / f"{name}.bin").write_bytes(data)
        (tmp_path / name).mkdir()
        unpack(tmp_path / f"{name}.bin", tmp_path / name)
        assert {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                for p in (tmp_path / name).rglob("*") if p.is_file()} == files


def test_truncated_archive_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "f.tar.gz"
    path.write_bytes(tar_bytes({"x.npy": PAYLOAD}, gzip=True)[:200])
    with pytest.raises(ArchiveError, match="is not a readable archive"):
        unpack(path, tmp_path)
