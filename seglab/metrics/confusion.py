"""Segmentation metrics from a streaming confusion matrix.

Everything is derived from one ``(K, K)`` confusion matrix ``cm`` whose row ``i``, column ``j``
counts pixels of ground-truth class ``i`` predicted as class ``j``. The matrix is accumulated over
a whole evaluation set (never averaged per image) with ``torch.bincount`` on whatever device the
tensors live on; pixels whose target equals ``ignore_index`` (255 in PASCAL VOC: object borders and
"difficult" regions) are dropped before counting.

Definitions (Long et al. 2015, section 5; the PASCAL VOC devkit), with ``n_ij = cm[i, j]``,
``t_i = sum_j n_ij`` (ground-truth pixels of class i) and ``p_j = sum_i n_ij`` (predicted pixels):

- IoU of class i:              ``n_ii / (t_i + p_i - n_ii)``
- mIoU:                        mean of IoU over the classes that are *present*: a class with
                               ``t_i + p_i == 0`` (absent from both ground truth and prediction) has
                               an undefined IoU, reported as ``nan``, and is left out of the mean.
                               A class absent from the ground truth but predicted somewhere has
                               IoU 0 and *does* count (false positives are penalised).
- pixel accuracy:              ``sum_i n_ii / sum_ij n_ij``
- mean class accuracy:         mean over classes with ``t_i > 0`` of ``n_ii / t_i``
- frequency-weighted IoU:      ``sum_i t_i * IoU_i / sum_i t_i`` (classes with ``t_i = 0`` weigh 0)

All metrics are fractions in [0, 1] (multiply by 100 only when printing). They agree with
``torchmetrics.classification.MulticlassJaccardIndex(ignore_index=255)`` (tests check this): per class
with ``average="none"`` on the classes that appear (torchmetrics reports an absent class as 0 where
we report ``nan``), and for the mean with ``average="macro"``.

Boundary metrics (trimap IoU, boundary F-score, Boundary IoU) are in ``seglab.metrics.boundary``.
This module needs nothing but PyTorch: it can be copied into another project alone.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "confusion_matrix",
    "ConfusionMatrix",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "mean_class_accuracy",
    "frequency_weighted_iou",
]


def _as_preds(preds_or_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return ``(N, H, W)`` int64 class indices from logits ``(N, K, H, W)`` or indices ``(N, H, W)``."""
    if preds_or_logits.dim() == target.dim() + 1:
        return preds_or_logits.argmax(dim=1)
    return preds_or_logits


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Confusion matrix of one batch.

    Args:
        preds: ``(N, H, W)`` int64 predicted class indices in ``[0, K)``, or ``(N, K, H, W)`` logits
            (argmax is taken over dim 1).
        target: ``(N, H, W)`` int64 ground truth in ``[0, K)`` or ``ignore_index``.
        num_classes: K.
        ignore_index: target value to skip (255 for VOC); ``None`` keeps every pixel.

    Returns:
        ``(K, K)`` int64 tensor on ``target``'s device; rows = ground truth, columns = prediction.

    Raises:
        ValueError: if shapes differ, or a target value lies outside ``[0, K) ∪ {ignore_index}``,
            or a prediction lies outside ``[0, K)``.
    """
    preds = _as_preds(preds, target)
    if preds.shape != target.shape:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape: "
            "pass logits (N, K, H, W) or class indices (N, H, W) of the mask's size "
            "(upsample logits to the mask size with F.interpolate before computing metrics)"
        )
    preds = preds.reshape(-1).long()
    target = target.reshape(-1).long().to(preds.device)
    if ignore_index is not None:
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    if target.numel():
        bad_t = (target < 0) | (target >= num_classes)
        if bad_t.any():
            values = torch.unique(target[bad_t]).tolist()[:10]
            raise ValueError(
                f"target holds values {values} outside [0, {num_classes}) and ignore_index={ignore_index}: "
                "map unlabelled pixels to the ignore index (255) or check num_classes"
            )
        bad_p = (preds < 0) | (preds >= num_classes)
        if bad_p.any():
            values = torch.unique(preds[bad_p]).tolist()[:10]
            raise ValueError(f"preds hold values {values} outside [0, {num_classes}): check num_classes")
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Streaming confusion matrix: ``update`` per batch, ``compute`` once at the end.

    Args:
        num_classes: K.
        ignore_index: target value to skip (default 255).
        device: where the ``(K, K)`` int64 matrix lives (default: the first batch's device).

    Example::

        cm = ConfusionMatrix(21)
        for images, masks in loader:
            cm.update(model(images), masks)    # logits (N, K, H, W) or preds (N, H, W)
        cm.compute()["mIoU"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._device_set = device is not None

    def reset(self) -> None:
        """Zero the accumulated counts."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, preds_or_logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``(N, K, H, W)`` logits or ``(N, H, W)`` preds, and ``(N, H, W)`` targets."""
        if not self._device_set:
            self.matrix = self.matrix.to(target.device)
            self._device_set = True
        batch = confusion_matrix(preds_or_logits, target, self.num_classes, self.ignore_index)
        self.matrix += batch.to(self.matrix.device)

    def compute(self) -> dict:
        """All metrics of the accumulated matrix, as Python floats / lists (fractions in [0, 1]).

        Keys: ``"mIoU"``, ``"iou_per_class"`` (K floats, ``nan`` for absent classes),
        ``"pixel_accuracy"``, ``"mean_class_accuracy"``, ``"fw_iou"``.
        """
        cm = self.matrix.cpu()
        return {
            "mIoU": float(mean_iou(cm)),
            "iou_per_class": [float(v) for v in iou_per_class(cm)],
            "pixel_accuracy": float(pixel_accuracy(cm)),
            "mean_class_accuracy": float(mean_class_accuracy(cm)),
            "fw_iou": float(frequency_weighted_iou(cm)),
        }


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """``(K,)`` float64 IoU per class; ``nan`` where the class is absent from GT and prediction."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def mean_iou(cm: torch.Tensor) -> torch.Tensor:
    """Mean IoU over classes present in GT or prediction (``nan`` if none is). 0-dim float64."""
    return iou_per_class(cm).nanmean()


def pixel_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Fraction of non-ignored pixels classified correctly (``nan`` for an empty matrix). 0-dim float64."""
    cm = cm.double()
    total = cm.sum()
    return cm.diag().sum() / total if total > 0 else torch.tensor(math.nan, dtype=torch.float64)


def mean_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Mean per-class recall ``n_ii / t_i`` over classes present in the ground truth. 0-dim float64."""
    cm = cm.double()
    gt = cm.sum(1)
    recall = torch.where(gt > 0, cm.diag() / gt.clamp(min=1), torch.full_like(gt, math.nan))
    return recall.nanmean()


def frequency_weighted_iou(cm: torch.Tensor) -> torch.Tensor:
    """IoU averaged with weights ``t_i / sum t`` (Long et al. 2015). 0-dim float64."""
    cm = cm.double()
    gt = cm.sum(1)
    total = gt.sum()
    if total == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.nan_to_num(iou_per_class(cm), nan=0.0)
    return (gt * iou).sum() / total
