"""ISBI 2012 EM segmentation challenge (Cardona et al. 2010; Arganda-Carreras et al. 2015).

The data of the U-Net paper (Ronneberger et al., MICCAI 2015): 30 serial-section electron microscopy
slices of the Drosophila ventral nerve cord, 512x512 8-bit grayscale, with membrane labels. Layout
(as in the public repository zhixuhao/unet, ``data/membrane``)::

    <root>/train/image/0.png ... 29.png    30 images
    <root>/train/label/0.png ... 29.png    labels: 0 = membrane, 255 = cell interior
    <root>/test/image/0.png ... 29.png     30 images without labels

Labels 0/255 become class indices 0 ("membrane") / 1 ("cell"); 255 here is a class, not "ignore".
Images are replicated to 3 channels. Splits of the 30 labelled images, in numeric file order:
"train" = the first 24, "val" = the last 6, "trainval" = all 30. The unlabelled "test" images are
refused with an error (use "val" to evaluate). Differences from the paper: U-Net was trained on all
30 slices with elastic deformations and evaluated on the challenge's hidden test labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import SegmentationDataset, resolve_root
from .palettes import ISBI_CLASSES, ISBI_COLORS

__all__ = ["ISBI2012", "ISBI_SPLITS", "ISBI_NUM_VAL", "ISBI_HOW_TO_GET", "find_isbi"]

ISBI_SPLITS: tuple[str, ...] = ("train", "val", "trainval")
#: The last this-many labelled images (in numeric order) form the val split.
ISBI_NUM_VAL = 6
#: How to get the data (``{path}``: where it is expected).
ISBI_HOW_TO_GET = (
    "Get it from https://github.com/zhixuhao/unet (folder data/membrane: copy train/image and train/label to "
    "{path}/train/, and test/*.png except *_predict.png to {path}/test/image/), or from the challenge page "
    "https://imagej.net/events/isbi-2012-segmentation-challenge (train-volume.tif / train-labels.tif, saved as one "
    "PNG per slice); or set SEGLAB_DATA to a folder holding isbi2012/, or pass root=."
)


def find_isbi(root: str | os.PathLike) -> Path | None:
    """``root`` if it holds ``train/image/``, else ``root/isbi2012`` if that does, else None."""
    root = Path(root)
    for candidate in (root, root / "isbi2012"):
        if (candidate / "train" / "image").is_dir():
            return candidate
    return None


def _numeric_first(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


class ISBI2012(SegmentationDataset):
    """ISBI 2012 EM membranes: 2 classes ("membrane", "cell"), no ignore pixels.

    Args:
        split: "train" (24 images), "val" (6) or "trainval" (30). "test" has no labels: ValueError.
        root: the ISBI folder (or a folder holding ``isbi2012/``); default ``resolve_root("isbi2012")``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: ISBI is not downloadable automatically; True only changes the error message.

    Items: image ``(512, 512, 3) uint8`` (gray replicated), mask ``(512, 512) int64`` in {0, 1}.

    Raises:
        FileNotFoundError: data missing (the message says where to get it) or a label file missing.
        ValueError: unknown split or "test"; labels other than 0/255 or size mismatch when read.
    """

    classes = ISBI_CLASSES
    colors = ISBI_COLORS

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        download: bool = False,
    ) -> None:
        given = resolve_root("isbi2012", root)
        if split == "test":
            raise ValueError(
                f"ISBI 2012 'test' images ({given}/test/image) have no labels, so they cannot form (image, mask) "
                "items; evaluate on split='val' (the last 6 labelled slices) and read test images with "
                "seglab.data.read_image for predictions."
            )
        if split not in ISBI_SPLITS:
            raise ValueError(f"ISBI 2012: unknown split {split!r}; valid splits: {list(ISBI_SPLITS)}")
        found = find_isbi(given)
        if found is None:
            note = "ISBI 2012 cannot be downloaded automatically. " if download else ""
            raise FileNotFoundError(
                f"ISBI 2012 not found at {given} (expected train/image/ and train/label/). "
                + note
                + ISBI_HOW_TO_GET.format(path=given)
            )
        super().__init__(split=split, root=found, transform=transform)
        images = sorted((found / "train" / "image").glob("*.png"), key=_numeric_first)
        if not images:
            raise ValueError(f"ISBI 2012: no PNG images in {found / 'train' / 'image'} (the split is empty).")
        pairs = [(p, found / "train" / "label" / p.name) for p in images]
        missing = [str(m) for _, m in pairs if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"ISBI 2012: {len(missing)} label files are missing, e.g. {missing[:3]}")
        num_val = ISBI_NUM_VAL if len(pairs) > ISBI_NUM_VAL else 0
        if split == "val" and num_val == 0:
            raise ValueError(f"ISBI 2012: only {len(pairs)} labelled images in {found}; too few for a val split.")
        cut = len(pairs) - num_val
        self.samples = {"train": pairs[:cut], "val": pairs[cut:], "trainval": pairs}[split]

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim != 2 or not np.isin(raw, (0, 255)).all():
            found = np.unique(raw)[:12].tolist() if raw.ndim == 2 else f"an image of shape {raw.shape}"
            raise ValueError(
                f"{path}: ISBI 2012 labels must be single-channel with 0 (membrane) and 255 (cell) only; "
                f"found {found}. Re-export the label as an 8-bit binary PNG."
            )
        return (raw == 255).astype(np.int64)
