"""What every seglab dataset shares: where data lives, reading and checking masks, the base class, collation.

Data folder (``resolve_root``): an explicit ``root=`` always wins; otherwise ``$SEGLAB_DATA/<subfolder>``;
otherwise ``<repo>/data/<subfolder>``, where ``<repo>`` is the folder that holds the ``seglab`` package.
Subfolders: ``VOCdevkit/`` (voc), ``camvid/``, ``isbi2012/``, ``cityscapes/``, ``ADEChallengeData2016/``
(ade20k), ``folder/``; the synthetic dataset has no files.

Every dataset item is ``(image, mask)``: without a transform, image ``(H, W, 3) uint8`` RGB and mask
``(H, W) int64`` with values in ``[0, K)`` or 255 (= ignore). Masks are checked on every read, so a bad
annotation file fails loudly with its path instead of silently poisoning the loss or the metrics.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "DATA_ENV",
    "DATASET_SUBFOLDERS",
    "BadImageError",
    "SegmentationDataset",
    "check_dataset",
    "check_first_items",
    "resolve_root",
    "read_image",
    "read_mask",
    "check_mask",
    "check_same_size",
    "pad_collate",
]

#: Environment variable naming the folder that holds one subfolder per dataset.
DATA_ENV = "SEGLAB_DATA"

#: Dataset name -> its subfolder of the data folder ("" = the data folder itself; synthetic has no files).
DATASET_SUBFOLDERS: dict[str, str] = {
    "synthetic": "",
    "voc": "VOCdevkit",
    "camvid": "camvid",
    "isbi2012": "isbi2012",
    "cityscapes": "cityscapes",
    "ade20k": "ADEChallengeData2016",
    "folder": "folder",
}


def resolve_root(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder where dataset ``name`` lives (or will be downloaded to).

    Order: explicit ``root`` (returned as given, user-expanded) > ``$SEGLAB_DATA/<subfolder>`` >
    ``<repo>/data/<subfolder>`` with ``<repo>`` = parent of the ``seglab`` package folder.
    Subfolders: ``DATASET_SUBFOLDERS`` (voc -> ``VOCdevkit``, camvid -> ``camvid``,
    isbi2012 -> ``isbi2012``, cityscapes -> ``cityscapes``, ade20k -> ``ADEChallengeData2016``,
    folder -> ``folder``, synthetic -> the data folder itself).

    Raises:
        ValueError: unknown dataset name (the message lists the valid ones).
    """
    if name not in DATASET_SUBFOLDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(DATASET_SUBFOLDERS)}")
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    base = Path(env).expanduser().absolute() if env else Path(__file__).resolve().parents[2] / "data"
    sub = DATASET_SUBFOLDERS[name]
    return base / sub if sub else base


class BadImageError(ValueError):
    """An image or mask file that cannot be used: corrupt, truncated, not an image, too large, or of a
    pixel format that cannot be converted without losing information. The message names the file."""


# Everything Pillow raises on a damaged file: OSError ("image file is truncated", UnidentifiedImageError),
# SyntaxError ("broken PNG file"), DecompressionBombError, and assorted ValueError/struct/zlib/EOF errors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  AttributeError, ArithmeticError, MemoryError, Image.DecompressionBombError)


