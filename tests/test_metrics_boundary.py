"""Boundary metrics (boundary F-score, Boundary IoU) on hand-counted masks and against independent oracles:
Boundary IoU against the reference code's cv2 erosion (Cheng et al. 2021, ``mask_to_boundary``) and
scipy.ndimage; the BF score against scipy's Euclidean distance transform (Csurka et al. 2013)."""

import math

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from seglab.metrics import boundary_f_score, boundary_iou, confusion_matrix, iou_per_class


def _square(size, top, left, side, value=1, background=0):
    mask = torch.full((size, size), background, dtype=torch.int64)
    mask[top:top + side, left:left + side] = value
    return mask


# ------------------------------------------------------------------------------------------------
# Boundary F-score
# ------------------------------------------------------------------------------------------------


def test_bf_score_hand_counted_shifted_square():
    # 6x6, a 2x2 square of class 1 at rows 2-3, cols 2-3; the prediction is shifted right by one column.
    target = _square(6, 2, 2, 2)[None]
    preds = _square(6, 2, 3, 2)[None]
    # class 1 boundary: all 4 square pixels; gt {(2,2),(2,3),(3,2),(3,3)}, pred {(2,3),(2,4),(3,3),(3,4)}
    # class 0 boundary: the 8 background pixels 4-adjacent to the square (gt and pred each 8),
    #   gt {(1,2),(1,3),(4,2),(4,3),(2,1),(3,1),(2,4),(3,4)}, pred {(1,3),(1,4),(4,3),(4,4),(2,2),(3,2),(2,5),(3,5)}
    exact = boundary_f_score(preds, target, 3, tolerance=0)
    # tolerance 0: class 1 shares (2,3),(3,3): P = R = 2/4; class 0 shares (1,3),(4,3): P = R = 2/8
    torch.testing.assert_close(exact.precision[0, :2], torch.tensor([2 / 8, 2 / 4], dtype=torch.float64))
    torch.testing.assert_close(exact.recall[0, :2], torch.tensor([2 / 8, 2 / 4], dtype=torch.float64))
    torch.testing.assert_close(exact.per_class[:2], torch.tensor([0.25, 0.5], dtype=torch.float64))
    assert exact.per_class[2].isnan() and exact.scores[0, 2].isnan()  # class 2 absent from both: left out
    assert math.isclose(exact.mean, 0.375) and math.isclose(float(exact.per_image[0]), 0.375)
    # tolerance 1 px: every boundary pixel has a partner one pixel away
    loose = boundary_f_score(preds, target, 3, tolerance=1)
    assert loose.per_class[:2].tolist() == [1.0, 1.0] and loose.mean == 1.0


def test_bf_score_missing_class_scores_zero_and_images_are_averaged():
    target = torch.stack([_square(6, 2, 2, 2), _square(6, 2, 2, 2)])
    preds = torch.stack([_square(6, 2, 2, 2), torch.zeros(6, 6, dtype=torch.int64)])  # image 2 misses the square
    result = boundary_f_score(preds, target, 2, tolerance=0)
    assert result.scores.tolist() == [[1.0, 1.0], [0.0, 0.0]]  # class 0 has no boundary at all in pred 2
    assert result.per_class.tolist() == [0.5, 0.5] and result.per_image.tolist() == [1.0, 0.0]
    # a class predicted but not in the ground truth: precision 0, recall 0 -> 0, and it counts
    preds = torch.stack([_square(6, 2, 2, 2, value=2), _square(6, 2, 2, 2)])
    result = boundary_f_score(preds, target, 3, tolerance=0)
    assert result.scores[0].tolist() == [1.0, 0.0, 0.0] and result.scores[1, 2].isnan()


def test_bf_score_ignored_pixels_are_a_label_of_their_own():
    # 1x5: 0 0 255 1 1. Whatever is predicted on the ignored pixel, the boundaries are (0,1) and (0,3).
    target = torch.tensor([[[0, 0, 255, 1, 1]]])
    for middle in (0, 1):
        preds = torch.tensor([[[0, 0, middle, 1, 1]]])
        result = boundary_f_score(preds, target, 2, tolerance=0)
        assert result.per_class.tolist() == [1.0, 1.0]
    preds = torch.tensor([[[0, 1, 0, 1, 1]]])  # wrong at (0,1): class 0's boundary moves to (0,0)
    result = boundary_f_score(preds, target, 2, tolerance=0)
    assert result.scores[0, 0] == 0.0 and result.precision[0, 1] == 0.5 and result.recall[0, 1] == 1.0


