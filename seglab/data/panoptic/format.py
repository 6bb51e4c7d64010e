"""The panoptic target format (Kirillov et al., CVPR 2019, "Panoptic Segmentation") and its conversions.

``PanopticTarget(segments, labels)`` (a named pair, so ``segments, labels = target`` works):

- ``segments``: ``(H, W)`` int64 segment ids; **0 = void** (unlabelled, padding, VOC's object borders), ids
  ``1..M`` for the segments;
- ``labels``: ``(M,)`` int64, ``labels[j - 1]`` = class of segment ``j`` (a class in ``[0, K)``).

Classes are *things* (countable: one segment per instance) or *stuff* (amorphous: one segment per class and
image). Conversions: ``panoptic_to_semantic`` -> ``(H, W)`` / ``(N, H, W)`` int64 class mask with 255 on void;
``panoptic_to_instances`` -> ``{"labels": (M,) int64, "masks": (M, H, W) bool}`` (the target format of
Mask2Former's criterion and of ``seglab.metrics.instance_ap``). Builders: ``panoptic_from_masks`` (a list of
binary masks), ``panoptic_from_semantic`` (a class mask whose thing classes are split into connected
components), ``panoptic_from_segments_info`` (an id map + a list of segment dicts: Hugging Face's
``post_process_panoptic_segmentation`` output, COCO's panoptic JSON), ``voc_panoptic`` (VOC's ``SegmentationClass``
+ ``SegmentationObject``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "VOID",
    "PanopticTarget",
    "check_panoptic",
    "compact_panoptic",
    "panoptic_from_masks",
    "panoptic_from_semantic",
    "panoptic_from_segments_info",
    "panoptic_to_semantic",
    "panoptic_to_instances",
    "voc_panoptic",
    "panoptic_collate",
]

#: Segment id of void pixels (counted for no segment, no class).
VOID = 0

class PanopticTarget(NamedTuple):
    """``segments`` ``(H, W)`` int64 ids (0 = void, 1..M), ``labels`` ``(M,)`` int64 class of each id."""

    segments: torch.Tensor
    labels: torch.Tensor


def check_panoptic(target, *, num_classes: int | None = None, num_queries: int | None = None,
                   source: str = "target") -> PanopticTarget:  # fmt: skip
    """``target`` as a checked ``PanopticTarget`` of int64 tensors (numpy arrays are converted).

    Raises:
        ValueError: not a ``(segments (H, W), labels (M,))`` pair of integers; segment ids outside ``[0, M]``;
            labels outside ``[0, num_classes)``; more than ``num_queries`` segments.
    """
    if not (isinstance(target, Sequence) and len(target) == 2):
        raise ValueError(f"{source} must be a pair (segments (H, W), labels (M,)), got {type(target).__name__}")
    segments, labels = (torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t) for t in target)
    if segments.dim() != 2 or labels.dim() != 1 or segments.is_floating_point() or labels.is_floating_point():
        raise ValueError(f"{source} must hold integer segments (H, W) and labels (M,), got {segments.dtype} "
                         f"{tuple(segments.shape)} and {labels.dtype} {tuple(labels.shape)}")  # fmt: skip
    segments, labels = segments.long(), labels.long()
    if segments.numel() and (int(segments.min()) < 0 or int(segments.max()) > len(labels)):
        raise ValueError(f"{source}: segment ids {int(segments.min())}..{int(segments.max())} outside "
                         f"[0, {len(labels)}] (0 = void, then one label per id); if 255 came from padding, build the "
                         "transform with ignore_index=0")  # fmt: skip
    if num_classes is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{source}: labels {sorted(set(labels.tolist()))[:10]} outside the {num_classes} classes "
                         f"[0, {num_classes})")  # fmt: skip
    if num_queries is not None and len(labels) > num_queries:
        raise ValueError(f"{source} has {len(labels)} segments but the model has num_queries={num_queries}: "
                         "raise num_queries, crop the images, or drop small segments (min_area=)")  # fmt: skip
    return PanopticTarget(segments, labels)


def compact_panoptic(target: PanopticTarget) -> PanopticTarget:
    """Drop the segments that have no pixel (e.g. cropped away) and renumber the rest ``1..M'`` in order."""
    segments, labels = target
    present = torch.bincount(segments.flatten(), minlength=len(labels) + 1)[1:] > 0
    new_ids = torch.zeros(len(labels) + 1, dtype=torch.int64, device=segments.device)
    new_ids[1:][present] = torch.arange(1, int(present.sum()) + 1, device=segments.device)
    return PanopticTarget(new_ids[segments], labels[present])


