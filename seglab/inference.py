"""Inference on whole images: one entry point, ``infer_logits``, used by ``evaluate``, ``predict`` and the notebooks.

Every step starts from ``images (N, 3, H, W) float32`` normalised with the ImageNet mean and std and ends
with ``(N, K, H, W) float32`` scores at the input's full size:

1. **Resize** (``max_size``): shrink (bilinear, antialiased) so the longer side is at most ``max_size``;
   pad bottom/right with 0 (the mean colour) to a multiple of ``pad_multiple``; crop the logits back and
   upsample them bilinearly to ``(H, W)``. With nothing else asked for this is :func:`forward_resized`,
   exactly (the full-size validation of ``fit``).
2. **Test-time augmentation** (``scales``, ``flip``): run the model on the image rescaled by each factor
   of ``scales`` (relative to the size of step 1) and, with ``flip``, on its mirror image too; each pass's
   logits are upsampled to ``(H, W)`` and turned into softmax probabilities, and the probabilities are
   averaged (Chen et al. 2017/2018, DeepLabV3 section 4.3 / DeepLabV3+ section 4.2: "multi-scale inputs
   (scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}) and left-right flipped inputs", averaging probabilities).
   The result is then ``log(mean probability)`` (log-probabilities: their argmax and softmax are those of
   the average, and they feed ``cross_entropy`` unchanged); probabilities below float32's smallest normal
   number are clamped to it so that no score is ``-inf``.
3. **Sliding windows** (``window``, ``stride``): for images larger than the model was trained on, the
   model sees ``window``-sized crops, ``stride`` px apart, the last one in each direction aligned to the
   image's edge; overlapping logits are blended with weights (``sliding_window_logits``).
4. **Dense CRF** (``crf=True``): the scores are refined by ``seglab.crf.dense_crf`` (Krähenbühl & Koltun
   2011, as in DeepLab v1/v2) with the RGB image.

This module needs only PyTorch (``seglab.crf`` is imported only when ``crf=True``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["infer_logits", "sliding_window_logits", "forward_resized", "parse_scales", "IMAGENET_MEAN",
           "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # as seglab.transforms.eval_transform
IMAGENET_STD = (0.229, 0.224, 0.225)
_BLENDS = ("gaussian", "uniform")
_GAUSSIAN_SIGMA = 0.125  # sigma of the blending weights as a fraction of the window side (MONAI's default)


def _shrink(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear downsizing. torch's antialiased kernel is wrong for outputs 1 pixel wide and more
    than 1 high (checked against PIL), so that case resizes the transposed image instead."""
    if size[1] == 1 and size[0] > 1:
        return _shrink(images.transpose(-1, -2), size[::-1]).transpose(-1, -2)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``: antialiased when shrinking (:func:`_shrink`), plain when enlarging."""
    if tuple(size) == tuple(images.shape[-2:]):
        return images
    if size[0] <= images.shape[-2] and size[1] <= images.shape[-1]:
        return _shrink(images, size)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _forward_padded(model: nn.Module, x: torch.Tensor, pad_multiple: int) -> torch.Tensor:
    """``model`` on ``x (N, 3, h, w)`` padded bottom/right with 0 to a multiple of ``pad_multiple``; logits
    cropped back to ``(N, K, h, w)``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % pad_multiple, (-w) % pad_multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))  # 0 = the ImageNet mean colour after normalisation
    return model(x)[..., :h, :w]  # (N, K, h, w)


def _model_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """The size the model sees: the longer side shrunk to ``max_size`` (never enlarged, never below 1 px)."""
    scale = 1.0 if max_size is None else min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def forward_resized(model: nn.Module, images: torch.Tensor, max_size: int | None, pad_multiple: int = 32) -> torch.Tensor:
    """Logits at the size of ``images``, computed at reduced size.

    ``images (N, 3, H, W)`` are shrunk (bilinear, antialiased) so the longer side is ``max_size`` (never
    enlarged), padded bottom/right to a multiple of ``pad_multiple``, run through ``model``; the logits
    are cropped to the shrunk size and upsampled bilinearly to ``(N, K, H, W)``. ``max_size=None``: the
    model runs at full size.
    """
    height, width = images.shape[-2:]
    h, w = _model_size(height, width, max_size)
    x = images if (h, w) == (height, width) else _shrink(images, (h, w))
    logits = _forward_padded(model, x, pad_multiple)  # (N, K, h, w)
    if (h, w) != (height, width):
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return logits


