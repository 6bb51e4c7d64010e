"""Instance mask average precision (AP, AP50, AP75) as COCO defines it (Lin et al., ECCV 2014; ``cocoeval.py``).

Inputs follow torchvision's detection format, one dict per image:

- predictions: ``{"masks": (D, H, W) bool, "scores": (D,) float, "labels": (D,) int64}``;
- ground truth: ``{"masks": (G, H, W) bool, "labels": (G,) int64}``.

The recipe (COCO ``iou_type="segm"``, area range "all", 100 detections per image and class):

1. per image and class, sort the detections by score (stable, highest first), keep the first 100, and compute the
   mask IoU of every (detection, true instance) pair on pixels;
2. for each IoU threshold ``t`` in 0.50, 0.55, ..., 0.95, match greedily: each detection in score order takes the
   still unmatched true instance of highest IoU, if that IoU is >= ``t`` (ties go to the later instance, as in
   COCO); a matched detection is a true positive, an unmatched one a false positive;
3. per class and threshold, over the whole set: sort all detections by score (stable), cumulate TP and FP into
   recall and precision, make precision non-increasing from the right (the "interpolated" envelope) and read it at
   the 101 recall points 0, 0.01, ..., 1 (0 past the last recall reached); AP is their mean;
4. AP = mean over thresholds and over the classes that have true instances (a class with none is left out:
   ``nan`` per class); AP50 and AP75 use one threshold each.

Checked against ``torchmetrics.detection.MeanAveragePrecision(iou_type="segm")`` (which runs pycocotools) and
against pycocotools' ``COCOeval`` itself in tests/test_metrics_panoptic.py. torchmetrics departs from COCO twice:
its default IoU and recall thresholds are float32 values (0.55 -> 0.550000011920929, so an IoU or a recall
falling exactly on 0.55 or 0.6 is judged differently: pass ``iou_thresholds=list(COCO_IOU_THRESHOLDS),
rec_thresholds=list(COCO_RECALL_THRESHOLDS)`` to agree), and its segm path drops the images that have no true
mask, with their false positives (COCO counts them; so does this module). Differences from COCO: no ``iscrowd``
instances and no area ranges (small / medium / large); ``max_detections`` is one number. Needs only PyTorch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from seglab.metrics._checks import MAX_NUM_CLASSES
from seglab.metrics.confusion import _is_integer

__all__ = ["InstanceAPResult", "InstanceAP", "instance_average_precision", "mask_iou", "COCO_IOU_THRESHOLDS",
           "COCO_RECALL_THRESHOLDS"]

#: COCO's IoU thresholds 0.50:0.05:0.95, bit for bit as ``cocoeval.py``'s ``np.linspace`` makes them (0.9 is
#: 0.8999999999999999 there), since a mask IoU can fall exactly on a threshold.
COCO_IOU_THRESHOLDS: tuple[float, ...] = (*(0.5 + i * ((0.95 - 0.5) / 9) for i in range(9)), 0.95)
#: COCO's 101 recall points 0, 0.01, ..., 1, as ``np.linspace`` makes them (0.07 is 0.07000000000000001 there).
COCO_RECALL_THRESHOLDS: tuple[float, ...] = tuple(i * 0.01 for i in range(101))
_RECALL_POINTS = torch.tensor(COCO_RECALL_THRESHOLDS, dtype=torch.float64)


class InstanceAPResult(NamedTuple):
    """What ``instance_average_precision`` / ``InstanceAP.compute`` return (fractions in [0, 1]).

    ``ap`` (mean over COCO's ten thresholds and the classes with true instances), ``ap50``, ``ap75``: floats,
    ``nan`` when no class has a true instance. ``ap_per_class``, ``ap50_per_class``: ``(K,)`` float64, ``nan``
    for classes without true instances. ``precision``: ``(T, 101, K)`` float64, the interpolated precision at
    each threshold, recall point and class (``nan`` for classes without true instances).
    """

    ap: float
    ap50: float
    ap75: float
    ap_per_class: torch.Tensor
    ap50_per_class: torch.Tensor
    precision: torch.Tensor


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of binary masks: ``(A, H, W)``, ``(B, H, W)`` bool -> ``(A, B)`` float64 (0 if both empty).

    Integer masks count their nonzero pixels. Raises ``ValueError`` for a non-tensor, float masks (threshold them
    first), a rank other than 3, or masks of different ``(H, W)``."""
    for name, masks in (("masks1", masks1), ("masks2", masks2)):
        if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or masks.is_floating_point() or masks.is_complex():
            got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise ValueError(f"{name} must be a bool tensor of binary masks (M, H, W), got {got}: threshold "
                             "probabilities first (probs > 0.5); add the mask dimension with mask[None]")  # fmt: skip
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(f"masks1 {tuple(masks1.shape)} and masks2 {tuple(masks2.shape)} differ in (H, W): pass "
                         "masks of one image size")  # fmt: skip
    a = masks1.flatten(1).bool().double()  # (A, H*W)
    b = masks2.flatten(1).bool().double().to(a.device)  # (B, H*W)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def _check_image(name: str, item, keys: tuple[str, ...], index: int) -> dict[str, torch.Tensor]:
    if not isinstance(item, Mapping) or any(not isinstance(item.get(k), torch.Tensor) for k in keys):
        got = f"keys {[k for k in item][:6]}" if isinstance(item, Mapping) else type(item).__name__
        raise ValueError(f"{name}[{index}] must be a dict of tensors with keys {list(keys)}, got {got}")
    masks, labels = item["masks"], item["labels"]
    if masks.dim() != 3 or labels.dim() != 1 or len(masks) != len(labels) or labels.is_floating_point() \
            or labels.is_complex():  # fmt: skip
        raise ValueError(f"{name}[{index}] needs masks (M, H, W) and integer labels (M,), got masks "
                         f"{tuple(masks.shape)} and labels {labels.dtype} {tuple(labels.shape)}")  # fmt: skip
    if masks.is_floating_point() or masks.is_complex():
        raise ValueError(f"{name}[{index}]['masks'] must be bool (binary masks), got {masks.dtype}: threshold "
                         "probabilities first, e.g. masks=probs > 0.5")  # fmt: skip
    labels = labels.long().cpu()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= MAX_NUM_CLASSES):
        wrong = labels[(labels < 0) | (labels >= MAX_NUM_CLASSES)].tolist()[:5]
        raise ValueError(f"{name}[{index}]['labels'] must be class ids in [0, {MAX_NUM_CLASSES}), got {wrong}: "
                         "map category ids to contiguous class indices")  # fmt: skip
    out = {"masks": masks.bool(), "labels": labels}
    if "scores" in keys:
        scores = item["scores"]
        if scores.shape != labels.shape or not scores.is_floating_point():
            raise ValueError(f"{name}[{index}]['scores'] must be float (D,) like labels, got {scores.dtype} "
                             f"{tuple(scores.shape)}")  # fmt: skip
        scores = scores.double().cpu()
        if bool(scores.isnan().any()):
            raise ValueError(f"{name}[{index}]['scores'] holds NaN: a NaN score has no rank; check the model's "
                             "output (or replace NaN with -inf to rank those detections last)")  # fmt: skip
        out["scores"] = scores
    return out