def _bf_oracle(preds, target, num_classes, tolerance, ignore_index=255):
    """Per-image, per-class BF from scipy: boundaries by erosion with a 4-cross, matches by distance transform."""
    scores = np.full((len(target), num_classes), np.nan)
    cross = ndimage.generate_binary_structure(2, 1)
    for i, (p, t) in enumerate(zip(preds.numpy(), target.numpy())):
        p = np.where(t == ignore_index, ignore_index, p)
        for c in range(num_classes):
            bounds = []
            for labels in (t, p):
                mask = labels == c
                bounds.append(mask & ~ndimage.binary_erosion(mask, cross, border_value=1))
            b_gt, b_pred = bounds
            if not b_gt.any() and not b_pred.any():
                continue
            if not b_gt.any() or not b_pred.any():
                scores[i, c] = 0.0
                continue
            dist_to_gt = ndimage.distance_transform_edt(~b_gt)
            dist_to_pred = ndimage.distance_transform_edt(~b_pred)
            precision = (dist_to_gt[b_pred] <= tolerance).mean()
            recall = (dist_to_pred[b_gt] <= tolerance).mean()
            scores[i, c] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tolerance", [0, 1, 2.5, None])
def test_bf_score_matches_a_scipy_distance_transform(seed, tolerance):
    g = torch.Generator().manual_seed(seed)
    # blocky maps (nearest-upsampled noise) so that classes form regions with real boundaries
    target = torch.randint(0, 4, (3, 1, 6, 8), generator=g).float()
    target = torch.nn.functional.interpolate(target, size=(30, 41), mode="nearest")[:, 0].long()
    preds = torch.nn.functional.interpolate(torch.randint(0, 4, (3, 1, 7, 9), generator=g).float(),
                                            size=(30, 41), mode="nearest")[:, 0].long()  # fmt: skip
    preds = torch.where(torch.rand(3, 30, 41, generator=g) < 0.7, target, preds)
    target[torch.rand(3, 30, 41, generator=g) < 0.05] = 255
    result = boundary_f_score(preds, target, 5, tolerance=tolerance)
    expected = _bf_oracle(preds, target, 5, max(1, round(0.0075 * math.hypot(30, 41))) if tolerance is None
                          else tolerance)  # fmt: skip
    np.testing.assert_allclose(result.scores.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert result.scores[:, 4].isnan().all()  # class 4 never appears


@pytest.mark.parametrize("tolerance", [0.5, 1.5, 3, 7.2, 29, 45, 60])
def test_bf_score_matches_scipy_on_a_tall_image_at_every_distance(tolerance):
    # taller than wide (the dilation loops over the shorter side), distances up to past the diagonal (50.8 px)
    g = torch.Generator().manual_seed(7)
    target = torch.nn.functional.interpolate(torch.randint(0, 3, (2, 1, 5, 3), generator=g).float(),
                                             size=(41, 30), mode="nearest")[:, 0].long()  # fmt: skip
    preds = torch.nn.functional.interpolate(torch.randint(0, 3, (2, 1, 4, 4), generator=g).float(),
                                            size=(41, 30), mode="nearest")[:, 0].long()  # fmt: skip
    target[0, :, :2] = 255
    result = boundary_f_score(preds, target, 3, tolerance=tolerance)
    np.testing.assert_allclose(result.scores.numpy(), _bf_oracle(preds, target, 3, tolerance), rtol=1e-12, atol=1e-12)


def test_bf_score_logits_and_bad_input():
    target = _square(6, 2, 2, 2)[None]
    logits = torch.nn.functional.one_hot(_square(6, 2, 3, 2), 2).permute(2, 0, 1)[None].float()
    assert boundary_f_score(logits, target, 2, tolerance=0).mean == 0.375
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f_score(target, target, 2, tolerance=-1)
    with pytest.raises(ValueError, match="outside"):
        boundary_f_score(target, target + 5, 2)
    with pytest.raises(ValueError, match="shape"):
        boundary_f_score(target[:, :5], target, 2)


# ------------------------------------------------------------------------------------------------
# Boundary IoU
# ------------------------------------------------------------------------------------------------


def test_boundary_iou_hand_counted_shifted_square():
    # 6x6, a 4x4 square of class 1 at rows 1-4, cols 1-4; the prediction at cols 2-5 (touching the border).
    # d = max(1, round(0.02 * sqrt(72))) = 1.
    target = _square(6, 1, 1, 4)[None]
    preds = _square(6, 1, 2, 4)[None]
    result = boundary_iou(preds, target, 3)
    # class 1: gt ring = 16 - 4 (interior rows 2-3, cols 2-3) = 12; pred ring = 16 - 4 (interior rows 2-3,
    #   cols 3-4; col 5 touches the border) = 12; shared: rows 1 and 4, cols 2-4 = 6 -> 6 / (12 + 12 - 6)
    # class 0: every background pixel is within 1 px of the square or the border: gt 20, pred 20, shared
    #   rows 0 and 5 (12) + col 0, rows 1-4 (4) = 16 -> 16 / (20 + 20 - 16)
    assert result.intersection.tolist() == [16, 6, 0] and result.union.tolist() == [24, 18, 0]
    torch.testing.assert_close(result.per_class[:2], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert result.per_class[2].isnan() and math.isclose(result.mean, 0.5)


def _mask_to_boundary(mask, dilation_ratio):
    """Cheng et al.'s reference (boundary_iou_api, mask_to_boundary): cv2 erosion of the zero-padded mask."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=dilation)[1:h + 1, 1:w + 1]
    return mask - eroded


def _mask_to_boundary_scipy(mask, dilation_ratio):
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    eroded = ndimage.binary_erosion(mask.astype(bool), np.ones((3, 3), bool), iterations=dilation, border_value=0)
    return (mask.astype(bool) & ~eroded).astype(np.uint8)


@pytest.mark.parametrize("seed,size", [(0, (40, 52)), (1, (40, 52)), (2, (52, 40))])
@pytest.mark.parametrize("dilation_ratio", [0.02, 0.06, 0.2, 0.3])
def test_boundary_iou_matches_the_reference_erosion(seed, size, dilation_ratio):
    g = torch.Generator().manual_seed(seed)
    target = torch.nn.functional.interpolate(torch.randint(0, 3, (2, 1, 5, 6), generator=g).float(),
                                             size=size, mode="nearest")[:, 0].long()  # fmt: skip
    preds = torch.nn.functional.interpolate(torch.randint(0, 3, (2, 1, 6, 5), generator=g).float(),
                                            size=size, mode="nearest")[:, 0].long()  # fmt: skip
    preds = torch.where(torch.rand(2, *size, generator=g) < 0.6, target, preds)
    target[:, :3] = 255  # an unlabelled strip
    result = boundary_iou(preds, target, 4, dilation_ratio=dilation_ratio)
    for to_boundary in (_mask_to_boundary, _mask_to_boundary_scipy):
        inter, union = np.zeros(4, np.int64), np.zeros(4, np.int64)
        for p, t in zip(preds.numpy(), target.numpy()):
            p = np.where(t == 255, 255, p)
            for c in range(4):
                g_d = to_boundary((t == c).astype(np.uint8), dilation_ratio).astype(bool)
                p_d = to_boundary((p == c).astype(np.uint8), dilation_ratio).astype(bool)
                inter[c] += (g_d & p_d).sum()
                union[c] += (g_d | p_d).sum()
        assert result.intersection.tolist() == inter.tolist() and result.union.tolist() == union.tolist()
    assert result.per_class[3].isnan()  # class 3 never appears


def test_boundary_iou_with_a_wide_boundary_equals_mask_iou():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (2, 12, 16), generator=g)
    preds = torch.randint(0, 3, (2, 12, 16), generator=g)
    target[0, 0] = 255
    result = boundary_iou(preds, target, 3, dilation_ratio=0.5)  # d = 10 >= half the shorter side
    torch.testing.assert_close(result.per_class, iou_per_class(confusion_matrix(preds, target, 3)))


def test_boundary_iou_bad_input():
    target = _square(6, 1, 1, 4)[None]
    for ratio in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dilation_ratio"):
            boundary_iou(target, target, 2, dilation_ratio=ratio)
    with pytest.raises(ValueError, match="outside"):
        boundary_iou(target + 2, target, 2)
