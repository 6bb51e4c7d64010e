"""Binary morphology on label maps for the boundary metrics: label edges, square (Chebyshev) and disk
(Euclidean) dilations. Internal: the callers validate; these trust their inputs.

Every dilation is built from one primitive, "is any pixel within ``half`` px along one axis set?", answered
from a cumulative sum in O(n) whatever ``half`` is, so that neither time nor memory grows with the radius
(a convolution with a ``(2r+1)**2`` kernel would: a 1e9 px tolerance asked for tens of GB). A square of
half-width ``r`` is that window along H then along W; a disk of radius ``r`` is the union, over the row
offsets ``dy``, of the window of half-width ``floor(sqrt(r**2 - dy**2))`` along W shifted by ``dy`` rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["label_edges", "window_any", "square_dilate", "disk_dilate", "inner_boundary"]


def label_edges(labels: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` labels -> bool, True where a 4-neighbour (inside the image) has another label."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[..., 1:, :] != labels[..., :-1, :]
    horizontal = labels[..., :, 1:] != labels[..., :, :-1]
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    return edge


def _prefix_counts(x: torch.Tensor) -> torch.Tensor:
    """``(..., n)`` bool -> ``(..., n + 1)`` int32 counts of True before each position (0 first)."""
    return F.pad(x.to(torch.int32).cumsum(-1, dtype=torch.int32), (1, 0))


def _window_from_counts(counts: torch.Tensor, half: int) -> torch.Tensor:
    """``(..., n + 1)`` prefix counts -> ``(..., n)`` bool, True where ``[i - half, i + half]`` holds a True."""
    n = counts.shape[-1] - 1
    index = torch.arange(n, device=counts.device)
    upper = (index + half + 1).clamp(max=n)
    lower = (index - half).clamp(min=0)
    return counts.index_select(-1, upper) - counts.index_select(-1, lower) > 0


def window_any(x: torch.Tensor, half: int, dim: int) -> torch.Tensor:
    """bool ``x`` dilated along ``dim`` by ``half`` px each side (``half >= 0``; beyond the size it saturates)."""
    x = x.movedim(dim, -1)
    half = min(half, max(x.shape[-1] - 1, 0))
    return _window_from_counts(_prefix_counts(x), half).movedim(-1, dim)


def square_dilate(x: torch.Tensor, half: int) -> torch.Tensor:
    """``(..., H, W)`` bool -> True within Chebyshev distance ``half`` of a True pixel."""
    return window_any(window_any(x, half, -2), half, -1)


def disk_dilate(points: torch.Tensor, radius: float) -> torch.Tensor:
    """``(..., H, W)`` bool -> True within Euclidean distance ``radius`` of a True pixel (``dy**2 + dx**2 <= r**2``).

    Costs one pass over the tensor per row offset, ``min(2 floor(r) + 1, 2 min(H, W) - 1)`` of them, and one
    when the disk covers the image from any pixel (``r`` at least the distance between opposite corners).
    """
    height, width = points.shape[-2:]
    if radius * radius >= (height - 1) ** 2 + (width - 1) ** 2:  # every pixel sees every other one
        return points.any(-1, keepdim=True).any(-2, keepdim=True).expand_as(points).clone()
    transposed = points.shape[-2] > points.shape[-1]  # loop over the shorter side
    if transposed:
        points = points.transpose(-1, -2)
    height = points.shape[-2]
    out = torch.zeros_like(points)
    counts = _prefix_counts(points)  # (..., H, W + 1)
    reach = min(math.floor(radius), height - 1)
    squared = radius * radius
    for dy in range(reach + 1):
        rows = _window_from_counts(counts, math.isqrt(max(0, math.floor(squared - dy * dy))))  # (..., H, W)
        out[..., : height - dy, :] |= rows[..., dy:, :]  # row y sees row y + dy
        if dy:
            out[..., dy:, :] |= rows[..., : height - dy, :]  # and row y - dy
    return out.transpose(-1, -2) if transposed else out


def inner_boundary(masks: torch.Tensor, distance: int) -> torch.Tensor:
    """``(..., H, W)`` bool masks -> their pixels within ``distance`` px (Chebyshev) of a pixel outside the mask or
    of the image border: ``mask & ~erode(mask)``, the erosion a ``(2d+1)x(2d+1)`` square with the image surrounded
    by background (``mask_to_boundary`` of Cheng et al.'s reference code: ``d`` 3x3 erosions)."""
    outside = F.pad(~masks, (1, 1, 1, 1), value=True)  # one ring of background is the nearest border pixel
    return masks & square_dilate(outside, distance)[..., 1:-1, 1:-1]