def _pair(value, name: str) -> tuple[int, int]:
    """``int`` or ``(int, int)`` >= 1 -> ``(h, w)``."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a size in pixels >= 1 (an int or an (height, width) pair), got {value!r}")
    return pair  # type: ignore[return-value]


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one side: every ``stride`` px, the last window aligned to the far edge."""
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _blend_weights(height: int, width: int, blend: str, device, dtype=torch.float32) -> torch.Tensor:
    """``(height, width)`` weights of one window: 1 (``"uniform"``) or a separable Gaussian, 1 at the centre,
    ``sigma = 0.125 * side`` (``exp(-8)`` ~ 3e-4 at the middle of each edge, never 0)."""
    if blend == "uniform":
        return torch.ones(height, width, device=device, dtype=dtype)

    def gauss(n: int) -> torch.Tensor:
        t = torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2
        return torch.exp(-(t**2) / (2 * (_GAUSSIAN_SIGMA * n) ** 2))

    return (gauss(height)[:, None] * gauss(width)[None, :]).to(dtype)


@torch.no_grad()
def sliding_window_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    blend: str = "gaussian",
    pad_multiple: int = 32,
) -> torch.Tensor:
    """Logits of ``images`` computed window by window, for images larger than the model's training crops.

    The model sees crops of ``window`` px (each side at most the image's), ``stride`` px apart; in each
    direction the last window is aligned to the image's far edge, so every pixel is covered and no window
    reaches outside the image (a window larger than the image is the whole image). Each crop is padded
    bottom/right with 0 to a multiple of ``pad_multiple`` and its logits cropped back. Overlapping logits
    are averaged with weights: ``"uniform"`` (each window 1: the plain mean of mmsegmentation's "slide"
    mode) or ``"gaussian"`` (a separable Gaussian, 1 at the window's centre, sigma = 1/8 of its side,
    as MONAI's ``sliding_window_inference``, so that pixels near a window's border, which see less
    context, weigh less). When one window covers the image the result is the whole-image logits exactly.

    Args:
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits.
        images: ``(N, 3, H, W)`` float32, ImageNet-normalised.
        window: window size in pixels, an int or ``(height, width)``.
        stride: offset between windows in pixels, an int or ``(height, width)``, ``1 <= stride <= window``
            (e.g. 2/3 of the window: ``window=512, stride=341``).
        blend: ``"gaussian"`` or ``"uniform"``.
        pad_multiple: pad each crop to a multiple of this (the model's output stride).

    Returns:
        ``(N, K, H, W)`` float32 logits.

    Raises:
        ValueError: a window or stride that is not a positive size, a stride larger than the window, an
            unknown blend.
    """
    win_h, win_w = _pair(window, "window")
    step_h, step_w = _pair(stride, "stride")
    if step_h > win_h or step_w > win_w:
        raise ValueError(f"stride {stride} is larger than the window {window}: pixels between windows would get "
                         "no prediction; use a stride of at most the window (e.g. 2/3 of it)")  # fmt: skip
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {list(_BLENDS)}, got {blend!r}")
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    height, width = images.shape[-2:]
    win_h, win_w = min(win_h, height), min(win_w, width)
    rows, cols = _starts(height, win_h, step_h), _starts(width, win_w, step_w)
    if len(rows) == 1 and len(cols) == 1:  # one window: the whole image
        return _forward_padded(model, images, pad_multiple).float()
    weights = _blend_weights(win_h, win_w, blend, images.device)  # (win_h, win_w)
    total, weight_sum = None, torch.zeros(height, width, device=images.device)
    for top in rows:
        for left in cols:
            crop = images[..., top:top + win_h, left:left + win_w]  # (N, 3, win_h, win_w)
            logits = _forward_padded(model, crop, pad_multiple).float()  # (N, K, win_h, win_w)
            if total is None:
                total = logits.new_zeros(logits.shape[:2] + (height, width))  # (N, K, H, W)
            total[..., top:top + win_h, left:left + win_w] += logits * weights
            weight_sum[top:top + win_h, left:left + win_w] += weights
    return total / weight_sum


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    """Test-time scales from ``"0.5,0.75,1,1.25,1.5,1.75"`` (or a sequence of numbers): a tuple of floats > 0.

    Raises:
        ValueError: empty, not a number, not finite, or <= 0.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(s) for s in items if s != "")
    except (TypeError, ValueError):
        raise ValueError(f"test-time scales must be numbers separated by commas, e.g. 0.5,1,1.5; got {text!r}") from None
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"test-time scales must be one or more finite numbers > 0 such as 0.5,1,1.5; got {text!r}")
    return scales


def _unnormalise(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``(N, 3, H, W)`` -> RGB float32 in [0, 255]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images.float() * std + mean) * 255.0).clamp(0.0, 255.0)


@torch.no_grad()
def infer_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    blend: str = "gaussian",
    crf: bool = False,
    crf_images: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores of every pixel of ``images`` at their full size: resize, test-time augmentation, sliding
    windows and dense CRF, each optional (see the module docstring for the steps and their sources).

    Args:
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits (put it in eval mode first).
        images: ``(N, 3, H, W)`` float32, ImageNet-normalised.
        max_size: the model runs with the longer side shrunk to at most this many pixels (None: full size).
        pad_multiple: pad the model input bottom/right to a multiple of this (the model's output stride).
        scales: test-time scale factors relative to the ``max_size`` size, e.g. ``(0.5, 0.75, 1, 1.25, 1.5,
            1.75)``; a scale below 1 must leave every side >= ``pad_multiple`` px.
        flip: also run on the left-right mirrored image (its scores are mirrored back).
        window: run the model on sliding windows of this size (px, an int or ``(h, w)``) at each scale;
            None = on the whole image.
        stride: offset between windows (px); None = 2/3 of the window. Only with ``window``.
        blend: how overlapping windows are averaged: ``"gaussian"`` or ``"uniform"`` (sliding_window_logits).
        crf: refine the scores with ``seglab.crf.dense_crf(scores, rgb, method="fast")``.
        crf_images: ``(N, 3, H, W)`` RGB in [0, 255] (uint8 or float) for the CRF; None = ``images``
            un-normalised with the ImageNet mean and std.

    Returns:
        ``(N, K, H, W)`` float32: the logits when one pass is run (``scales=(1.0,)``, no flip); with
        test-time augmentation the log of the averaged softmax probabilities; with ``crf`` the CRF's
        refined scores. With every option at its default: exactly :func:`forward_resized`.

    Raises:
        ValueError: bad scales (empty, <= 0), a scale below 1 that shrinks a side below ``pad_multiple`` px
            (the message gives the smallest scale allowed), a stride without a window, bad window/stride/blend,
            ``crf_images`` of the wrong shape.
    """
    scales = parse_scales(scales)
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    if stride is not None and window is None:
        raise ValueError("a sliding-window stride needs a window size: give window too (e.g. window=512, stride=341)")
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {list(_BLENDS)}, got {blend!r}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) ImageNet-normalised, got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if window is not None:
        win = _pair(window, "window")
        stride = stride if stride is not None else (max(1, win[0] * 2 // 3), max(1, win[1] * 2 // 3))

    def run(x: torch.Tensor) -> torch.Tensor:  # one pass at the size of x: (N, 3, h, w) -> (N, K, h, w)
        if window is None:
            return _forward_padded(model, x, pad_multiple).float()
        return sliding_window_logits(model, x, window=window, stride=stride, blend=blend, pad_multiple=pad_multiple)

    tta = scales != (1.0,) or flip
    if not tta and window is None:
        scores = forward_resized(model, images, max_size, pad_multiple).float()  # (N, K, H, W)
    else:
        h0, w0 = _model_size(height, width, max_size)
        sizes = [(max(1, round(h0 * s)), max(1, round(w0 * s))) for s in scales]
        if tta:
            for s, (h, w) in zip(scales, sizes):
                if s < 1 and min(h, w) < pad_multiple:  # enlarging scales (and 1) are always allowed
                    smallest = pad_multiple / min(h0, w0)
                    raise ValueError(
                        f"test-time scale {s:g} shrinks the {h0}x{w0} model input to {h}x{w}, below the minimum of "
                        f"{pad_multiple} px per side (pad_multiple, the model's output stride): use scales >= "
                        f"{math.ceil(smallest * 100) / 100:g} for this image, or a larger max_size")  # fmt: skip
        probs, passes = None, 0
        for size in sizes:
            x = _resize(images, size)  # (N, 3, h, w)
            for mirrored in (False, True) if flip else (False,):
                logits = run(x.flip(-1) if mirrored else x)  # (N, K, h, w)
                if mirrored:
                    logits = logits.flip(-1)
                if tuple(size) != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                if not tta:
                    scores = logits  # one pass (sliding windows only): logits
                    break
                p = logits.softmax(1)  # (N, K, H, W)
                probs = p if probs is None else probs + p
                passes += 1
        if tta:
            scores = (probs / passes).clamp(min=torch.finfo(torch.float32).tiny).log()
    if crf:
        from seglab.crf import dense_crf

        if crf_images is None:
            crf_images = _unnormalise(images)
        elif tuple(crf_images.shape) != (images.shape[0], 3, height, width):
            raise ValueError(f"crf_images must be (N, 3, H, W) = {(images.shape[0], 3, height, width)} RGB in "
                             f"[0, 255], got shape {tuple(crf_images.shape)}")  # fmt: skip
        scores = dense_crf(scores, crf_images, method="fast")
    return scores.float()
