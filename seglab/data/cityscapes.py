"""Cityscapes, fine annotations (Cordts et al., CVPR 2016): 19 classes, the benchmark of urban scene parsing.

Street scenes from 50 cities, 1024x2048 RGB. Layout (what ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` extract to, side by side)::

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

train 2,975 images (18 cities), val 500 (3 cities), test 1,525 (labels withheld: its gtFine files are
placeholders, so the split is refused; evaluation is on the benchmark server).

Masks are read from the ``*_gtFine_labelIds.png`` files (8-bit, one of the 34 label ids 0-33 per pixel)
and mapped to the 19 *train ids* of the benchmark by ``CITYSCAPES_LABELS``, the label definition of the
Cityscapes scripts (``cityscapesscripts/helpers/labels.py``): road 7 -> 0, sidewalk 8 -> 1, ... bicycle
33 -> 18; the other 15 labels (unlabeled, ego vehicle, ..., parking, rail track, guard rail, bridge,
tunnel, polegroup, caravan, trailer) and license plate (id -1) -> 255, ignored by the loss and the
metrics, as in the benchmark. No ``createTrainIdLabelImgs`` preprocessing step is needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .base import SegmentationDataset, resolve_root

__all__ = [
    "Cityscapes",
    "CityscapesLabel",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_COLORS",
    "CITYSCAPES_SPLITS",
    "CITYSCAPES_HOW_TO_GET",
    "find_cityscapes",
    "label_ids_to_train_ids",
]


class CityscapesLabel(NamedTuple):
    """One label of the Cityscapes definition: its name, label id (in ``*_labelIds.png``), train id
    (0-18, or 255 = ignored) and display colour."""

    name: str
    label_id: int
    train_id: int
    color: tuple[int, int, int]


_L = CityscapesLabel  # short, for the table below
#: The 35 labels of the Cityscapes scripts' definition, in label-id order (license plate, id -1, last).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    _L("unlabeled", 0, 255, (0, 0, 0)), _L("ego vehicle", 1, 255, (0, 0, 0)),
    _L("rectification border", 2, 255, (0, 0, 0)), _L("out of roi", 3, 255, (0, 0, 0)),
    _L("static", 4, 255, (0, 0, 0)), _L("dynamic", 5, 255, (111, 74, 0)), _L("ground", 6, 255, (81, 0, 81)),
    _L("road", 7, 0, (128, 64, 128)), _L("sidewalk", 8, 1, (244, 35, 232)),
    _L("parking", 9, 255, (250, 170, 160)), _L("rail track", 10, 255, (230, 150, 140)),
    _L("building", 11, 2, (70, 70, 70)), _L("wall", 12, 3, (102, 102, 156)), _L("fence", 13, 4, (190, 153, 153)),
    _L("guard rail", 14, 255, (180, 165, 180)), _L("bridge", 15, 255, (150, 100, 100)),
    _L("tunnel", 16, 255, (150, 120, 90)), _L("pole", 17, 5, (153, 153, 153)),
    _L("polegroup", 18, 255, (153, 153, 153)), _L("traffic light", 19, 6, (250, 170, 30)),
    _L("traffic sign", 20, 7, (220, 220, 0)), _L("vegetation", 21, 8, (107, 142, 35)),
    _L("terrain", 22, 9, (152, 251, 152)), _L("sky", 23, 10, (70, 130, 180)), _L("person", 24, 11, (220, 20, 60)),
    _L("rider", 25, 12, (255, 0, 0)), _L("car", 26, 13, (0, 0, 142)), _L("truck", 27, 14, (0, 0, 70)),
    _L("bus", 28, 15, (0, 60, 100)), _L("caravan", 29, 255, (0, 0, 90)), _L("trailer", 30, 255, (0, 0, 110)),
    _L("train", 31, 16, (0, 80, 100)), _L("motorcycle", 32, 17, (0, 0, 230)), _L("bicycle", 33, 18, (119, 11, 32)),
    _L("license plate", -1, 255, (0, 0, 142)),
)  # fmt: skip

#: The 19 classes, in train-id order.
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(label.name for label in CITYSCAPES_LABELS if label.train_id != 255)
#: Their colours, as in the Cityscapes scripts (road purple, car dark blue, ...).
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    label.color for label in CITYSCAPES_LABELS if label.train_id != 255
)
CITYSCAPES_SPLITS: tuple[str, ...] = ("train", "val", "trainval")
#: How to get the data (``{path}``: where it is expected).
CITYSCAPES_HOW_TO_GET = (
    "Cityscapes needs a free account: register at https://www.cityscapes-dataset.com/register/, then from its "
    "download page get gtFine_trainvaltest.zip (241 MB, the fine labels) and leftImg8bit_trainvaltest.zip "
    "(11 GB, the images) and unzip both into {path} (they create gtFine/ and leftImg8bit/ side by side); "
    "or set SEGLAB_DATA to a folder holding cityscapes/, or pass root=."
)
_IMAGE_SUFFIX = "_leftImg8bit.png"
_MASK_SUFFIX = "_gtFine_labelIds.png"


def find_cityscapes(root: str | os.PathLike) -> Path | None:
    """``root`` if it holds ``leftImg8bit/`` or ``gtFine/``, else ``root/cityscapes`` if that does, else None.

    Either folder is enough to count, so that a half-unzipped dataset is reported as such.
    """
    root = Path(root)
    for candidate in (root, root / "cityscapes"):
        if (candidate / "leftImg8bit").is_dir() or (candidate / "gtFine").is_dir():
            return candidate
    return None


@cache
def _train_id_table() -> np.ndarray:
    """``(256,) int64``: label id -> train id; 255 (license plate's -1 as a byte) -> 255; -1 = not an id."""
    table = np.full(256, -1, dtype=np.int64)
    table[255] = 255
    for label in CITYSCAPES_LABELS:
        if label.label_id >= 0:
            table[label.label_id] = label.train_id
    table.setflags(write=False)
    return table


def label_ids_to_train_ids(label_ids: np.ndarray, source: str = "mask") -> np.ndarray:
    """Map a Cityscapes label-id mask to train ids: ``(H, W)`` integers -> ``(H, W) int64`` in ``[0, 19)`` or 255.

    Label ids 0-33 follow ``CITYSCAPES_LABELS`` (road 7 -> 0, car 26 -> 13, parking 9 -> 255, ...); 255,
    the byte that license plate's id -1 becomes, stays 255.

    Raises:
        ValueError: a value that is no Cityscapes label id (34-254, negative, above 255), naming ``source``.
    """
    label_ids = np.asarray(label_ids)
    table = _train_id_table()
    valid = (label_ids >= 0) & (label_ids <= 255)
    train_ids = np.where(valid, table[np.clip(label_ids, 0, 255)], -1)
    bad = train_ids < 0
    if bad.any():
        values = np.unique(label_ids[bad])
        raise ValueError(
            f"{source}: values {values[:12].tolist()} ({int(bad.sum())} pixels) are no Cityscapes label ids (0-33). "
            f"seglab reads the *{_MASK_SUFFIX} files as unzipped from gtFine_trainvaltest.zip; a *_labelTrainIds.png, "
            "*_instanceIds.png or *_color.png file, or a re-saved mask, holds other values: take the original "
            "file from the zip again."
        )
    return train_ids


class Cityscapes(SegmentationDataset):
    """Cityscapes gtFine: 19 classes (road, sidewalk, ..., bicycle), every other label -> 255 (ignore).

    Args:
        split: "train" (2,975), "val" (500) or "trainval" (3,475). "test" is refused: its labels are withheld.
        root: the folder holding ``leftImg8bit/`` and ``gtFine/`` (or a folder holding ``cityscapes/``);
            default ``resolve_root("cityscapes")`` = ``$SEGLAB_DATA/cityscapes`` or ``<repo>/data/cityscapes``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: Cityscapes needs an account to download; True only changes the error message.

    Attributes: ``root`` is the folder found; ``samples`` the (leftImg8bit png, gtFine labelIds png) pairs,
    sorted by city and frame.

    Items: image ``(1024, 2048, 3) uint8``, mask ``(1024, 2048) int64`` in ``[0, 19)`` or 255.

    Raises:
        FileNotFoundError: dataset, one of its two folders, a split folder or a listed mask missing (the
            message says which zip provides it and how to get it).
        ValueError: unknown or empty split, or "test"; when an item is read: mask values that are no label
            ids, an RGB mask, or a mask of another size than its image (each naming the file).
    """

    classes = CITYSCAPES_CLASSES
    colors = CITYSCAPES_COLORS

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        download: bool = False,
    ) -> None:
        if split == "test":
            raise ValueError(
                "Cityscapes: split 'test' has no public labels (its gtFine files are placeholders; results are "
                "scored by the benchmark server); use split='val' to evaluate, or 'train' / 'trainval' to train."
            )
        if split not in CITYSCAPES_SPLITS:
            raise ValueError(f"Cityscapes: unknown split {split!r}; valid splits: {list(CITYSCAPES_SPLITS)}")
        given = resolve_root("cityscapes", root)
        found = find_cityscapes(given)
        if found is None:
            note = "It cannot be downloaded automatically. " if download else ""
            raise FileNotFoundError(
                f"Cityscapes not found at {given} (expected leftImg8bit/ and gtFine/). {note}"
                + CITYSCAPES_HOW_TO_GET.format(path=given)
            )
        for folder, archive in (("leftImg8bit", "leftImg8bit_trainvaltest.zip (11 GB)"),
                                ("gtFine", "gtFine_trainvaltest.zip (241 MB)")):  # fmt: skip
            if not (found / folder).is_dir():
                raise FileNotFoundError(
                    f"Cityscapes at {found} is incomplete: no {folder}/ folder. Unzip {archive} into {found} too. "
                    + CITYSCAPES_HOW_TO_GET.format(path=found)
                )
        super().__init__(split=split, root=found, transform=transform)
        parts = ("train", "val") if split == "trainval" else (split,)
        self.samples = [pair for part in parts for pair in self._find_samples(found, part)]

    @staticmethod
    def _find_samples(root: Path, split: str) -> list[tuple[Path, Path]]:
        images_dir, masks_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"Cityscapes split {split!r}: no folder {folder}. The *_trainvaltest.zip archives hold train/, "
                    f"val/ and test/: unzip them again into {root}."
                )
        images = sorted(images_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise ValueError(
                f"Cityscapes split {split!r}: no <city>/*{_IMAGE_SUFFIX} image in {images_dir}; unzip "
                f"leftImg8bit_trainvaltest.zip again into {root}."
            )
        samples = [(image, masks_dir / image.parent.name / (image.name[: -len(_IMAGE_SUFFIX)] + _MASK_SUFFIX))
                   for image in images]  # fmt: skip
        missing = [mask for _, mask in samples if not mask.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Cityscapes split {split!r}: {len(missing)} of the {len(samples)} images lack their label file; "
                f"the first is {missing[0]}. Each <name>{_IMAGE_SUFFIX} needs gtFine/{split}/<city>/<name>"
                f"{_MASK_SUFFIX}: unzip gtFine_trainvaltest.zip again into {root}."
            )
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Label ids -> ``(H, W) int64`` train ids in ``[0, 19)`` or 255; colour files and other values raise."""
        if raw.ndim != 2:
            raise ValueError(
                f"{path}: a colour image, not a label-id mask; seglab reads the *{_MASK_SUFFIX} files (8-bit, "
                "one label id per pixel), not *_gtFine_color.png."
            )
        return label_ids_to_train_ids(raw, str(path))
