"""Your own data: a folder of images and a folder of masks, paired by file name stem.

``images/street_01.jpg`` pairs with ``masks/street_01.png``. Masks are either class-index images
(``mask_mode="index"``: 8-bit grayscale or palette PNGs whose values/palette indices are the class
indices, 255 = ignore) or colour-coded images (``mask_mode="palette"``: RGB, one colour per class
as given by ``colors``; ``ignore_color`` pixels become 255).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import SegmentationDataset, read_image
from .palettes import rgb_to_index, voc_colormap

__all__ = ["ImageFolderDataset", "IMAGE_EXTENSIONS", "MASK_EXTENSIONS", "LOSSY_MASK_EXTENSIONS"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff")
#: Lossy formats, refused as masks: compression invents values at class borders (labels that exist nowhere).
LOSSY_MASK_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".jfif", ".webp")


def _by_stem(folder: Path, extensions: tuple[str, ...], check_unique: bool = True) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            if path.stem in found and check_unique:
                raise ValueError(
                    f"{folder}: two files share the stem {path.stem!r} ({found[path.stem].name}, {path.name}); "
                    "keep one so that images and masks pair unambiguously."
                )
            found[path.stem] = path
    return found


class ImageFolderDataset(SegmentationDataset):
    """Image/mask pairs from two folders, matched by file stem.

    Args:
        images_dir: folder of images (extensions ``IMAGE_EXTENSIONS``; grayscale is replicated to RGB).
        masks_dir: folder of masks (extensions ``MASK_EXTENSIONS``).
        classes: K class names (1 <= K <= 255).
        colors: K RGB triples (default: the first K VOC colours). Required for ``mask_mode="palette"``.
        mask_mode: "index" (mask values are class indices) or "palette" (RGB masks, colour -> class).
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        split: name stored in ``split`` (default "all").
        ignore_color: with ``mask_mode="palette"``, the colour of ignored pixels (-> 255), if any.

    Items: image ``(H, W, 3) uint8``, mask ``(H, W) int64`` in ``[0, K)`` or 255.

    Raises:
        FileNotFoundError: a folder is missing.
        ValueError: bad arguments; no pairs (empty split); an image without a mask or a mask without
            an image (names listed); when read: bad mask values, unknown colours, size mismatch.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        masks_dir: str | os.PathLike,
        classes: Sequence[str],
        colors: Sequence[Sequence[int]] | None = None,
        mask_mode: str = "index",
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        split: str = "all",
        ignore_color: Sequence[int] | None = None,
    ) -> None:
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        for kind, folder in (("images", images_dir), ("masks", masks_dir)):
            if not folder.is_dir():
                raise FileNotFoundError(f"ImageFolderDataset: {kind} folder {folder} not found; pass the folder "
                                        f"that holds the {kind} (paired with the other by file stem).")  # fmt: skip
        if mask_mode not in ("index", "palette"):
            raise ValueError(f"mask_mode must be 'index' or 'palette', got {mask_mode!r}")
        classes = tuple(str(c) for c in classes)
        if not 1 <= len(classes) <= 255:
            raise ValueError(f"need 1 to 255 class names (255 is the ignore value), got {len(classes)}")
        if colors is None:
            if mask_mode == "palette":
                raise ValueError("mask_mode='palette' needs colors=: the RGB colour of each class in the mask files")
            colors = [tuple(int(v) for v in c) for c in voc_colormap(len(classes))]
        colors = tuple(tuple(int(v) for v in c) for c in colors)
        if len(colors) != len(classes) or any(len(c) != 3 for c in colors):
            raise ValueError(f"colors must hold one RGB triple per class: {len(classes)} classes, got {colors}")
        root = Path(os.path.commonpath([images_dir.absolute(), masks_dir.absolute()]))
        super().__init__(split=split, root=root, transform=transform)
        self.classes = classes
        self.colors = colors
        self.mask_mode = mask_mode
        self.ignore_color = None if ignore_color is None else tuple(int(v) for v in ignore_color)
        self.images_dir, self.masks_dir = images_dir, masks_dir

        images, masks = _by_stem(images_dir, IMAGE_EXTENSIONS), _by_stem(masks_dir, MASK_EXTENSIONS)
        lonely_images = sorted(set(images) - set(masks))
        lossy = sorted(p.name for stem, p in _by_stem(masks_dir, LOSSY_MASK_EXTENSIONS, check_unique=False).items()
                       if stem in lonely_images)  # fmt: skip
        if lossy:
            raise ValueError(
                f"ImageFolderDataset: {len(lossy)} masks in {masks_dir} are lossy JPEG/WebP files (e.g. {lossy[:5]}), "
                "which are refused: lossy compression changes pixel values near every class border, creating "
                "class indices (or colours) that were never annotated. Export the masks again, from the "
                "original annotation, as PNG (converting the JPEG would keep its damage)."
            )
        lonely_masks = sorted(set(masks) - set(images))
        if lonely_images or lonely_masks:
            raise ValueError(
                f"ImageFolderDataset: {len(lonely_images)} images in {images_dir} have no mask in {masks_dir} "
                f"(e.g. {lonely_images[:5]}) and {len(lonely_masks)} masks have no image (e.g. {lonely_masks[:5]}); "
                "images and masks pair by file stem: rename or move the unpaired files."
            )
        if not images:
            raise ValueError(f"ImageFolderDataset: no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}: "
                             "the split is empty.")  # fmt: skip
        self.samples = [(images[stem], masks[stem]) for stem in sorted(images)]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self.mask_mode == "index":
            return super().load(index)
        image_path, mask_path = self.samples[index]
        rgb = read_image(mask_path)  # palette/gray files are converted to their displayed colours
        mask = rgb_to_index(rgb, self.colors, ignore_color=self.ignore_color, source=str(mask_path))
        return read_image(image_path), mask, str(mask_path)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim != 2:
            raise ValueError(
                f"{path}: a colour (RGB) mask, but mask_mode='index' expects class-index masks; "
                "use mask_mode='palette' with colors= (one RGB triple per class)."
            )
        return raw.astype(np.int64)
