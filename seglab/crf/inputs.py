"""What the CRF's public functions accept: one set of boundary checks, each error naming the argument,
what it got and what it needs. Internals trust what passed them."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_tensor", "check_rgb", "check_number", "check_sigma", "check_weight", "check_count",
           "check_finite_output", "work_dtype", "MIN_SIGMA", "MAX_SIGMA", "MAX_WEIGHT"]

#: Kernel sigmas (pixels or RGB levels) are refused outside [MIN_SIGMA, MAX_SIGMA]: below, the features of
#: an image overflow float32 and no pixel sees another; above, every kernel is flat already.
MIN_SIGMA, MAX_SIGMA = 1e-3, 1e6
#: The largest Potts weight: messages (up to weight x pixels with normalization="none") stay finite in float32.
MAX_WEIGHT = 1e6


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for float64 input, else float32 (float16 / bfloat16 / integer inputs are computed in float32)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def check_tensor(value, name: str, layout: str = "(N, C, H, W)", *, channels: int | None = None,
                 finite: bool = True) -> None:
    """A non-empty 4-D floating-point tensor (``channels`` along dim 1 if given), finite if asked.

    Raises:
        TypeError: not a torch.Tensor.
        ValueError: another rank, an empty dimension, the wrong channel count, an integer/bool/complex
            dtype, NaN or infinite values.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a {layout} torch.Tensor, got {type(value).__name__}")
    shape = tuple(value.shape)
    if value.dim() != 4 or (channels is not None and shape[1] != channels):
        raise ValueError(f"{name} must be a {layout} tensor, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}): every dimension of {layout} must be at least 1")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got {value.dtype}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} holds NaN or infinite values: the CRF needs finite {name}")


def check_rgb(images, name: str = "images") -> None:
    """``(N, 3, H, W)`` RGB in [0, 255]: uint8, another integer type within [0, 255], or float in [0, 255].

    Raises:
        TypeError: not a torch.Tensor.
        ValueError: another shape, an empty dimension, a bool/complex dtype, values outside [0, 255],
            NaN/inf, or floats that look scaled to [0, 1] or ImageNet-normalised.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be an (N, 3, H, W) RGB torch.Tensor in [0, 255], got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3, H, W) RGB in [0, 255], got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}): the CRF needs at least one image and pixel")
    if images.dtype == torch.bool or images.is_complex():
        raise ValueError(f"{name} must be RGB in [0, 255] as uint8 or float, got {images.dtype}")
    if images.dtype == torch.uint8:
        return
    low, high = float(images.amin()), float(images.amax())
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"{name} must be RGB in [0, 255] (not ImageNet-normalised), got {images.dtype} values in "
                         f"[{low:.4g}, {high:.4g}]: undo the normalisation (seglab.imaging.denormalize), or clamp")
    if images.is_floating_point() and 0 < high <= 1:
        raise ValueError(f"{name} look scaled to [0, 1] (max {high:.3g}): multiply by 255")


def check_number(name: str, value, *, positive: bool = True) -> float:
    """A finite real number, > 0 (``positive``) or >= 0; bools are refused. Returns it as a float.

    Raises:
        ValueError: not a real number, NaN/inf, or out of range.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def check_sigma(name: str, value) -> float:
    """A kernel sigma: a finite number in ``[MIN_SIGMA, MAX_SIGMA]``.

    Raises:
        ValueError: anything else.
    """
    sigma = check_number(name, value)
    if not MIN_SIGMA <= sigma <= MAX_SIGMA:
        raise ValueError(f"{name} must be a number from {MIN_SIGMA:g} to {MAX_SIGMA:g} (pixels or RGB levels), "
                         f"got {value!r}")
    return sigma


def check_weight(name: str, value) -> float:
    """A Potts weight: a finite number in ``[0, MAX_WEIGHT]``.

    Raises:
        ValueError: anything else.
    """
    weight = check_number(name, value, positive=False)
    if weight > MAX_WEIGHT:
        raise ValueError(f"{name} must be a number from 0 to {MAX_WEIGHT:g}, got {value!r}")
    return weight


def check_finite_output(out: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out`` of a filter of ``values``, refused when it overflowed its dtype.

    Raises:
        ValueError: ``out`` holds inf/NaN (values too large for the dtype).
    """
    if not bool(torch.isfinite(out).all()):
        high = float(values.abs().amax())
        raise ValueError(f"the filter's output overflows {out.dtype} (values up to {high:.3g}): scale the values down "
                         "or pass float64")  # fmt: skip
    return out


def check_count(name: str, value, low: int, high: int) -> int:
    """An integer in ``[low, high]`` (bools refused).

    Raises:
        ValueError: not an integer, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)
