"""Boundary metrics: how well a segmentation follows object outlines, which region metrics (mIoU) barely see.

- ``boundary_band`` / ``trimap_iou``: mIoU restricted to a band of ``band_width`` px around ground-truth
  boundaries (Kohli et al. 2009; used by Chen et al. 2017/2018 to show what decoders and skips recover).
- ``boundary_f_score``: the BF score of Csurka, Larlus & Perronnin 2013 ("What is a good evaluation measure
  for semantic segmentation?", BMVC): per image and class, the F1 of boundary precision and recall, a
  boundary pixel counting as matched when the other map has a boundary pixel of that class within
  ``tolerance`` px (Euclidean distance).
- ``boundary_iou``: Boundary IoU of Cheng, Girshick, Dollár, Berg & Kirillov 2021 ("Boundary IoU: Improving
  Object-Centric Image Segmentation Evaluation", CVPR): the IoU of the two masks' inner boundary regions,
  the pixels of a mask within ``d`` px of its contour, ``d = dilation_ratio * image diagonal``.

Conventions shared by the two boundary scores:

- Boundary pixels of class ``c`` are pixels of class ``c`` with a 4-neighbour of another label
  (``boundary_f_score``), or pixels of class ``c`` within ``d`` px (Chebyshev: ``d`` 3x3 erosions) of a
  pixel of another label or of the image border (``boundary_iou``, as its reference code, which pads the
  mask with one row/column of background so that a mask cut by the border has a boundary there).
- Ignored pixels (``target == ignore_index``) are given the value ``ignore_index`` in the prediction
  too, so in both maps they act as a label of their own: a class's boundary along an ignored region
  (VOC's 255 outlines) exists in both maps, and matches where the prediction has that class there;
  no boundary pixel lies *inside* an ignored region.
- A class absent from both maps (no boundary pixel in either) has an undefined score, reported as
  ``nan`` and left out of every mean; present in one map only it scores 0. Scores are fractions in [0, 1].

Departures from the papers: Csurka et al. propose ``tolerance`` = 0.75% of the image diagonal, our
default; Cheng et al. define Boundary IoU per object mask (instance segmentation), here it is per class
with intersections and unions summed over the images of the batch, as mIoU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from seglab.metrics.confusion import _as_preds, confusion_matrix, mean_iou

__all__ = [
    "boundary_band",
    "trimap_iou",
    "BoundaryFScore",
    "boundary_f_score",
    "BoundaryIoU",
    "boundary_iou",
]


def _label_edges(labels: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` labels -> bool, True where a 4-neighbour (inside the image) has another label."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[..., 1:, :] |= labels[..., 1:, :] != labels[..., :-1, :]
    edge[..., :-1, :] |= labels[..., 1:, :] != labels[..., :-1, :]
    edge[..., :, 1:] |= labels[..., :, 1:] != labels[..., :, :-1]
    edge[..., :, :-1] |= labels[..., :, 1:] != labels[..., :, :-1]
    return edge


def boundary_band(target: torch.Tensor, band_width: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Pixels within ``band_width`` px (Chebyshev distance) of a ground-truth label boundary.

    Args:
        target: ``(N, H, W)`` int64 mask.
        band_width: half-width of the band in pixels (>= 1).
        ignore_index: a change to or from the ignore value also counts as a boundary (VOC draws its
            255 band exactly along object outlines); the ignored pixels themselves are excluded later.

    Returns:
        ``(N, H, W)`` bool tensor, True inside the band.
    """
    if band_width < 1:
        raise ValueError(f"band_width must be >= 1 pixel, got {band_width}")
    edge = _label_edges(target.unsqueeze(1))  # (N, 1, H, W): a 4-neighbour has another label
    # Dilate the 1-px edge into a band: a (2w-1)x(2w-1) max-pool adds w-1 px each side; done as a
    # (k, 1) pool then a (1, k) pool, which gives the same square window for a fraction of the work.
    k, p = 2 * band_width - 1, band_width - 1
    band = F.max_pool2d(edge.float(), kernel_size=(k, 1), stride=1, padding=(p, 0))
    band = F.max_pool2d(band, kernel_size=(1, k), stride=1, padding=(0, p)) > 0
    return band.squeeze(1)


def trimap_iou(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    band_width: int,
    ignore_index: int | None = 255,
) -> float:
    """Trimap mIoU: mIoU counted only on pixels within ``band_width`` px of a GT boundary.

    Coarse outputs (FCN-32s, a U-Net without skips, DeepLab without decoder) lose most accuracy at
    object boundaries; this metric isolates that region (Kohli et al. 2009; Chen et al. 2018 fig. 5).

    Args:
        preds: ``(N, H, W)`` int64 class indices or ``(N, K, H, W)`` logits.
        target: ``(N, H, W)`` int64, ``ignore_index`` skipped.
        num_classes: K.
        band_width: band half-width in pixels.

    Returns:
        mIoU (fraction in [0, 1]) over the band; ``nan`` if the band holds no labelled pixel.
    """
    preds = _as_preds(preds, target)
    band = boundary_band(target, band_width, ignore_index)
    masked = target.clone()
    masked[~band] = ignore_index if ignore_index is not None else -1
    if ignore_index is None:
        keep = masked >= 0
        return float(mean_iou(confusion_matrix(preds[keep], masked[keep], num_classes, None)))
    return float(mean_iou(confusion_matrix(preds, masked, num_classes, ignore_index)))


