"""The one safe writer of every file a seglab command writes, and the run-folder lock.

Rules (``check_target``, applied before the work starts, and again just before a file is put in place):

- an existing file is replaced only with ``overwrite=True`` (the CLI's ``--overwrite``);
- a file the command reads (``inputs``: its checkpoint, its images) is never replaced, even with
  ``overwrite=True``: same path, same resolved path, or the same file through a hard or symbolic link;
- a symbolic link at the target is refused (writing through it would replace a file elsewhere);
- a folder in the way, a file where a parent folder should be, or a folder without write permission
  is refused before any work, with the path in the message.

Writes are atomic: the data goes to a temporary file in the target's folder (``.<name>.XXXXXXXX.tmp``),
is flushed to disk, gets the mode ``0o666 & ~umask``, and replaces the target with ``os.replace``; a
reader, or a process killed mid-write, sees the old file or the new one, never half of one, and a
failed write leaves no temporary file. A full disk (ENOSPC, EDQUOT) or a file-size limit (EFBIG)
raises an ``OSError`` with the same errno whose message names the file.

``atomic_write_bytes`` is the unchecked atomic write of files a training run owns inside its locked run
folder (``run_folder_lock``), replaced every epoch. ``without_load_advice`` removes torch's advice to
load an untrusted file with ``weights_only=False`` from an error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["check_target", "check_folder", "atomic_path", "write_bytes", "write_text", "atomic_write_bytes",
           "current_umask", "run_folder_lock", "RunFolderLocked", "remove_stale_tmp", "without_load_advice",
           "LOCK_NAME"]

LOCK_NAME = ".seglab.lock"
#: Temp files of this module: "." + file name + "." + mkstemp's 8 random characters + ".tmp"
_TMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_NO_ROOM = {errno.ENOSPC: "the disk is full", getattr(errno, "EDQUOT", -1): "the disk quota is used up",
            errno.EFBIG: "the file is larger than this file system (or `ulimit -f`) allows"}


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def check_folder(folder: str | os.PathLike, *, what: str = "--out") -> Path:
    """Check that files can be created in ``folder`` (created later if missing); return it as a Path.

    Raises:
        NotADirectoryError: ``folder`` or one of its parents is a file.
        PermissionError: the nearest existing folder is not writable.
    """
    folder = Path(folder).expanduser()
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"{what} {folder}: {path} is a file, not a folder; pass another path")
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(f"{what} {folder}: the folder {path} is not writable; choose a folder you can "
                                      "write to")  # fmt: skip
            break
    return folder


def _same_file(path: Path, inputs: Iterable[str | os.PathLike]) -> Path | None:
    """The input that is the file ``path`` (the same inode: same path, or reached through a link), or None."""
    if not path.exists():
        return None  # a file that does not exist is not an input that is read
    target = path.stat()
    for item in inputs:
        with contextlib.suppress(OSError):  # an input that is gone cannot be lost
            stat = os.stat(Path(item).expanduser())
            if (stat.st_dev, stat.st_ino) == (target.st_dev, target.st_ino):
                return Path(item)
    return None


def check_target(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 what: str = "--out") -> Path:
    """Refuse a file destination that would lose something; return it as a Path. Call it before the work.

    Args:
        path: the file to write.
        overwrite: allow replacing an existing file (never an input, never through a symlink).
        inputs: the files the command reads (checkpoint, images): never replaced.
        what: how the message names the destination (the CLI flag, e.g. ``--json``).

    Raises:
        FileExistsError: ``path`` is a symbolic link, is one of ``inputs``, or exists and ``overwrite`` is
            False.
        IsADirectoryError: ``path`` is a folder. NotADirectoryError / PermissionError: see ``check_folder``.
    """
    path = Path(path).expanduser()
    if path.is_symlink():
        raise FileExistsError(f"{what} {path} is a symbolic link; refusing to write through it (it would replace "
                              f"{os.readlink(path)}): give a plain file path")  # fmt: skip
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give the path of a file (inside it, or elsewhere)")
    source = _same_file(path, inputs)
    if source is not None:
        raise FileExistsError(f"{what} {path} would replace the input {source}, a file this command reads; refusing "
                              "(inputs are never overwritten, even with --overwrite): choose another path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {path} already exists; pass --overwrite (overwrite=True) to replace it, or "
                              "choose another path")  # fmt: skip
    check_folder(path.parent, what=what)
    return path


def _no_room_error(error: OSError, path: Path) -> OSError:
    """The same errno, with a message that names the file being written and what to do."""
    reason = _NO_ROOM[error.errno]
    return OSError(error.errno, f"{error.strerror or os.strerror(error.errno)} while writing {path} ({reason}): "
                                "free some space there or write to another folder")  # fmt: skip


@contextlib.contextmanager
def _replace_from_temp(path: Path, before_replace=None) -> Iterator[Path]:
    """A temp file next to ``path`` for the caller to fill; flushed, chmod-ed and moved onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)  # (Windows: fsync needs write access)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in _NO_ROOM:
            raise _no_room_error(error, path) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                what: str = "--out") -> Iterator[Path]:
    """A temporary path for a writer (``torch.save``, ``Image.save``, ``savefig``) that becomes ``path`` atomically.

    ``check_target`` runs on entry and again just before the replace (a file that appeared meanwhile is
    not lost); the temp file is removed if the block raises. Example::

        with atomic_path("mask.png", overwrite=False) as tmp:
            image.save(tmp, format="PNG")  # give the format: the temp name ends in .tmp

    Raises:
        See ``check_target``; OSError naming ``path`` on a full disk or a file-size limit.
    """
    inputs = list(inputs)
    path = check_target(path, overwrite=overwrite, inputs=inputs, what=what)
    recheck = lambda: check_target(path, overwrite=overwrite, inputs=inputs, what=what)  # noqa: E731
    with _replace_from_temp(path, before_replace=recheck) as tmp:
        yield tmp


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False,
                inputs: Iterable[str | os.PathLike] = (), what: str = "--out") -> Path:
    """Write ``data`` to ``path`` under the rules of ``check_target``, atomically; return the path."""
    with atomic_path(path, overwrite=overwrite, inputs=inputs, what=what) as tmp:
        tmp.write_bytes(data)
    return Path(path).expanduser()


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike] = (), what: str = "--out") -> Path:
    """Write ``text`` (UTF-8) to ``path`` under the rules of ``check_target``, atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite, inputs=inputs, what=what)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode ``0o666 & ~umask``, replacing what is there (a file of a run folder
    that the run owns: hold ``run_folder_lock``). A symlink at ``path`` is replaced, never written through.

    Raises:
        OSError naming ``path`` on a full disk or a file-size limit.
    """
    with _replace_from_temp(Path(path)) as tmp:
        tmp.write_bytes(data)


