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

Every public function validates its arguments at the boundary with the checks at the top of this file (bad
input: a one-line ``ValueError``); the internals trust them. Boundary metrics (trimap IoU, boundary F-score,
Boundary IoU) are in ``seglab.metrics.boundary``. This module needs nothing but PyTorch: copy it into another
project.
"""

from __future__ import annotations

import math
import numbers

import torch

# ------------------------------------------------------------------------------------------------
# Argument checks at the boundary (kept in this file so that it copies out alone; seglab.metrics._checks
# re-exports them for the boundary metrics). Each raises ValueError with a one-line message that names
# the argument, what it got, what it needs and how to fix it.
# ------------------------------------------------------------------------------------------------

# The (K, K) int64 confusion matrix (and torch.bincount's buffer of the same size) of 4096 classes is 128 MiB
# each; ADE20K-full (3688 classes) fits, a pixel count passed as num_classes (8 TB for 10**6) does not.
MAX_NUM_CLASSES = 4096
_INT64 = torch.iinfo(torch.int64)


def _tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}: convert it first "
            f"(torch.as_tensor(...), torch.from_numpy(...))"
        )
    if value.is_complex():
        raise ValueError(f"{name} must be a real tensor, got {value.dtype}: pass class indices or real logits")
    return value


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_classes(num_classes) -> int:
    """``num_classes`` as an int in ``[1, MAX_NUM_CLASSES]``."""
    if not _is_integer(num_classes):
        raise ValueError(
            f"num_classes must be an integer number of classes >= 1, got {num_classes!r} "
            f"({type(num_classes).__name__}): pass e.g. num_classes=21 for PASCAL VOC"
        )
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        size = f" (its (K, K) int64 confusion matrix alone would take {8 * float(num_classes) ** 2 / 2**30:.3g} GiB)"
        raise ValueError(
            f"num_classes must lie in [1, {MAX_NUM_CLASSES}], got {num_classes}"
            + (size + ": pass the dataset's number of classes, not a pixel count" if num_classes > 0
               else ": pass the dataset's number of classes (21 for PASCAL VOC)")
        )
    return int(num_classes)


def check_ignore_index(ignore_index) -> int | None:
    """``ignore_index`` as ``None`` or an int64-representable int."""
    if ignore_index is None:
        return None
    if not _is_integer(ignore_index) or not _INT64.min <= ignore_index <= _INT64.max:
        raise ValueError(
            f"ignore_index must be None or an integer label value, got {ignore_index!r} "
            f"({type(ignore_index).__name__}): pass 255 (PASCAL VOC, CamVid) or None to count every pixel"
        )
    return int(ignore_index)


def check_labels(name: str, labels, *, dims: int | None = None) -> torch.Tensor:
    """``labels`` (class indices: an integer or bool tensor) as int64, of ``dims`` dimensions if given."""
    labels = _tensor(name, labels)
    if labels.is_floating_point():
        raise ValueError(
            f"{name} must hold integer class indices (an integer or bool tensor), got {labels.dtype}: a mask "
            "scaled to [0, 1] has lost its classes; load masks as integers (no ToTensor or normalisation), "
            "or pass .long() if the floats are whole class indices"
        )
    if dims is not None and labels.dim() != dims:
        expected = "(N, H, W)" if dims == 3 else f"{dims} dimensions"
        raise ValueError(
            f"{name} must be {expected} class indices, got shape {tuple(labels.shape)}: "
            "add the batch dimension with mask[None] for one image"
        )
    if labels.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-dim tensor: pass mask.reshape(1)")
    return labels.long()


def check_pair(
    preds_name: str, preds_or_logits, target, num_classes: int, ignore_index: int | None, *, dims: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(preds, target)``, both int64 of ``target``'s shape on ``target``'s device.

    ``preds_or_logits`` holds class indices of ``target``'s shape, or float logits with one more dimension, the
    classes at dim 1 (``(N, K, ...)`` for a ``(N, ...)`` target), reduced by argmax. Target values must lie in
    ``[0, num_classes)`` or equal ``ignore_index``; predictions must lie in ``[0, num_classes)`` wherever the
    target is not ignored (what they hold on ignored pixels is never read). ``num_classes`` and
    ``ignore_index`` must already be checked.
    """
    target = check_labels("target", target, dims=dims)
    preds = _tensor(preds_name, preds_or_logits)
    if preds.dim() == target.dim() + 1:
        if not preds.is_floating_point():
            raise ValueError(
                f"{preds_name} has one more dimension than target {tuple(target.shape)}, so it is read as "
                f"logits (N, K, ...), which must be floating point, got {preds.dtype} {tuple(preds.shape)}: "
                f"pass class indices of target's shape (e.g. preds.squeeze(1)) or float logits"
            )
        if preds.shape[1] != num_classes:
            raise ValueError(
                f"{preds_name} holds logits of {preds.shape[1]} classes (dim 1 of {tuple(preds.shape)}), "
                f"but num_classes={num_classes}: pass the model's number of classes, or logits with {num_classes} "
                "channels"
            )
        if preds.shape[:1] + preds.shape[2:] != target.shape:
            raise ValueError(
                f"{preds_name} {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape: logits must "
                "be target's size (upsample them with F.interpolate(..., mode='bilinear') first)"
            )
        if torch.isnan(preds).any():
            raise ValueError(
                f"{preds_name} holds NaN logits ({int(torch.isnan(preds).sum())} of {preds.numel()}): the model "
                "diverged or its input holds NaN; check the weights and the input"
            )
        preds = preds.argmax(1)
    else:
        preds = check_labels(preds_name, preds)
        if preds.shape != target.shape:
            raise ValueError(
                f"{preds_name} {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape: pass logits "
                "(N, K, H, W) or class indices (N, H, W) of the mask's size (upsample logits to the mask size "
                "with F.interpolate before computing metrics)"
            )
    preds = preds.to(target.device).long()
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        values = torch.unique(target[bad]).tolist()[:10]
        raise ValueError(
            f"target holds values {values} outside [0, {num_classes}) and ignore_index={ignore_index}: "
            "map unlabelled pixels to the ignore index (255) or check num_classes"
        )
    bad = valid & ((preds < 0) | (preds >= num_classes))
    if bad.any():
        values = torch.unique(preds[bad]).tolist()[:10]
        raise ValueError(
            f"{preds_name} hold values {values} outside [0, {num_classes}) on labelled pixels: check num_classes"
        )
    return preds, target


def check_confusion(cm) -> torch.Tensor:
    """A ``(K, K)`` confusion matrix of finite counts >= 0, as float64 (``K >= 1``)."""
    cm = _tensor("cm", cm)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(
            f"cm must be a square (K, K) confusion matrix with K >= 1, got shape {tuple(cm.shape)}: "
            "build it with seglab.metrics.confusion_matrix or ConfusionMatrix"
        )
    cm = cm.double()
    if not torch.isfinite(cm).all() or (cm < 0).any():
        raise ValueError(
            f"cm must hold pixel counts >= 0, got {int((~torch.isfinite(cm) | (cm < 0)).sum())} negative or "
            "non-finite entries: build it with seglab.metrics.confusion_matrix, and add matrices, never subtract"
        )
    if not math.isfinite(float(cm.sum())):
        raise ValueError("cm holds counts that sum past float64's range: pass pixel counts (e.g. an int64 matrix)")
    return cm


def check_device(device) -> torch.device | None:
    """``None`` or a ``torch.device`` (from a string such as ``"cuda:0"`` or a device)."""
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be None or a torch device such as 'cpu' or 'cuda:0', got {device!r} ({type(device).__name__})"
        ) from None



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
