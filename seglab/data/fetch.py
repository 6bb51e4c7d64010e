"""Download one file safely: mirrors tried in turn, MD5-checked, resumable, never deleting a user's file.

``fetch(urls, folder, filename, md5)`` is the whole mechanism:

- A file already at ``folder/filename`` with the right MD5 is used as is. One with another MD5 may be
  the user's own copy: it is never deleted but renamed ``<filename>.md5-mismatch`` (``.2``, ``.3``, ...
  when that name is taken), and the message says so.
- Each mirror is announced on one line (``mirror 2/4: thor.robots.ox.ac.uk``) before it is tried, and
  its failure is reported on one line naming it, so a slow or dead host is never a silent wait.
- A mirror whose redirects lead back to an address already visited (a redirect loop), or that redirects
  more than ``MAX_REDIRECTS`` times, fails at once with the chain of addresses as its reason.
- A host that drops packets fails after ``connect_timeout`` seconds (default 15); one that connects
  but stops sending fails after ``timeout`` seconds without a byte (default 30). (torchvision's
  ``download_url`` has no timeout at all.)
- Bytes go to ``<filename>.part``, which is kept when a transfer breaks: the next attempt (next mirror,
  or the next run) asks for the rest with an HTTP ``Range`` header; a ``206 Partial Content`` answer
  is appended, any other answer restarts from byte 0. Only a file whose MD5 matches becomes
  ``folder/filename``; a complete ``.part`` with the wrong MD5 (ours, not the user's) is deleted.

Every transfer is a plain ``urllib`` request, so http, https, ftp and ``file://`` URLs work (tests use
the last) and the usual ``*_proxy`` variables apply. Standard library and tqdm only: this module
copies out alone.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import math
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "MAX_REDIRECTS", "DownloadError", "fetch", "file_md5", "keep_aside",
           "promote"]

#: Seconds to wait for a TCP (and TLS) connection to a mirror.
CONNECT_TIMEOUT = 15.0
#: Seconds to wait for the next bytes from a connected mirror (its answer, then each read).
READ_TIMEOUT = 30.0
#: Redirects followed for one mirror before it counts as broken (a loop fails at its first repeat).
MAX_REDIRECTS = 10
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """No mirror gave a file with the expected checksum, or a dataset cannot be downloaded automatically."""


class _WriteError(Exception):
    """Carries the OSError of a local file that cannot be written (full disk, no permission, a folder in the
    way): no mirror can help, so ``fetch`` raises it at once."""

    def __init__(self, error: OSError, part: Path) -> None:
        super().__init__(error)
        self.error = OSError(error.errno, f"cannot write {part}: {error.strerror}")  # the errno's own subclass


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of the file at ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def keep_aside(path: str | os.PathLike, suffix: str = ".md5-mismatch") -> Path:
    """Rename the file ``path`` to ``<path><suffix>`` (then ``.2``, ``.3``, ...), never replacing a file.

    Returns:
        The new path.
    """
    path, n = Path(path), 0
    while True:
        n += 1
        kept = path.with_name(path.name + suffix + ("" if n == 1 else f".{n}"))
        try:
            os.link(path, kept, follow_symlinks=False)  # fails if `kept` exists: nothing is ever replaced
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: check, then rename
            if kept.exists() or kept.is_symlink():
                continue
            os.rename(path, kept)
            return kept
        path.unlink()
        return kept


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return f"local file {urllib.request.url2pathname(parts.path)}"
    return parts.hostname or url


def _seconds(name: str, value: float | None) -> float | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and math.isfinite(value) and value > 0):
        raise ValueError(f"fetch: {name} must be a positive number of seconds or None (wait forever), got {value!r}")
    return value


class _Attempt:
    """One try of one URL: its timeouts, and what it was doing when time ran out."""

    def __init__(self, connect_timeout: float | None, read_timeout: float | None) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.phase = "connecting"
        self.visited: list[str] = []  # the URL asked for, then every redirect target

    def connection_class(self, base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        attempt = self

        class Connection(base):  # connects within connect_timeout, then waits read_timeout per read
            def connect(self) -> None:
                attempt.phase = "connecting"  # again for each host a redirect leads to
                self.timeout = attempt.connect_timeout
                super().connect()
                attempt.phase = "waiting for the answer"
                self.sock.settimeout(attempt.read_timeout)

        return Connection

    def opener(self) -> urllib.request.OpenerDirector:
        attempt = self

        class HTTP(urllib.request.HTTPHandler):
            def do_open(self, http_class, req, **kwargs):  # noqa: ANN001 -- urllib's signature
                return super().do_open(attempt.connection_class(http_class), req, **kwargs)

        class HTTPS(urllib.request.HTTPSHandler):
            def do_open(self, http_class, req, **kwargs):  # noqa: ANN001
                return super().do_open(attempt.connection_class(http_class), req, **kwargs)

        class Redirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, PLR0913
                seen = attempt.visited or [req.full_url]
                attempt.visited = seen
                if newurl in seen or len(seen) > MAX_REDIRECTS:
                    fp.close()
                    chain = " -> ".join([*seen, newurl])
                    what = "redirect loop" if newurl in seen else f"more than {MAX_REDIRECTS} redirects"
                    raise DownloadError(f"{what} (HTTP {code}): {chain}; this mirror is broken")
                seen.append(newurl)
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        return urllib.request.build_opener(HTTP(), HTTPS(), Redirects())

    def reason(self, exc: BaseException) -> str:
        """One phrase, on one line, for why this attempt failed."""
        return " ".join(self._reason(exc).split())  # urllib's messages may hold newlines

    def _reason(self, exc: BaseException) -> str:
        inner = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) \
            else exc  # fmt: skip
        if isinstance(inner, TimeoutError):
            if self.phase == "connecting":
                return (f"no connection within {self.connect_timeout:g} s (the host is down, offline or drops "
                        "packets)")
            return f"no data for {self.read_timeout:g} s while {self.phase}"
        if isinstance(inner, socket.gaierror):
            return f"host name not found (offline, or no DNS?): {inner}"
        if isinstance(exc, DownloadError):
            return str(exc)
        shown = inner if isinstance(inner, BaseException) else exc  # URLError wraps the real error
        return f"{type(shown).__name__}: {shown}"


def _transfer(url: str, part: Path, attempt: _Attempt, say: Callable[[str], None]) -> bool:
    """Append the rest of ``url`` to ``part`` (HTTP Range), or rewrite it when the server sends everything.

    Returns:
        Whether the bytes were appended to an earlier partial file (a resumed transfer).
    """
    from tqdm.auto import tqdm

    attempt.visited = []
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "seglab"} | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = attempt.opener().open(urllib.request.Request(url, headers=headers), timeout=attempt.connect_timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: nothing past `offset` (a .part too long): start again
            raise
        part.unlink()
        return _transfer(url, part, attempt, say)
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range") or "")
        if offset and getattr(response, "status", None) == 206 and start and int(start.group(1)) == offset:
            say(f"download {part.name.removesuffix('.part')}: resuming at byte {offset:,}")
        else:
            offset = 0  # the server sent the whole file
        expected = None if length is None else offset + length
        attempt.phase = "reading"
        received = offset
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
            out = os.fdopen(os.open(part, flags, 0o666), "ab" if offset else "wb")  # never through a symlink
        except OSError as exc:
            raise _WriteError(exc, part) from exc
        with out, tqdm(total=expected, initial=offset, unit="B", unit_scale=True, desc=part.name) as bar:
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _WriteError(exc, part) from exc
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise DownloadError(f"truncated: got {received} of {expected} bytes (the connection closed early)")
    return offset > 0


def fetch(
    urls: Sequence[str],
    folder: str | os.PathLike,
    filename: str,
    md5: str,
    *,
    timeout: float | None = READ_TIMEOUT,
    connect_timeout: float | None = CONNECT_TIMEOUT,
    say: Callable[[str], None] = _say,
) -> Path:
    """Download ``folder/filename`` from the first URL whose file has MD5 ``md5``.

    Args:
        urls: http(s)/ftp/``file://`` URLs, tried in order.
        folder: where the file goes (created if missing). filename: a plain file name.
        md5: expected MD5, 32 hex digits.
        timeout: seconds without a byte from a connected server before giving up on it (None: forever).
        connect_timeout: seconds to wait for a connection (None: forever).
        say: where the progress lines go (default: stderr).

    Returns:
        Path of the verified file ``folder/filename``.

    Raises:
        DownloadError: every URL failed; the one-line message lists each URL with its error, says where
            a file with the wrong MD5 was kept, and where to put a good copy.
        ValueError: empty or non-list ``urls``, a ``filename`` with a folder in it, a malformed ``md5``,
            a timeout that is not a positive number.
        OSError: the file cannot be written in ``folder`` (full disk, no permission): the message names it.
    """
    if isinstance(urls, (str, bytes)) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise ValueError(f"fetch: urls must be a non-empty list of URL strings, got {urls!r}")
    if not isinstance(filename, str) or filename in ("", ".", "..") or "/" in filename or "\\" in filename:
        raise ValueError(f"fetch: filename must be a plain file name (no folder), got {filename!r}")
    if not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
        raise ValueError(f"fetch: md5 must be 32 hexadecimal digits, got {md5!r}")
    md5 = md5.lower()
    timeout, connect_timeout = _seconds("timeout", timeout), _seconds("connect_timeout", connect_timeout)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, part = folder / filename, folder / (filename + ".part")
    notes = []
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise FileExistsError(errno.EEXIST, f"{path} is in the way of the download and is not a file: move it")
        got = file_md5(path)
        if got == md5:
            return path
        kept = keep_aside(path)
        notes.append(f"the file that was at {path} has MD5 {got}, not {md5}: it was kept as {kept} "
                     "(delete it if you do not need it)")
        say(f"download {filename}: {notes[-1]}")
    if part.is_file() and file_md5(part) == md5:  # an earlier run got every byte but stopped before renaming
        return promote(part, path)
    failures = []
    for number, url in enumerate(urls, 1):
        mirror = f"mirror {number}/{len(urls)}: {_host(url)}"
        say(f"download {filename}: trying {mirror}")
        for fresh in (False, True):  # a resumed file that fails the check is fetched once more from byte 0
            attempt = _Attempt(connect_timeout, timeout)
            try:
                resumed = _transfer(url, part, attempt, say)
            except _WriteError as local:
                raise local.error from local.__cause__  # our disk, not the mirror: no other mirror can help
            except Exception as exc:  # noqa: BLE001 -- any failure of one mirror (HTTP, protocol, ...) -> next
                reason = attempt.reason(exc)
            else:
                got = file_md5(part)
                if got == md5:
                    say(f"download {filename}: {mirror}: done, MD5 checked")
                    return promote(part, path)
                part.unlink()
                reason = f"MD5 mismatch (got {got}, expected {md5}); the corrupt download was deleted"
                if resumed and not fresh:
                    say(f"download {filename}: {mirror}: the resumed file fails the MD5 check; starting again")
                    continue
            break
        say(f"download {filename}: {mirror} failed: {reason}")
        failures.append(f"[{number}/{len(urls)}] {url}: {reason}")
    if part.is_file():
        notes.append(f"the partial download {part} ({part.stat().st_size:,} bytes) was kept: running the command "
                     "again resumes it")
    raise DownloadError(
        f"could not download {filename} (MD5 {md5}); tried {len(failures)} URLs: " + "; ".join(failures) + ". "
        + "".join(note[0].upper() + note[1:] + ". " for note in notes)
        + f"Fix: download it by any means from one of these URLs, put it at {path} and run the command again."
    )


def promote(part: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give the verified file ``part`` the name ``path`` without replacing a file that appeared there meanwhile
    (one with the same bytes is kept and ``part`` dropped; one with other bytes is kept aside, ``keep_aside``).

    Returns:
        ``path``.
    """
    part, path = Path(part), Path(path)
    while True:
        try:
            os.link(part, path)
        except FileExistsError:  # someone put a file there during the download
            if file_md5(path) == file_md5(part):
                part.unlink()
                return path
            keep_aside(path)
            continue
        except OSError:  # a file system without hard links
            if path.exists() or path.is_symlink():
                keep_aside(path)
            os.replace(part, path)
            return path
        part.unlink()
        return path
