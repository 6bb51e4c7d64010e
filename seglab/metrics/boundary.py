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
- An empty batch (``N``, ``H`` or ``W`` zero) has no boundary pixel: every class is undefined (``nan``), as
  ``confusion_matrix`` gives an all-zero matrix (mIoU ``nan``) for it.
- Distances past the image diagonal change nothing (no two pixels are farther apart) and are capped there:
  memory never grows with ``tolerance``, ``dilation_ratio`` or ``band_width``, time at most with the shorter
  image side. Classes go a few at a time, only those present in either map, so memory stays near a few
  copies of the batch whatever ``num_classes``. Arguments are checked by ``seglab.metrics._checks``.

Departures from the papers: Csurka et al. propose ``tolerance`` = 0.75% of the image diagonal, our
default; Cheng et al. define Boundary IoU per object mask (instance segmentation), here it is per class
with intersections and unions summed over the images of the batch, as mIoU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch

from seglab.metrics._checks import (
    check_distance, check_ignore_index, check_labels, check_num_classes, check_pair, check_pixels,
)
from seglab.metrics._morphology import disk_dilate, inner_boundary, label_edges, square_dilate
from seglab.metrics.confusion import _count, _iou_per_class

__all__ = ["boundary_band", "trimap_iou", "BoundaryFScore", "boundary_f_score", "BoundaryIoU", "boundary_iou"]

_CHUNK_ELEMENTS = 2**23  # (N, C, H, W) elements per chunk of classes: about 100 MB of temporaries


def _check_band_width(band_width) -> int:
    return check_pixels("band_width", band_width, minimum=1, need="the band's half-width in pixels", example=2)


