"""Predictions as pictures: class-index palette PNGs (``index_png``) and colour overlays (``overlay_image``).

``index_png`` follows PASCAL VOC's ``SegmentationClass`` masks: a palette image (mode "P") whose pixel
values are the class indices and whose palette holds the dataset's colours (entry 255, the ignore value,
in VOC's cream), so any evaluator reads the indices and any viewer shows the colours.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["index_png", "overlay_image", "check_alpha"]

_VOC_IGNORE_COLOR = (224, 224, 192)  # palette entry 255, as in VOC's masks


def _palette(colors: Sequence[Sequence[int]]) -> list[int]:
    """256 RGB entries flattened (768 ints): ``colors`` first, entry 255 VOC's ignore colour, black elsewhere."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)[:256]
    if len(colors) < 256:
        palette[255] = _VOC_IGNORE_COLOR
    return palette.reshape(-1).tolist()


def index_png(pred: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """``(H, W)`` class indices (< 256) -> a mode "P" image: pixel values = indices, palette = ``colors``
    (entry 255, the ignore value, in VOC's cream). ``np.array(Image.open(path))`` gives the indices back.

    Raises:
        ValueError: not 2-D, or values outside ``[0, 256)``.
    """
    pred = np.asarray(pred)
    if pred.ndim != 2 or (pred.size and (pred.min() < 0 or pred.max() > 255)):
        raise ValueError(f"index_png: expected (H, W) class indices in [0, 256), got {pred.dtype} {pred.shape}")
    image = Image.fromarray(pred.astype(np.uint8))  # mode "L"
    image.putpalette(_palette(colors))  # "L" -> "P", pixel values kept
    return image


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float if it is a finite number in [0, 1].

    Raises:
        ValueError: naming ``alpha (--alpha)``, what it got and what it needs.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:  # nan fails too
        raise ValueError(f"alpha (--alpha) must be a finite number in [0, 1] (0: the photo only, 1: the colours "
                         f"only), got {alpha!r}")  # fmt: skip
    return float(alpha)


def overlay_image(image: np.ndarray, pred: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5) -> Image.Image:
    """The class colours blended over the photo: ``(1 - alpha) * image + alpha * colour``, an RGB image.

    Args:
        image: ``(H, W, 3) uint8`` RGB. pred: ``(H, W)`` class indices in ``[0, 256)``.
        colors: RGB per class. alpha: opacity of the colours.

    Raises:
        ValueError: ``alpha`` is not a finite number in [0, 1].
    """
    alpha = check_alpha(alpha)
    palette = np.asarray(_palette(colors), np.float32).reshape(256, 3)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[pred]
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")