def _check_pair(preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """Validated ``(N, H, W)`` int64 predictions, with ``ignore_index`` wherever the target has it."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if target.dim() != 3:
        raise ValueError(f"target must be (N, H, W) class indices, got shape {tuple(target.shape)}")
    confusion_matrix(preds, target, num_classes, ignore_index)  # raises on bad shapes and values
    preds = preds.to(target.device).long()
    target = target.long()
    if ignore_index is not None:
        preds = torch.where(target == ignore_index, torch.full_like(preds, ignore_index), preds)
    return preds


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, H, W)`` labels -> ``(N, K, H, W)`` bool, channel c True where the label is c (others: all False)."""
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == classes


def _disk(radius: float, device: torch.device) -> torch.Tensor:
    """``(1, 1, 2r+1, 2r+1)`` float32 kernel, 1 where ``dy**2 + dx**2 <= radius**2`` (``r = floor(radius)``)."""
    r = int(math.floor(radius))
    offsets = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    return ((offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) <= radius**2).float()[None, None]


def _within(points: torch.Tensor, radius: float) -> torch.Tensor:
    """``(N, K, H, W)`` bool -> bool, True within Euclidean distance ``radius`` of a True pixel of its channel."""
    n, k, h, w = points.shape
    kernel = _disk(radius, points.device)
    r = kernel.shape[-1] // 2
    hits = F.conv2d(points.reshape(n * k, 1, h, w).float(), kernel, padding=r)  # counts of points in the disk
    return (hits > 0.5).reshape(n, k, h, w)


class BoundaryFScore(NamedTuple):
    """Result of :func:`boundary_f_score`; fractions in [0, 1], float64, ``nan`` = undefined.

    Fields:
        per_class: ``(K,)`` BF score of each class, averaged over the images where it is defined.
        mean: mean of ``per_class`` over the classes where it is defined (a Python float).
        per_image: ``(N,)`` mean over the classes defined in each image (Csurka et al.'s per-image score).
        scores: ``(N, K)`` BF score of each image and class.
        precision, recall: ``(N, K)`` boundary precision and recall of each image and class.
    """

    per_class: torch.Tensor
    mean: float
    per_image: torch.Tensor
    scores: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor


@torch.no_grad()
def boundary_f_score(
    preds_or_logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    tolerance: float | None = None,
    ignore_index: int | None = 255,
) -> BoundaryFScore:
    """Boundary F1 (BF) score per image and class (Csurka, Larlus & Perronnin 2013, BMVC, section 4).

    For each image and class ``c``: ``B_gt`` / ``B_pred`` are the pixels of class ``c`` with a 4-neighbour of
    another label in the ground truth / prediction (the image border is not a boundary). A boundary pixel
    is matched when the other map has one within ``tolerance`` px (Euclidean distance):
    precision ``P = |B_pred matched| / |B_pred|``, recall ``R = |B_gt matched| / |B_gt|``,
    ``BF = 2 P R / (P + R)`` (0 when ``P + R == 0``). A class with boundary pixels in one map only scores
    ``P = R = BF = 0``; in neither, ``nan`` (left out of the means). Ignored target pixels: see the module
    docstring (they count as a label of their own in both maps).

    Args:
        preds_or_logits: ``(N, H, W)`` int64 class indices in ``[0, K)`` or ``(N, K, H, W)`` logits (argmax).
        target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
        num_classes: K.
        tolerance: match distance in pixels (>= 0; 0 = the same pixel). ``None``: 0.75% of the image
            diagonal, rounded, at least 1 px (the paper's choice; 4 px for a 480x360 CamVid image).
        ignore_index: target value of unlabelled pixels; ``None`` = every pixel is labelled.

    Returns:
        :class:`BoundaryFScore` ``(per_class (K,), mean, per_image (N,), scores (N, K), precision, recall)``.

    Raises:
        ValueError: shapes or values as in :func:`seglab.metrics.confusion_matrix`, or a negative tolerance.
    """
    preds = _check_pair(_as_preds(preds_or_logits, target), target, num_classes, ignore_index)
    height, width = target.shape[-2:]
    if tolerance is None:
        tolerance = max(1, round(0.0075 * math.hypot(height, width)))
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a distance in pixels >= 0, got {tolerance!r}")
    b_gt = _one_hot(target.long(), num_classes) & _label_edges(target.long().unsqueeze(1))  # (N, K, H, W)
    b_pred = _one_hot(preds, num_classes) & _label_edges(preds.unsqueeze(1))  # (N, K, H, W)
    n_gt = b_gt.sum((2, 3)).double()  # (N, K)
    n_pred = b_pred.sum((2, 3)).double()
    precision = (b_pred & _within(b_gt, tolerance)).sum((2, 3)).double() / n_pred.clamp(min=1)
    recall = (b_gt & _within(b_pred, tolerance)).sum((2, 3)).double() / n_gt.clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300),
                     torch.zeros_like(precision))  # fmt: skip
    undefined = (n_gt == 0) & (n_pred == 0)
    nan = torch.full_like(f1, math.nan)
    scores = torch.where(undefined, nan, f1).cpu()
    per_class = scores.nanmean(0)  # (K,)
    return BoundaryFScore(
        per_class=per_class,
        mean=float(per_class.nanmean()),
        per_image=scores.nanmean(1),
        scores=scores,
        precision=torch.where(undefined, nan, precision).cpu(),
        recall=torch.where(undefined, nan, recall).cpu(),
    )