def without_load_advice(text: str) -> str:
    """``text`` (an error message that quotes a failed ``torch.load``) on one line, without torch's advice to
    retry with ``weights_only=False`` or to allow-list globals: that would run code from an untrusted file.

    Example: torch's "Weights only load failed. This file can still be loaded, ... (1) ... set to `False`
    ... WeightsUnpickler error: Unsupported global: GLOBAL x.Y was not an allowed global by default.
    Please use `torch.serialization.add_safe_globals(...)` ..." becomes "Weights only load failed.
    WeightsUnpickler error: Unsupported global: GLOBAL x.Y was not an allowed global by default."
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    advice = re.compile(r"`weights_only` set to `False`|weights_only=False|from `False` to `True`|safe_globals|"
                        r"if you trust|trusted source|trust the source|Alternatively, to load|documentation of torch\.load|"
                        r"Please file an issue")
    kept = [s.strip() for s in sentences if s.strip() and not advice.search(s)]
    return " ".join(kept)


# ------------------------------------------------------------------------------------------------
# The run folder: one training run at a time, no stale temp files
# ------------------------------------------------------------------------------------------------


class RunFolderLocked(RuntimeError):
    """Another live process is training into the same output folder."""


@contextlib.contextmanager
def run_folder_lock(out: str | os.PathLike, enabled: bool = True) -> Iterator[Path | None]:
    """Hold an exclusive lock on the run folder ``out`` (created if needed) while the block runs.

    The lock is ``fcntl.flock`` on ``out/.seglab.lock``, which holds the PID of its owner (on Windows,
    ``filelock``'s ``msvcrt.locking``, without the PID). The operating system drops
    it when the owner exits, however it exits (``kill -9`` included), so a lock file left by a dead
    process never blocks. It is released when the block ends, also on an exception, so calling
    ``fit`` twice in a row on one folder (a notebook) works. ``enabled=False`` (the ranks other than 0
    under torchrun) takes no lock and yields None.

    Raises:
        RunFolderLocked: another process (or another ``fit`` in this process) holds the lock; the
            message gives its PID.
        NotADirectoryError: ``out`` (or a parent) is a file. PermissionError: it is not writable.
        FileExistsError: ``out/.seglab.lock`` is a symbolic link (never followed).
    """
    if not enabled:
        yield None
        return
    out = check_folder(out, what="output folder (--out)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME

    def refuse(owner: str):
        return RunFolderLocked(
            f"{out} is in use by another training run (PID {owner or 'unknown'}, lock {path}): wait for it to finish, "
            "or pass another --out. (The lock goes away by itself when that process ends.)"
        )

    try:
        import fcntl
    except ImportError:  # Windows: filelock (msvcrt.locking), without the PID
        from filelock import FileLock, Timeout

        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise refuse("") from None
        try:
            yield path
        finally:
            lock.release()
        return

    try:  # O_NOFOLLOW: a symlink planted at the lock's name is refused, never truncated through
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise FileExistsError(f"the lock file {path} is a symbolic link; refusing to write through it: remove it "
                              "(seglab creates a plain file there)") from None  # fmt: skip
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse(os.pread(fd, 32, 0).decode(errors="replace").strip()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_tmp(out: str | os.PathLike, verbose: bool = False) -> list[Path]:
    """Delete the temp files (``.<name>.XXXXXXXX.tmp``) that a killed run left in ``out``; return them.

    Call it while holding ``run_folder_lock``: then no live writer owns such a file. Other files,
    hidden or not, are never touched. ``verbose``: print what was removed.
    """
    removed, size = [], 0
    out = Path(out)
    if out.is_dir():
        for path in sorted(out.iterdir()):
            if _TMP_PATTERN.match(path.name) and path.is_file() and not path.is_symlink():
                size += path.stat().st_size
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed and verbose:
        print(f"note: removed {len(removed)} temp files ({size / 1e6:.1f} MB) left in {out} by an interrupted run")
    return removed