def _decode(path: str | os.PathLike, kind: str, read: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``read(opened image)`` with every decoding failure turned into a ``BadImageError`` naming ``path``."""
    try:
        with Image.open(path) as im:
            return read(im)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as error:
        raise BadImageError(
            f"{path}: this {kind} is too large to decode safely ({error}). Downscale it, or, if you trust "
            "the file, raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from error
    except _DECODE_ERRORS as error:
        raise BadImageError(
            f"{path}: cannot read this {kind} ({type(error).__name__}: {error}). The file is corrupt, truncated "
            "or not an image: re-export it from the original, or remove it (with its image or mask). "
            "`python -m seglab check-data` checks every file of a dataset."
        ) from error


def _gray16_to_uint8(path, values: np.ndarray) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise BadImageError(
            f"{path}: a 32-bit integer image with values {int(values.min())}..{int(values.max())} outside 0..65535; "
            "save it as an 8-bit (or 16-bit) image."
        )
    # full range, rounded: 0 -> 0, 65535 -> 255 (v * 255 / 65535 = v / 257)
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB; grayscale is replicated to 3 channels.

    16-bit grayscale ("I;16", or "I" with values 0..65535) is scaled to 8 bits over its full range,
    ``round(v * 255 / 65535)`` (so an image that uses only part of the range, e.g. 12-bit data, comes
    out dark: rescale it yourself first). Alpha is dropped.

    Raises:
        BadImageError (a ValueError): the file is corrupt, truncated, not an image, larger than
            Pillow's decompression-bomb limit, or floating-point; the message names the file.
        FileNotFoundError: no file at ``path``.
    """

    def read(im: Image.Image) -> np.ndarray:
        if im.mode.startswith("I;16") or im.mode == "I":
            gray = _gray16_to_uint8(path, np.asarray(im).astype(np.int64))
            return np.repeat(gray[..., None], 3, axis=2)
        if im.mode == "F":
            raise BadImageError(f"{path}: a floating-point image (mode 'F'); save it as an 8-bit RGB or grayscale "
                                "image.")  # fmt: skip
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()

    return _decode(path, "image", read)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file without touching its values.

    Palette ("P") PNGs give their palette *indices* (the class indices of VOC masks), grayscale
    ("L", "I;16", "I", "1") PNGs give their values: both ``(H, W)``. Colour masks ("RGB", "RGBA")
    give ``(H, W, 3) uint8`` for the caller to map colours to classes.

    Raises:
        BadImageError (a ValueError): the file is corrupt or truncated, or of another image mode
            (naming the file and its mode).
    """

    def read(im: Image.Image) -> np.ndarray:
        if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            return np.array(im)
        if im.mode in ("RGB", "RGBA"):
            return np.array(im.convert("RGB"))
        raise BadImageError(
            f"{path}: unsupported mask image mode {im.mode!r}; save masks as 8-bit class-index PNGs "
            "(mode 'L' or 'P') or as RGB colour masks."
        )

    return _decode(path, "mask", read)


def check_same_size(image: np.ndarray, mask: np.ndarray, source: str) -> None:
    """Raise ``ValueError`` naming both sizes and ``source`` if image and mask differ in H or W."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"{source}: image is {image.shape[0]}x{image.shape[1]} (HxW) but its mask is "
            f"{mask.shape[0]}x{mask.shape[1]}; every mask must have the size of its image "
            "(re-export the mask at the image size, resizing with nearest-neighbour only)."
        )


def check_mask(mask: np.ndarray, num_classes: int, ignore_index: int = 255, source: str = "mask") -> None:
    """Check that a ``(H, W)`` integer mask holds only values in ``[0, K)`` or ``ignore_index``.

    Raises:
        ValueError: naming ``source``, the offending values and how to fix them.
    """
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{source}: a mask must be a 2-D integer array (H, W), got {mask.dtype} {mask.shape}")
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    if bad.any():
        values = np.unique(mask[bad])
        raise ValueError(
            f"{source}: mask holds values {values[:12].tolist()} ({int(bad.sum())} pixels) outside the "
            f"{num_classes} class indices [0, {num_classes}) and the ignore value {ignore_index}. "
            f"Fix: map those values to a class index or to {ignore_index} (ignore); for colour-coded "
            "masks read them with mask_mode='palette' and their colours."
        )


