"""Argument checks shared by every public function of ``seglab.metrics``: inputs are validated once, at the
boundary, and the internals trust what these functions return.

Every check raises ``ValueError`` with a one-line message that names the argument, what it got, what it needs
and how to fix it (a tensor argument that is not a tensor included: the metrics never guess a conversion).
"""

from __future__ import annotations

import math
import numbers
import sys

import torch

__all__ = [
    "MAX_NUM_CLASSES",
    "check_num_classes",
    "check_ignore_index",
    "check_labels",
    "check_pair",
    "check_confusion",
    "check_distance",
    "check_pixels",
    "check_device",
]

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


def check_distance(name: str, value, *, positive: bool, need: str, example: str) -> float:
    """A real number, finite, ``> 0`` (``positive``) or ``>= 0``, as a float; ``need`` says what it measures."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an int past float's range: a huge finite distance, which callers cap
            number = sys.float_info.max
        ok = math.isfinite(number) and (number > 0 if positive else number >= 0)
    if not ok:
        raise ValueError(
            f"{name} must be {need}, a finite number {'> 0' if positive else '>= 0'}, got {value!r} "
            f"({type(value).__name__}): pass e.g. {name}={example}"
        )
    return number


def check_pixels(name: str, value, *, minimum: int, need: str, example: int) -> int:
    """An integer number of pixels ``>= minimum``."""
    if not _is_integer(value) or value < minimum:
        raise ValueError(
            f"{name} must be {need}, an integer >= {minimum}, got {value!r} ({type(value).__name__}): "
            f"pass e.g. {name}={example}"
        )
    return int(value)


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