def panoptic_from_masks(masks, labels, *, num_classes: int | None = None,
                        num_queries: int | None = None) -> PanopticTarget:  # fmt: skip
    """Segment map from ``M`` non-overlapping binary masks ``(M, H, W)`` and their ``(M,)`` labels (id j = mask j-1).

    Raises:
        ValueError: masks not ``(M, H, W)`` or labels not ``(M,)``; two masks sharing pixels (naming them);
            an empty mask; labels out of range or more masks than ``num_queries`` (see ``check_panoptic``).
    """
    masks, labels = torch.as_tensor(masks), torch.as_tensor(labels)
    if masks.dim() != 3 or labels.shape != masks.shape[:1]:
        raise ValueError(f"masks must be (M, H, W) with labels (M,), got {tuple(masks.shape)} and "
                         f"{tuple(labels.shape)}")  # fmt: skip
    masks = masks.bool()
    count = masks.sum(0)
    if (count > 1).any():
        y, x = (int(v) for v in torch.nonzero(count > 1)[0])
        both = torch.nonzero(masks[:, y, x]).flatten().tolist()
        raise ValueError(f"masks {both[0]} and {both[1]} overlap ({int((count > 1).sum())} pixels claimed twice, first "
                         f"at y={y}, x={x}): a panoptic map gives each pixel one segment")  # fmt: skip
    empty = torch.nonzero(masks.flatten(1).sum(1) == 0).flatten().tolist()
    if empty:
        raise ValueError(f"masks {empty[:10]} are empty: leave them out (a segment needs at least one pixel)")
    ids = torch.arange(1, len(masks) + 1)[:, None, None]
    segments = (masks.long() * ids).sum(0)  # (H, W): id of the one mask covering each pixel, 0 elsewhere
    return check_panoptic((segments, labels), num_classes=num_classes, num_queries=num_queries, source="masks")