class SegmentationDataset(Dataset):
    """Base class: a map-style dataset of ``(image, mask)`` pairs with class metadata.

    Attributes:
        classes: K class names; ``num_classes`` = K.
        colors: K RGB triples for display.
        ignore_index: mask value of pixels that count for no class (255).
        split: the split name; root: the folder read (None for generated data).
        samples: ``[(image_path, mask_path), ...]`` for file-based datasets.

    Items: ``dataset[i] -> (image, mask)``. Without a transform, image ``(H, W, 3) uint8`` RGB and
    mask ``(H, W) int64`` in ``[0, K)`` or 255; with ``transform``, whatever
    ``transform(image=image, mask=mask)`` returns under the keys "image" and "mask" (the
    ``seglab.transforms`` presets give ``(3, H, W) float32`` and ``(H, W) int64`` tensors).

    Subclasses fill ``samples`` and may override ``decode_mask`` (raw file values -> class indices),
    or override ``load`` entirely (generated data).

    Raises (on reading an item):
        ValueError: mask values outside ``[0, K)`` or 255, or image/mask size mismatch (naming the file).
    """

    classes: tuple[str, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = 255

    def __init__(
        self,
        *,
        split: str,
        root: Path | None,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.split = split
        self.root = root
        self.transform = transform
        self.samples: list[tuple[Path, Path]] = []

    @property
    def num_classes(self) -> int:
        """K, the number of classes (``len(classes)``)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Turn the values read from a mask file into ``(H, W) int64`` class indices (default: as is)."""
        if raw.ndim != 2:
            raise ValueError(
                f"{path}: this dataset expects single-channel class-index masks, got an image of shape "
                f"{raw.shape}; convert the colour mask to class indices first."
            )
        return raw.astype(np.int64)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Read item ``index``: ``(image (H, W, 3) uint8, mask (H, W) int64, source name)``."""
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self.decode_mask(read_mask(mask_path), mask_path)
        return image, mask, str(mask_path)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` before the transform, checked: image ``(H, W, 3) uint8``, mask ``(H, W) int64``."""
        index = range(len(self))[index]  # negative indices; IndexError when out of range
        image, mask, source = self.load(index)
        check_same_size(image, mask, source)
        check_mask(mask, self.num_classes, self.ignore_index, source)
        return image, mask

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.read(index)
        if self.transform is None:
            return image, mask
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, root={str(self.root) if self.root else None!r}, "
            f"num_images={len(self)}, num_classes={self.num_classes})"
        )


def check_dataset(dataset: Dataset, *, limit: int | None = None, progress: bool = False) -> list[str]:
    """Decode and check the first ``limit`` items (default: all) of ``dataset``; return the problems found.

    Each item is read without its transform (``SegmentationDataset.read``: image and mask decoded,
    sizes compared, mask values checked), so a corrupt file, a truncated PNG or a bad mask is found
    before training rather than after an epoch. Datasets that are not ``SegmentationDataset`` are
    checked through ``dataset[i]``.

    Returns:
        One message per bad item (each names its file and says how to fix it); empty if all are good.
    """
    from tqdm.auto import tqdm

    read = dataset.read if isinstance(dataset, SegmentationDataset) else dataset.__getitem__
    count = len(dataset) if limit is None else min(limit, len(dataset))
    problems = []
    name = f"check {getattr(dataset, 'split', '')}".strip()
    for index in tqdm(range(count), desc=name, unit=" pairs", disable=not progress, leave=False):
        try:
            read(index)
        except (ValueError, OSError) as error:  # BadImageError, bad mask values/sizes, missing files
            problems.append(str(error))
    return problems


def check_first_items(*datasets: Dataset) -> None:
    """Decode and check item 0 of each dataset now (as ``check_dataset(limit=1)``), so that a bad file
    stops a run at start-up instead of after an epoch.

    Raises:
        BadImageError / ValueError: the first problem found (naming the file and the fix).
    """
    for dataset in datasets:
        if len(dataset):
            (dataset.read if isinstance(dataset, SegmentationDataset) else dataset.__getitem__)(0)


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, mask)`` tensors of different sizes into one batch, padding bottom/right.

    Use as ``DataLoader(..., collate_fn=pad_collate)`` to evaluate whole images of different sizes
    (e.g. VOC val) in one batch. Padding never changes a real pixel: images are padded with 0 (in
    normalised space: the mean colour, the value ``seglab.transforms.eval_transform`` pads with),
    masks with ``ignore_index`` so that padded pixels count in no loss or metric.

    Args:
        batch: N pairs, image ``(C, H_i, W_i)`` float tensor and mask ``(H_i, W_i)`` integer tensor.

    Returns:
        images ``(N, C, H, W)`` (dtype of the inputs) and masks ``(N, H, W)`` int64, with
        ``H = max H_i`` and ``W = max W_i``.

    Raises:
        TypeError: items are not tensors (give the dataset a transform such as ``eval_transform()``).
        ValueError: empty batch, or shapes that are not (C, H, W) / (H, W) with matching H, W.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate: empty batch")
    images, masks = zip(*batch)
    for i, (image, mask) in enumerate(zip(images, masks)):
        if not (isinstance(image, torch.Tensor) and isinstance(mask, torch.Tensor)):
            raise TypeError(
                f"pad_collate: item {i} is ({type(image).__name__}, {type(mask).__name__}), expected tensors; "
                "give the dataset a transform that returns tensors, e.g. seglab.transforms.eval_transform()."
            )
        if image.ndim != 3 or mask.ndim != 2 or image.shape[1:] != mask.shape:
            raise ValueError(
                f"pad_collate: item {i} has image {tuple(image.shape)} and mask {tuple(mask.shape)}; "
                "expected (C, H, W) and (H, W) with the same H, W."
            )
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    out_images = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out_masks = torch.full((len(masks), height, width), ignore_index, dtype=torch.int64)
    for i, (image, mask) in enumerate(zip(images, masks)):
        h, w = mask.shape
        out_images[i, :, :h, :w] = image
        out_masks[i, :h, :w] = mask
    return out_images, out_masks
