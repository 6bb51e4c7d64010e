"""Paired image + mask augmentation presets (albumentations 2.x).

The recipe of the DeepLab / torchvision segmentation references (Chen et al. 2017; torchvision
``references/segmentation``): for training, random scale 0.5-2.0, pad to the crop size, random crop,
horizontal flip, colour jitter; for evaluation, the *whole* image, padded bottom/right to a
multiple of the network stride -- never a centre crop, which would drop pixels from the metric.

Rules that keep labels honest:

- masks are resized with nearest-neighbour only (interpolating labels invents classes);
- padded mask pixels get ``ignore_index`` (255), so they count in no loss and no metric;
- padding is applied *after* normalisation with value 0, i.e. the ImageNet mean colour, the same
  value ``seglab.data.pad_collate`` pads with.

Both presets take ``image (H, W, 3) uint8`` and ``mask (H, W)`` integers and return
``{"image": (3, H', W') float32 tensor, "mask": (H', W') int64 tensor}``. The normalisation
statistics come from ``seglab.imaging`` (ImageNet's), whose ``to_tensor`` gives the same image tensor
without albumentations and whose ``to_image`` undoes it (``denormalize`` here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from seglab.imaging import IMAGENET_MEAN, IMAGENET_STD, to_image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check when albumentations is imported

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "train_transform", "eval_transform", "denormalize"]

def _mask_to_int64(mask: np.ndarray, **params) -> np.ndarray:
    """albumentations hands masks back as int32 or uint8; the loss wants int64."""
    return mask.astype(np.int64)


def _mask_int64() -> A.Lambda:
    return A.Lambda(mask=_mask_to_int64, name="mask_to_int64")


def _resize_longest(max_size: int | None) -> list:
    if max_size is None:
        return []
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels (or None), got {max_size}")
    return [
        A.LongestMaxSize(max_size=int(max_size), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
    ]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"crop_size must be positive, got {size}")
    return int(height), int(width)


def train_transform(
    crop_size: int | Sequence[int],
    *,
    scale: tuple[float, float] = (0.5, 2.0),
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    hflip: bool = True,
    color_jitter: bool = True,
    max_size: int | None = None,
) -> A.Compose:
    """Training augmentation: random scale, colour jitter, normalise, pad, random crop, flip, to tensor.

    Args:
        crop_size: output size, an int (square) or ``(height, width)``.
        scale: range of the random scale factor (both sides scaled alike; 1.0 = unchanged).
        ignore_index: mask value of padded pixels.
        mean, std: per-channel normalisation, in [0, 1] units (ImageNet by default).
        hflip: random horizontal flip with p = 0.5. color_jitter: brightness/contrast/saturation
            0.8-1.2 and hue +-0.02 with p = 0.8 (image only).
        max_size: if set, first resize so that the longer side is ``max_size`` pixels (aspect kept;
            smaller images are enlarged too; albumentations ``LongestMaxSize``), e.g. to train fast
            on a CPU. Same step as in ``eval_transform(max_size=...)``.

    Returns:
        An ``albumentations.Compose``: ``t(image=(H, W, 3) uint8, mask=(H, W) int) ->
        {"image": (3, h, w) float32, "mask": (h, w) int64}`` with ``(h, w) = crop_size``. Images
        smaller than the crop after scaling are padded bottom/right (image 0 after normalisation,
        mask ``ignore_index``).

    Raises:
        ValueError: non-positive crop size, scale or max_size.
    """
    height, width = _pair(crop_size)
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    steps: list = _resize_longest(max_size) + [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),  # fmt: skip
    ]
    if color_jitter:
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8))
    steps += [
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        A.PadIfNeeded(min_height=height, min_width=width, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=ignore_index),  # fmt: skip
        A.RandomCrop(height=height, width=width),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps += [_mask_int64(), ToTensorV2()]
    return A.Compose(steps)


def eval_transform(
    *,
    pad_multiple: int | None = 32,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    max_size: int | None = None,
) -> A.Compose:
    """Evaluation transform: the whole image, normalised, padded bottom/right to a multiple; never cropped.

    Args:
        pad_multiple: pad H and W up to multiples of this (32 = the stride of most backbones);
            None or 1: no padding.
        ignore_index: mask value of padded pixels, so they count in no metric.
        mean, std: per-channel normalisation, in [0, 1] units.
        max_size: if set, first resize the whole image so that its longer side is ``max_size``
            pixels (aspect kept, masks nearest-neighbour; smaller images are enlarged too): H and W
            below are then the resized ones, ``round(H * max_size / max(H, W))`` etc. Metrics are
            then measured at that resolution, not the original one.

    Returns:
        An ``albumentations.Compose``: ``t(image=(H, W, 3) uint8, mask=(H, W) int) ->
        {"image": (3, H', W') float32, "mask": (H', W') int64}`` with ``H' = ceil(H / m) * m``,
        ``W' = ceil(W / m) * m``; ``mask[:H, :W]`` equals the input mask exactly, the rest is
        ``ignore_index``; the padded image is 0 (the mean colour after normalisation).

    Raises:
        ValueError: ``pad_multiple < 1`` or ``max_size < 1``.
    """
    steps: list = _resize_longest(max_size) + [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)]
    if pad_multiple is not None and pad_multiple != 1:
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1 (or None), got {pad_multiple}")
        steps.append(
            A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=pad_multiple,
                          pad_width_divisor=pad_multiple, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                          fill=0, fill_mask=ignore_index)  # fmt: skip
        )
    steps += [_mask_int64(), ToTensorV2()]
    return A.Compose(steps)


def denormalize(
    image: torch.Tensor | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undo ``Normalize`` for display: ``(3, H, W)`` -> ``(H, W, 3) uint8``; ``(N, 3, H, W)`` -> ``(N, H, W, 3)``.

    Exactly ``seglab.imaging.to_image`` (values multiplied by ``std``, shifted by ``mean``, scaled to
    0-255, rounded and clipped), kept under this name beside the presets it inverts.

    Raises:
        ValueError: the input is not channels-first with 3 channels.
    """
    return to_image(image, mean, std)
