"""Click simulation for interactive segmentation: random clicks for training (as SAM's), a deterministic clicker for
evaluation (as the interactive-segmentation literature's).

**Training** (Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 "Training" and Appendix A "Training
algorithm"): the first prompt of a target mask is a point sampled uniformly from the mask, or the mask's box with
noise (std 10 % of the box side, at most 20 pixels); every later point is sampled uniformly from the error region
between the previous prediction and the target: positive if it falls in a false-negative pixel, negative if in a
false-positive one. ``sample_first_points``, ``sample_boxes`` and ``sample_error_points`` do this for a batch, in torch.

**Evaluation** (the protocol of Xu, Price, Cohen, Yang & Huang, "Deep Interactive Object Selection", CVPR 2016,
used by Li, Chen & Koltun, CVPR 2018 and Sofiiuk, Petrov & Konushin, "Reviving Iterative Training with Mask
Guidance for Interactive Segmentation" (RITM), ICIP 2022): the next click goes into the largest error region, at
its pixel farthest from the region's boundary (a Euclidean distance transform; the image border counts as
boundary), positive in a false negative, negative in a false positive. ``next_click`` does it for one mask, in
numpy; it is deterministic (ties: the false-negative region first, then the smaller component label; within a
region the first pixel in row-major order), so evaluations are reproducible.

Coordinates: clicks are ``(row, col)`` pixel indices here; SAM takes ``(x, y) = (col, row)`` (it adds 0.5 itself).

Differences from the papers: RITM picks the error pixel farthest from the boundary over *both* error masks (the
"largest" region measured by its inscribed radius); here the region is the largest by area (Xu et al.'s wording),
then its innermost pixel. Regions are 4-connected. SAM's box noise is applied to each corner independently here.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["next_click", "sample_boxes", "sample_error_points", "sample_first_points"]


def _check_pair(prediction: np.ndarray, target: np.ndarray) -> None:
    if prediction.ndim != 2 or prediction.shape != target.shape:
        raise ValueError(f"prediction and target must be (H, W) masks of one shape; got {prediction.shape} and "
                         f"{target.shape}")


def next_click(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int, bool] | None:
    """The evaluation clicker's next click: ``(row, col, positive)``, or ``None`` when there is no error.

    Args:
        prediction: ``(H, W)`` bool, the current mask (all False before the first click).
        target: ``(H, W)`` bool, the object.

    The largest 4-connected region of ``target & ~prediction`` (false negatives, click positive) or
    ``prediction & ~target`` (false positives, click negative), by pixel count; the click is its pixel of largest
    Euclidean distance to the nearest pixel outside the region (pixels outside the image count as outside).

    Raises:
        ValueError: shapes that differ or are not 2-D.
    """
    prediction, target = np.asarray(prediction, dtype=bool), np.asarray(target, dtype=bool)
    _check_pair(prediction, target)
    best = None  # (area, region mask, positive)
    for errors, positive in ((target & ~prediction, True), (prediction & ~target, False)):
        if not errors.any():
            continue
        labels, count = ndimage.label(errors)  # 4-connected (scipy's default structure)
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        k = int(areas.argmax())  # first maximum: smaller label on ties
        if best is None or areas[k] > best[0]:  # strict: false negatives win ties
            best = (int(areas[k]), labels == k + 1, positive)
    if best is None:
        return None
    region = np.pad(best[1], 1)  # the border counts as boundary
    distance = ndimage.distance_transform_edt(region)[1:-1, 1:-1]
    row, col = np.unravel_index(int(distance.argmax()), distance.shape)
    return int(row), int(col), best[2]


def _sample_from(masks: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel per mask, uniform over its True pixels: ``(N, H, W)`` bool -> ``(N, 2)`` float (x, y), ``(N,)`` bool
    (False where the mask is empty; the point is then (0, 0))."""
    flat = masks.flatten(1).float()  # (N, H*W)
    nonempty = flat.sum(1) > 0
    weights = torch.where(nonempty[:, None], flat, torch.ones_like(flat))
    index = torch.multinomial(weights, 1, generator=generator)[:, 0]  # (N,)
    width = masks.shape[-1]
    xy = torch.stack([index % width, index // width], dim=1).float()  # (N, 2): (x, y) = (col, row)
    return torch.where(nonempty[:, None], xy, torch.zeros_like(xy)), nonempty


def sample_first_points(targets: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's first click: a point uniform over each target mask.

    Args:
        targets: ``(N, H, W)`` bool.

    Returns ``points (N, 1, 1, 2)`` float (x, y) pixels and ``labels (N, 1, 1)`` int64: 1, or -1 (padding) for an
    empty target.

    Raises:
        ValueError: ``targets`` not ``(N, H, W)``.
    """
    if targets.ndim != 3:
        raise ValueError(f"targets must be (N, H, W) bool masks; got shape {tuple(targets.shape)}")
    xy, found = _sample_from(targets.bool(), generator)
    return xy[:, None, None], torch.where(found, 1, -1).long()[:, None, None]


def sample_boxes(targets: torch.Tensor, generator: torch.Generator | None = None, noise: float = 0.1,
                 max_noise: float = 20.0) -> torch.Tensor:
    """SAM's box prompt: each target's bounding box, each coordinate moved by N(0, (noise * side)^2) clipped to
    ``± max_noise`` pixels, then clipped to the image.

    Args:
        targets: ``(N, H, W)`` bool, every mask non-empty.

    Returns ``(N, 1, 4)`` float ``(x0, y0, x1, y1)`` pixels (``x1 >= x0``, ``y1 >= y0``).

    Raises:
        ValueError: ``targets`` not ``(N, H, W)``, or an empty mask.
    """
    if targets.ndim != 3:
        raise ValueError(f"targets must be (N, H, W) bool masks; got shape {tuple(targets.shape)}")
    rows, cols = targets.any(2), targets.any(1)  # (N, H), (N, W)
    if not bool(rows.any(1).all()):
        raise ValueError("targets must all be non-empty to have a box; drop empty masks first")
    height, width = targets.shape[-2:]
    arange_h, arange_w = torch.arange(height), torch.arange(width)
    y0 = torch.where(rows, arange_h, height).min(1).values
    y1 = torch.where(rows, arange_h, -1).max(1).values
    x0 = torch.where(cols, arange_w, width).min(1).values
    x1 = torch.where(cols, arange_w, -1).max(1).values
    box = torch.stack([x0, y0, x1, y1], 1).float()  # (N, 4)
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1).float() + 1
    jitter = torch.randn(box.shape, generator=generator) * noise * side
    box = box + jitter.clamp(-max_noise, max_noise)
    box[:, 0::2] = box[:, 0::2].clamp(0, width)
    box[:, 1::2] = box[:, 1::2].clamp(0, height)
    low, high = torch.minimum(box[:, :2], box[:, 2:]), torch.maximum(box[:, :2], box[:, 2:])
    return torch.cat([low, high], 1)[:, None]


def sample_error_points(predictions: torch.Tensor, targets: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's later clicks: a point uniform over each error region ``predictions != targets``.

    Args:
        predictions, targets: ``(N, H, W)`` bool.

    Returns ``points (N, 1, 1, 2)`` float (x, y) and ``labels (N, 1, 1)`` int64: 1 in a false negative, 0 in a
    false positive, -1 (padding) where the prediction is already exact.

    Raises:
        ValueError: shapes that differ or are not ``(N, H, W)``.
    """
    if predictions.ndim != 3 or predictions.shape != targets.shape:
        raise ValueError(f"predictions and targets must be (N, H, W) masks of one shape; got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    predictions, targets = predictions.bool(), targets.bool()
    xy, found = _sample_from(predictions ^ targets, generator)
    x, y = xy.long().unbind(1)
    positive = targets[torch.arange(len(targets)), y, x]
    labels = torch.where(found, positive.long(), -1)
    return xy[:, None, None], labels[:, None, None]
