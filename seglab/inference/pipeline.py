"""``infer_logits``: resize, test-time augmentation, sliding windows and the dense CRF, each optional, with
every argument and the work it implies (model-input pixels, windows, the CRF's memory) checked first."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from seglab.imaging import denormalize
from seglab.inference.inputs import MAX_PAD_MULTIPLE, check_images, check_int, check_model
from seglab.inference.options import parse_scales
from seglab.inference.resize import _forward_resized, forward_padded, model_size, padded, resize
from seglab.inference.windows import BLENDS, MAX_WINDOWS, PROGRESS_WINDOWS, check_window, count_windows, slide

__all__ = ["MAX_PIXELS", "infer_logits"]

#: The most model-input pixels one image may cost over all passes (scales x flips x windows, padding
#: included): 2^26 ~ 67 million, e.g. DeepLab's 6 scales with flips (17.4 times one pass) on a 1900x1900 input.
MAX_PIXELS = 2**26


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


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
    crf_max_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_windows: int = MAX_WINDOWS,
    progress: bool | None = None,
) -> torch.Tensor:
    """Scores of every pixel of ``images`` at their full size: resize, test-time augmentation, sliding
    windows and dense CRF, each optional (see ``seglab.inference`` for the steps and their sources).

    Args:
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits at the input's size (put it in eval mode first). A
            mapping output (torchvision's segmentation models: ``{"out": ..., "aux": ...}``) gives its ``"out"``;
            logits of another size are refused (upsample inside the model), as are NaN/inf scores.
        images: ``(N, 3, H, W)`` float32 (or float64), ImageNet-normalised, finite.
        max_size: the model runs with the longer side shrunk to at most this many pixels (>= 1; None: full size).
        pad_multiple: pad the model input bottom/right to a multiple of this (the model's output stride, 1-1024).
        scales: test-time scale factors relative to the ``max_size`` size, each in ``(0, 4]``, e.g. ``(0.5, 0.75,
            1, 1.25, 1.5, 1.75)``; a scale below 1 must leave every side >= ``pad_multiple`` px.
        flip: also run on the left-right mirrored image (its scores are mirrored back).
        window: run the model on sliding windows of this size (px, an int or ``(h, w)``, each side >=
            ``pad_multiple``) at each scale; None = on the whole image.
        stride: offset between windows (px); None = 2/3 of the window. Only with ``window``.
        blend: how overlapping windows are averaged: ``"gaussian"`` or ``"uniform"`` (sliding_window_logits).
        crf: refine the scores with ``seglab.crf.dense_crf(scores, rgb, method="fast", max_size=crf_max_size)``.
        crf_images: ``(N, 3, H, W)`` RGB in [0, 255] (uint8, integer or float) for the CRF; None = ``images``
            un-normalised with the ImageNet mean and std (``seglab.imaging.denormalize``). Only with ``crf``.
        crf_max_size: run the CRF on scores and image shrunk (antialiased) so the longer side is at most this,
            and upsample its refined scores bilinearly to ``(H, W)`` (as DeepLab-era pipelines did with large
            images); None = at full size. Only with ``crf``. The CRF refuses (before its work) what does not
            fit its memory budget and names the ``--crf-max-size`` that does.
        max_pixels: refuse, before any work, more model-input pixels per image than this over all passes
            (scales x flips x windows, padding included; :data:`MAX_PIXELS`).
        max_windows: refuse, before any work, more sliding windows per image than this over all passes.
        progress: a tqdm bar over the windows; None = when an image needs more than 64.

    Returns:
        ``(N, K, H, W)`` float32: the logits when one pass is run (``scales=(1.0,)``, no flip); with
        test-time augmentation the log of the averaged softmax probabilities; with ``crf`` the CRF's
        refined scores. With every option at its default: exactly :func:`forward_resized`.

    Raises:
        TypeError: a model that is not callable or returns neither a tensor nor a mapping with ``"out"``;
            images that are not a tensor.
        ValueError: images that are not non-empty finite float (N, 3, H, W); bad scales (empty, not in
            (0, 4]), a scale below 1 that shrinks a side below ``pad_multiple`` px (the message gives the
            smallest scale allowed), a stride without a window, a window below ``pad_multiple``, bad
            window/stride/blend/max_size/pad_multiple/crf_max_size, ``crf_images`` of the wrong shape or not RGB
            in [0, 255], more than ``max_pixels`` pixels or ``max_windows`` windows (with the numbers), a model
            whose logits are not at its input's size, change class count, or are not finite; from the CRF, a
            memory estimate over its budget (with the ``--crf-max-size`` that fits).
    """
    check_model(model)
    check_images(images)
    scales = parse_scales(scales)
    flip, crf = _check_bool("flip", flip), _check_bool("crf", crf)
    max_size = check_int("max_size", max_size, 1, optional=True)
    pad_multiple = check_int("pad_multiple", pad_multiple, 1, MAX_PAD_MULTIPLE)
    max_pixels = check_int("max_pixels", max_pixels, 1)
    max_windows = check_int("max_windows", max_windows, 1)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if stride is not None and window is None:
        raise ValueError("a sliding-window stride needs a window size: give window too (e.g. window=512, stride=341)")
    win, step = check_window(window, stride, pad_multiple) if window is not None else (None, None)
    crf_max_size = check_int("crf_max_size", crf_max_size, 1, optional=True)
    if not crf and (crf_max_size is not None or crf_images is not None):
        raise ValueError("crf_max_size and crf_images are options of the CRF: give crf=True too")
    n, height, width = images.shape[0], *images.shape[-2:]
    if crf and crf_images is not None:
        from seglab.crf.inputs import check_rgb

        check_rgb(crf_images, "crf_images")
        if tuple(crf_images.shape) != (n, 3, height, width):
            raise ValueError(f"crf_images must be (N, 3, H, W) = {(n, 3, height, width)} RGB in [0, 255], got "
                             f"shape {tuple(crf_images.shape)}")  # fmt: skip

    # the work, checked before it starts
    tta = scales != (1.0,) or flip
    h0, w0 = model_size(height, width, max_size)
    sizes = [(max(1, round(h0 * s)), max(1, round(w0 * s))) for s in scales]
    if tta:
        for s, (h, w) in zip(scales, sizes):
            if s < 1 and min(h, w) < pad_multiple:  # enlarging scales (and 1) are always allowed
                smallest = pad_multiple / min(h0, w0)
                raise ValueError(
                    f"test-time scale {s:g} shrinks the {h0}x{w0} model input to {h}x{w}, below the minimum of "
                    f"{pad_multiple} px per side (pad_multiple, the model's output stride): use scales >= "
                    f"{math.ceil(smallest * 100) / 100:g} for this image, or a larger max_size")  # fmt: skip
    flips = 2 if flip else 1
    windows = flips * sum(count_windows(h, w, win, step) for h, w in sizes) if win else 0
    if windows > max_windows:
        raise ValueError(f"sliding windows of {win[0]}x{win[1]} px every {step[0]}x{step[1]} px need {windows} "
                         f"windows for one {height}x{width} image ({len(sizes)} scale(s) x {flips} flip(s)) > "
                         f"max_windows = {max_windows}: use a larger --window or --window-stride, fewer "
                         "--tta-scales, or a smaller --max-size")  # fmt: skip
    pixels = flips * sum(
        count_windows(h, w, win, step) * padded(min(win[0], h), pad_multiple) * padded(min(win[1], w), pad_multiple)
        if win else padded(h, pad_multiple) * padded(w, pad_multiple) for h, w in sizes)  # fmt: skip
    if pixels > max_pixels:
        raise ValueError(f"inference would run the model on {pixels} pixels for one {height}x{width} image "
                         f"(model input {h0}x{w0}, scales {list(scales)}, {flips} flip(s), padding to "
                         f"{pad_multiple}) > max_pixels = {max_pixels}: use fewer or smaller --tta-scales, no "
                         "--tta-flip, or a smaller --max-size")  # fmt: skip
    rgb = None
    if crf:
        from seglab.crf.mean_field import check_default_crf_memory

        rgb = (denormalize(images).round_().clamp_(0, 255).to(torch.uint8)  # RGB as the photo held it
               if crf_images is None else crf_images.to(images.device))
        check_default_crf_memory(rgb, max_size=crf_max_size)  # before the model runs: counting one class

    show = windows > PROGRESS_WINDOWS if progress is None else bool(progress)
    with tqdm(total=windows, desc="windows", unit="window", leave=False, disable=not (show and windows)) as bar:
        if not tta and win is None:
            scores = _forward_resized(model, images, max_size, pad_multiple).float()  # (N, K, H, W)
        else:
            scores = _passes(model, images, sizes, flip, tta, win, step, blend, pad_multiple, bar.update)
    if crf:
        from seglab.crf import dense_crf

        scores = dense_crf(scores, rgb, method="fast", max_size=crf_max_size)
    return scores.float()


def _passes(model, images, sizes, flip, tta, win, step, blend, pad_multiple, tick) -> torch.Tensor:
    """Every pass at every size (and mirrored): logits (one pass) or log of the mean softmax (TTA), (N, K, H, W)."""
    height, width = images.shape[-2:]
    probs, passes = None, 0
    for size in sizes:
        x = resize(images, size)  # (N, 3, h, w)
        for mirrored in (False, True) if flip else (False,):
            xi = x.flip(-1) if mirrored else x
            if win is None:
                logits = forward_padded(model, xi, pad_multiple).float()  # (N, K, h, w)
            else:
                logits = slide(model, xi, win, step, blend, pad_multiple, tick)
            if mirrored:
                logits = logits.flip(-1)
            if tuple(size) != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            if not tta:
                return logits  # one pass (sliding windows only): logits
            if probs is not None and logits.shape[1] != probs.shape[1]:
                raise ValueError(f"the model returned {logits.shape[1]} classes at one test-time pass and "
                                 f"{probs.shape[1]} at another: it must return the same K every time")
            p = logits.softmax(1)  # (N, K, H, W)
            probs = p if probs is None else probs + p
            passes += 1
    return (probs / passes).clamp(min=torch.finfo(torch.float32).tiny).log()
