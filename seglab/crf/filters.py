"""The CRF's two kernels as filters over whole images: its features, the exact all-pairs Gaussian filter and
the separable (exact) filter of the smoothness kernel. The bilateral grid is in ``seglab.crf.grid``."""

from __future__ import annotations

import math

import torch

from seglab.crf.inputs import check_finite_output, check_rgb, check_sigma, check_tensor, work_dtype

__all__ = ["MAX_EXACT_PIXELS", "crf_features", "exact_gaussian_filter", "separable_gaussian_filter"]

#: The largest image (H * W pixels) the exact filter accepts: its kernel matrix has (H W)^2 entries
#: (4096 px: 128 MiB in float64 per image).
MAX_EXACT_PIXELS = 4096


def crf_features(images: torch.Tensor, sxy: float, srgb: float | None = None) -> torch.Tensor:
    """The CRF's kernel features, already divided by their sigmas.

    Args:
        images: ``(N, 3, H, W)`` RGB in [0, 255] (uint8, integer or float).
        sxy: position sigma in pixels (0.001 to 1e6).
        srgb: colour sigma in RGB levels (0.001 to 1e6), or None for the smoothness kernel's position-only features.

    Returns:
        ``(N, 2, H, W)`` ``(y / sxy, x / sxy)`` when ``srgb`` is None, else ``(N, 5, H, W)``
        ``(y / sxy, x / sxy, r / srgb, g / srgb, b / srgb)``; positions in pixels; float64 for float64
        images, else float32.

    Raises:
        TypeError, ValueError: images that are not non-empty RGB in [0, 255]; sigmas out of range.
    """
    check_rgb(images)
    sxy = check_sigma("sxy", sxy)
    srgb = None if srgb is None else check_sigma("srgb", srgb)
    n, _, h, w = images.shape
    dtype = work_dtype(images)
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=dtype),
                            torch.arange(w, device=images.device, dtype=dtype), indexing="ij")
    position = torch.stack([ys, xs]).expand(n, 2, h, w) / sxy
    if srgb is None:
        return position
    return torch.cat([position, images.to(dtype) / srgb], dim=1)


def exact_gaussian_filter(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over *all* pixel pairs (the self term ``j = i`` included).

    Args:
        values: ``(N, C, H, W)`` float.
        features: ``(N, D, H, W)`` float, divided by their sigmas (from :func:`crf_features`).

    Returns:
        ``(N, C, H, W)`` in the values' dtype (computed in float32, or float64 for float64 values), one image
        at a time: an ``(HW, HW)`` kernel each, so at most :data:`MAX_EXACT_PIXELS` pixels.

    Raises:
        TypeError, ValueError: not tensors, empty, non-finite, integer dtypes, batch or H, W that differ,
            more than :data:`MAX_EXACT_PIXELS` pixels, an output that overflows the values' dtype.
    """
    check_tensor(values, "values", "(N, C, H, W)")
    check_tensor(features, "features", "(N, D, H, W)")
    _check_pair(values, features)
    n, c, h, w = values.shape
    if h * w > MAX_EXACT_PIXELS:
        raise ValueError(f"the exact filter builds an (H W)^2 kernel; {h}x{w} = {h * w} pixels > "
                         f"MAX_EXACT_PIXELS = {MAX_EXACT_PIXELS}: use the bilateral grid (grid_gaussian_filter)")
    return check_finite_output(_exact_filter(values, features), values)


def _exact_filter(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = values.shape
    dtype = work_dtype(values)
    out = torch.empty(n, c, h, w, dtype=dtype, device=values.device)
    for index in range(n):  # one (HW, HW) kernel at a time
        f = features[index].flatten(1).T.to(dtype)  # (HW, D)
        kernel = torch.exp(-0.5 * torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist").square())  # (HW, HW)
        out[index] = (values[index].flatten(1).to(dtype) @ kernel).view(c, h, w)  # kernel is symmetric
    return out.to(values.dtype)


def _check_pair(values: torch.Tensor, features: torch.Tensor) -> None:
    if values.shape[0] != features.shape[0] or values.shape[2:] != features.shape[2:]:
        raise ValueError(f"values {tuple(values.shape)} and features {tuple(features.shape)} must share N, H and W")


def separable_gaussian_filter(values: torch.Tensor, sxy: float) -> torch.Tensor:
    """The smoothness kernel's filter ``sum_j exp(-|p_i - p_j|^2 / 2 sxy^2) v_j`` (self included), exactly.

    The Gaussian over positions is separable: a 1-D convolution along H, then along W, with zero padding
    (pixels outside the image do not exist) and the kernel cut at ``4 sxy`` (weights below ``e^-8``) or at
    the image size, whichever is smaller.

    Args:
        values: ``(N, C, H, W)`` float.
        sxy: the position sigma in pixels (0.001 to 1e6).

    Returns:
        ``(N, C, H, W)`` in the values' dtype (computed in float32, or float64).

    Raises:
        TypeError, ValueError: values that are not a non-empty finite float tensor; sxy out of range; an output
            that overflows the values' dtype.
    """
    check_tensor(values, "values", "(N, C, H, W)")
    out = _separable_filter(values.to(work_dtype(values)), check_sigma("sxy", sxy)).to(values.dtype)
    return check_finite_output(out, values)


def _separable_filter(values: torch.Tensor, sxy: float) -> torch.Tensor:
    out = values
    for axis in (2, 3):
        size = values.shape[axis]
        radius = min(math.ceil(4 * sxy), size - 1)
        taps = [math.exp(-0.5 * (offset / sxy) ** 2) for offset in range(radius + 1)]
        blurred = taps[0] * out
        for offset in range(1, radius + 1):  # shifted adds: zero beyond the image
            blurred.narrow(axis, offset, size - offset).add_(out.narrow(axis, 0, size - offset), alpha=taps[offset])
            blurred.narrow(axis, 0, size - offset).add_(out.narrow(axis, offset, size - offset), alpha=taps[offset])
        out = blurred
    return out