def panoptic_from_semantic(semantic, *, things: Collection[int], ignore_index: int = 255, connectivity: int = 4,
                           min_area: int = 0) -> PanopticTarget:  # fmt: skip
    """Segments of a class mask ``(H, W)``: one per stuff class present, one per connected component of a thing class.

    ``connectivity`` 4 (``scipy.ndimage.label``'s default cross) or 8 (the 3x3 square). Thing components smaller
    than ``min_area`` pixels become void. ``ignore_index`` pixels become void. Segment ids: stuff classes first
    (ascending), then the thing components class by class in scipy's scan order.

    Raises:
        ValueError: ``connectivity`` not 4 or 8; ``semantic`` not 2-D integer.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    semantic = np.asarray(semantic.cpu() if isinstance(semantic, torch.Tensor) else semantic)
    if semantic.ndim != 2 or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic must be a 2-D integer class mask (H, W), got {semantic.dtype} {semantic.shape}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    segments = np.zeros(semantic.shape, dtype=np.int64)
    labels: list[int] = []
    things = {int(t) for t in things}
    present = [int(c) for c in np.unique(semantic) if c != ignore_index]
    for label in [c for c in present if c not in things] + [c for c in present if c in things]:
        region = semantic == label
        if label not in things:
            labels.append(label)
            segments[region] = len(labels)
            continue
        components, count = ndimage.label(region, structure=structure)
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for component in range(1, count + 1):
            if areas[component] >= max(min_area, 1):
                labels.append(label)
                segments[components == component] = len(labels)
    return PanopticTarget(torch.from_numpy(segments), torch.tensor(labels, dtype=torch.int64))


def panoptic_from_segments_info(segmentation, segments_info: Sequence[dict], *,
                                label_key: str = "label_id") -> PanopticTarget:  # fmt: skip
    """Target from an id map ``(H, W)`` and a list of ``{"id": int, label_key: int}`` dicts, renumbered ``1..M`` in
    the list's order; pixels whose id is not listed (HF's 0 or -1 for "no segment") become void.

    ``label_key``: "label_id" for Hugging Face's ``post_process_panoptic_segmentation``, "category_id" for COCO's
    panoptic JSON (whose PNG ids come from ``rgb2id``).

    Raises:
        ValueError: ``segmentation`` not 2-D, or a dict without "id" / ``label_key``, or an id listed twice.
    """
    segmentation = torch.as_tensor(segmentation)
    if segmentation.dim() != 2 or segmentation.is_floating_point() and (segmentation != segmentation.round()).any():
        raise ValueError(f"segmentation must be a (H, W) map of integer ids, got {segmentation.dtype} "
                         f"{tuple(segmentation.shape)}")  # fmt: skip
    segmentation = segmentation.long()
    if any(not isinstance(info, dict) or "id" not in info or label_key not in info for info in segments_info):
        raise ValueError(f'every segments_info entry must be a dict with "id" and "{label_key}" (label_key=)')
    ids = [int(info["id"]) for info in segments_info]
    if len(set(ids)) != len(ids):
        raise ValueError(f"segments_info lists ids more than once: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    segments = torch.zeros_like(segmentation)
    for new_id, old_id in enumerate(ids, start=1):
        segments[segmentation == old_id] = new_id
    labels = torch.tensor([int(info[label_key]) for info in segments_info], dtype=torch.int64)
    return PanopticTarget(segments, labels)


def panoptic_to_semantic(target, *, ignore_index: int = 255) -> torch.Tensor:
    """Class mask of one target ``(H, W)`` or of a sequence of targets of one size ``(N, H, W)``, int64, void -> 255."""
    one = isinstance(target, Sequence) and len(target) == 2 and isinstance(target[0], torch.Tensor)
    if isinstance(target, PanopticTarget) or (one and target[0].dim() == 2):
        segments, labels = check_panoptic(target)
        lookup = torch.cat([torch.tensor([ignore_index], device=labels.device), labels])
        return lookup[segments]
    return torch.stack([panoptic_to_semantic(t, ignore_index=ignore_index) for t in target])


def panoptic_to_instances(target, *, things: Collection[int] | None = None) -> dict[str, torch.Tensor]:
    """``{"labels": (M,) int64, "masks": (M, H, W) bool}``: every segment (default) or only those of ``things``."""
    segments, labels = check_panoptic(target)
    if things is None:
        keep = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    else:
        keep = torch.isin(labels, torch.tensor(list(things), dtype=torch.int64, device=labels.device))
    ids = torch.nonzero(keep).flatten() + 1
    return {"labels": labels[keep], "masks": segments[None] == ids[:, None, None].to(segments.device)}


def voc_panoptic(class_mask, object_mask, *, source: str = "VOC") -> PanopticTarget:
    """PASCAL VOC ``SegmentationClass`` + ``SegmentationObject`` ``(H, W)`` masks -> panoptic target.

    Object ids ``1..n`` become thing segments (class read from the class mask), background (class 0, object 0)
    one stuff segment, 255 in either mask void.

    Raises:
        ValueError: the two masks differ in size, or an object covers several classes, or a foreground class pixel
            has no object (the files do not belong together).
    """
    classes, objects = np.asarray(class_mask).astype(np.int64), np.asarray(object_mask).astype(np.int64)
    if classes.shape != objects.shape:
        raise ValueError(f"{source}: class mask {classes.shape} and object mask {objects.shape} differ in size")
    void = (classes == 255) | (objects == 255)
    masks, labels = [], []
    background = (classes == 0) & (objects == 0)
    if background.any():
        masks.append(background), labels.append(0)
    for object_id in [int(v) for v in np.unique(objects[~void]) if v != 0]:
        region = (objects == object_id) & ~void
        found = np.unique(classes[region])
        if len(found) != 1 or found[0] == 0:
            raise ValueError(f"{source}: object {object_id} covers classes {found.tolist()}, expected one "
                             "foreground class: the SegmentationObject and SegmentationClass files do not belong "
                             "together")  # fmt: skip
        masks.append(region), labels.append(int(found[0]))
    orphans = (classes > 0) & (objects == 0) & ~void
    if orphans.any():
        raise ValueError(f"{source}: {int(orphans.sum())} pixels of classes {np.unique(classes[orphans]).tolist()} "
                         "belong to no object in SegmentationObject: the two files do not belong together")  # fmt: skip
    stacked = np.stack(masks) if masks else np.zeros((0, *classes.shape), dtype=bool)
    return panoptic_from_masks(stacked, torch.tensor(labels, dtype=torch.int64))


def panoptic_collate(batch: Sequence[tuple[torch.Tensor, PanopticTarget]]) -> tuple[torch.Tensor, list[PanopticTarget]]:
    """``DataLoader`` collate: images ``(3, H, W)`` stacked to ``(N, 3, H, W)``, targets kept as a list of N."""
    images, targets = zip(*batch)
    return torch.stack(list(images)), list(targets)
