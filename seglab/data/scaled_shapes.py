"""Discs and squares at a chosen zoom: a controlled task for multi-scale test-time augmentation.

Each image shows 1-4 discs and axis-aligned squares on a flat background with pixel noise; each class has its
own colour (jittered per image), so a model learns *what* an object is quickly and the task is only about
*where*. A scene is laid out on a 64-px canvas (shape radii 3-9 px) and rendered at ``zoom`` times that size:
``zoom=0.5`` shows the same kind of scene with every object half as large (32 px images, radii 1.5-4.5 px),
``zoom=2`` twice as large. A network whose output is built from a stride-8 map (a U-Net without skips,
notebook 05) and trained at ``zoom=1`` smears or loses objects a few pixels across; rescaling the image at test
time (DeepLabV3 section 4.3; ``seglab.inference.infer_logits(scales=...)``) brings them back to the trained
scale: the lesson of notebook 10's TTA section.

Items are generated lazily from ``numpy.random.default_rng([seed, split_code, index])``: the layout
(positions and radii on the canvas, colours) does not depend on ``zoom``, so item ``i`` at ``zoom=2`` is item
``i`` at ``zoom=1`` drawn twice as large (with fresh pixel noise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import SegmentationDataset

__all__ = ["ScaledShapes", "CANVAS_SIZE"]

#: Side of the canvas a scene is laid out on (pixels at ``zoom=1``).
CANVAS_SIZE = 64
_RADIUS = (3.0, 9.0)  # shape radius at zoom 1 (px): half the side of a square, the radius of a disc
_SHAPE_COLORS = ((220, 60, 60), (60, 190, 80))  # disc, square (each image jitters them by up to 20)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_NOISE = 10.0  # standard deviation of the pixel noise (RGB units)


class ScaledShapes(SegmentationDataset):
    """Discs and squares, one colour per class, on a flat, noisy background, rendered at ``zoom``.

    Classes: ("background", "disc", "square"); no ignore pixels.

    Args:
        split: "train", "val" or "test" (each split has its own seed stream).
        num_images: dataset length (>= 1; default 512 train, 64 val / test).
        zoom: scale of the rendering relative to the 64-px canvas, in [0.375, 4] (image side
            ``round(64 * zoom)`` px, at least 24).
        seed: base seed; same seed + split + index -> the same layout.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.

    Items: image ``(S, S, 3) uint8``, mask ``(S, S) int64`` in {0, 1, 2} (without transform).

    Raises:
        ValueError: unknown split, ``num_images < 1`` or ``zoom`` outside [0.375, 4].
    """

    classes = ("background", "disc", "square")
    colors = ((0, 0, 0), (230, 25, 75), (60, 180, 75))

    def __init__(self, split: str = "train", num_images: int | None = None, zoom: float = 1.0, seed: int = 0,
                 transform: Callable[..., dict[str, Any]] | None = None) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"ScaledShapes: unknown split {split!r}; valid splits: {list(_SPLIT_CODES)}")
        num_images = (512 if split == "train" else 64) if num_images is None else int(num_images)
        if num_images < 1:
            raise ValueError(f"ScaledShapes: num_images must be >= 1, got {num_images} (the split would be empty)")
        if not 0.375 <= float(zoom) <= 4.0:
            raise ValueError(f"ScaledShapes: zoom must be in [0.375, 4] (images of 24 to 256 px), got {zoom}")
        super().__init__(split=split, root=None, transform=transform)
        self.num_images, self.zoom, self.seed = num_images, float(zoom), int(seed)
        self.image_size = int(round(CANVAS_SIZE * self.zoom))

    def __len__(self) -> int:
        return self.num_images

    def describe(self, index: int) -> dict[str, Any]:
        """The layout of item ``index`` on the 64-px canvas: "shape_colors" ((2, 3): disc, square),
        "background_color" (RGB floats) and "shapes", a list of ``(class_index, cy, cx, radius)`` in canvas
        pixels (``radius``: a disc's radius, half a square's side)."""
        return self._layout(range(len(self))[index])[0]

    def _layout(self, index: int) -> tuple[dict[str, Any], np.random.Generator]:
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        shape_colors = np.array(_SHAPE_COLORS, dtype=np.float64) + rng.uniform(-20, 20, (2, 3))
        background = rng.uniform(0, 255, 3)
        for _ in range(50):  # a background at least 120 RGB units from both shape colours
            if np.linalg.norm(shape_colors - background, axis=1).min() >= 120:
                break
            background = rng.uniform(0, 255, 3)
        shapes: list[tuple[int, float, float, float]] = []
        for _ in range(int(rng.integers(1, 5))):
            label, radius = int(rng.integers(1, 3)), float(rng.uniform(*_RADIUS))
            outer = radius * (np.sqrt(2) if label == 2 else 1.0)  # a square's corners reach r * sqrt(2)
            for _ in range(30):  # rejection sampling: inside the canvas, apart from earlier shapes
                cy, cx = rng.uniform(outer + 1, CANVAS_SIZE - outer - 1, 2)
                if all(np.hypot(cy - y, cx - x) > outer + r * np.sqrt(2) + 2 for _c, y, x, r in shapes):
                    shapes.append((label, float(cy), float(cx), radius))
                    break
        return {"shape_colors": shape_colors, "background_color": background, "shapes": shapes}, rng

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        layout, rng = self._layout(index)
        size = self.image_size
        yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / self.zoom  # pixel centres, canvas units
        mask = np.zeros((size, size), dtype=np.int64)
        for label, cy, cx, radius in layout["shapes"]:
            if label == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            else:
                inside = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
            mask[inside] = label
        image = np.empty((size, size, 3), dtype=np.float64)
        image[:] = layout["background_color"]
        for label in (1, 2):
            image[mask == label] = layout["shape_colors"][label - 1]
        image += rng.normal(0, _NOISE, image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return image, mask, f"ScaledShapes(split={self.split!r}, zoom={self.zoom}, seed={self.seed})[{index}]"
