"""Use an archive the user already has (a Kaggle copy, a lab share) instead of downloading it.

``use_local_copy(source, folder, filename, md5)`` checks ``source`` against the archive's published MD5 and
puts it at ``folder/filename``, where the downloader would have put it: hard-linked when ``source`` is on
the same file system (no extra space, instant), copied otherwise. The user's file is only ever read: it is
never moved, renamed, changed or deleted, and one with the wrong MD5 is refused before anything is written.
A file already at ``folder/filename`` with other bytes is kept aside (``keep_aside``), never replaced.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .fetch import file_md5, keep_aside, promote

__all__ = ["check_local_copy", "use_local_copy"]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_local_copy(source: str | os.PathLike, filename: str, argument: str = "from_file (--from-file)") -> Path:
    """``source`` as a ``Path`` if it is a file (its MD5 is not read yet).

    Raises:
        FileNotFoundError: no file at ``source``. IsADirectoryError: ``source`` is a folder.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        raise IsADirectoryError(f"{argument}: {source} is a folder; give the path of your copy of {filename}")
    if not source.is_file():
        raise FileNotFoundError(f"{argument}: no file at {source}; give the path of your copy of {filename}")
    return source


def use_local_copy(
    source: str | os.PathLike,
    folder: str | os.PathLike,
    filename: str,
    md5: str,
    *,
    argument: str = "from_file (--from-file)",
    say: Callable[[str], None] = _say,
) -> Path:
    """Put the user's copy ``source`` of ``filename`` at ``folder/filename`` once its MD5 is checked.

    Args:
        source: the user's file. folder: where the archive goes (created if missing).
        filename: the archive's plain file name. md5: its published MD5, 32 hex digits.
        argument: how error messages name ``source`` (the Python argument and the CLI flag).
        say: where the progress lines go (default: stderr).

    Returns:
        ``folder/filename``: a hard link to ``source``, a copy of it, or ``source`` itself when it is
        already there.

    Raises:
        FileNotFoundError: no file at ``source``. IsADirectoryError: ``source`` is a folder.
        ValueError: ``source`` has another MD5 (the message gives both; the file is left as it is), or a
            malformed ``md5`` / ``filename``.
        FileExistsError: a folder is in the way at ``folder/filename``.
        OSError: the copy cannot be written in ``folder`` (full disk, no permission): the message names it.
    """
    if not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
        raise ValueError(f"use_local_copy: md5 must be 32 hexadecimal digits, got {md5!r}")
    if not isinstance(filename, str) or filename in ("", ".", "..") or "/" in filename or "\\" in filename:
        raise ValueError(f"use_local_copy: filename must be a plain file name (no folder), got {filename!r}")
    md5 = md5.lower()
    source = check_local_copy(source, filename, argument)
    say(f"download {filename}: checking the MD5 of {source}")
    got = file_md5(source)
    if got != md5:
        raise ValueError(
            f"{argument}: {source} has MD5 {got}, but {filename} has MD5 {md5}: it is another file, or an "
            "incomplete or damaged copy. It was left as it is; give a complete copy of that archive, or "
            "download it (the same command without the file)."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if path.is_file() and os.path.samefile(path, source):  # the same path, or linked by an earlier run
        say(f"download {filename}: {source} is already in place, MD5 checked")
        return path
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise FileExistsError(errno.EEXIST, f"{path} is in the way of the archive and is not a file: move it")
    if path.is_file():
        if file_md5(path) == md5:  # a good copy is there already
            return path
        kept = keep_aside(path)
        say(f"download {filename}: the file that was at {path} has another MD5: it was kept as {kept}")
    try:
        os.link(source, path)  # fails if a file appeared at `path` meanwhile: nothing is replaced
    except OSError:
        pass  # another file system, no hard links there, or that new file: copy, and `promote` settles it
    else:
        say(f"download {filename}: linked your copy {source} (MD5 checked) as {path}")
        return path
    copying = folder / (filename + ".copying")
    try:
        shutil.copyfile(source, copying)
    except OSError as error:
        copying.unlink(missing_ok=True)  # our own half-written copy
        code = error.errno or errno.EIO
        raise OSError(code, f"cannot write {copying} (copying {source}): {error.strerror or error}") from error
    say(f"download {filename}: copied your copy {source} (MD5 checked) to {path}")
    return promote(copying, path)
