"""Datasets of ``(image, PanopticTarget)`` items (``seglab.data.panoptic.format``): ``ISBI2012Panoptic`` (cells as
instances: 4-connected components of the cell interior, membrane as stuff) and ``VOCPanoptic`` (the images that have
a ``SegmentationObject`` mask); the synthetic shapes are in ``seglab.data.panoptic.synthetic``. With a transform, the
segment map travels as the mask (nearest-neighbour): build it with ``ignore_index=0`` so that padding becomes void.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..base import SegmentationDataset, read_mask
from ..isbi import ISBI2012
from ..voc import VOCSegmentation
from .format import PanopticTarget, check_panoptic, compact_panoptic, panoptic_from_semantic, voc_panoptic

__all__ = ["PanopticDataset", "ISBI2012Panoptic", "VOCPanoptic"]


class PanopticDataset(Dataset):
    """Base class: ``(image, PanopticTarget)`` items over a semantic dataset ``base`` (``SegmentationDataset``).

    Subclasses set ``things`` / ``stuffs`` and implement ``panoptic(index, mask)`` (the target of item ``index``
    from its class mask). Without ``transform``: image ``(H, W, 3) uint8``; with it, what
    ``transform(image=, mask=segments)["image"]`` gives (build seglab's presets with ``ignore_index=0``: padded
    pixels become void). Segments without pixels (none drawn, or cropped away by the transform) are dropped
    (``compact_panoptic``).

    Args:
        base: the semantic dataset read (its ``read(index)`` gives the image and the class mask).
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        num_queries: if given, an item with more segments raises ValueError (Mask2Former's query count).

    Attributes: ``things``, ``stuffs`` (class ids), and ``classes``, ``colors``, ``num_classes``, ``split``,
    ``root`` of ``base``; ``ignore_index`` = 255, the void value of ``panoptic_to_semantic``.

    Raises (on reading an item):
        ValueError: more segments than ``num_queries``, or ids out of range after the transform (see
            ``check_panoptic``).
    """

    things: frozenset[int] = frozenset()
    stuffs: frozenset[int] = frozenset()

    def __init__(self, base: SegmentationDataset, *, transform: Callable[..., dict[str, Any]] | None = None,
                 num_queries: int | None = None) -> None:  # fmt: skip
        self.base, self.transform, self.num_queries = base, transform, num_queries
        self.classes, self.colors, self.split, self.root = base.classes, base.colors, base.split, base.root
        self.ignore_index = 255  # of the semantic masks that panoptic_to_semantic gives

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.base)

    def panoptic(self, index: int, mask: np.ndarray) -> PanopticTarget:
        """The target of item ``index`` from its class mask ``(H, W) int64`` (subclasses implement it)."""
        raise NotImplementedError

    def read(self, index: int) -> tuple[np.ndarray, PanopticTarget]:
        """Item ``index`` before the transform: image ``(H, W, 3) uint8`` and its checked target."""
        index = range(len(self))[index]
        image, mask = self.base.read(index)
        target = check_panoptic(self.panoptic(index, mask), num_classes=self.num_classes, source=f"{self!r}[{index}]")
        return image, compact_panoptic(target)

    def __getitem__(self, index: int) -> tuple[Any, PanopticTarget]:
        image, target = self.read(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=target.segments.numpy())
            image = out["image"]
            segments = torch.as_tensor(np.asarray(out["mask"]))
            target = check_panoptic((segments, target.labels), source=f"{self!r}[{index}]")
            target = compact_panoptic(target)
        return image, check_panoptic(target, num_queries=self.num_queries, source=f"{self!r}[{index}]")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, num_images={len(self)})"


class ISBI2012Panoptic(PanopticDataset):
    """ISBI 2012 cells as instances: each 4-connected component of the cell interior (class 1) is a thing segment,
    the membrane (class 0) one stuff segment. About 120-140 cells per 512x512 slice (2-5 of them under 10 pixels).

    4-connectivity (scipy's default) because the membranes are 1-2 pixels thin: with 8-connectivity, cell pixels
    that touch only at a corner across a diagonal membrane step would join two regions (29.png has one such
    pair: 117 components with 4-connectivity, 116 with 8). Args as ``ISBI2012``, plus
    ``min_area`` (smaller components become void) and ``num_queries``.
    """

    things, stuffs = frozenset({1}), frozenset({0})

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, *,
                 transform: Callable[..., dict[str, Any]] | None = None, num_queries: int | None = None,
                 min_area: int = 0) -> None:  # fmt: skip
        super().__init__(ISBI2012(split, root), transform=transform, num_queries=num_queries)
        self.min_area = int(min_area)

    def panoptic(self, index: int, mask: np.ndarray) -> PanopticTarget:
        return panoptic_from_semantic(mask, things=self.things, connectivity=4, min_area=self.min_area)


class VOCPanoptic(PanopticDataset):
    """PASCAL VOC 2012 with instances: the images of ``split`` that have ``SegmentationObject/<id>.png``.

    Things: the 20 object classes; stuff: background (0); void: 255 (object borders). Args as
    ``VOCSegmentation`` plus ``num_queries``. The genuine subset in ``$SEGLAB_DATA/voc-samples`` holds one such
    mask (2007_000063, train); the full VOC 2012 has 2,913 (train + val).

    Raises:
        FileNotFoundError: no image of the split has a ``SegmentationObject`` mask (or VOC is missing).
    """

    things, stuffs = frozenset(range(1, 21)), frozenset({0})

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, *,
                 transform: Callable[..., dict[str, Any]] | None = None, num_queries: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        base = VOCSegmentation(split, root, **kwargs)
        objects = base.root / "SegmentationObject"
        base.samples = [(jpg, png) for jpg, png in base.samples if (objects / png.name).is_file()]
        if not base.samples:
            raise FileNotFoundError(f"VOC 2012 split {split!r}: no image has an instance mask in {objects} "
                                    "(SegmentationObject/<id>.png, part of VOCtrainval_11-May-2012.tar)")  # fmt: skip
        super().__init__(base, transform=transform, num_queries=num_queries)

    def panoptic(self, index: int, mask: np.ndarray) -> PanopticTarget:
        path = self.base.root / "SegmentationObject" / Path(self.base.samples[index][1]).name
        return voc_panoptic(mask, read_mask(path), source=str(path))
