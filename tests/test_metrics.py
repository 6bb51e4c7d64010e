"""Metrics against hand-computed cases and torchmetrics (an independent oracle)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from seglab.metrics import (
    ConfusionMatrix,
    boundary_band,
    confusion_matrix,
    frequency_weighted_iou,
    iou_per_class,
    mean_class_accuracy,
    mean_iou,
    pixel_accuracy,
    trimap_iou,
)


def test_hand_computed_3x3():
    # 3 classes, one 3x4 image; 255 marks ignored pixels.
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [255, 2, 2, 255]]])
    preds = torch.tensor([[[0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 0, 0]]])
    cm = confusion_matrix(preds, target, 3)
    # gt 0: pixels (0,0)->0 (0,1)->1 (1,0)->0          -> [2, 1, 0]
    # gt 1: (0,2)->1 (0,3)->1 (1,3)->1                   -> [0, 3, 0]
    # gt 2: (1,1)->2 (1,2)->1 (2,1)->2 (2,2)->0          -> [1, 1, 2]
    expected = torch.tensor([[2, 1, 0], [0, 3, 0], [1, 1, 2]])
    assert torch.equal(cm, expected)
    iou = iou_per_class(cm)
    # IoU_0 = 2/(3+3-2)=0.5, IoU_1 = 3/(3+5-3)=0.6, IoU_2 = 2/(4+2-2)=0.5
    torch.testing.assert_close(iou, torch.tensor([0.5, 0.6, 0.5], dtype=torch.float64))
    assert math.isclose(float(mean_iou(cm)), (0.5 + 0.6 + 0.5) / 3)
    assert math.isclose(float(pixel_accuracy(cm)), 7 / 10)
    assert math.isclose(float(mean_class_accuracy(cm)), (2 / 3 + 1 + 2 / 4) / 3)
    assert math.isclose(float(frequency_weighted_iou(cm)), (3 * 0.5 + 3 * 0.6 + 4 * 0.5) / 10)


def test_absent_class_is_nan_and_left_out_but_false_positive_counts():
    target = torch.tensor([[[0, 0, 1, 1]]])
    preds = torch.tensor([[[0, 0, 1, 1]]])
    iou = iou_per_class(confusion_matrix(preds, target, 4))
    assert iou[:2].tolist() == [1.0, 1.0] and iou[2:].isnan().all()
    assert float(mean_iou(confusion_matrix(preds, target, 4))) == 1.0
    # class 3 predicted but never in the ground truth: IoU 0, counted in the mean
    preds = torch.tensor([[[0, 3, 1, 1]]])
    iou = iou_per_class(confusion_matrix(preds, target, 4))
    assert iou[3] == 0.0 and iou[2].isnan()
    assert math.isclose(float(mean_iou(confusion_matrix(preds, target, 4))), (0.5 + 1.0 + 0.0) / 3)


def test_logits_are_argmaxed_and_streaming_equals_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 8, 9, generator=g)
    target = torch.randint(0, 5, (6, 8, 9), generator=g)
    target[:, 0, :] = 255
    cm_all = confusion_matrix(logits, target, 5)
    stream = ConfusionMatrix(5)
    for i in range(0, 6, 2):
        stream.update(logits[i : i + 2], target[i : i + 2])
    assert torch.equal(stream.matrix, cm_all)
    assert cm_all.sum() == (target != 255).sum()
    out = stream.compute()
    assert set(out) == {"mIoU", "iou_per_class", "pixel_accuracy", "mean_class_accuracy", "fw_iou"}
    stream.reset()
    assert stream.matrix.sum() == 0


@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(2, 8),
    n=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    ignore_fraction=st.floats(0, 0.5),
)
def test_against_torchmetrics(num_classes, n, h, w, seed, ignore_fraction):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_fraction] = 255
    preds = torch.randint(0, num_classes, (n, h, w), generator=g)
    cm = confusion_matrix(preds, target, num_classes)

    tm_cm = MulticlassConfusionMatrix(num_classes, ignore_index=255)(preds, target)
    assert torch.equal(cm, tm_cm)

    ours = iou_per_class(cm)
    theirs = MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)(preds, target).double()
    present = ~ours.isnan()
    torch.testing.assert_close(ours[present], theirs[present])
    assert (theirs[~present] == 0).all()  # torchmetrics scores absent classes 0; we leave them out

    if (target != 255).any():
        acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=255)(preds, target)
        torch.testing.assert_close(pixel_accuracy(cm), acc.double())
        miou_tm = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255)(preds, target)
        torch.testing.assert_close(mean_iou(cm), miou_tm.double())


def test_bad_values_raise_clear_errors():
    target = torch.tensor([[[0, 7]]])
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*255"):
        confusion_matrix(torch.tensor([[[0, 1]]]), target, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="preds hold values"):
        confusion_matrix(torch.tensor([[[5, 1]]]), torch.tensor([[[0, 1]]]), 3)


def test_boundary_band_and_trimap_iou():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[:, :, 5:] = 1  # vertical edge between columns 4 and 5
    band = boundary_band(target, 2)
    assert band[0, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 3
    # A prediction perfect far from the edge but wrong on it: global mIoU high, trimap mIoU low.
    preds = target.clone()
    preds[:, :, 4:6] = 1 - preds[:, :, 4:6]
    global_miou = float(mean_iou(confusion_matrix(preds, target, 2)))
    assert global_miou > 0.6
    assert trimap_iou(preds, target, 2, band_width=1) == 0.0
    assert trimap_iou(target, target, 2, band_width=2) == 1.0
    with pytest.raises(ValueError, match="band_width"):
        boundary_band(target, 0)


def test_boundary_band_equals_a_square_dilation_of_the_edges():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 9, 13), generator=g)
    target[0, 2:5, 3:7] = 255
    for w in (1, 2, 4):
        band = boundary_band(target, w)
        edge = boundary_band(target, 1)
        expected = torch.zeros_like(edge)
        for n, y, x in edge.nonzero().tolist():
            expected[n, max(0, y - w + 1) : y + w, max(0, x - w + 1) : x + w] = True
        assert torch.equal(band, expected), w
