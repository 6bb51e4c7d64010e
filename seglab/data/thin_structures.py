"""Thin structures: a dataset generated in code whose labels hold more fine detail than a deep bottleneck carries.

Each image (default 64×64) shows a few large, smooth *blobs* (ellipses) and many *fibres*: curved lines (one
pixel wide by default) that wander across the image, darker than whatever they cross, over a textured, noisy
background. Classes: ``("background", "blob", "fibre")``; fibres are drawn on top of blobs.

Why it exists (notebook 05): every pixel's label is easy to read *locally* (a fibre is a dark line, a blob is
blue), but the fibres are dense: most 16×16 cells of a U-Net's 1/16 bottleneck hold parts of
one or more curves, at arbitrary positions and angles inside the cell. A decoder that sees only the bottleneck must
redraw those 1-px curves from a few numbers per cell, which it cannot do precisely; a decoder with skip
connections reads them from the full-resolution encoder features. Blobs, whose outline is smooth at the scale
of a cell, pass through the bottleneck well. So the task isolates the property under study: with vs without
skips, the fibres' IoU differs by a wide margin and the blobs' by far less (``tests/test_thin_structures.py``
checks the design: a 1/16 summary of the mask, upsampled back, recovers the blobs and loses the fibres).

Items are generated lazily from ``numpy.random.default_rng([seed, split_code, index])``, as in
``seglab.data.synthetic``: nothing is stored, the same arguments always give the same pixels, and the
splits use different streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import SegmentationDataset
from .synthetic import _bilinear_matrix

__all__ = ["ThinStructures", "THIN_CLASSES", "THIN_COLORS", "THIN_SPLIT_SIZES"]

THIN_CLASSES: tuple[str, ...] = ("background", "blob", "fibre")
THIN_COLORS: tuple[tuple[int, int, int], ...] = ((40, 40, 40), (70, 130, 180), (255, 190, 0))
#: Default number of images per split.
THIN_SPLIT_SIZES: dict[str, int] = {"train": 512, "val": 64, "test": 64}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_STEP = 0.25  # pixels between the points that trace a fibre
_BEND = 0.12  # standard deviation of a fibre's change of direction per pixel of length (radians)
_BLOB_TINT = np.array([-50.0, 10.0, 60.0])  # RGB offset of a blob from the background (blue, a colour cue)
_DARKEN = 0.4  # a fibre pixel keeps this fraction of the brightness beneath it


class ThinStructures(SegmentationDataset):
    """Blobs and thin fibres on a textured background (see the module docstring for why).

    Args:
        split: "train", "val" or "test" (each split has its own seed stream).
        num_images: dataset length (default: 512 train, 64 val, 64 test).
        image_size: side S of the square images, at least 32 (default 64).
        seed: base seed; same seed + split + index -> identical item.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        fibres: ``(low, high)``: each image draws between low and high fibres (inclusive), per 64×64 pixels
            of image area (default ``(8, 14)``).
        fibre_width: fibre width in pixels, >= 1 (default 1: the pixels a curve passes through).
        blobs: ``(low, high)``: blobs per image (default ``(1, 3)``; ``(0, 0)`` for none).

    Items: image ``(S, S, 3) uint8``, mask ``(S, S) int64`` in {0, 1, 2} (without transform).

    Raises:
        ValueError: unknown split, ``num_images < 1``, ``image_size < 32``, ``fibre_width < 1``, or a
            ``(low, high)`` range that is not ``0 <= low <= high``.
    """

    classes = THIN_CLASSES
    colors = THIN_COLORS

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        fibres: tuple[int, int] = (8, 14),
        fibre_width: float = 1.0,
        blobs: tuple[int, int] = (1, 3),
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"ThinStructures: unknown split {split!r}; valid splits: {list(_SPLIT_CODES)}")
        num_images = THIN_SPLIT_SIZES[split] if num_images is None else int(num_images)
        if num_images < 1:
            raise ValueError(f"ThinStructures: num_images must be >= 1, got {num_images} (the split would be empty)")
        if image_size < 32:
            raise ValueError(f"ThinStructures: image_size must be >= 32 pixels, got {image_size}")
        if not fibre_width >= 1:
            raise ValueError(f"ThinStructures: fibre_width must be >= 1 pixel, got {fibre_width}")
        for name, pair in (("fibres", fibres), ("blobs", blobs)):
            if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
                raise ValueError(f"ThinStructures: {name} must be a range (low, high) with 0 <= low <= high, "
                                 f"got {pair}")
        super().__init__(split=split, root=None, transform=transform)
        self.num_images, self.image_size, self.seed = num_images, int(image_size), int(seed)
        self.fibres, self.fibre_width, self.blobs = tuple(fibres), float(fibre_width), tuple(blobs)

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
        mask = np.zeros((size, size), dtype=np.int64)
        # Background: a base colour + smooth variations (bilinear from a 5×5 grid), as in SyntheticShapes.
        background = rng.uniform(100, 190) + rng.uniform(-15, 15, 3)  # a grey, slightly tinted
        interp = _bilinear_matrix(size, 5)
        coarse = rng.normal(0, 25, (5, 5, 3)).astype(np.float32)
        texture = np.tensordot(np.tensordot(interp, coarse, axes=(1, 0)), interp, axes=(1, 1))  # (S, 3, S)
        image = background + texture.transpose(0, 2, 1)  # (S, S, 3) float
        for _ in range(int(rng.integers(self.blobs[0], self.blobs[1] + 1))):  # ellipses, bluer than any background
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            a, b = rng.uniform(0.12, 0.25, 2) * size  # semi-axes
            angle = rng.uniform(0, math.pi)
            u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
            v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
            inside = (u / a) ** 2 + (v / b) ** 2 <= 1
            image[inside] = np.clip(background + _BLOB_TINT + rng.normal(0, 8, 3), 0, 255)
            mask[inside] = 1
        area = size * size / 64**2
        count = int(rng.integers(round(self.fibres[0] * area), round(self.fibres[1] * area) + 1))
        fibre = np.zeros((size, size), dtype=bool)
        for _ in range(count):
            fibre |= self._trace(rng, size)
        image[fibre] *= _DARKEN
        mask[fibre] = 2
        image += rng.normal(0, 10, image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return image, mask, f"ThinStructures(split={self.split!r}, seed={self.seed})[{index}]"

    def _trace(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """One fibre: a smooth random curve 20-58 px long, rasterised ``fibre_width`` px wide -> (S, S) bool."""
        length = rng.uniform(20, 58)  # pixels, whatever the image size: fibres per area set the density
        steps = int(length / _STEP)
        turns = np.cumsum(rng.normal(0, _BEND * math.sqrt(_STEP), steps))  # a random walk of the direction
        direction = rng.uniform(0, 2 * math.pi) + turns
        start = rng.uniform(0, size, 2)
        steps_yx = _STEP * np.stack([np.sin(direction), np.cos(direction)], axis=1)  # (P, 2): dy, dx
        points = start + np.cumsum(steps_yx, axis=0)  # (P, 2): y, x of the traced points
        drawn = np.zeros((size, size), dtype=bool)
        reach = int(math.ceil(self.fibre_width / 2))
        cells = np.floor(points).astype(int)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                y, x = cells[:, 0] + dy, cells[:, 1] + dx
                near = np.hypot(y + 0.5 - points[:, 0], x + 0.5 - points[:, 1]) <= self.fibre_width / 2
                near |= (dy == 0) & (dx == 0)  # the pixel the curve passes through: no gaps on diagonals
                keep = near & (y >= 0) & (y < size) & (x >= 0) & (x < size)
                drawn[y[keep], x[keep]] = True
        return drawn
