"""ADE20K SceneParse150 (Zhou et al., CVPR 2017 and IJCV 2019): 150 classes of indoor and outdoor scenes.

The MIT Scene Parsing Benchmark's release of ADE20K, the benchmark of scene parsing (FCN, PSPNet, UPerNet,
SegFormer, Mask2Former all report on it). JPEG images of varied sizes. Layout (what
``ADEChallengeData2016.zip`` extracts to)::

    <root>/ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...     20,210 images
    <root>/ADEChallengeData2016/annotations/training/ADE_train_00000001.png ...
    <root>/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...     2,000 images
    <root>/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png ...

Annotations are 8-bit grayscale PNGs with values 0-150: 1-150 are the classes of ``ADE20K_CLASSES`` (wall,
building, sky, ...), read as class indices 0-149; 0 means "other objects", which the benchmark does not
score, read as 255 (ignore). This is mmsegmentation's ``reduce_zero_label`` convention.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import SegmentationDataset, resolve_root
from .palettes import ADE20K_CLASSES, ADE20K_COLORS

__all__ = ["ADE20K", "ADE20K_SPLITS", "ADE20K_FOLDER", "ADE20K_HOW_TO_GET", "find_ade20k", "ade20k_extract_dir"]

#: seglab split -> the benchmark's folder name.
ADE20K_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("training",), "val": ("validation",), "trainval": ("training", "validation"),
}  # fmt: skip
#: The folder the zip extracts to.
ADE20K_FOLDER = "ADEChallengeData2016"
#: How to get the data (``{path}``: where it is expected).
ADE20K_HOW_TO_GET = (
    "Download ADEChallengeData2016.zip (about 923 MB, no account needed) from the MIT Scene Parsing Benchmark, "
    "http://sceneparsing.csail.mit.edu (direct link: http://data.csail.mit.edu/places/ADEchallenge/"
    "ADEChallengeData2016.zip), and unzip it into {path} (it creates ADEChallengeData2016/ with images/ and "
    "annotations/); or set SEGLAB_DATA to a folder holding ADEChallengeData2016/, or pass root=."
)


def find_ade20k(root: str | os.PathLike) -> Path | None:
    """``root`` if it holds ``images/`` or ``annotations/``, else ``root/ADEChallengeData2016`` if that does,
    else None. Either folder is enough to count, so that a half-extracted dataset is reported as such."""
    root = Path(root)
    for candidate in (root, root / ADE20K_FOLDER):
        if (candidate / "images").is_dir() or (candidate / "annotations").is_dir():
            return candidate
    return None


def ade20k_extract_dir(root: str | os.PathLike) -> Path:
    """Folder to unzip ``ADEChallengeData2016.zip`` into so that ``find_ade20k(root)`` finds it: the parent of a
    root named ``ADEChallengeData2016``, any other root as is."""
    root = Path(root)
    return root.parent if root.name == ADE20K_FOLDER else root


class ADE20K(SegmentationDataset):
    """ADE20K SceneParse150: 150 classes; annotation 0 ("other objects") -> 255 (ignore), k -> k - 1.

    Args:
        split: "train" (20,210 images, the benchmark's ``training/``), "val" (2,000, ``validation/``) or
            "trainval" (22,210). "test" is refused: the benchmark's test images have no public labels.
        root: the ``ADEChallengeData2016`` folder or the folder holding it; default ``resolve_root("ade20k")``
            = ``$SEGLAB_DATA/ADEChallengeData2016`` or ``<repo>/data/ADEChallengeData2016``.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: not downloaded automatically (no published MD5 to check the zip against); True only
            changes the error message.

    Attributes: ``root`` is the ``ADEChallengeData2016`` folder found; ``samples`` the (jpg, png) pairs.

    Items: image ``(H, W, 3) uint8`` (sizes vary), mask ``(H, W) int64`` in ``[0, 150)`` or 255.

    Raises:
        FileNotFoundError: dataset, ``images/`` or ``annotations/``, a split folder or an annotation missing
            (the message names it and says how to get the data).
        ValueError: unknown or empty split, or "test"; when an item is read: annotation values above 150, an
            RGB annotation, or one of another size than its image (each naming the file).
    """

    classes = ADE20K_CLASSES
    colors = ADE20K_COLORS

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
                "ADE20K: split 'test' has no public labels (the benchmark scores test predictions on its "
                "server); use split='val' to evaluate, or 'train' / 'trainval' to train."
            )
        if split not in ADE20K_SPLITS:
            raise ValueError(f"ADE20K: unknown split {split!r}; valid splits: {list(ADE20K_SPLITS)}")
        given = resolve_root("ade20k", root)
        found = find_ade20k(given)
        if found is None:
            note = "It is not downloaded automatically. " if download else ""
            raise FileNotFoundError(
                f"ADE20K SceneParse150 not found at {given} (expected images/ and annotations/, or "
                f"{ADE20K_FOLDER}/ holding them). {note}" + ADE20K_HOW_TO_GET.format(path=ade20k_extract_dir(given))
            )
        for folder in ("images", "annotations"):
            if not (found / folder).is_dir():
                raise FileNotFoundError(
                    f"ADE20K at {found} is incomplete: no {folder}/ folder (ADEChallengeData2016.zip holds both "
                    "images/ and annotations/); extract the zip again. "
                    + ADE20K_HOW_TO_GET.format(path=ade20k_extract_dir(found))
                )
        super().__init__(split=split, root=found, transform=transform)
        self.samples = [pair for part in ADE20K_SPLITS[split] for pair in self._find_samples(found, part)]

    @staticmethod
    def _find_samples(root: Path, part: str) -> list[tuple[Path, Path]]:
        images_dir, masks_dir = root / "images" / part, root / "annotations" / part
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"ADE20K: no folder {folder}. ADEChallengeData2016.zip holds images/ and annotations/, each "
                    f"with training/ and validation/: extract it again into {ade20k_extract_dir(root)}."
                )
        images = sorted(images_dir.glob("*.jpg"))
        if not images:
            raise ValueError(f"ADE20K: no *.jpg image in {images_dir}; extract ADEChallengeData2016.zip again.")
        samples = [(image, masks_dir / f"{image.stem}.png") for image in images]
        missing = [mask for _, mask in samples if not mask.is_file()]
        if missing:
            raise FileNotFoundError(
                f"ADE20K {part}: {len(missing)} of the {len(samples)} images lack their annotation; the first is "
                f"{missing[0]}. Each images/{part}/<name>.jpg needs annotations/{part}/<name>.png: extract "
                "ADEChallengeData2016.zip again."
            )
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Annotation values 0-150 -> ``(H, W) int64``: 0 -> 255 (ignore), k -> k - 1; other values raise."""
        if raw.ndim != 2:
            raise ValueError(
                f"{path}: an RGB image, not an ADE20K annotation: SceneParse150 annotations are 8-bit grayscale "
                "PNGs holding 0-150; take the original file from ADEChallengeData2016.zip again."
            )
        mask = raw.astype(np.int64)
        bad = (mask < 0) | (mask > len(ADE20K_CLASSES))
        if bad.any():
            values = np.unique(mask[bad])
            raise ValueError(
                f"{path}: annotation values {values[:12].tolist()} ({int(bad.sum())} pixels) outside 0-150 (0 = other, "
                "1-150 = the classes). A SceneParse150 annotation holds only those: take the original file from "
                "ADEChallengeData2016.zip again (the full ADE20K release codes its classes otherwise and is not read)."
            )
        return np.where(mask == 0, self.ignore_index, mask - 1)
