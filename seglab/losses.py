"""Segmentation losses. Every loss takes logits and honours ``ignore_index``.

Shapes (all losses):
    logits: ``(N, K, H, W)`` float, raw scores (no softmax applied).
    target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index`` (255).
    returns: a 0-dim float tensor (mean over non-ignored pixels, or over classes for Dice).

Ignored pixels contribute nothing to the value and receive exactly zero gradient (tests check it).

- ``cross_entropy``: pixel-wise softmax cross-entropy, optional per-class ``weight`` (e.g. SegNet's
  median-frequency weights, Eigen & Fergus 2015). Thin wrapper over ``F.cross_entropy``.
- ``dice_loss``: soft multi-class Dice, ``1 - mean_k 2|P_k ∩ G_k| / (|P_k| + |G_k|)`` on softmax
  probabilities (Milletari et al. 2016, V-Net; the multi-class mean as in Sudre et al. 2017).
- ``focal_loss``: ``-(1 - p_t)^gamma log p_t`` (Lin et al. 2017), optional per-class ``alpha``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["cross_entropy", "dice_loss", "focal_loss", "CrossEntropyLoss", "DiceLoss", "FocalLoss", "build_loss", "LOSSES"]


def _check(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(
            f"expected logits (N, K, H, W) and target (N, H, W); got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree in N, H or W: "
            "upsample the logits to the mask size (F.interpolate(..., mode='bilinear')) first"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class indices, got {target.dtype}: use target.long()")
    if target.device.type != "cpu":
        return  # reading values back would stall the GPU at every step; F.cross_entropy asserts on the device
    k = logits.shape[1]
    valid = target != ignore_index
    if valid.any():
        t = target[valid]
        if int(t.min()) < 0 or int(t.max()) >= k:
            bad = torch.unique(t[(t < 0) | (t >= k)]).tolist()[:10]
            raise ValueError(
                f"target holds values {bad} outside [0, {k}) and ignore_index={ignore_index}: "
                "check num_classes or map unlabelled pixels to 255"
            )


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over non-ignored pixels (weighted mean if ``weight`` is given).

    Args:
        weight: ``(K,)`` float per-class weights, or None.
        label_smoothing: in [0, 1), as in ``F.cross_entropy`` (Szegedy et al. 2016).
    Equals ``F.cross_entropy(..., reduction="mean")``, except that it returns 0 (with a zero gradient)
    when every pixel is ignored, instead of PyTorch's nan, and never reads a value back from the device.
    """
    _check(logits, target, ignore_index)
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum",
                            label_smoothing=label_smoothing)
    valid = target != ignore_index
    if weight is None:
        count = valid.sum()
    else:  # PyTorch's weighted mean divides by the summed weights of the targets
        count = (weight[target.masked_fill(~valid, 0)] * valid).sum()
    return total / count.clamp_min(torch.finfo(logits.dtype).tiny)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - mean_k (2 sum p_k g_k + s) / (sum p_k + sum g_k + s)``, ignored pixels masked out.

    The mean runs over all K classes; ``smooth`` (s) keeps classes absent from both prediction and
    target near a Dice of 1 instead of 0/0.
    """
    _check(logits, target, ignore_index)
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (N, 1, H, W)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.where(target != ignore_index, 0), k).permute(0, 3, 1, 2).float() * valid  # (N, K, H, W)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (cardinality + smooth)
    return 1 - dice.mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` averaged over non-ignored pixels.

    ``gamma=0`` and ``alpha=None`` reduce it to plain cross-entropy. ``alpha``: ``(K,)`` per-class weights.
    """
    _check(logits, target, ignore_index)
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    safe_target = target.where(valid, 0)
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (N, H, W)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        loss = loss * alpha.to(loss.device, loss.dtype)[safe_target]
    return loss[valid].mean()


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy`."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = 255, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.weight, self.ignore_index, self.label_smoothing)


class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss`."""

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, target, self.ignore_index, self.smooth)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None, ignore_index: int = 255):
        super().__init__()
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma, self.ignore_index = gamma, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.ignore_index)


LOSSES = {"cross_entropy": CrossEntropyLoss, "dice": DiceLoss, "focal": FocalLoss}


def build_loss(
    name: str, *, weight: torch.Tensor | None = None, ignore_index: int = 255, label_smoothing: float = 0.0
) -> nn.Module:
    """Loss module by name: ``"cross_entropy"`` (``weight`` = class weights), ``"dice"``, ``"focal"`` (``weight`` = alpha).

    Raises:
        ValueError: unknown name (lists the valid ones), or ``label_smoothing`` with a loss other than
            cross-entropy.
    """
    if label_smoothing and name != "cross_entropy":
        raise ValueError(f"label_smoothing applies to the cross_entropy loss only, not {name!r}: drop --label-smoothing")
    if name == "cross_entropy":
        return CrossEntropyLoss(weight, ignore_index, label_smoothing)
    if name == "dice":
        return DiceLoss(ignore_index)
    if name == "focal":
        return FocalLoss(alpha=weight, ignore_index=ignore_index)
    raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