def boundary_band(target: torch.Tensor, band_width: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Pixels within ``band_width - 1`` px (Chebyshev distance) of a ground-truth label edge, a band
    ``2 * band_width`` px wide around each boundary.

    Args:
        target: ``(N, H, W)`` integer (or bool) mask.
        band_width: half-width of the band in pixels, an int >= 1 (a huge one costs no more than the image
            size).
        ignore_index: a change to or from the ignore value also counts as a boundary (VOC draws its
            255 band exactly along object outlines); the ignored pixels themselves are excluded later.

    Returns:
        ``(N, H, W)`` bool tensor, True inside the band.

    Raises:
        ValueError: ``target`` not an ``(N, H, W)`` integer tensor (a float mask), ``band_width`` not an
            int >= 1, or ``ignore_index`` not None or an int.
    """
    target = check_labels("target", target, dims=3)
    band_width = _check_band_width(band_width)
    check_ignore_index(ignore_index)
    # A 1-px edge dilated by band_width - 1 px each side: the (2w-1)x(2w-1) square window.
    return square_dilate(label_edges(target), band_width - 1)


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
        preds: ``(N, H, W)`` integer class indices or ``(N, K, H, W)`` float logits.
        target: ``(N, H, W)`` integer mask in ``[0, K)`` or ``ignore_index`` (skipped).
        num_classes: K.
        band_width: band half-width in pixels (see :func:`boundary_band`).

    Returns:
        mIoU (fraction in [0, 1]) over the band; ``nan`` if the band holds no labelled pixel.

    Raises:
        ValueError: as :func:`seglab.metrics.confusion_matrix` (float masks, shapes, logits' channels or NaN,
            values), or as :func:`boundary_band`.
    """
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    band_width = _check_band_width(band_width)
    preds, target = check_pair("preds", preds, target, num_classes, ignore_index, dims=3)
    keep = square_dilate(label_edges(target), band_width - 1)  # (N, H, W) the band
    if ignore_index is not None:
        keep &= target != ignore_index
    return float(_iou_per_class(_count(preds[keep], target[keep], num_classes, None).double()).nanmean())


def _paired(preds_or_logits, target, num_classes, ignore_index) -> tuple[torch.Tensor, torch.Tensor, int, int | None]:
    """Checked ``(preds, target, num_classes, ignore_index)``; preds hold ``ignore_index`` where the target does."""
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    preds, target = check_pair("preds_or_logits", preds_or_logits, target, num_classes, ignore_index, dims=3)
    if ignore_index is not None:
        preds = preds.masked_fill(target == ignore_index, ignore_index)
    return preds, target, num_classes, ignore_index


def _class_chunks(preds: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> Iterator[torch.Tensor]:
    """The classes present in either ``(N, H, W)`` map (absent ones have no boundary), a few at a time."""
    classes = torch.unique(torch.cat([target.reshape(-1), preds.reshape(-1)]))
    if ignore_index is not None:
        classes = classes[classes != ignore_index]
    yield from classes.split(max(1, _CHUNK_ELEMENTS // max(1, target.numel())))


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
    ``P = R = BF = 0``; in neither, ``nan`` (left out of the means), which is every class of an empty
    image. Ignored target pixels: see the module docstring (they count as a label of their own in both maps).

    Args:
        preds_or_logits: ``(N, H, W)`` integer class indices in ``[0, K)`` or ``(N, K, H, W)`` float logits
            (argmax).
        target: ``(N, H, W)`` integer mask in ``[0, K)`` or ``ignore_index``.
        num_classes: K.
        tolerance: match distance in pixels, a finite number >= 0 (0 = the same pixel); past the image
            diagonal it is the diagonal (the same result). ``None``: 0.75% of the image diagonal, rounded,
            at least 1 px (the paper's choice; 4 px for a 480x360 CamVid image).
        ignore_index: target value of unlabelled pixels; ``None`` = every pixel is labelled.

    Returns:
        :class:`BoundaryFScore` ``(per_class (K,), mean, per_image (N,), scores (N, K), precision, recall)``.

    Raises:
        ValueError: as :func:`seglab.metrics.confusion_matrix` (float masks, shapes, logits' channels or NaN,
            values), a target that is not ``(N, H, W)``, or a tolerance that is negative, NaN, infinite or
            not a number.
    """
    if tolerance is not None:
        tolerance = check_distance("tolerance", tolerance, positive=False,
                                   need="a match distance in pixels (None: 0.75% of the image diagonal)",
                                   example="2")  # fmt: skip
    preds, target, num_classes, ignore_index = _paired(preds_or_logits, target, num_classes, ignore_index)
    n, height, width = target.shape
    diagonal = math.hypot(height, width)
    if tolerance is None:
        tolerance = max(1, round(0.0075 * diagonal))
    radius = min(tolerance, diagonal)  # no two pixels are farther apart than the diagonal: the same result
    counts = torch.zeros(4, n, num_classes, dtype=torch.float64)  # |B_gt|, |B_pred|, matched gt, matched pred
    edges_gt, edges_pred = label_edges(target).unsqueeze(1), label_edges(preds).unsqueeze(1)  # (N, 1, H, W)
    for classes in _class_chunks(preds, target, ignore_index):
        c = classes.view(1, -1, 1, 1)
        b_gt = (target.unsqueeze(1) == c) & edges_gt  # (N, C, H, W)
        b_pred = (preds.unsqueeze(1) == c) & edges_pred
        found = torch.stack([b_gt.sum((2, 3)), b_pred.sum((2, 3)), (b_gt & disk_dilate(b_pred, radius)).sum((2, 3)),
                             (b_pred & disk_dilate(b_gt, radius)).sum((2, 3))])  # fmt: skip
        counts[:, :, classes.cpu()] = found.double().cpu()
    n_gt, n_pred, matched_gt, matched_pred = counts
    precision = matched_pred / n_pred.clamp(min=1)
    recall = matched_gt / n_gt.clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300),
                     torch.zeros_like(precision))  # fmt: skip
    undefined = (n_gt == 0) & (n_pred == 0)
    nan = torch.full_like(f1, math.nan)
    scores = torch.where(undefined, nan, f1)
    per_class = scores.nanmean(0)  # (K,)
    return BoundaryFScore(
        per_class=per_class,
        mean=float(per_class.nanmean()),
        per_image=scores.nanmean(1),
        scores=scores,
        precision=torch.where(undefined, nan, precision),
        recall=torch.where(undefined, nan, recall),
    )


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
    (left out of the mean), as has every class of an empty batch; a class predicted but absent from the ground
    truth scores 0. For ``d`` at least half the shorter image side every mask pixel is a boundary pixel and
    Boundary IoU equals IoU (so a ratio past 1, ``d`` past the diagonal, is the same as 1).
    Ignored target pixels: see the module docstring (they count as a label of their own in both maps).

    Args:
        preds_or_logits: ``(N, H, W)`` integer class indices in ``[0, K)`` or ``(N, K, H, W)`` float logits
            (argmax).
        target: ``(N, H, W)`` integer mask in ``[0, K)`` or ``ignore_index``.
        num_classes: K.
        dilation_ratio: boundary width as a fraction of the image diagonal, a finite number > 0 (the paper's
            0.02).
        ignore_index: target value of unlabelled pixels; ``None`` = every pixel is labelled.

    Returns:
        :class:`BoundaryIoU` ``(per_class (K,), mean, intersection (K,), union (K,))``.

    Raises:
        ValueError: as :func:`seglab.metrics.confusion_matrix` (float masks, shapes, logits' channels or NaN,
            values), a target that is not ``(N, H, W)``, or a ``dilation_ratio`` that is <= 0, NaN, infinite
            or not a number.
    """
    ratio = check_distance("dilation_ratio", dilation_ratio, positive=True,
                           need="the boundary width as a fraction of the image diagonal", example="0.02")  # fmt: skip
    preds, target, num_classes, ignore_index = _paired(preds_or_logits, target, num_classes, ignore_index)
    diagonal = math.hypot(*target.shape[-2:])
    distance = max(1, round(min(ratio, 1.0) * diagonal))  # past the diagonal every mask pixel is boundary already
    intersection = torch.zeros(num_classes, dtype=torch.int64)
    union = torch.zeros(num_classes, dtype=torch.int64)
    for classes in _class_chunks(preds, target, ignore_index):
        c = classes.view(1, -1, 1, 1)
        g_d = inner_boundary(target.unsqueeze(1) == c, distance)  # (N, C, H, W)
        p_d = inner_boundary(preds.unsqueeze(1) == c, distance)
        intersection[classes.cpu()] = (g_d & p_d).sum((0, 2, 3)).cpu()
        union[classes.cpu()] = (g_d | p_d).sum((0, 2, 3)).cpu()
    per_class = torch.where(union > 0, intersection.double() / union.clamp(min=1),
                            torch.full(union.shape, math.nan, dtype=torch.float64))  # fmt: skip
    return BoundaryIoU(per_class=per_class, mean=float(per_class.nanmean()), intersection=intersection, union=union)