def _inner_boundary(masks: torch.Tensor, distance: int) -> torch.Tensor:
    """``(N, K, H, W)`` bool masks -> their pixels within ``distance`` px (Chebyshev) of a pixel outside the mask
    or of the image border: ``mask & ~erode(mask)``, the erosion a (2d+1)x(2d+1) square with the image
    surrounded by background (``mask_to_boundary`` of Cheng et al.'s reference code: ``d`` 3x3 erosions)."""
    k = 2 * distance + 1
    outside = F.pad((~masks).float(), (distance,) * 4, value=1.0)  # background all around the image
    outside = F.max_pool2d(outside, kernel_size=(k, 1), stride=1)  # separable square dilation of "outside"
    outside = F.max_pool2d(outside, kernel_size=(1, k), stride=1) > 0  # (N, K, H, W)
    return masks & outside


class BoundaryIoU(NamedTuple):
    """Result of :func:`boundary_iou`; fractions in [0, 1], ``nan`` = undefined.

    Fields:
        per_class: ``(K,)`` float64 Boundary IoU of each class over the batch, ``intersection / union``.
        mean: mean of ``per_class`` over the classes with ``union > 0`` (a Python float).
        intersection, union: ``(K,)`` int64 pixel counts summed over the images; add them over batches
            for a dataset score (``intersection.sum(0) / union.sum(0)``, as for mIoU).
    """

    per_class: torch.Tensor
    mean: float
    intersection: torch.Tensor
    union: torch.Tensor


@torch.no_grad()
def boundary_iou(
    preds_or_logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    dilation_ratio: float = 0.02,
    ignore_index: int | None = 255,
) -> BoundaryIoU:
    """Boundary IoU per class (Cheng, Girshick, Dollár, Berg & Kirillov 2021, CVPR, section 4).

    For each class ``c`` and image: ``G_d`` / ``P_d`` are the pixels of class ``c`` in the ground truth /
    prediction within ``d`` px of the mask's contour (or the image border),
    ``d = max(1, round(dilation_ratio * sqrt(H**2 + W**2)))`` (the reference's ``mask_to_boundary``; 12 px
    for a 480x360 CamVid image at the default 0.02). Boundary IoU ``= |G_d ∩ P_d| / |G_d ∪ P_d|`` with both
    counts summed over the images of the batch. A class absent from both maps has union 0 and IoU ``nan``
    (left out of the mean); a class predicted but absent from the ground truth scores 0. For ``d`` at
    least half the shorter image side every mask pixel is a boundary pixel and Boundary IoU equals IoU.
    Ignored target pixels: see the module docstring (they count as a label of their own in both maps).

    Args:
        preds_or_logits: ``(N, H, W)`` int64 class indices in ``[0, K)`` or ``(N, K, H, W)`` logits (argmax).
        target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
        num_classes: K.
        dilation_ratio: boundary width as a fraction of the image diagonal (> 0; the paper's 0.02).
        ignore_index: target value of unlabelled pixels; ``None`` = every pixel is labelled.

    Returns:
        :class:`BoundaryIoU` ``(per_class (K,), mean, intersection (K,), union (K,))``.

    Raises:
        ValueError: shapes or values as in :func:`seglab.metrics.confusion_matrix`, or ``dilation_ratio <= 0``.
    """
    preds = _check_pair(_as_preds(preds_or_logits, target), target, num_classes, ignore_index)
    if not (isinstance(dilation_ratio, (int, float)) and math.isfinite(dilation_ratio) and dilation_ratio > 0):
        raise ValueError(f"dilation_ratio must be a fraction of the image diagonal > 0, got {dilation_ratio!r}")
    height, width = target.shape[-2:]
    distance = max(1, round(dilation_ratio * math.hypot(height, width)))
    g_d = _inner_boundary(_one_hot(target.long(), num_classes), distance)  # (N, K, H, W)
    p_d = _inner_boundary(_one_hot(preds, num_classes), distance)
    intersection = (g_d & p_d).sum((0, 2, 3)).cpu()  # (K,) int64
    union = (g_d | p_d).sum((0, 2, 3)).cpu()
    per_class = torch.where(union > 0, intersection.double() / union.clamp(min=1),
                            torch.full(union.shape, math.nan, dtype=torch.float64))  # fmt: skip
    return BoundaryIoU(per_class=per_class, mean=float(per_class.nanmean()), intersection=intersection, union=union)
