"""Archives and downloads (issue 10, item 4 and "truncated download"): nothing is ever written outside the
destination, checked on the symlink chain with and without tarfile's data filter, and on random member sets."""

from __future__ import annotations

import http.server
import io
import os
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from seglab.data.download import DownloadError, UnsafeArchiveError, check_members, fetch, safe_extract


def add_file(tar: tarfile.TarFile, name: str, payload: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def chain_archive(path: Path) -> Path:
    """The issue's chain: l1 -> ., l1/l2 -> .., l1/l2/X. Each link alone stays inside; together X lands one level up."""
    with tarfile.open(path, "w") as tar:
        add_file(tar, "readme.txt", b"ok")
        add_link(tar, "l1", ".")
        add_link(tar, "l1/l2", "..")
        add_file(tar, "l1/l2/X", b"evil")
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("with_filter", [True, False], ids=["data-filter", "no-data-filter"])
def test_symlink_chain_is_refused_before_anything_is_written(tmp_path, monkeypatch, with_filter):
    # before: the pre-check passed; the data filter stopped X only after readme.txt and l1 were written,
    # and on Pythons without the filter X was written outside the destination
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = chain_archive(tmp_path / "chain.tar")
    box = tmp_path / "box"
    dest = box / "dest"
    with pytest.raises(UnsafeArchiveError, match=r"'l1/l2'.*refusing"):
        safe_extract(archive, dest)
    assert listing(box) == ["dest"]  # nothing in dest, nothing next to it


def test_without_the_data_filter_nothing_is_extracted_at_all(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with tarfile.open(tmp_path / "ok.tar", "w") as tar:
        add_file(tar, "a/b.txt")
    with pytest.raises(RuntimeError, match="lacks the 'data' extraction filter.*3.10.12"):
        safe_extract(tmp_path / "ok.tar", tmp_path / "dest")
    assert listing(tmp_path / "dest") == []


def test_requires_python_admits_only_versions_with_the_data_filter():
    import re

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    spec = re.search(r'requires-python\s*=\s*"([^"]+)"', text).group(1)
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(spec)
    for version in ["3.10.0", "3.10.11", "3.11.0", "3.11.3"]:
        assert version not in allowed, (version, spec)
    for version in ["3.10.12", "3.11.4", "3.12.0", "3.13.1"]:
        assert version in allowed, (version, spec)


@pytest.mark.parametrize(
    "members",
    [
        [("sym", "l1", "."), ("sym", "l2", "l1/.."), ("file", "l2/x", "")],  # '..' after a link to '.'
        [("dir", "d", ""), ("sym", "d/up", ".."), ("sym", "d/up2", "up/..")],  # link through a link
        [("sym", "a", "b"), ("sym", "b", "a"), ("file", "a/x", "")],  # loop
        [("sym", "x", "sub"), ("sym", "sub", ".."), ("file", "x/y", "")],  # link retargeted after use
    ],
    ids=["dot-then-dotdot", "link-through-link", "loop", "retarget"],
)
def test_link_combinations_that_escape_are_refused(tmp_path, members):
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    tar_members = [_info(kind, name, target) for kind, name, target in members]
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        check_members(tar_members, dest.resolve())


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("sym", "l1/.", ".")], r"ends in '/' or '/\.'"),
        ([("file", "a/", "")], r"ends in '/' or '/\.'"),
        ([("dir", "d/x", ""), ("sym", "d/x", "x")], "a symlink where a folder 'd/x' is"),
        ([("file", "d/x/f", ""), ("sym", "d/x", "x")], "a symlink where a folder 'd/x' is"),
    ],
    ids=["sym-dot", "file-slash", "sym-over-dir", "sym-over-implied-dir"],
)
def test_members_that_make_tarfile_recurse_are_refused(tmp_path, members, reason):
    # before: RecursionError from tarfile's fallback for a link it cannot create (found by the property test)
    archive = tmp_path / "odd.tar"
    with tarfile.open(archive, "w") as tar:
        for kind, name, target in members:
            info = _info(kind, name, target)
            if kind == "file":
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
            else:
                tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, tmp_path / "dest")
    assert listing(tmp_path / "dest") == []


def test_links_that_stay_inside_are_kept(tmp_path):
    with tarfile.open(tmp_path / "ok.tar", "w") as tar:
        add_file(tar, "data/real.txt", b"ok")
        add_link(tar, "alias", "data")
        add_link(tar, "data/again", "../alias/real.txt")
        add_link(tar, "hard.txt", "data/real.txt", tarfile.LNKTYPE)
    dest = safe_extract(tmp_path / "ok.tar", tmp_path / "dest")
    assert (dest / "alias" / "real.txt").read_text() == "ok" and (dest / "data" / "again").read_text() == "ok"
    assert (dest / "hard.txt").read_text() == "ok"


# --- property: random member sets never write outside the destination ----------------------------------------

_PART = st.sampled_from(["a", "b", "l1", "l2", "..", ".", "x"])
_NAME = st.lists(_PART, min_size=1, max_size=3).map("/".join)
_TARGET = st.one_of(_NAME, st.just("/OUTSIDE"), st.lists(st.sampled_from(["..", "a", "l1", "."]), min_size=1,
                                                           max_size=4).map("/".join))
_MEMBER = st.tuples(st.sampled_from(["file", "dir", "sym", "hard"]), _NAME, _TARGET)


def _info(kind: str, name: str, target: str, outside: Path | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if kind == "dir":
        info.type = tarfile.DIRTYPE
    elif kind in ("sym", "hard"):
        info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
        info.linkname = str(outside) if (target == "/OUTSIDE" and outside) else target
    return info


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MEMBER, min_size=1, max_size=6))
def test_random_member_sets_never_write_outside_the_destination(members):
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "box"
        dest, outside = box / "dest", box / "outside"
        outside.mkdir(parents=True)
        (outside / "victim.txt").write_text("keep")
        archive = Path(tmp) / "fuzz.tar"
        with tarfile.open(archive, "w") as tar:
            for kind, name, target in members:
                info = _info(kind, name, target, outside)
                if kind == "file":
                    info.size = 4
                    tar.addfile(info, io.BytesIO(b"evil"))
                else:
                    tar.addfile(info)
        try:
            safe_extract(archive, dest)
            refused = False
        except UnsafeArchiveError:
            refused = True
        except (OSError, tarfile.TarError):  # a malformed but harmless set (a file where a folder must go, ...)
            refused = False
        event("refused" if refused else "extracted")
        assert sorted(p.name for p in box.iterdir()) == ["dest", "outside"]
        assert listing(outside) == ["victim.txt"] and (outside / "victim.txt").read_text() == "keep"
        if refused:
            assert listing(dest) == [], "refused, yet something was extracted"
        for path in dest.rglob("*"):  # whatever was extracted resolves inside dest
            real = Path(os.path.realpath(path))
            assert real == dest.resolve() or dest.resolve() in real.parents, (path, real)


# --- truncated downloads ----------------------------------------------------------------------------------------


class _Truncating(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 -- http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)  # then the connection closes: 10 of 1000 bytes
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_truncated_download_says_truncated_with_the_sizes(tmp_path):
    # before: reported as "MD5 mismatch (got ..., expected ...)"
    server = http.server.HTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.tar"
        with pytest.raises(DownloadError, match="truncated: got 10 of 1000 bytes") as info:
            fetch([url], tmp_path, "file.tar", "0" * 32, timeout=10)
        assert "MD5 mismatch" not in str(info.value)
        assert not (tmp_path / "file.tar").exists()  # the partial file is deleted
    finally:
        server.shutdown()
        server.server_close()
