"""Panoptic quality (PQ = SQ x RQ; Kirillov et al., CVPR 2019, "Panoptic Segmentation"), under COCO's rules.

A panoptic map is a pair ``(segments, labels)``: ``segments`` ``(H, W)`` int64 segment ids, 0 = void (unlabelled,
counted for nobody), ids ``1..M``; ``labels`` ``(M,)`` int64, ``labels[j - 1]`` the class of segment ``j``
(the format of ``seglab.data.panoptic.PanopticTarget``, itself such a pair). Classes are split into *things*
(countable objects: each segment is one instance) and *stuff* (amorphous regions: all the segments of one stuff
class in an image are merged into one, as the paper's format has it).

Per image, a predicted and a true segment of the same class *match* when their IoU > 0.5 (a match is then unique:
segments do not overlap). COCO's rules for void (panopticapi, ``pq_compute_single_core``):

- the predicted segment's pixels on target void are removed from the union: ``IoU = |p & g| / (|p| + |g| -
  |p & g| - |p & void|)``;
- an unmatched predicted segment lying mostly (> 0.5 of its pixels) on target void is no false positive;
- predicted void (id 0) is "no prediction": an unmatched true segment is a false negative wherever it lies.

Per class ``c``, over the whole set (sums over images, never per-image means)::

    SQ_c = sum of matched IoUs / TP_c        (0 when TP_c = 0)
    RQ_c = TP_c / (TP_c + FP_c / 2 + FN_c / 2)
    PQ_c = SQ_c * RQ_c

PQ, SQ and RQ are the means over the classes with ``TP + FP + FN > 0``; the things / stuff values average over
the thing / stuff classes only. ``panoptic_quality`` is one call; ``PanopticQuality`` accumulates a val set.

Checked against ``torchmetrics.detection.PanopticQuality`` (tests/test_metrics_panoptic.py). torchmetrics differs
on predicted void only (``symmetric_void=True`` reproduces it): it also removes the *prediction's* void from the
true segment's area, and drops unmatched true segments lying mostly under predicted void. Differences from
panopticapi: no ``iscrowd`` regions; a class that never appears is ``nan`` per class (panopticapi writes 0;
both leave it out of the means). An image's overlap table grows with the segments present in it, not with the
length of ``labels``. Class ids lie in ``[0, 4096)`` (``seglab.metrics.confusion.MAX_NUM_CLASSES``). Needs only
PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import NamedTuple

import torch

from seglab.metrics._checks import MAX_NUM_CLASSES
from seglab.metrics.confusion import _is_integer

__all__ = ["PanopticResult", "PanopticQuality", "panoptic_quality"]


class PanopticResult(NamedTuple):
    """What ``panoptic_quality`` / ``PanopticQuality.compute`` return; scores are fractions in [0, 1].

    ``pq``, ``sq``, ``rq``: means over the classes that appear (``nan`` if none does); ``pq_things`` ...
    ``rq_stuff``: the same over thing / stuff classes. ``pq_per_class``, ``sq_per_class``, ``rq_per_class``:
    ``(K,)`` float64 indexed by class id, ``K = max(things | stuffs) + 1``, ``nan`` for classes that are neither
    things nor stuff or that never appear. ``iou_sum`` ``(K,)`` float64 and ``tp``, ``fp``, ``fn`` ``(K,)``
    int64: the counts they come from.
    """

    pq: float
    sq: float
    rq: float
    pq_things: float
    sq_things: float
    rq_things: float
    pq_stuff: float
    sq_stuff: float
    rq_stuff: float
    pq_per_class: torch.Tensor
    sq_per_class: torch.Tensor
    rq_per_class: torch.Tensor
    iou_sum: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor


def _check_classes(things, stuffs) -> tuple[frozenset[int], frozenset[int]]:
    parsed = []
    for name, value in (("things", things), ("stuffs", stuffs)):
        if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Collection) or not all(
            _is_integer(v) and 0 <= v < MAX_NUM_CLASSES for v in value
        ):
            raise ValueError(f"{name} must be a collection of class ids in [0, {MAX_NUM_CLASSES}), got {value!r} "
                             f"({type(value).__name__}): pass e.g. {name}={{1, 2}}")  # fmt: skip
        parsed.append(frozenset(int(v) for v in value))
    if parsed[0] & parsed[1]:
        raise ValueError(f"things and stuffs share classes {sorted(parsed[0] & parsed[1])}: each class is one or "
                         "the other")  # fmt: skip
    if not parsed[0] | parsed[1]:
        raise ValueError("things and stuffs are both empty: name at least one class, e.g. things={1}, stuffs={0}")
    return parsed[0], parsed[1]


def _is_map(value) -> bool:
    """Whether ``value`` is one panoptic map (a pair whose first item is a tensor), not a sequence of maps."""
    return isinstance(value, Sequence) and len(value) == 2 and isinstance(value[0], torch.Tensor)


def _maps(name: str, value) -> list:
    """One map or a sequence of maps, as a list of maps (each still to be checked)."""
    if _is_map(value):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a pair (segments (H, W), labels (M,)) of tensors or a sequence of such "
                         f"pairs, got {type(value).__name__}: pass a PanopticTarget or a list of them")  # fmt: skip
    return list(value)


def _check_map(name: str, pair, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(segments (H, W) int64, labels (M,) int64)``, checked: ids in ``[0, M]``, labels known classes."""
    if not (isinstance(pair, Sequence) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
        raise ValueError(f"{name} must be a pair (segments (H, W), labels (M,)) of tensors, got {type(pair).__name__}: "
                         "pass a seglab.data.PanopticTarget or a (segments, labels) tuple")  # fmt: skip
    segments, labels = pair
    if (segments.dim() != 2 or segments.is_floating_point() or segments.is_complex() or labels.dim() != 1
            or labels.is_floating_point() or labels.is_complex()):  # fmt: skip
        raise ValueError(f"{name} must be integer segments (H, W) and labels (M,), got {segments.dtype} "
                         f"{tuple(segments.shape)} and {labels.dtype} {tuple(labels.shape)}")  # fmt: skip
    segments, labels = segments.long(), labels.long().cpu()  # labels: a few numbers, read on the CPU
    if segments.numel() and (int(segments.min()) < 0 or int(segments.max()) > len(labels)):
        raise ValueError(f"{name} segment ids must lie in [0, {len(labels)}] (0 = void, one label per id), got "
                         f"{int(segments.min())}..{int(segments.max())}: give every segment id its label")  # fmt: skip
    unknown = labels[(labels < 0) | (labels >= len(known)) | ~known[labels.clamp(0, len(known) - 1)]]
    if len(unknown):
        raise ValueError(f"{name} labels {sorted(set(unknown.tolist()))[:10]} are neither things nor stuffs: "
                         "add them to things= or stuffs=, or make their pixels void (segment id 0)")  # fmt: skip
    return segments, labels


def _merge_stuff(
    segments: torch.Tensor, labels: torch.Tensor, is_stuff: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every stuff class of the image as one segment, and the ids renumbered ``0..U`` over the segments present
    (0 stays void): ``(segments (H, W), labels (U,))``, so that the overlap table grows with the segments present,
    not with the length of ``labels``."""
    ids = torch.arange(len(labels) + 1)
    stuff = is_stuff[labels]
    for label in torch.unique(labels[stuff]).tolist():
        same = torch.nonzero(labels == label).flatten() + 1
        ids[same] = same[0]
    segments = ids.to(segments.device)[segments]
    present = torch.unique(torch.cat([segments.new_zeros(1), segments.flatten()])).cpu()  # sorted, void first
    return torch.searchsorted(present.to(segments.device), segments), labels[present[1:] - 1]


class PanopticQuality:
    """Streaming PQ / SQ / RQ over a set of images (COCO's rules; see the module docstring).

    Args:
        things: class ids of countable objects (each segment is one instance).
        stuffs: class ids of amorphous regions (an image's segments of one stuff class are merged).
        symmetric_void: False (default) for COCO's panopticapi; True for torchmetrics' rule on predicted void.

    ``update(preds, targets)`` takes one panoptic map or a sequence of them for each argument (a pair
    ``(segments (H, W) int, labels (M,) int)``, segment id 0 = void); ``compute()`` returns a ``PanopticResult``;
    ``reset()`` clears the counts.

    Raises:
        ValueError: things / stuffs not disjoint collections of integer ids in ``[0, 4096)``; ``symmetric_void``
            not a bool; preds / targets not a map or a sequence of maps; a map that is not such a pair of integer
            tensors, ids outside ``[0, M]``, labels neither thing nor stuff; different sizes or numbers of preds
            and targets. A refused ``update`` counts none of its images.
    """

    def __init__(self, *, things: Collection[int], stuffs: Collection[int], symmetric_void: bool = False) -> None:
        self.things, self.stuffs = _check_classes(things, stuffs)
        if not isinstance(symmetric_void, bool):
            raise ValueError(f"symmetric_void must be True or False, got {symmetric_void!r} "
                             f"({type(symmetric_void).__name__}): False: COCO's rule, True: torchmetrics'")  # fmt: skip
        self.num_classes = max(self.things | self.stuffs) + 1
        self.symmetric_void = symmetric_void
        self.is_thing = torch.zeros(self.num_classes, dtype=torch.bool)
        self.is_thing[list(self.things)] = True
        self.is_stuff = torch.zeros(self.num_classes, dtype=torch.bool)
        self.is_stuff[list(self.stuffs)] = True
        self.reset()

    def reset(self) -> None:
        self.iou_sum = torch.zeros(self.num_classes, dtype=torch.float64)
        self.tp = torch.zeros(self.num_classes, dtype=torch.int64)
        self.fp = torch.zeros(self.num_classes, dtype=torch.int64)
        self.fn = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, preds, targets) -> None:
        """Add the segments of one image or a sequence of images (see the class docstring). A refused batch (a
        ``ValueError``) adds nothing: every map is checked before any is counted."""
        preds, targets = _maps("preds", preds), _maps("targets", targets)
        if len(preds) != len(targets):
            raise ValueError(f"preds and targets hold different numbers of maps ({len(preds)} and {len(targets)}): "
                             "pass one of each per image")  # fmt: skip
        known = self.is_thing | self.is_stuff
        checked = []
        for pred, target in zip(preds, targets):
            pred, target = _check_map("preds", pred, known), _check_map("targets", target, known)
            if pred[0].shape != target[0].shape:
                raise ValueError(f"preds segments {tuple(pred[0].shape)} and targets segments "
                                 f"{tuple(target[0].shape)} differ in size: predict at the target's size")  # fmt: skip
            checked.append((pred, target))
        for pred, target in checked:
            self._update_image(pred, target)

    def _update_image(self, pred: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Count one image's checked maps."""
        pred_segments, pred_labels = _merge_stuff(*pred, self.is_stuff)
        true_segments, true_labels = _merge_stuff(*target, self.is_stuff)
        num_pred, num_true = len(pred_labels) + 1, len(true_labels) + 1
        # overlap[g, p]: pixels of true segment g and predicted segment p (row / column 0: void)
        joint = true_segments.flatten() * num_pred + pred_segments.to(true_segments.device).flatten()
        overlap = torch.bincount(joint, minlength=num_true * num_pred).reshape(num_true, num_pred).cpu().double()
        true_area, pred_area = overlap.sum(1), overlap.sum(0)  # (U_true + 1,), (U_pred + 1,)
        pred_on_void, true_on_void = overlap[0], overlap[:, 0]
        union = pred_area[None, :] + true_area[:, None] - overlap - pred_on_void[None, :]
        if self.symmetric_void:
            union = union - true_on_void[:, None]
        iou = overlap / union.clamp(min=1)
        same_class = true_labels[:, None] == pred_labels[None, :]  # (U_true, U_pred)
        match = (iou[1:, 1:] > 0.5) & same_class
        matched_true, matched_pred = match.any(1), match.any(0)
        labels_matched = true_labels[matched_true]
        self.tp += torch.bincount(labels_matched, minlength=self.num_classes)
        self.iou_sum += torch.bincount(labels_matched, weights=iou[1:, 1:][match], minlength=self.num_classes)
        missed = ~matched_true & (true_area[1:] > 0)  # true segments absent after a crop are no segments
        if self.symmetric_void:
            missed &= true_on_void[1:] <= 0.5 * true_area[1:]
        self.fn += torch.bincount(true_labels[missed], minlength=self.num_classes)
        wrong = ~matched_pred & (pred_area[1:] > 0) & (pred_on_void[1:] <= 0.5 * pred_area[1:])
        self.fp += torch.bincount(pred_labels[wrong], minlength=self.num_classes)

    def compute(self) -> PanopticResult:
        """PQ, SQ, RQ overall, for things and stuff, and per class, from the counts so far."""
        tp = self.tp.double()
        denominator = tp + 0.5 * self.fp + 0.5 * self.fn
        present = (denominator > 0) & (self.is_thing | self.is_stuff)
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), 0.0)
        rq = tp / denominator.clamp(min=0.5)
        pq = sq * rq
        nan = torch.tensor(math.nan, dtype=torch.float64)
        per_class = [torch.where(present, value, nan) for value in (pq, sq, rq)]

        def mean(values: torch.Tensor, group: torch.Tensor) -> float:
            chosen = present & group
            return float(values[chosen].mean()) if chosen.any() else math.nan

        everything = self.is_thing | self.is_stuff
        means = [mean(values, group) for group in (everything, self.is_thing, self.is_stuff) for values in (pq, sq, rq)]
        return PanopticResult(*means, *per_class, self.iou_sum.clone(), self.tp.clone(), self.fp.clone(),
                              self.fn.clone())  # fmt: skip


def panoptic_quality(preds, targets, *, things: Collection[int], stuffs: Collection[int],
                     symmetric_void: bool = False) -> PanopticResult:  # fmt: skip
    """PQ, SQ and RQ of panoptic predictions (Kirillov et al. 2019), under COCO's rules (module docstring).

    Args:
        preds: one predicted panoptic map ``(segments (H, W) int, labels (M,) int)``, segment id 0 = void
            (no prediction), or a sequence of them (one per image).
        targets: the true maps, in the same form and order (id 0 = void: counted for nobody).
        things: class ids of countable objects; stuffs: class ids of amorphous regions (disjoint from things).
        symmetric_void: torchmetrics' rule on predicted void instead of COCO's (see the module docstring).

    Returns:
        ``PanopticResult``: ``pq``, ``sq``, ``rq`` and their things / stuff splits (floats in [0, 1]),
        ``(K,)`` per-class tensors (``nan`` for classes that never appear) and the TP / FP / FN / IoU counts.

    Raises:
        ValueError: see ``PanopticQuality``.
    """
    metric = PanopticQuality(things=things, stuffs=stuffs, symmetric_void=symmetric_void)
    metric.update(preds, targets)
    return metric.compute()
