"""Resizing for inference: antialiased bilinear shrinking, plain bilinear enlarging, the model's input size
under ``max_size``, and ``forward_resized`` (the model on a shrunk, padded copy; logits back at full size)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from seglab.inference.inputs import MAX_PAD_MULTIPLE, call_model, check_images, check_int, check_model

__all__ = ["shrink", "resize", "model_size", "forward_padded", "forward_resized"]


def shrink(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear downsizing of ``(N, C, H, W)`` to ``size``. torch's antialiased kernel is wrong
    for outputs 1 pixel wide and more than 1 high (checked against PIL), so that case resizes the transposed
    image instead."""
    if size[1] == 1 and size[0] > 1:
        return shrink(images.transpose(-1, -2), size[::-1]).transpose(-1, -2)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``: antialiased when shrinking (:func:`shrink`), plain when enlarging."""
    if tuple(size) == tuple(images.shape[-2:]):
        return images
    if size[0] <= images.shape[-2] and size[1] <= images.shape[-1]:
        return shrink(images, size)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def model_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """The size the model sees: the longer side shrunk to ``max_size`` (never enlarged, never below 1 px)."""
    scale = 1.0 if max_size is None else min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded(length: int, pad_multiple: int) -> int:
    """``length`` rounded up to a multiple of ``pad_multiple``."""
    return length + (-length) % pad_multiple


def forward_padded(model: nn.Module, x: torch.Tensor, pad_multiple: int) -> torch.Tensor:
    """``model`` on ``x (N, 3, h, w)`` padded bottom/right with 0 to a multiple of ``pad_multiple``; logits
    (checked by ``call_model``) cropped back to ``(N, K, h, w)``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % pad_multiple, (-w) % pad_multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))  # 0 = the ImageNet mean colour after normalisation
    return call_model(model, x)[..., :h, :w]  # (N, K, h, w)


def forward_resized(model: nn.Module, images: torch.Tensor, max_size: int | None, pad_multiple: int = 32) -> torch.Tensor:
    """Logits at the size of ``images``, computed at reduced size.

    ``images (N, 3, H, W)`` are shrunk (bilinear, antialiased) so the longer side is ``max_size`` (never
    enlarged), padded bottom/right to a multiple of ``pad_multiple``, run through ``model``; the logits
    are cropped to the shrunk size and upsampled bilinearly to ``(N, K, H, W)``. ``max_size=None``: the
    model runs at full size.

    Args:
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits (a tensor, or a mapping whose ``"out"`` is one).
        images: ``(N, 3, H, W)`` float32 (or float64), ImageNet-normalised.
        max_size: the longer side the model sees (>= 1 px), None = full size.
        pad_multiple: 1 to 1024 (the model's output stride).

    Returns:
        ``(N, K, H, W)`` logits (the model's dtype at full size, float32 when upsampled).

    Raises:
        TypeError, ValueError: bad images, max_size or pad_multiple; a model whose logits are not at the
            input size or not finite (``seglab.inference.inputs.call_model``).
    """
    check_model(model)
    check_images(images)
    check_int("max_size", max_size, 1, optional=True)
    check_int("pad_multiple", pad_multiple, 1, MAX_PAD_MULTIPLE)
    return _forward_resized(model, images, max_size, pad_multiple)


def _forward_resized(model: nn.Module, images: torch.Tensor, max_size: int | None, pad_multiple: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    h, w = model_size(height, width, max_size)
    x = images if (h, w) == (height, width) else shrink(images, (h, w))
    logits = forward_padded(model, x, pad_multiple)  # (N, K, h, w)
    if (h, w) != (height, width):
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return logits
