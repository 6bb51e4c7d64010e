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
Without ``root=``, ``resolve_root("voc")`` (``$SEGLAB_DATA/VOCdevkit``) is tried first, then the genuine
VOC subset ``$SEGLAB_DATA/voc-samples/VOCdevkit`` (330 train + 30 val images, the project's CI data; its
split lists only name the images present, so ``len()`` tells the subset from the full set).

Masks must be what the VOC tar holds: 8-bit palette PNGs (or grayscale class-index PNGs) with values
0-20 and 255. A mask re-saved as RGB, or with other values, is refused with an error naming the file
and how to repair it (an RGB mask is never guessed back into indices silently).

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

from .base import DATA_ENV, SegmentationDataset, resolve_root
from .download import download_sbd, download_voc
from .palettes import VOC_CLASSES, VOC_COLORS
from .voc_layout import find_voc2012, read_split_ids, voc_extract_dir

__all__ = [
    "VOCSegmentation",
    "VOC_SPLITS",
    "VOC_SPLIT_SIZES",
    "VOC_SUBSET_FOLDER",
    "find_voc2012",
    "voc_extract_dir",
    "read_split_ids",
    "trainaug_ids",
]

VOC_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "trainaug")
#: Number of images of each split of the full dataset (the subset's lists are shorter).
VOC_SPLIT_SIZES: dict[str, int] = {"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582}
#: Subfolder of ``$SEGLAB_DATA`` holding the genuine VOC 2012 subset (``<it>/VOCdevkit/VOC2012``).
VOC_SUBSET_FOLDER = "voc-samples"


def trainaug_ids(voc2012: Path) -> list[str]:
    """Ids of the trainaug split: ``trainaug.txt`` if present, else ``SegmentationClassAug`` ids minus val."""
    listed = voc2012 / "ImageSets" / "Segmentation" / "trainaug.txt"
    if listed.is_file():
        return read_split_ids(listed)
    val = set(read_split_ids(voc2012 / "ImageSets" / "Segmentation" / "val.txt"))
    return sorted(p.stem for p in (voc2012 / "SegmentationClassAug").glob("*.png") if p.stem not in val)


def _subset_root() -> Path | None:
    """``$SEGLAB_DATA/voc-samples`` when ``$SEGLAB_DATA`` is set and that folder holds a VOC tree, else None."""
    env = os.environ.get(DATA_ENV)
    if not env:
        return None
    subset = Path(env).expanduser().absolute() / VOC_SUBSET_FOLDER
    return subset if find_voc2012(subset) is not None else None


def _missing_message(root: Path, also: Path | None = None) -> str:
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and not (candidate / "ImageSets" / "Segmentation").is_dir():
            return (
                f"PASCAL VOC 2012 at {candidate} has JPEGImages/ but no ImageSets/Segmentation/ (the split lists "
                "train.txt, val.txt, trainval.txt, one image id per line). They come with the VOC tar: extract "
                "VOCtrainval_11-May-2012.tar again (python -m seglab download voc), or write the list yourself."
            )
    looked = f"{root}/VOCdevkit/VOC2012, {root}/VOC2012, {root}" + (f" and {also}/VOCdevkit/VOC2012" if also else "")
    return (
        f"PASCAL VOC 2012 not found: looked for {looked} (a folder with JPEGImages/ and ImageSets/Segmentation/). "
        f"Get it with `python -m seglab download voc --data-root {root}` or build_dataset('voc', ..., "
        "download=True) (about 2 GB), or point root= / $SEGLAB_DATA at the folder that holds VOCdevkit/."
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes (background + 20 objects), 255 = object borders/void.

    Args:
        split: "train" (1,464), "val" (1,449), "trainval" (2,913) or "trainaug" (10,582; needs SBD labels,
            see the module docstring).
        root: folder holding ``VOCdevkit/`` (or ``VOCdevkit/`` or ``VOC2012/`` itself); default
            ``resolve_root("voc")`` = ``$SEGLAB_DATA/VOCdevkit`` or ``<repo>/data/VOCdevkit``, and when
            neither holds VOC (and ``download`` is False) the subset ``$SEGLAB_DATA/voc-samples``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: if the data is missing, download and extract the VOC tar (trying every mirror in
            ``seglab.data.download.VOC_MIRRORS``, MD5-checked); for "trainaug" also SBD.
        mirrors: URLs to try instead of ``VOC_MIRRORS`` (e.g. ``file://`` URLs in tests).
        sbd_mirrors: URLs to try instead of ``SBD_MIRRORS``.

    Attributes: ``root`` is the ``VOC2012`` folder found; ``samples`` the (jpg, png) pairs.

    Items: image ``(H, W, 3) uint8`` (VOC images are at most 500x500), mask ``(H, W) int64`` in
    ``[0, 21)`` or 255. Palette PNG masks are read as palette indices (= class indices), grayscale
    PNGs (SBD's ``SegmentationClassAug``) as their values.

    Raises:
        FileNotFoundError: dataset, split list or listed files missing (the message names the first
            missing id and says how to get them); trainaug without SBD labels (says how to get them).
        ValueError: unknown or empty split; when an item is read: an RGB mask, mask values outside
            0-20/255, or a mask of another size than its image (each naming the file and the fix).
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
        subset = _subset_root() if root is None else None
        if voc2012 is None and download:
            download_voc(given, mirrors=mirrors)
            voc2012 = find_voc2012(given)
        if voc2012 is None and subset is not None:  # no full VOC in $SEGLAB_DATA: the genuine subset
            voc2012 = find_voc2012(subset)
        if voc2012 is None:
            env = os.environ.get(DATA_ENV) if root is None else None
            raise FileNotFoundError(_missing_message(given, Path(env) / VOC_SUBSET_FOLDER if env else None))
        if split == "trainaug" and not (voc2012 / "SegmentationClassAug").is_dir() and download:
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
                present = sorted(p.name for p in list_file.parent.glob("*.txt"))
                raise FileNotFoundError(
                    f"VOC 2012 split list {list_file} not found (present: {present or 'none'}). The VOC tar has "
                    "it: extract VOCtrainval_11-May-2012.tar again (python -m seglab download voc), or write "
                    "the list yourself, one image id per line."
                )
            ids = read_split_ids(list_file)
            source = str(list_file)
        if not ids:
            raise ValueError(f"VOC 2012 split {split!r} is empty: {source} lists no images.")
        samples = [(voc2012 / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
        missing = [(i, pair) for i, pair in zip(ids, samples) if not (pair[0].is_file() and pair[1].is_file())]
        if missing:
            first, (jpg, png) = missing[0]
            lacks = " and ".join(f"{p.parent.name}/{p.name}" for p in (jpg, png) if not p.is_file())
            raise FileNotFoundError(
                f"VOC 2012 split {split!r}: {len(missing)} of the {len(ids)} ids listed in {source} lack their "
                f"files; the first is {first} (no {lacks} in {voc2012}). Every listed id needs "
                "JPEGImages/<id>.jpg and SegmentationClass/<id>.png: if the extraction is incomplete, delete the "
                "folder and download/extract again; if you keep a subset, list only the ids you have."
            )
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Palette (or grayscale) indices -> ``(H, W) int64``; RGB masks and values outside 0-20/255 raise."""
        if raw.ndim == 3:
            raise ValueError(
                f"{path}: an RGB image, not a VOC mask: VOC masks are 8-bit palette PNGs (mode 'P') whose pixel "
                "values are the class indices 0-20 and 255. This file was probably re-saved by an image editor "
                "or with .convert('RGB'). Fix: take the original PNG from VOCtrainval_11-May-2012.tar again, or "
                "convert it back with seglab.data.palettes.rgb_to_index(rgb, VOC_COLORS) and save the indices as "
                "a palette PNG (Image.fromarray(indices.astype('uint8'), mode='P') + putpalette(voc_colormap()))."
            )
        bad = (raw > 20) & (raw != 255)
        if bad.any():
            values = np.unique(raw[bad])
            raise ValueError(
                f"{path}: mask holds values {values[:12].tolist()} ({int(bad.sum())} pixels) outside the 21 VOC "
                "class indices [0, 21) and the ignore value 255. A genuine VOC mask holds only those; a mask "
                "re-saved with .convert('L') holds brightness values instead of classes. Fix: take the original "
                "PNG from VOCtrainval_11-May-2012.tar again, or map those values to a class index or to 255."
            )
        return raw.astype(np.int64)
