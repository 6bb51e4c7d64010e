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

Every public function validates its arguments at the boundary with ``seglab.metrics._checks`` (bad input: a
one-line ``ValueError``); the internals trust them. Boundary metrics (trimap IoU, boundary F-score, Boundary
IoU) are in ``seglab.metrics.boundary``. This module needs nothing but PyTorch and ``_checks.py``: copy the two
into another project.
"""

from __future__ import annotations

import math

import torch

from seglab.metrics._checks import check_confusion, check_device, check_ignore_index, check_num_classes, check_pair

__all__ = [
    "confusion_matrix",
    "ConfusionMatrix",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "mean_class_accuracy",
    "frequency_weighted_iou",
]


def _count(preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """``(K, K)`` int64 counts of validated int64 ``preds`` / ``target`` of one shape (internal: no checks)."""
    preds, target = preds.reshape(-1), target.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Confusion matrix of one batch.

    Args:
        preds: ``(N, ...)`` integer class indices in ``[0, K)`` of ``target``'s shape, or ``(N, K, ...)``
            float logits (argmax over dim 1; NaN refused). Values on ignored pixels are not read.
        target: ``(N, ...)`` integer (or bool) ground truth in ``[0, K)`` or ``ignore_index``, usually
            ``(N, H, W)``; an empty batch gives a matrix of zeros.
        num_classes: K, an int in ``[1, 4096]``.
        ignore_index: target value to skip (255 for VOC); ``None`` keeps every pixel.

    Returns:
        ``(K, K)`` int64 tensor on ``target``'s device; rows = ground truth, columns = prediction.

    Raises:
        ValueError: a float (e.g. scaled to [0, 1]) or non-tensor mask; shapes that differ; logits with
            another number of channels than ``num_classes`` or holding NaN; a target value outside
            ``[0, K) ∪ {ignore_index}``, or a prediction outside ``[0, K)`` on a labelled pixel; a
            ``num_classes`` or ``ignore_index`` that is not an integer in range.
    """
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    preds, target = check_pair("preds", preds, target, num_classes, ignore_index)
    return _count(preds, target, num_classes, ignore_index)


class ConfusionMatrix:
    """Streaming confusion matrix: ``update`` per batch, ``compute`` once at the end.

    Args:
        num_classes: K, an int in ``[1, 4096]``.
        ignore_index: target value to skip (default 255); ``None`` keeps every pixel.
        device: where the ``(K, K)`` int64 matrix lives (default: the first batch's device).

    Raises:
        ValueError: ``num_classes`` not an int in ``[1, 4096]`` (``2.5``, ``0``, ``True``...), ``ignore_index``
            not None or an int, or an unknown ``device``; ``update`` raises as :func:`confusion_matrix`.

    Example::

        cm = ConfusionMatrix(21)
        for images, masks in loader:
            cm.update(model(images), masks)    # logits (N, K, H, W) or preds (N, H, W)
        cm.compute()["mIoU"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        device = check_device(device)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)
        self._device_set = device is not None

    def reset(self) -> None:
        """Zero the accumulated counts."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, preds_or_logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``(N, K, H, W)`` logits or ``(N, H, W)`` preds, and ``(N, H, W)`` targets.

        Raises:
            ValueError: as :func:`confusion_matrix` (the matrix is left unchanged).
        """
        preds, target = check_pair("preds_or_logits", preds_or_logits, target, self.num_classes, self.ignore_index)
        if not self._device_set:
            self.matrix = self.matrix.to(target.device)
            self._device_set = True
        self.matrix += _count(preds, target, self.num_classes, self.ignore_index).to(self.matrix.device)

    def compute(self) -> dict:
        """All metrics of the accumulated matrix, as Python floats / lists (fractions in [0, 1]).

        Keys: ``"mIoU"``, ``"iou_per_class"`` (K floats, ``nan`` for absent classes),
        ``"pixel_accuracy"``, ``"mean_class_accuracy"``, ``"fw_iou"``.
        """
        cm = self.matrix.cpu().double()
        return {
            "mIoU": float(_iou_per_class(cm).nanmean()),
            "iou_per_class": [float(v) for v in _iou_per_class(cm)],
            "pixel_accuracy": float(_pixel_accuracy(cm)),
            "mean_class_accuracy": float(_mean_class_accuracy(cm)),
            "fw_iou": float(_frequency_weighted_iou(cm)),
        }


# Each public function below checks ``cm`` at the boundary (check_confusion: a (K, K) tensor of finite counts
# >= 0, any real dtype, so cm.double() is fine) and calls its internal twin on the float64 matrix.


def _iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1e-300), torch.full_like(tp, math.nan))


def _pixel_accuracy(cm: torch.Tensor) -> torch.Tensor:
    total = cm.sum()
    return cm.diag().sum() / total if total > 0 else torch.tensor(math.nan, dtype=torch.float64)


def _mean_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    gt = cm.sum(1)
    return torch.where(gt > 0, cm.diag() / gt.clamp(min=1e-300), torch.full_like(gt, math.nan)).nanmean()


def _frequency_weighted_iou(cm: torch.Tensor) -> torch.Tensor:
    gt = cm.sum(1)
    total = gt.sum()
    if total == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    return (gt * torch.nan_to_num(_iou_per_class(cm), nan=0.0)).sum() / total


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """``(K,)`` float64 IoU per class of a ``(K, K)`` matrix; ``nan`` where the class is absent from GT and prediction.

    Raises:
        ValueError: ``cm`` not a square ``(K, K)`` tensor (``K >= 1``) of finite counts >= 0.
    """
    return _iou_per_class(check_confusion(cm))


def mean_iou(cm: torch.Tensor) -> torch.Tensor:
    """Mean IoU over classes present in GT or prediction (``nan`` if none is). 0-dim float64.

    Raises:
        ValueError: ``cm`` not a square ``(K, K)`` tensor (``K >= 1``) of finite counts >= 0.
    """
    return _iou_per_class(check_confusion(cm)).nanmean()


def pixel_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Fraction of non-ignored pixels classified correctly (``nan`` for an empty matrix). 0-dim float64.

    Raises:
        ValueError: ``cm`` not a square ``(K, K)`` tensor (``K >= 1``) of finite counts >= 0.
    """
    return _pixel_accuracy(check_confusion(cm))


def mean_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Mean per-class recall ``n_ii / t_i`` over classes present in the ground truth. 0-dim float64.

    Raises:
        ValueError: ``cm`` not a square ``(K, K)`` tensor (``K >= 1``) of finite counts >= 0.
    """
    return _mean_class_accuracy(check_confusion(cm))


def frequency_weighted_iou(cm: torch.Tensor) -> torch.Tensor:
    """IoU averaged with weights ``t_i / sum t`` (Long et al. 2015). 0-dim float64.

    Raises:
        ValueError: ``cm`` not a square ``(K, K)`` tensor (``K >= 1``) of finite counts >= 0.
    """
    return _frequency_weighted_iou(check_confusion(cm))
