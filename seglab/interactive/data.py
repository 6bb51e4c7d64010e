"""``(image, object mask)`` pairs for click segmentation, one object per pair, from seglab's panoptic datasets.

- ``synthetic_objects``: every shape of ``SyntheticPanopticShapes`` images (64x64 by default), one pair per shape;
- ``isbi_objects``: square crops of ``ISBI2012Panoptic`` slices at full resolution, one pair per cell of at least
  ``min_area`` pixels inside the crop (a cell cut by the crop border is the part inside); crop positions are drawn
  from ``seed``. ``split="train"`` (24 slices) for training, ``"val"`` (the last 6 slices) held out.
"""

from __future__ import annotations

import os

import numpy as np

from ..data.panoptic import ISBI2012Panoptic, SyntheticPanopticShapes

__all__ = ["isbi_objects", "synthetic_objects"]


def synthetic_objects(split: str, num_images: int, *, image_size: int = 64, seed: int = 0,
                      max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from the first ``num_images`` images: ``images (P, S, S, 3) uint8``, ``targets (P, S, S) bool``.

    Raises ValueError as ``SyntheticShapes`` (unknown split, ``num_images < 1``, ...).
    """
    dataset = SyntheticPanopticShapes(split, num_images, image_size, seed, max_shapes=max_shapes)
    images, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        for segment, label in enumerate(target.labels.tolist(), start=1):
            if label in dataset.things:
                images.append(image)
                targets.append((target.segments == segment).numpy())
    return np.stack(images), np.stack(targets)


def isbi_objects(split: str, crops_per_slice: int, *, crop: int = 64, min_area: int = 64, max_per_crop: int = 4,
                 seed: int = 0, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from random ``crop x crop`` windows of each slice of ``split``: at most ``max_per_crop`` cells per
    window (the largest ones), each with at least ``min_area`` pixels inside it.

    Returns ``images (P, crop, crop, 3) uint8``, ``targets (P, crop, crop) bool``.

    Raises:
        FileNotFoundError: ISBI 2012 is not under ``root`` / ``$SEGLAB_DATA``.
        ValueError: ``crops_per_slice < 1`` or a crop larger than the slices; no cell found.
    """
    if crops_per_slice < 1:
        raise ValueError(f"crops_per_slice must be >= 1; got {crops_per_slice}")
    dataset = ISBI2012Panoptic(split, root)
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset.read(index)
        segments, labels = target.segments.numpy(), target.labels.numpy()
        height, width = segments.shape
        if crop > min(height, width):
            raise ValueError(f"crop must be at most the slice size {height}x{width}; got {crop}")
        for _ in range(crops_per_slice):
            top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
            window = segments[top:top + crop, left:left + crop]
            ids, areas = np.unique(window, return_counts=True)
            cells = [(a, i) for i, a in zip(ids, areas) if i > 0 and labels[i - 1] in dataset.things and a >= min_area]
            for _area, segment in sorted(cells, reverse=True)[:max_per_crop]:
                images.append(image[top:top + crop, left:left + crop])
                targets.append(window == segment)
    if not images:
        raise ValueError(f"no cell of at least {min_area} pixels in the crops of split {split!r}; lower min_area")
    return np.stack(images), np.stack(targets)
