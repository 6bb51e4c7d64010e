"""Extract tar archives safely: nothing is ever written outside the destination folder.

``safe_extract`` refuses archive members that would land outside the target folder (absolute paths,
``..`` components, links pointing outside alone or through other links, device files), checking all
members together before extracting anything (``check_members``), then extracts with Python's
``tarfile`` "data" filter as a second line of defence. (torchvision's ``extract_archive`` calls
``extractall`` without a filter, so it is not used here.)

Standard library only: this module copies out alone.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

__all__ = ["UnsafeArchiveError", "check_members", "safe_extract"]


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the extraction folder (or is a device file)."""


_MAX_LINK_DEPTH = 40  # like the kernel's ELOOP limit


class _Escape(Exception):
    """A path resolves outside the destination (or through a symlink loop)."""


def _is_absolute(name: str) -> bool:
    return name.startswith("/") or re.match(r"^[A-Za-z]:", name) is not None


def _resolve_inside(parts: list[str], links: dict[str, str], dest: Path, depth: int = 0) -> list[str]:
    """Resolve ``parts`` (relative to ``dest``) following the archive's symlinks and those already on disk.

    ``links`` maps the *physical* location of each symlink member seen so far (``"a/b"``, relative
    to ``dest``) to its link text. Returns the resolved parts; raises ``_Escape`` if any step leaves
    ``dest`` (an absolute link, a ``..`` above ``dest``, a link chain leading out) or loops.
    """
    if depth > _MAX_LINK_DEPTH:
        raise _Escape("a symlink loop")
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise _Escape("'..' above the destination")
            out.pop()
            continue
        out.append(part)
        key = "/".join(out)
        target = links.get(key)
        if target is None and (dest / key).is_symlink():  # a link left on disk by an earlier extraction
            target = os.readlink(dest / key)
        if target is not None:
            target = target.replace("\\", "/")
            if _is_absolute(target):
                raise _Escape(f"the symlink {key!r} pointing to the absolute path {target!r}")
            out = _resolve_inside(out[:-1] + target.split("/"), links, dest, depth + 1)
    return out


def check_members(members: Sequence[tarfile.TarInfo], dest: Path, archive: Path | str = "archive") -> None:
    """Raise ``UnsafeArchiveError`` unless extracting all ``members`` in order keeps every write inside ``dest``.

    The members are checked *as a set*, by replaying the extraction on paths only: each member's
    location is resolved through the symlinks created by the members before it (and any already in
    ``dest``), so a chain such as ``l1 -> .``, ``l1/l2 -> ..``, ``l1/l2/x`` is refused although
    each link looks harmless on its own. Refused: absolute names, ``..`` components, device files
    and FIFOs, symlinks and hard links whose target resolves outside ``dest``, hard links to anything
    but an earlier file of the archive, members written through a link that leads outside, symlink
    loops, a symlink where a folder already is and a non-folder whose name ends in ``/`` or ``/.`` (on
    those two, ``tarfile``'s fallback for a link it cannot create recurses without end). Nothing is
    written by this function.
    """
    links: dict[str, str] = {}
    files: set[str] = set()  # earlier regular-file members (normalised names): what a hard link may target
    folders: set[str] = set()  # folders the members before this one create (resolved locations)
    for member in members:
        name = member.name.replace("\\", "/")
        where = f"{archive}: member {member.name!r}"
        if _is_absolute(name):
            raise UnsafeArchiveError(f"{where} has an absolute path; refusing to extract this archive.")
        if ".." in PurePosixPath(name).parts:
            raise UnsafeArchiveError(f"{where} contains '..'; refusing to extract this archive.")
        if member.isdev():
            raise UnsafeArchiveError(f"{where} is a device file or FIFO; refusing to extract this archive.")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts:
            if member.isdir():
                continue  # "." or "./": the destination itself
            raise UnsafeArchiveError(f"{where} names the destination folder itself; refusing to extract this archive.")
        if not member.isdir() and name.split("/")[-1] in ("", "."):
            raise UnsafeArchiveError(f"{where} ends in '/' or '/.', which names a folder, but is no folder; refusing "
                                     "to extract this archive.")
        try:
            # where the member lands: its folder resolved through earlier links, then its own name
            location = _resolve_inside(parts[:-1], links, dest) + [parts[-1]]
            if not member.issym():
                _resolve_inside(location, links, dest)  # a file or folder written onto an existing link follows it
        except _Escape as why:
            raise UnsafeArchiveError(
                f"{where} would be written outside {dest} (through {why}); refusing to extract this archive."
            ) from None
        key = "/".join(location)
        if member.issym() and (key in folders or ((dest / key).is_dir() and not (dest / key).is_symlink())):
            raise UnsafeArchiveError(f"{where} is a symlink where a folder {key!r} is; refusing to extract this "
                                     "archive.")
        folders.update("/".join(location[:i]) for i in range(1, len(location)))
        if member.isdir():
            folders.add(key)
        if member.issym() or member.islnk():
            link = member.linkname.replace("\\", "/")
            if _is_absolute(link):
                raise UnsafeArchiveError(f"{where} links to the absolute path {link!r}; refusing to extract this "
                                         "archive.")
            # a symlink is relative to its folder, a hard link to the archive root
            start = location[:-1] if member.issym() else []
            try:
                _resolve_inside(start + link.split("/"), links, dest)
            except _Escape as why:
                raise UnsafeArchiveError(
                    f"{where} links to {member.linkname!r}, outside {dest} (through {why}); refusing to extract "
                    "this archive."
                ) from None
            if member.islnk() and "/".join(p for p in link.split("/") if p not in ("", ".")) not in files:
                raise UnsafeArchiveError(
                    f"{where} is a hard link to {member.linkname!r}, which is no earlier file of the archive; "
                    "refusing to extract this archive."
                )
            if member.issym():
                links[key] = link
        else:
            links.pop(key, None)  # a later member of that name replaces the link
        if member.isreg():
            files.add("/".join(parts))


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar archive (any compression) into ``dest`` after checking every member.

    All members are checked together first (``check_members``); only then is anything written,
    with Python's ``tarfile`` "data" filter as a second line of defence. Pythons without that filter
    (3.10.0-3.10.11, 3.11.0-3.11.3) are refused.

    Raises:
        UnsafeArchiveError: a member has an absolute path, a ``..`` component, is a link that (alone
            or through other links) points outside ``dest``, or is a device file. Nothing is
            extracted in that case.
        RuntimeError: this Python's ``tarfile`` has no "data" filter (nothing is extracted).
        tarfile.ReadError: the file is not a tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        check_members(members, dest, archive)
        if not hasattr(tarfile, "data_filter"):
            raise RuntimeError(
                f"refusing to extract {archive}: this Python's tarfile lacks the 'data' extraction filter "
                "(added in Python 3.10.12, 3.11.4 and 3.12). Upgrade Python, or extract the archive yourself "
                f"with a tool you trust into {dest}."
            )
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:  # pragma: no cover - check_members refuses all of these first
            raise UnsafeArchiveError(f"{archive}: {exc}; refusing to extract this archive.") from exc
    return dest
