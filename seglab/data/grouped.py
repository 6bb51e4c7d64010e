"""A coarser label set for any dataset: merge classes into groups (e.g. CamVid's 11 classes into 5).

Short training from scratch learns large classes first and thin, rare ones last: after a few minutes on
a CPU, CamVid's poles, signs, fences, pedestrians and bicyclists still score 0 IoU for every model, and a
comparison of models says little. Grouping them with the large classes they sit among gives every class
enough pixels to be learned in that budget, as Cityscapes' *categories* (flat, construction, object,
nature, sky, human, vehicle; Cordts et al. 2016) group its 19 classes.

``GroupedClasses(source, groups)`` relabels every mask of ``source`` through a lookup table: class ``c``
of ``source`` becomes the index of the group that lists it; classes in no group become ``ignore_index``
(255), and 255 stays 255. ``CAMVID_GROUPS`` is the grouping notebook 08 trains on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .base import SegmentationDataset

__all__ = ["GroupedClasses", "CAMVID_GROUPS"]

#: CamVid's 11 classes in 5 groups, after Cityscapes' categories: its "object" classes (poles, signs) and
#: fences go with the buildings they stand against, "human" and "vehicle" become "road users" (pedestrians and
#: bicyclists alone are too thin and rare to learn in minutes). The first class of a group gives its colour.
CAMVID_GROUPS: dict[str, tuple[str, ...]] = {
    "sky": ("sky",),
    "construction": ("building", "fence", "pole", "signsymbol"),
    "flat": ("road", "pavement"),
    "nature": ("tree",),
    "road users": ("car", "pedestrian", "bicyclist"),
}


class GroupedClasses(SegmentationDataset):
    """``source`` with its classes merged into ``groups``: group k holds the classes ``groups[name_k]``.

    Args:
        source: a ``SegmentationDataset`` built **without** a transform (its items are relabelled first).
        groups: ``{group name: source class names}``, in the order of the new class indices.
        colors: one RGB triple per group for display (default: the colour of each group's first class).
        transform: applied after relabelling, as in every seglab dataset.

    Items: image as ``source``'s, mask ``(H, W) int64`` in ``[0, len(groups))`` or 255.

    Raises:
        ValueError: ``source`` has a transform, a group names a class ``source`` does not have, a class is
            in two groups, a group is empty, or ``colors`` has not one triple per group.
    """

    def __init__(self, source: SegmentationDataset, groups: Mapping[str, Sequence[str]], *,
                 colors: Sequence[Sequence[int]] | None = None,
                 transform: Callable[..., dict[str, Any]] | None = None) -> None:
        if getattr(source, "transform", None) is not None:
            raise ValueError("GroupedClasses: build the source dataset without a transform (transform=None) and "
                             "give the transform to GroupedClasses, so that masks are relabelled before it")
        names = list(source.classes)
        lookup = np.full(256, source.ignore_index, dtype=np.int64)  # class -> group; unlisted -> ignore
        seen: dict[str, str] = {}
        for k, (group, members) in enumerate(groups.items()):
            if not members:
                raise ValueError(f"GroupedClasses: group {group!r} lists no class")
            for member in members:
                if member not in names:
                    raise ValueError(f"GroupedClasses: group {group!r} names {member!r}, which is not a class of "
                                     f"{type(source).__name__}; its classes: {names}")
                if member in seen:
                    raise ValueError(f"GroupedClasses: class {member!r} is in groups {seen[member]!r} and {group!r}; "
                                     "put it in one")
                seen[member] = group
                lookup[names.index(member)] = k
        if colors is None:
            colors = [source.colors[names.index(members[0])] for members in groups.values()]
        if len(colors) != len(groups):
            raise ValueError(f"GroupedClasses: {len(colors)} colours for {len(groups)} groups; give one RGB per group")
        super().__init__(split=source.split, root=source.root, transform=transform)
        self.source = source
        self.groups = {group: tuple(members) for group, members in groups.items()}
        self.classes = tuple(groups)
        self.colors = tuple(tuple(int(v) for v in c) for c in colors)
        self.ignore_index = source.ignore_index
        self.lookup = lookup

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, mask, name = self.source.load(index)
        return image, self.lookup[mask], name  # 255 (ignore) maps to 255: lookup[255] = ignore_index
