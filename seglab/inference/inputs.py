"""What seglab.inference's public functions accept, checked at the boundary (each error names the argument,
what it got and what it needs), and the one place the model is called: ``call_model`` accepts a tensor or
torchvision's ``{"out": tensor}`` and refuses logits of the wrong size or with NaN/inf."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch

__all__ = ["MAX_PAD_MULTIPLE", "check_images", "check_model", "check_int", "call_model"]

#: The largest ``pad_multiple`` (a model's output stride: 8 to 64 in practice).
MAX_PAD_MULTIPLE = 1024


def check_int(name: str, value, low: int, high: int | None = None, *, optional: bool = False) -> int | None:
    """An integer (not a bool) in ``[low, high]``, or None when ``optional``.

    Raises:
        ValueError: anything else.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a whole number {limit}{' (or None)' if optional else ''}, got {value!r}")
    return int(value)


def check_model(model) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable ((N, 3, h, w) -> (N, K, h, w) logits), got {type(model).__name__}")


def check_images(images) -> None:
    """``(N, 3, H, W)`` float32/float64, non-empty, finite (ImageNet-normalised; not checked further).

    Raises:
        TypeError: not a tensor. ValueError: another shape or dtype, an empty dimension, NaN/inf.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be an (N, 3, H, W) torch.Tensor, got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) ImageNet-normalised, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"images is empty (shape {shape}): N, H and W must be at least 1")
    if images.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"images must be float32 (or float64) ImageNet-normalised (seglab.imaging.to_tensor), got "
                         f"{images.dtype}: convert with images.float() (autocast runs the model in 16 bits)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images hold NaN or infinite values")


def call_model(model, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked: ``(N, K, h, w)`` floating-point logits at the size of ``x``, K >= 1, finite.

    A mapping (torchvision's segmentation models return ``{"out": ..., "aux": ...}``) gives its ``"out"``.

    Raises:
        TypeError: the model returned neither a tensor nor a mapping with ``"out"``.
        ValueError: logits of another batch size or another size than the input (seglab does not upsample
            them: upsample inside the model), no classes, an integer dtype, or NaN/inf scores.
    """
    out = model(x)
    if isinstance(out, Mapping):
        if "out" not in out:
            raise ValueError(f"the model returned a mapping with keys {sorted(map(str, out))}: seglab takes its "
                             "'out' entry (torchvision's segmentation models); return a tensor or {'out': logits}")
        out = out["out"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return (N, K, h, w) logits as a tensor (or a mapping with 'out', as "
                        f"torchvision's models), got {type(out).__name__}: wrap it, e.g. lambda x: model(x).logits")
    if out.dim() != 4 or out.shape[0] != x.shape[0] or out.shape[-2:] != x.shape[-2:] or out.shape[1] < 1:
        raise ValueError(
            f"the model returned logits of shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}: seglab's "
            "inference needs (N, K, h, w) logits, K >= 1, at the input's size; upsample them inside the model "
            "(F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False))")
    if not out.is_floating_point():
        raise ValueError(f"the model returned {out.dtype} logits: seglab needs floating-point scores")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"the model produced non-finite scores (NaN or inf) for an input of shape {tuple(x.shape)}: "
                         "check its weights for NaN (a diverged training run) and the input images")
    return out
