"""PASCAL VOC 2012 semantic segmentation (Everingham et al., IJCV 2010), with the SBD "trainaug" extension.

Layout read (the one ``VOCtrainval_11-May-2012.tar`` extracts to)::

    <root>/VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png            palette PNGs: palette index = class index, 255 = border
        ImageSets/Segmentation/{train,val,trainval}.txt
        SegmentationClassAug/<id>.png         optional, for split "trainaug" (grayscale class indices)
        ImageSets/Segmentation/trainaug.txt   optional, else derived (see below)

``root`` may be the folder that contains ``VOCdevkit/`` (as in torchvision), ``VOCdevkit/`` itself,
or ``VOC2012/`` itself. Splits: train 1,464 images, val 1,449, trainval 2,913, trainaug 10,582.

"trainaug" (Hariharan et al., ICCV 2011, "Semantic contours from inverse detectors"; used by
DeepLab, Chen et al. 2017) = VOC train + SBD train + SBD val, minus every VOC val image. Its masks
come from ``SegmentationClassAug/``: either the commonly distributed ``SegmentationClassAug.zip``
unzipped into ``VOC2012/``, or the folder that ``python -m seglab download sbd`` writes by converting
SBD's ``cls/*.mat`` (``seglab.data.download.download_sbd``). Its image list is
``ImageSets/Segmentation/trainaug.txt`` when present, else every id in ``SegmentationClassAug/``
that is not in ``val.txt`` (10,582 ids for either source).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import SegmentationDataset, resolve_root
from .palettes import IGNORE_COLOR, VOC_CLASSES, VOC_COLORS, rgb_to_index

__all__ = ["VOCSegmentation", "VOC_SPLITS", "find_voc2012", "voc_extract_dir", "read_split_ids", "trainaug_ids"]

VOC_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "trainaug")


def find_voc2012(root: str | os.PathLike) -> Path | None:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root``), or None.

    A folder counts when it has ``JPEGImages/`` and ``ImageSets/Segmentation/``.
    """
    root = Path(root)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    return None


def voc_extract_dir(root: str | os.PathLike) -> Path:
    """Folder to extract ``VOCtrainval_11-May-2012.tar`` into so that ``find_voc2012(root)`` finds it.

    The archive holds ``VOCdevkit/VOC2012/...``: a root named ``VOCdevkit`` gets its parent, a root
    ``.../VOCdevkit/VOC2012`` its grandparent, any other root is used as is.
    """
    root = Path(root)
    if root.name == "VOC2012" and root.parent.name == "VOCdevkit":
        return root.parent.parent
    if root.name == "VOCdevkit":
        return root.parent
    return root


