"""Synthetic shapes with instances: the images of ``SyntheticShapes``, each shape a "thing" segment, the background
one "stuff" segment.

The pixels are exactly those of ``seglab.data.SyntheticShapes`` with the same arguments (same seed, split, index,
size): this module only adds which shape each foreground pixel belongs to. Shapes never touch (the layout keeps
them 2 pixels apart beyond their circumradii), so a pixel belongs to the shape whose centre is nearest *relative
to that shape's circumradius* (inside its own shape that ratio is <= 1, while every other shape is more than one
of its own circumradii away). Deterministic by ``(seed, split, index)``; an item at 64x64 takes about twice
``SyntheticShapes``' time (about 3 ms on the project's shared 2-core CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..synthetic import _EQUAL_AREA, _SIDES, SyntheticShapes
from .datasets import PanopticDataset
from .format import PanopticTarget

__all__ = ["SyntheticPanopticShapes", "SYNTHETIC_THINGS", "SYNTHETIC_STUFFS"]

#: Thing classes of the synthetic shapes: circle, square, triangle.
SYNTHETIC_THINGS: frozenset[int] = frozenset({1, 2, 3})
#: Stuff classes: the background.
SYNTHETIC_STUFFS: frozenset[int] = frozenset({0})


class SyntheticPanopticShapes(PanopticDataset):
    """``SyntheticShapes`` as a panoptic dataset: items ``(image, PanopticTarget)``.

    Segment 1 is the background (class 0, stuff); segments 2.. are the shapes in drawing order (classes 1-3,
    things). No void pixels. At most ``max_shapes + 1`` segments, so ``num_queries >= max_shapes + 1`` always holds.

    Args:
        split, num_images, image_size, seed, max_shapes: as ``SyntheticShapes`` (same pixels for the same values).
        transform: albumentations-style ``transform(image=, mask=segments)``; build seglab's presets with
            ``ignore_index=0`` (padding -> void).
        num_queries: if given, an item with more segments raises ValueError.

    Items: image ``(S, S, 3) uint8`` (without transform); target segments ``(S, S)`` int64 in ``[1, M]``, labels
    ``(M,)`` int64 with ``labels[0] == 0``.

    Raises:
        ValueError: as ``SyntheticShapes`` (unknown split, ``num_images < 1``, ``image_size < 24``, ...).
    """

    things, stuffs = SYNTHETIC_THINGS, SYNTHETIC_STUFFS

    def __init__(self, split: str = "train", num_images: int | None = None, image_size: int = 64, seed: int = 0,
                 transform: Callable[..., dict[str, Any]] | None = None, *, max_shapes: int = 3,
                 num_queries: int | None = None) -> None:  # fmt: skip
        shapes = SyntheticShapes(split, num_images, image_size, seed, max_shapes=max_shapes)
        super().__init__(shapes, transform=transform, num_queries=num_queries)

    def panoptic(self, index: int, mask: np.ndarray) -> PanopticTarget:
        layout = self.base.describe(index)["shapes"]
        size = mask.shape[0]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres, as SyntheticShapes draws
        segments = np.ones(mask.shape, dtype=np.int64)  # segment 1: the background
        labels = [0]
        if layout:
            # (shapes, S, S): distance to each centre in units of that shape's circumradius
            relative = np.stack([np.hypot(yy - cy, xx - cx) / (radius * _EQUAL_AREA[_SIDES[label]])
                                 for label, cy, cx, radius, _angle in layout])  # fmt: skip
            owner = relative.argmin(0)  # (S, S)
            foreground = mask > 0
            segments[foreground] = owner[foreground] + 2
            labels += [label for label, *_ in layout]
        return PanopticTarget(torch.from_numpy(segments), torch.tensor(labels, dtype=torch.int64))