class InstanceAP:
    """Streaming COCO mask AP over a set of images (see the module docstring).

    Args:
        iou_thresholds: the IoU thresholds (default COCO's 0.50:0.05:0.95; AP50 / AP75 need 0.5 / 0.75 in it).
        max_detections: detections kept per image and class, highest scores first (COCO: 100).

    ``update(preds, targets)``: two lists of per-image dicts (see the module docstring); ``compute()`` returns an
    ``InstanceAPResult``; ``reset()`` forgets the images seen.

    Raises:
        ValueError: bad thresholds or ``max_detections`` (bools included); preds / targets not lists of dicts;
            an image dict without its keys, masks not bool ``(M, H, W)`` (integer masks count their nonzero
            pixels), labels outside ``[0, 4096)``, labels / scores not of length M, NaN scores, predicted and
            true masks of different sizes, or different numbers of prediction and target dicts. A refused
            ``update`` counts none of its images.
    """

    def __init__(self, *, iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_detections: int = 100) -> None:
        if not (isinstance(iou_thresholds, Sequence) and not isinstance(iou_thresholds, (str, bytes))
                and len(iou_thresholds) > 0 and all(isinstance(t, numbers.Real) and not isinstance(t, bool)
                                                    and 0 < t <= 1 for t in iou_thresholds)):  # fmt: skip
            raise ValueError(f"iou_thresholds must be a non-empty sequence of numbers in (0, 1], got "
                             f"{iou_thresholds!r}: pass e.g. iou_thresholds=[0.5]")  # fmt: skip
        if not _is_integer(max_detections) or max_detections < 1:
            raise ValueError(f"max_detections must be an integer >= 1, got {max_detections!r}: COCO uses 100")
        self.iou_thresholds = torch.tensor([float(t) for t in iou_thresholds], dtype=torch.float64)
        self.max_detections = int(max_detections)
        self.reset()

    def reset(self) -> None:
        # one entry per (image, class) with detections: class, scores (D,), matched (T, D)
        self._detections: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._num_true: dict[int, int] = {}

    def update(self, preds: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        """Match the detections of each image to its true instances, at every threshold. A refused batch (a
        ``ValueError``) adds nothing: every image is checked before any is counted."""
        for name, value in (("preds", preds), ("targets", targets)):
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
                raise ValueError(f"{name} must be a list of per-image dicts, got {type(value).__name__}: wrap one "
                                 f"image as [{name[:-1]}]")  # fmt: skip
        if len(preds) != len(targets):
            raise ValueError(f"preds and targets must be lists of per-image dicts of the same length, got "
                             f"{len(preds)} and {len(targets)}: pass one of each per image")  # fmt: skip
        checked = []
        for index, (pred, target) in enumerate(zip(preds, targets)):
            pred = _check_image("preds", pred, ("masks", "scores", "labels"), index)
            target = _check_image("targets", target, ("masks", "labels"), index)
            if len(pred["masks"]) and len(target["masks"]) and pred["masks"].shape[1:] != target["masks"].shape[1:]:
                raise ValueError(f"preds[{index}] masks {tuple(pred['masks'].shape)} and targets[{index}] masks "
                                 f"{tuple(target['masks'].shape)} differ in size: predict at the target's size"
                                 )  # fmt: skip
            checked.append((pred, target))
        for pred, target in checked:
            for label in torch.unique(torch.cat([pred["labels"], target["labels"]])).tolist():
                self._update_class(pred, target, label)

    def _update_class(self, pred: dict, target: dict, label: int) -> None:
        true_masks = target["masks"][(target["labels"] == label).to(target["masks"].device)]
        self._num_true[label] = self._num_true.get(label, 0) + len(true_masks)
        chosen = torch.nonzero(pred["labels"] == label).flatten()
        if len(chosen) == 0:
            return
        order = torch.sort(pred["scores"][chosen], descending=True, stable=True).indices[: self.max_detections]
        chosen = chosen[order]
        scores = pred["scores"][chosen]
        matched = torch.zeros(len(self.iou_thresholds), len(chosen), dtype=torch.bool)
        if len(true_masks):
            iou = mask_iou(pred["masks"][chosen.to(pred["masks"].device)], true_masks).cpu()  # (D, G)
            for t, threshold in enumerate(self.iou_thresholds.tolist()):
                taken = torch.zeros(len(true_masks), dtype=torch.bool)
                for d in range(len(chosen)):
                    best, best_iou = -1, min(threshold, 1 - 1e-10)
                    for g in range(len(true_masks)):
                        if not taken[g] and iou[d, g] >= best_iou:  # ">=": COCO gives ties to the later instance
                            best, best_iou = g, float(iou[d, g])
                    if best >= 0:
                        taken[best] = True
                        matched[t, d] = True
        self._detections.append((label, scores, matched))

    def compute(self) -> InstanceAPResult:
        """AP, AP50, AP75 and per-class AP over the images seen so far."""
        num_classes = max([*self._num_true, -1]) + 1
        num_thresholds = len(self.iou_thresholds)
        precision = torch.full((num_thresholds, len(_RECALL_POINTS), num_classes), math.nan, dtype=torch.float64)
        for label, num_true in self._num_true.items():
            if num_true == 0:
                continue  # COCO leaves a class without true instances out
            entries = [(s, m) for c, s, m in self._detections if c == label]
            scores = torch.cat([s for s, _ in entries]) if entries else torch.zeros(0, dtype=torch.float64)
            matched = (torch.cat([m for _, m in entries], 1) if entries
                       else torch.zeros(num_thresholds, 0, dtype=torch.bool))  # (T, D) # fmt: skip
            order = torch.sort(scores, descending=True, stable=True).indices
            tp = matched[:, order].double().cumsum(1)  # (T, D)
            fp = (~matched[:, order]).double().cumsum(1)
            recall = tp / num_true
            prec = tp / (tp + fp).clamp(min=1e-300)
            envelope = prec.flip(1).cummax(1).values.flip(1)  # non-increasing from the right
            for t in range(num_thresholds):
                at = torch.searchsorted(recall[t].contiguous(), _RECALL_POINTS, side="left")
                reached = at < recall.shape[1]
                values = torch.zeros(len(_RECALL_POINTS), dtype=torch.float64)
                values[reached] = envelope[t, at[reached]]
                precision[t, :, label] = values
        ap_per_threshold = precision.mean(1)  # (T, K), nan for classes without true instances
        ap_per_class = ap_per_threshold.mean(0)

        def mean_at(threshold: float) -> tuple[float, torch.Tensor]:
            hits = torch.nonzero(torch.isclose(self.iou_thresholds, torch.tensor(threshold, dtype=torch.float64)))
            if len(hits) == 0:
                return math.nan, torch.full((num_classes,), math.nan, dtype=torch.float64)
            per_class = ap_per_threshold[int(hits[0])]
            return _nanmean(per_class), per_class

        ap50, ap50_per_class = mean_at(0.5)
        return InstanceAPResult(_nanmean(ap_per_class), ap50, mean_at(0.75)[0], ap_per_class, ap50_per_class,
                                precision)  # fmt: skip


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if len(kept) else math.nan


def instance_average_precision(preds: Sequence[Mapping], targets: Sequence[Mapping], *,
                               iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
                               max_detections: int = 100) -> InstanceAPResult:  # fmt: skip
    """COCO mask AP of instance predictions over a set of images (module docstring).

    Args:
        preds: one dict per image: ``masks`` ``(D, H, W)`` bool, ``scores`` ``(D,)`` float, ``labels`` ``(D,)`` int.
        targets: one dict per image, same order: ``masks`` ``(G, H, W)`` bool, ``labels`` ``(G,)`` int.
        iou_thresholds: default COCO's 0.50:0.05:0.95.
        max_detections: detections kept per image and class (COCO: 100).

    Returns:
        ``InstanceAPResult``: ``ap``, ``ap50``, ``ap75``, ``(K,)`` per-class AP and AP50 (``nan`` where a class
        has no true instance), and the ``(T, 101, K)`` interpolated precision.

    Raises:
        ValueError: see ``InstanceAP``.
    """
    metric = InstanceAP(iou_thresholds=iou_thresholds, max_detections=max_detections)
    metric.update(preds, targets)
    return metric.compute()
