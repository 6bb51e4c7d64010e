"""Flat-coloured scenes with coarse scores: a controlled task for the fully connected CRF.

A stride-s network upsamples its score map s times: its boundaries are smooth ramps that round off corners,
lose thin parts and wander a few pixels from the object's real outline, while far from any boundary it is
right. ``boundary_scenes`` builds that situation on purpose, so that the only errors are the ones a dense
CRF is meant to fix (Chen et al. 2015, DeepLab v1, section 4; Krähenbühl & Koltun 2011):

- the image: ellipses, rectangles and triangles, one flat colour per class (colours at least ``min_contrast``
  RGB units apart), with Gaussian pixel noise; every label edge is an image edge;
- the scores: the one-hot mask average-pooled by ``stride`` (what a stride-s map can hold), disturbed
  by noise at that coarse resolution (a network's uncertainty), turned into log-probabilities and
  upsampled bilinearly ``stride`` times, as DeepLab upsamples its scores.

Everything is generated from ``torch.Generator().manual_seed(seed)``: the same arguments give the same
tensors. Used by notebook 10 and tests/test_boundary_scenes.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["boundary_scenes", "coarse_logits", "draw_scene"]


def _colours(num_classes: int, min_contrast: float, generator: torch.Generator) -> torch.Tensor:
    """(K, 3) random RGB colours in [20, 235], pairwise at least ``min_contrast`` apart (Euclidean)."""
    for _ in range(1000):
        colours = 20 + 215 * torch.rand(num_classes, 3, generator=generator, dtype=torch.float64)
        distance = torch.cdist(colours, colours) + 1e9 * torch.eye(num_classes, dtype=torch.float64)
        if float(distance.min()) >= min_contrast:
            return colours
    raise ValueError(f"min_contrast={min_contrast} is too large for {num_classes} classes: lower it (e.g. 80)")


def draw_scene(height: int, width: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A ``(H, W)`` int64 mask: background 0 and, for every class 1..K-1, one or two shapes (an ellipse,
    a rotated rectangle or a triangle) of 15-35 % of the shorter side, painted in random order."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    mask = torch.zeros(height, width, dtype=torch.int64)
    side = min(height, width)
    labels = [k for k in range(1, num_classes) for _ in range(1 + int(torch.randint(2, (1,), generator=generator)))]
    order = torch.randperm(len(labels), generator=generator).tolist()

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    for i in order:
        cy, cx = uniform(0.15, 0.85) * height, uniform(0.15, 0.85) * width
        a, b, angle = uniform(0.15, 0.35) * side, uniform(0.10, 0.30) * side, uniform(0, math.pi)
        u = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)  # coordinates in the shape's frame
        v = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
        kind = int(torch.randint(3, (1,), generator=generator))
        if kind == 0:
            inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        elif kind == 1:
            inside = (u.abs() <= a) & (v.abs() <= b)
        else:  # an isosceles triangle: apex at v = -b, base along v = b from u = -a to a
            inside = (v <= b) & (v >= 2 * b * u.abs() / a - b)
        mask[inside] = labels[i]
    return mask


def coarse_logits(mask: torch.Tensor, num_classes: int, *, stride: int = 8, noise: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Scores of a perfect but coarse (stride-``stride``) model: ``(N, H, W)`` mask -> ``(N, K, H, W)`` logits.

    The one-hot mask is average-pooled by ``stride`` (``ceil_mode``, padding counted out), Gaussian noise of
    standard deviation ``noise`` is added to its log-probabilities (clamped at 1e-3), and the result is
    upsampled bilinearly to ``(H, W)`` (``align_corners=False``, as ``seglab.models`` upsample).

    Raises:
        ValueError: ``mask`` not ``(N, H, W)`` integer in ``[0, num_classes)``, ``stride < 1`` or ``noise < 0``.
    """
    if mask.dim() != 3 or mask.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise ValueError(f"mask must be an (N, H, W) integer tensor, got {tuple(mask.shape)} {mask.dtype}")
    if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
        raise ValueError(f"mask values must lie in [0, num_classes={num_classes}); got {int(mask.min())}..{int(mask.max())}")
    if stride < 1 or noise < 0:
        raise ValueError(f"stride must be >= 1 and noise >= 0, got stride={stride}, noise={noise}")
    one_hot = F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    pooled = F.avg_pool2d(one_hot, stride, ceil_mode=True, count_include_pad=False)  # (N, K, H/s, W/s)
    scores = pooled.clamp(min=1e-3).log()
    if noise > 0:
        scores = scores + noise * torch.randn(scores.shape, generator=generator)
    return F.interpolate(scores, size=mask.shape[-2:], mode="bilinear", align_corners=False)  # (N, K, H, W)


def boundary_scenes(num_images: int, *, seed: int = 0, size: tuple[int, int] = (96, 128), num_classes: int = 4,
                    stride: int = 8, noise: float = 0.5, pixel_noise: float = 8.0,
                    min_contrast: float = 80.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_images`` scenes: RGB images, masks and coarse logits.

    Args:
        num_images: N >= 1. seed: the generator's seed. size: ``(H, W)`` in pixels, each >= 16.
        num_classes: K >= 2 (class 0 is the background). stride: the coarse model's output stride.
        noise: standard deviation of the coarse log-probability noise. pixel_noise: of the image noise
            (RGB units). min_contrast: least RGB distance between two classes' colours.

    Returns:
        ``rgb`` ``(N, 3, H, W)`` float32 in [0, 255] (integers), ``masks`` ``(N, H, W)`` int64 in ``[0, K)``,
        ``logits`` ``(N, K, H, W)`` float32 (:func:`coarse_logits`).

    Raises:
        ValueError: a count, size or noise out of range (named in the message).
    """
    if num_images < 1 or num_classes < 2 or min(size) < 16 or pixel_noise < 0:
        raise ValueError(f"need num_images >= 1, num_classes >= 2, both sides of size >= 16 and pixel_noise >= 0; "
                         f"got {num_images}, {num_classes}, {size}, {pixel_noise}")
    generator = torch.Generator().manual_seed(seed)
    masks = torch.stack([draw_scene(*size, num_classes, generator) for _ in range(num_images)])  # (N, H, W)
    colours = torch.stack([_colours(num_classes, min_contrast, generator) for _ in range(num_images)])  # (N, K, 3)
    rgb = torch.stack([colours[i][masks[i]] for i in range(num_images)]).permute(0, 3, 1, 2)  # (N, 3, H, W)
    rgb = (rgb + pixel_noise * torch.randn(rgb.shape, generator=generator, dtype=torch.float64)).round().clamp(0, 255)
    logits = coarse_logits(masks, num_classes, stride=stride, noise=noise, generator=generator)
    return rgb.float(), masks, logits
