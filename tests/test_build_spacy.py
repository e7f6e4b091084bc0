"""requirements/build_spacy.py unpacks the spaCy sdist safely on every Python 3.11: with
tarfile's `data` filter where it exists (3.11.4 on), and with the same checks by hand where it
does not (Debian 12's 3.11.2, the interpreter the Makefile prefers)."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "requirements"))
import build_spacy


def _sdist(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(_file("spacy-1/setup.py"), io.BytesIO(b"x"))
        for member in members:
            archive.addfile(member, io.BytesIO(b"x") if member.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.fixture(params=["filters", "by hand"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "by hand":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filters")
    return str(request.param)


def test_an_ordinary_sdist_is_unpacked(tmp_path: Path, python: str) -> None:
    with _sdist() as archive:
        build_spacy.extract(archive, tmp_path)
    assert (tmp_path / "spacy-1" / "setup.py").read_bytes() == b"x"


@pytest.mark.parametrize(
    "member",
    [_file("../outside"), _link("spacy-1/l", "/etc/passwd")],
    ids=["parent", "link-out"],
)
def test_a_member_outside_the_folder_is_refused(
    tmp_path: Path, python: str, member: tarfile.TarInfo
) -> None:
    into = tmp_path / "work"
    into.mkdir()
    with _sdist(member) as archive, pytest.raises((SystemExit, tarfile.TarError)):
        build_spacy.extract(archive, into)
    assert not (tmp_path / "outside").exists()
    assert not (into / "spacy-1" / "l").exists()


def test_an_absolute_member_lands_nowhere_outside(tmp_path: Path, python: str) -> None:
    """The `data` filter extracts an absolute name inside the folder; by hand it is refused:
    either way nothing is written at the absolute path."""
    into, outside = tmp_path / "work", tmp_path / "absolute-outside"
    into.mkdir()
    with _sdist(_file(str(outside))) as archive:
        try:
            build_spacy.extract(archive, into)
        except SystemExit:
            assert python == "by hand"
    assert not outside.exists()