def read_split_ids(path: Path) -> list[str]:
    """Image ids listed one per line in an ``ImageSets`` file (blank lines skipped)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def trainaug_ids(voc2012: Path) -> list[str]:
    """Ids of the trainaug split: ``trainaug.txt`` if present, else ``SegmentationClassAug`` ids minus val."""
    listed = voc2012 / "ImageSets" / "Segmentation" / "trainaug.txt"
    if listed.is_file():
        return read_split_ids(listed)
    val = set(read_split_ids(voc2012 / "ImageSets" / "Segmentation" / "val.txt"))
    return sorted(p.stem for p in (voc2012 / "SegmentationClassAug").glob("*.png") if p.stem not in val)


def _missing_message(root: Path) -> str:
    return (
        f"PASCAL VOC 2012 not found: looked for {root}/VOCdevkit/VOC2012, {root}/VOC2012 and {root} itself "
        "(a folder with JPEGImages/ and ImageSets/Segmentation/). Get it with "
        f"`python -m seglab download voc --data-root {root}` or build_dataset('voc', ..., download=True) "
        "(about 2 GB), or point root= / $SEGLAB_DATA at the folder that holds VOCdevkit/."
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes (background + 20 objects), 255 = object borders/void.

    Args:
        split: "train" (1,464), "val" (1,449), "trainval" (2,913) or "trainaug" (10,582; needs SBD labels,
            see the module docstring).
        root: folder holding ``VOCdevkit/`` (or ``VOCdevkit/`` or ``VOC2012/`` itself); default
            ``resolve_root("voc")`` = ``$SEGLAB_DATA/VOCdevkit`` or ``<repo>/data/VOCdevkit``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: if the data is missing, download and extract the VOC tar (trying every mirror in
            ``seglab.data.download.VOC_MIRRORS``, MD5-checked); for "trainaug" also SBD.
        mirrors: URLs to try instead of ``VOC_MIRRORS`` (e.g. ``file://`` URLs in tests).
        sbd_mirrors: URLs to try instead of ``SBD_MIRRORS``.

    Attributes: ``root`` is the ``VOC2012`` folder found; ``samples`` the (jpg, png) pairs.

    Items: image ``(H, W, 3) uint8`` (VOC images are at most 500x500), mask ``(H, W) int64`` in
    ``[0, 21)`` or 255. Palette PNG masks are read as palette indices (= class indices); RGB masks are
    mapped through the VOC colours, with (224, 224, 192) -> 255.

    Raises:
        FileNotFoundError: dataset, split file or listed files missing (the message says how to get them).
        ValueError: unknown or empty split; bad mask values or sizes when an item is read.
    """

    classes = VOC_CLASSES
    colors = VOC_COLORS

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        download: bool = False,
        mirrors: Sequence[str] | None = None,
        sbd_mirrors: Sequence[str] | None = None,
    ) -> None:
        if split not in VOC_SPLITS:
            raise ValueError(f"VOC 2012: unknown split {split!r}; valid splits: {list(VOC_SPLITS)}")
        given = resolve_root("voc", root)
        voc2012 = find_voc2012(given)
        if voc2012 is None and download:
            from .download import download_voc  # imported here: download.py imports this module

            download_voc(given, mirrors=mirrors)
            voc2012 = find_voc2012(given)
        if voc2012 is None:
            raise FileNotFoundError(_missing_message(given))
        if split == "trainaug" and not (voc2012 / "SegmentationClassAug").is_dir() and download:
            from .download import download_sbd

            download_sbd(given, mirrors=sbd_mirrors)
        super().__init__(split=split, root=voc2012, transform=transform)
        self.samples = self._find_samples(voc2012, split)

    @staticmethod
    def _find_samples(voc2012: Path, split: str) -> list[tuple[Path, Path]]:
        if split == "trainaug":
            mask_dir = voc2012 / "SegmentationClassAug"
            if not mask_dir.is_dir():
                raise FileNotFoundError(
                    f"VOC 2012 split 'trainaug' needs SBD labels in {mask_dir}: run "
                    f"`python -m seglab download sbd --data-root {voc_extract_dir(voc2012)}` (converts SBD's "
                    "cls/*.mat, about 1.4 GB download) or unzip the commonly distributed SegmentationClassAug.zip "
                    f"into {voc2012}."
                )
            ids = trainaug_ids(voc2012)
            source = f"{mask_dir} (ids not in val.txt)"
        else:
            mask_dir = voc2012 / "SegmentationClass"
            list_file = voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(
                    f"VOC 2012 split file {list_file} not found; the VOC tar has it: re-extract "
                    "VOCtrainval_11-May-2012.tar (python -m seglab download voc)."
                )
            ids = read_split_ids(list_file)
            source = str(list_file)
        if not ids:
            raise ValueError(f"VOC 2012 split {split!r} is empty: {source} lists no images.")
        samples = [(voc2012 / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
        missing = [str(p) for pair in samples for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"VOC 2012 split {split!r}: {len(missing)} listed files are missing, e.g. {missing[:3]}. "
                "The extraction is incomplete: delete the folder and download/extract again."
            )
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:  # an RGB-saved mask: map the VOC colours back to indices
            return rgb_to_index(raw, VOC_COLORS, ignore_color=IGNORE_COLOR, source=str(path))
        return raw.astype(np.int64)
