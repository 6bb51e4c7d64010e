"""Sliding-window inference: the model on overlapping crops, logits blended with weights.

The number of windows is checked before any work (at most ``max_windows``, :data:`MAX_WINDOWS` by default)
and windows narrower than the model's ``pad_multiple`` are refused (each would be padded to it and cost a
whole forward pass); a progress bar shows when one call needs more than :data:`PROGRESS_WINDOWS` windows.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from seglab.inference.inputs import MAX_PAD_MULTIPLE, check_images, check_int, check_model
from seglab.inference.resize import forward_padded

__all__ = ["MAX_WINDOWS", "PROGRESS_WINDOWS", "BLENDS", "sliding_window_logits", "check_window", "count_windows",
           "slide"]

#: The most windows one image may need (over all test-time passes): a 4000x3000 photo in 512-px windows
#: 2/3 apart needs 108 a pass.
MAX_WINDOWS = 4096
#: More windows than this in one call show a tqdm progress bar (``progress=None``).
PROGRESS_WINDOWS = 64
BLENDS = ("gaussian", "uniform")
_GAUSSIAN_SIGMA = 0.125  # sigma of the blending weights as a fraction of the window side (MONAI's default)


def _pair(value, name: str) -> tuple[int, int]:
    """``int`` or ``(int, int)`` >= 1 -> ``(h, w)``; anything else (a float, a bool, 3 numbers) -> ValueError."""
    def whole(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    if whole(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(whole(v) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a size in whole pixels >= 1 (an int or an (height, width) pair), got {value!r}")


def check_window(window, stride, pad_multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(window, stride)`` as ``(h, w)`` pairs; stride None = 2/3 of the window.

    Raises:
        ValueError: not sizes in pixels, a window side below ``pad_multiple``, a stride larger than the window.
    """
    win = _pair(window, "window")
    if min(win) < pad_multiple:
        raise ValueError(f"window {window!r} is below the model's pad_multiple {pad_multiple} (its output stride): "
                         f"each window would be padded to {pad_multiple} px and cost a whole forward pass; use "
                         f"--window {pad_multiple} or more (e.g. 512)")  # fmt: skip
    step = (max(1, win[0] * 2 // 3), max(1, win[1] * 2 // 3)) if stride is None else _pair(stride, "stride")
    if step[0] > win[0] or step[1] > win[1]:
        raise ValueError(f"stride {stride} is larger than the window {window}: pixels between windows would get "
                         "no prediction; use a stride of at most the window (e.g. 2/3 of it)")  # fmt: skip
    return win, step


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one side: every ``stride`` px, the last window aligned to the far edge."""
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def count_windows(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> int:
    """How many windows cover a ``height x width`` image (without listing them)."""
    def along(length: int, win: int, step: int) -> int:
        return 1 if win >= length else -(-(length - win) // step) + 1

    return along(height, window[0], stride[0]) * along(width, window[1], stride[1])


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
    max_windows: int = MAX_WINDOWS,
    progress: bool | None = None,
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
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits (a tensor, or a mapping whose ``"out"`` is one).
        images: ``(N, 3, H, W)`` float32 (or float64), ImageNet-normalised.
        window: window size in pixels, an int or ``(height, width)``, each side >= ``pad_multiple``.
        stride: offset between windows in pixels, an int or ``(height, width)``, ``1 <= stride <= window``
            (e.g. 2/3 of the window: ``window=512, stride=341``).
        blend: ``"gaussian"`` or ``"uniform"``.
        pad_multiple: pad each crop to a multiple of this (the model's output stride), 1 to 1024.
        max_windows: refuse (before any work) an image that needs more windows than this.
        progress: a tqdm bar over the windows; None = when more than :data:`PROGRESS_WINDOWS` are needed.

    Returns:
        ``(N, K, H, W)`` float32 logits.

    Raises:
        TypeError, ValueError: bad images; a window or stride that is not a whole positive size, a window
            below ``pad_multiple``, a stride larger than the window, more than ``max_windows`` windows (the
            message gives the count), an unknown blend; a model whose logits are not at the input size or
            not finite.
    """
    check_model(model)
    check_images(images)
    pad_multiple = check_int("pad_multiple", pad_multiple, 1, MAX_PAD_MULTIPLE)
    max_windows = check_int("max_windows", max_windows, 1)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    win, step = check_window(window, stride, pad_multiple)
    height, width = images.shape[-2:]
    count = count_windows(height, width, win, step)
    if count > max_windows:
        raise ValueError(f"sliding windows of {win[0]}x{win[1]} px every {step[0]}x{step[1]} px need {count} windows "
                         f"for a {height}x{width} image > max_windows = {max_windows}: use a larger --window or "
                         "--window-stride, or a smaller --max-size")  # fmt: skip
    show = count > PROGRESS_WINDOWS if progress is None else bool(progress)
    with tqdm(total=count, desc="windows", unit="window", leave=False, disable=not show) as bar:
        return slide(model, images, win, step, blend, pad_multiple, bar.update)


def slide(model: nn.Module, images: torch.Tensor, window: tuple[int, int], stride: tuple[int, int], blend: str,
          pad_multiple: int, tick: Callable[[int], object] = lambda n: None) -> torch.Tensor:
    """The sliding windows of checked arguments (``tick(1)`` after each window): ``(N, K, H, W)`` float32."""
    height, width = images.shape[-2:]
    win_h, win_w = min(window[0], height), min(window[1], width)
    rows, cols = _starts(height, win_h, stride[0]), _starts(width, win_w, stride[1])
    if len(rows) == 1 and len(cols) == 1:  # one window: the whole image
        logits = forward_padded(model, images, pad_multiple).float()
        tick(1)
        return logits
    weights = _blend_weights(win_h, win_w, blend, images.device)  # (win_h, win_w)
    total, weight_sum = None, torch.zeros(height, width, device=images.device)
    for top in rows:
        for left in cols:
            crop = images[..., top:top + win_h, left:left + win_w]  # (N, 3, win_h, win_w)
            logits = forward_padded(model, crop, pad_multiple).float()  # (N, K, win_h, win_w)
            if total is None:
                total = logits.new_zeros(logits.shape[:2] + (height, width))  # (N, K, H, W)
            elif logits.shape[1] != total.shape[1]:
                raise ValueError(f"the model returned {logits.shape[1]} classes for one window and "
                                 f"{total.shape[1]} for another: it must return the same K every time")
            total[..., top:top + win_h, left:left + win_w] += logits * weights
            weight_sum[top:top + win_h, left:left + win_w] += weights
            tick(1)
    return total / weight_sum
