"""Jagged shapes: a controlled task where only the position of fine boundary detail is hard.

Each image (default 96x96) shows 1-3 non-overlapping toothed discs on a textured, noisy background:
**gears** (square teeth) in warm colours and **stars** (triangular spikes) in cool colours. The colour of a
pixel says which class it belongs to, so telling the classes apart is easy; what is hard is *where* a
shape ends. The teeth are ``tooth_width`` pixels wide along the rim (default 8) and ``tooth_depth`` deep
(default 6): finer than one cell of a stride-16 score map, coarser than one cell of a stride-4 map. A
model that predicts at output stride 16 and upsamples (DeepLabV3) can only draw a smooth rim through the
teeth; one that brings stride-4 features back (DeepLabV3+'s decoder, U-Net's skips) can draw the teeth.
About a third of every shape's area lies in the band between the inner and outer rim, so the difference
shows in the trimap mIoU near boundaries and in the whole-image mIoU as well (notebook 06).

Like ``SyntheticShapes``, items are generated lazily from ``(seed, split, index)``: nothing is stored, the
same arguments always give the same pixels, and the splits use different seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import SegmentationDataset

__all__ = ["JaggedShapes", "JAGGED_CLASSES", "JAGGED_COLORS"]

JAGGED_CLASSES: tuple[str, ...] = ("background", "gear", "star")
JAGGED_COLORS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (245, 130, 48), (0, 130, 200))  # display colours

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SPLIT_SIZES = {"train": 512, "val": 64, "test": 64}


def rim_radius(kind: int, theta: np.ndarray, radius: float, periods: int, depth: float, phase: float) -> np.ndarray:
    """Radius of a toothed rim at angles ``theta`` (radians): ``radius`` ± ``depth``/2.

    ``kind`` 1 (gear): square teeth, a square wave of ``periods`` periods per turn; ``kind`` 2 (star):
    triangular spikes, a triangle wave of the same period. ``phase`` turns the shape (radians).
    """
    t = (periods * (theta - phase) / (2 * math.pi)) % 1.0  # position inside one period, in [0, 1)
    if kind == 1:
        wave = np.where(t < 0.5, 0.5, -0.5)
    elif kind == 2:
        wave = 0.5 - 2 * np.abs(t - 0.5)  # 0.5 at the tip, -0.5 at the valley
    else:
        raise ValueError(f"rim_radius: kind must be 1 (gear) or 2 (star), got {kind!r}")
    return radius + depth * wave


class JaggedShapes(SegmentationDataset):
    """Gears (warm colours) and stars (cool colours) with teeth finer than a stride-16 cell.

    Classes: ("background", "gear", "star"); no ignore pixels.

    Args:
        split: "train", "val" or "test" (each split has its own seed stream).
        num_images: dataset length (default: 512 train, 64 val, 64 test).
        image_size: side S of the square images, at least 48 (default 96).
        seed: base seed; same seed + split + index -> identical item.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        tooth_width: width of one tooth along the mean rim, pixels (default 8; a period is 2 teeth).
        tooth_depth: peak-to-valley depth of the teeth, pixels (default 6).
        max_shapes: at most this many shapes per image (at least 1 is always drawn).

    Items: image ``(S, S, 3) uint8``, mask ``(S, S) int64`` in {0, 1, 2} (without transform).

    Raises:
        ValueError: unknown split, ``num_images < 1``, ``image_size < 48``, ``tooth_width`` or
            ``tooth_depth`` not positive, or ``max_shapes < 1``.
    """

    classes = JAGGED_CLASSES
    colors = JAGGED_COLORS

    def __init__(self, split: str = "train", num_images: int | None = None, image_size: int = 96, seed: int = 0,
                 transform: Callable[..., dict[str, Any]] | None = None, *, tooth_width: float = 8.0,
                 tooth_depth: float = 6.0, max_shapes: int = 3) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"JaggedShapes: unknown split {split!r}; valid splits: {list(_SPLIT_CODES)}")
        num_images = _SPLIT_SIZES[split] if num_images is None else int(num_images)
        if num_images < 1:
            raise ValueError(f"JaggedShapes: num_images must be >= 1, got {num_images} (the split would be empty)")
        if image_size < 48:
            raise ValueError(f"JaggedShapes: image_size must be >= 48 pixels, got {image_size}")
        if not (tooth_width > 0 and tooth_depth > 0):
            raise ValueError(f"JaggedShapes: tooth_width and tooth_depth must be > 0 pixels, got {tooth_width}, "
                             f"{tooth_depth}")
        if max_shapes < 1:
            raise ValueError(f"JaggedShapes: max_shapes must be >= 1, got {max_shapes}")
        super().__init__(split=split, root=None, transform=transform)
        self.num_images, self.image_size, self.seed = num_images, int(image_size), int(seed)
        self.tooth_width, self.tooth_depth, self.max_shapes = float(tooth_width), float(tooth_depth), int(max_shapes)

    def __len__(self) -> int:
        return self.num_images

    def describe(self, index: int) -> list[tuple[int, float, float, float, int, float]]:
        """The shapes of item ``index``: ``(class_index, cy, cx, radius, periods, phase)`` each (pixels, radians);
        ``periods`` = teeth / 2 (one tooth and one gap each)."""
        return self._layout(range(len(self))[index])[0]

    def _layout(self, index: int) -> tuple[list, np.random.Generator]:
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        size = self.image_size
        shapes: list[tuple[int, float, float, float, int, float]] = []
        for _ in range(int(rng.integers(1, self.max_shapes + 1))):
            kind = int(rng.integers(1, 3))
            radius = float(rng.uniform(0.16, 0.30) * size)  # mean rim radius
            periods = max(3, round(math.pi * radius / self.tooth_width))  # 2 teeth per period, 2*pi*R around
            phase = float(rng.uniform(0, 2 * math.pi))
            outer = radius + self.tooth_depth / 2
            for _ in range(30):  # rejection sampling: inside the image, apart from the shapes drawn so far
                cy, cx = rng.uniform(outer + 1, size - outer - 1, 2)
                if all(math.hypot(cy - y, cx - x) > outer + r + self.tooth_depth / 2 + 2 for _k, y, x, r, _t, _p in shapes):
                    shapes.append((kind, float(cy), float(cx), radius, periods, phase))
                    break
        return shapes, rng

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        shapes, rng = self._layout(index)
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
        mask = np.zeros((size, size), dtype=np.int64)
        image = np.empty((size, size, 3))
        base = rng.uniform(90, 170) + rng.normal(0, 12, 3)  # greyish background, a little tinted
        image[:] = base
        waves = rng.uniform(0.05, 0.2, (2, 2))  # low-frequency shading: two plane waves per image
        shading = 25 * (np.sin(waves[0, 0] * yy + waves[0, 1] * xx) + np.sin(waves[1, 0] * yy - waves[1, 1] * xx))
        image += shading[..., None]
        for kind, cy, cx, radius, periods, phase in shapes:
            dy, dx = yy - cy, xx - cx
            inside = np.hypot(dy, dx) <= rim_radius(kind, np.arctan2(dy, dx), radius, periods, self.tooth_depth, phase)
            mask[inside] = kind
            hue = rng.uniform(0.0, 0.12) if kind == 1 else rng.uniform(0.52, 0.66)  # warm gears, cool stars
            image[inside] = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        image += rng.normal(0, 15, image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return image, mask, f"JaggedShapes(split={self.split!r}, seed={self.seed})[{index}]"


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) as RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return 255 * value * (1 - saturation * np.clip(np.minimum(k, 4 - k), 0, 1))
