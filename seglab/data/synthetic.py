"""Synthetic shapes: a segmentation dataset generated in code, where a pixel's class needs spatial context.

Each image (default 64x64) shows 1-3 non-overlapping shapes -- circles, squares, triangles, rotated at
random and of equal area -- on a textured, noisy background. All shapes of one image share a single
random colour, so the colour of a pixel says "shape" or "background" but not *which* shape: only the
form does. A model therefore has to see a good part of a shape to label its pixels, which makes the
dataset a small, fast laboratory for receptive fields, dilation and skip connections.

Items are generated lazily from ``(seed, split, index)``: nothing is stored, any item can be
regenerated on its own, the same arguments always give the same pixels, and the splits use
different seeds so train and val never share an image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import SegmentationDataset
from .palettes import SYNTHETIC_CLASSES, SYNTHETIC_COLORS

__all__ = ["SyntheticShapes", "SPLIT_SIZES"]

#: Default number of images per split.
SPLIT_SIZES: dict[str, int] = {"train": 512, "val": 128, "test": 128}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Circumradius of each polygon relative to the radius of the circle of the same area.
_SIDES = {1: 0, 2: 4, 3: 3}  # class index -> polygon sides (0 = circle)
_EQUAL_AREA = {0: 1.0, 4: math.sqrt(math.pi / 2), 3: math.sqrt(4 * math.pi / (3 * math.sqrt(3)))}


@functools.lru_cache(maxsize=8)
def _bilinear_matrix(size: int, cells: int) -> np.ndarray:
    """``(size, cells)`` matrix that interpolates a coarse 1-D grid linearly to ``size`` samples."""
    pos = np.linspace(0, cells - 1, size)
    low = np.floor(pos).astype(int).clip(0, cells - 2)
    frac = pos - low
    out = np.zeros((size, cells), dtype=np.float32)
    out[np.arange(size), low] = 1 - frac
    out[np.arange(size), low + 1] = frac
    return out


class SyntheticShapes(SegmentationDataset):
    """Circles, squares and triangles of one random colour on a textured background.

    Classes: ("background", "circle", "square", "triangle"); no ignore pixels. Each item is
    generated from ``numpy.random.default_rng([seed, split_code, index])`` in about 0.1 ms.

    Args:
        split: "train", "val" or "test" (each split has its own seed stream).
        num_images: dataset length (default: 512 train, 128 val, 128 test).
        image_size: side S of the square images, at least 24 (default 64).
        seed: base seed; same seed + split + index -> identical item.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        max_shapes: at most this many shapes per image (at least 1 is always drawn).

    Items: image ``(S, S, 3) uint8``, mask ``(S, S) int64`` in {0, 1, 2, 3} (without transform).

    Raises:
        ValueError: unknown split, ``num_images < 1``, ``image_size < 24`` or ``max_shapes < 1``.
    """

    classes = SYNTHETIC_CLASSES
    colors = SYNTHETIC_COLORS

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        max_shapes: int = 3,
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"SyntheticShapes: unknown split {split!r}; valid splits: {list(_SPLIT_CODES)}")
        num_images = SPLIT_SIZES[split] if num_images is None else int(num_images)
        if num_images < 1:
            raise ValueError(f"SyntheticShapes: num_images must be >= 1, got {num_images} (the split would be empty)")
        if image_size < 24:
            raise ValueError(f"SyntheticShapes: image_size must be >= 24 pixels, got {image_size}")
        if max_shapes < 1:
            raise ValueError(f"SyntheticShapes: max_shapes must be >= 1, got {max_shapes}")
        super().__init__(split=split, root=None, transform=transform)
        self.num_images = num_images
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.max_shapes = int(max_shapes)

    def __len__(self) -> int:
        return self.num_images

    def describe(self, index: int) -> dict[str, Any]:
        """The layout of item ``index`` before rendering.

        Returns a dict with "shape_color" (RGB floats, shared by all shapes), "background_color"
        and "shapes": a list of ``(class_index, cy, cx, radius, angle)`` with the centre in pixels,
        ``radius`` = radius of the circle of equal area, ``angle`` in radians.
        """
        return self._layout(range(len(self))[index])[0]

    def _layout(self, index: int) -> tuple[dict[str, Any], np.random.Generator]:
        """Draw the layout of item ``index``; also return the generator, which rendering continues."""
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        size = self.image_size
        background = rng.uniform(0, 255, 3)
        shape_color = rng.uniform(0, 255, 3)
        for _ in range(20):  # keep shapes visible: at least ~100 RGB units away from the background
            if np.linalg.norm(shape_color - background) >= 100:
                break
            shape_color = rng.uniform(0, 255, 3)
        shapes: list[tuple[int, float, float, float, float]] = []
        for _ in range(int(rng.integers(1, self.max_shapes + 1))):
            label = int(rng.integers(1, 4))
            radius = float(rng.uniform(0.10, 0.20) * size)
            angle = float(rng.uniform(0, 2 * math.pi))
            outer = radius * _EQUAL_AREA[_SIDES[label]]  # circumradius
            for _ in range(30):  # rejection sampling: inside the image, apart from earlier shapes
                cy, cx = rng.uniform(outer + 1, size - outer - 1, 2)
                if all(math.hypot(cy - y, cx - x) > outer + r * _EQUAL_AREA[_SIDES[c]] + 2
                       for c, y, x, r, _a in shapes):  # fmt: skip
                    shapes.append((label, float(cy), float(cx), radius, angle))
                    break
        return {"shape_color": shape_color, "background_color": background, "shapes": shapes}, rng

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        layout, rng = self._layout(index)
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
        mask = np.zeros((size, size), dtype=np.int64)
        for label, cy, cx, radius, angle in layout["shapes"]:
            sides = _SIDES[label]
            dy, dx = yy - cy, xx - cx
            if sides == 0:
                inside = dy * dy + dx * dx <= radius * radius
            else:  # regular polygon: inside every edge's half-plane
                outer = radius * _EQUAL_AREA[sides]
                inner = outer * math.cos(math.pi / sides)
                inside = np.ones_like(mask, dtype=bool)
                for k in range(sides):
                    phi = angle + (2 * k + 1) * math.pi / sides  # outward normal of edge k
                    inside &= dx * math.cos(phi) + dy * math.sin(phi) <= inner
            mask[inside] = label
        # Background: base colour + smooth blobs (bilinear from a 5x5 grid) + pixel noise.
        interp = _bilinear_matrix(size, 5)
        coarse = rng.normal(0, 40, (5, 5, 3)).astype(np.float32)
        blobs = np.tensordot(np.tensordot(interp, coarse, axes=(1, 0)), interp, axes=(1, 1))  # (S, 3, S)
        blobs = blobs.transpose(0, 2, 1)  # (S, S, 3)
        image = layout["background_color"] + blobs
        image[mask > 0] = layout["shape_color"]
        image += rng.normal(0, 12, image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return image, mask, f"SyntheticShapes(split={self.split!r}, seed={self.seed})[{index}]"
