"""seglab.metrics at its boundary (issue 16, items 7, 12 and 13): every public function refuses garbage with a
one-line ValueError naming the argument, what it got and what it needs; huge distances are capped at the image
diagonal with the same result, in bounded memory; empty batches have a documented value."""

import contextlib
import math
import resource

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from seglab.metrics import (
    ConfusionMatrix, boundary_band, boundary_f_score, boundary_iou, confusion_matrix, frequency_weighted_iou,
    iou_per_class, mean_class_accuracy, mean_iou, pixel_accuracy, trimap_iou,
)

GIB = 2**30
CM_FUNCTIONS = [iou_per_class, mean_iou, pixel_accuracy, mean_class_accuracy, frequency_weighted_iou]


@contextlib.contextmanager
def memory_cap(extra_bytes):
    """Cap this process's address space at its current size + ``extra_bytes``: a runaway allocation raises."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * resource.getpagesize()
    old = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra_bytes if old[1] == resource.RLIM_INFINITY else min(old[1], current + extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def _maps(seed=0, n=2, size=(16, 16), k=3):
    g = torch.Generator().manual_seed(seed)
    target = F.interpolate(torch.randint(0, k, (n, 1, 4, 4), generator=g).float(), size=size, mode="nearest")[:, 0]
    preds = torch.where(torch.rand(n, *size, generator=g) < 0.8, target, torch.randint(0, k, (n, *size), generator=g))
    target = target.long()
    target[:, 0, :3] = 255
    return preds.long(), target


def _same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, equal_nan=True, rtol=0, atol=0)
        else:
            assert x == y or (math.isnan(x) and math.isnan(y))


def _one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------------------------
# Item 7: distances past the diagonal are capped (same result, bounded memory); nonsense refused
# ------------------------------------------------------------------------------------------------


def test_huge_tolerance_is_the_diagonal_in_bounded_memory():
    preds, target = _maps()  # the repro: a 16x16 batch, tolerance=1e9 was killed at 22 GB
    with memory_cap(GIB):
        huge = boundary_f_score(preds, target, 3, tolerance=1e9)
        huge_int = boundary_f_score(preds, target, 3, tolerance=10**400)  # past float's range: still a distance
    diagonal = boundary_f_score(preds, target, 3, tolerance=math.hypot(16, 16))
    corners = boundary_f_score(preds, target, 3, tolerance=math.hypot(15, 15))  # the largest pixel distance
    _same(huge, diagonal)
    _same(huge_int, diagonal)
    _same(corners, diagonal)
    # and the value is the definition's: every boundary pixel matched when the other map has one of its class
    p = preds.masked_fill(target == 255, 255)
    for i in range(2):
        for c in range(3):
            has = [bool((m[i] == c).numpy()[(ndimage.binary_erosion((m[i] == c).numpy(), border_value=1)
                                             ^ (m[i] == c).numpy())].any()) for m in (target, p)]  # fmt: skip
            expected = math.nan if not any(has) else float(all(has))
            got = float(huge.scores[i, c])
            assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_huge_dilation_ratio_is_the_diagonal_in_bounded_memory():
    preds, target = _maps(1)
    with memory_cap(GIB):  # dilation_ratio=1e6 tried to allocate 4.9e16 bytes
        huge = boundary_iou(preds, target, 3, dilation_ratio=1e6)
        largest = boundary_iou(preds, target, 3, dilation_ratio=1.7976931348623157e308)
    _same(huge, boundary_iou(preds, target, 3, dilation_ratio=1.0))  # d = the diagonal
    _same(largest, huge)
    torch.testing.assert_close(huge.per_class, iou_per_class(confusion_matrix(preds, target, 3)))  # IoU itself


def test_huge_band_width_covers_the_image_in_bounded_memory():
    preds, target = _maps(2)
    with memory_cap(GIB):
        band = boundary_band(target, 10**12)
        score = trimap_iou(preds, target, 3, 10**12)
    assert torch.equal(band, boundary_band(target, 17))  # 16 px past an edge pixel: every pixel
    assert band.all()
    assert score == float(mean_iou(confusion_matrix(preds, target, 3)))


@pytest.mark.parametrize("value", [-1, -1e-9, math.nan, math.inf, -math.inf, "3", True, [2], torch.tensor(2.0)])
def test_nonsense_tolerance_is_refused(value):
    preds, target = _maps()
    message = _one_line_error(lambda: boundary_f_score(preds, target, 3, tolerance=value), r"^tolerance must be")
    assert "finite number >= 0" in message and repr(value) in message


@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf, "0.02", True, None])
def test_nonsense_dilation_ratio_is_refused(value):
    preds, target = _maps()
    message = _one_line_error(lambda: boundary_iou(preds, target, 3, dilation_ratio=value), r"^dilation_ratio must")
    assert "finite number > 0" in message and repr(value) in message


@pytest.mark.parametrize("value", [0, -3, 2.5, math.nan, "2", True])
def test_nonsense_band_width_is_refused(value):
    preds, target = _maps()
    _one_line_error(lambda: boundary_band(target, value), r"^band_width must be .*integer >= 1, got")
    _one_line_error(lambda: trimap_iou(preds, target, 3, value), r"^band_width must be")


# ------------------------------------------------------------------------------------------------
# Item 12: garbage tensors get a ValueError naming the argument, what it got and what it needs
# ------------------------------------------------------------------------------------------------


def _label_functions():
    """Every public entry point that takes (preds_or_logits, target) with 3 classes."""
    def update(p, t):
        ConfusionMatrix(3).update(p, t)

    return {
        "confusion_matrix": lambda p, t: confusion_matrix(p, t, 3),
        "ConfusionMatrix.update": update,
        "trimap_iou": lambda p, t: trimap_iou(p, t, 3, 2),
        "boundary_f_score": lambda p, t: boundary_f_score(p, t, 3),
        "boundary_iou": lambda p, t: boundary_iou(p, t, 3),
    }


@pytest.mark.parametrize("name", list(_label_functions()))
def test_float_masks_are_refused(name):
    fn = _label_functions()[name]
    preds, target = _maps()
    scaled = target.clamp(max=2).float() / 2  # a mask scaled to [0, 1]
    _one_line_error(lambda: fn(preds, scaled), r"^target must hold integer class indices .*got torch.float32")
    _one_line_error(lambda: fn(scaled, target), r"must hold integer class indices .*got torch.float32")
    _one_line_error(lambda: fn(preds, target.numpy()), r"^target must be a torch.Tensor, got ndarray")


@pytest.mark.parametrize("name", list(_label_functions()))
def test_bad_logits_are_refused(name):
    fn = _label_functions()[name]
    preds, target = _maps()
    logits = F.one_hot(preds.clamp(max=2), 3).permute(0, 3, 1, 2).double()
    fn(logits, target)  # well-formed logits are fine, and so are infinite ones (argmax is defined)
    fn(logits.masked_fill(logits == 0, -math.inf), target)
    nan = logits.clone()
    nan[0, 1, 3, 4] = math.nan
    _one_line_error(lambda: fn(nan, target), r"holds NaN logits \(1 of 1536\)")
    for channels in (2, 4):
        wrong = torch.randn(2, channels, 16, 16)
        _one_line_error(lambda: fn(wrong, target), rf"logits of {channels} classes .*but num_classes=3")
    _one_line_error(lambda: fn(logits.long(), target), r"read as logits .*must be floating point, got torch.int64")
    _one_line_error(lambda: fn(logits[..., :8], target), r"differ in shape")


@pytest.mark.parametrize("name", list(_label_functions()))
def test_labels_outside_the_classes_are_refused(name):
    fn = _label_functions()[name]
    preds, target = _maps()
    for bad in (-1, 3, 254):
        t = target.clone()
        t[1, 5, 5] = bad
        _one_line_error(lambda: fn(preds, t), rf"^target holds values \[{bad}\] outside \[0, 3\) and ignore_index=255")
        p = preds.clone()
        p[1, 5, 5] = bad
        _one_line_error(lambda: fn(p, target), rf"hold values \[{bad}\] outside \[0, 3\) on labelled pixels")
    p = preds.masked_fill(target == 255, 7)  # what preds hold on ignored pixels is never read
    fn(p, target)


def test_cm_functions_refuse_what_is_not_a_confusion_matrix():
    good = confusion_matrix(*_maps(), 3)
    for fn in CM_FUNCTIONS:
        for bad in (good - 10**6, good[:2], good.flatten(), torch.zeros(0, 0), good.double().fill_diagonal_(math.nan),
                    good.double().fill_diagonal_(math.inf), torch.full((2, 2), 1e308, dtype=torch.float64)):
            _one_line_error(lambda: fn(bad), r"^cm")
        message = _one_line_error(lambda: fn(good - 10**6), r"^cm must hold pixel counts >= 0")
        assert "negative or non-finite" in message
        _one_line_error(lambda: fn([[1, 0], [0, 1]]), r"^cm must be a torch.Tensor, got list")
        torch.testing.assert_close(fn(good.double()), fn(good), equal_nan=True)  # a float matrix is fine


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None, 10**6])
def test_bad_num_classes_is_refused_everywhere(value):
    preds, target = _maps()
    calls = [lambda: confusion_matrix(preds, target, value), lambda: ConfusionMatrix(value),
             lambda: trimap_iou(preds, target, value, 2), lambda: boundary_f_score(preds, target, value),
             lambda: boundary_iou(preds, target, value)]  # fmt: skip
    for call in calls:
        message = _one_line_error(call, r"^num_classes must")
        assert repr(value) in message or str(value) in message
    if value == 10**6:  # refused before the 8 TB matrix, with the number
        assert "7.45e+03 GiB" in message


@pytest.mark.parametrize("value", [2.5, True, "255", 2**70])
def test_bad_ignore_index_is_refused_everywhere(value):
    preds, target = _maps()
    for call in (lambda: confusion_matrix(preds, target, 3, value), lambda: ConfusionMatrix(3, value),
                 lambda: boundary_band(target, 2, value), lambda: trimap_iou(preds, target, 3, 2, value),
                 lambda: boundary_f_score(preds, target, 3, ignore_index=value),
                 lambda: boundary_iou(preds, target, 3, ignore_index=value)):  # fmt: skip
        _one_line_error(call, r"^ignore_index must be None or an integer label value, got")


def test_boundary_metrics_need_a_batch_of_images():
    preds, target = _maps()
    for fn in (lambda p, t: boundary_f_score(p, t, 3), lambda p, t: boundary_iou(p, t, 3),
               lambda p, t: trimap_iou(p, t, 3, 1)):  # fmt: skip
        expected = r"^target must be \(N, H, W\) class indices, got shape \(16, 16\): add the batch dimension"
        _one_line_error(lambda: fn(preds[0], target[0]), expected)
    _one_line_error(lambda: boundary_band(target[0], 1), r"^target must be \(N, H, W\)")


# ------------------------------------------------------------------------------------------------
# Item 13: ConfusionMatrix's arguments; empty inputs have a defined value (nan: no boundary, no pixel)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2.5, 0, -1, True])
def test_confusion_matrix_class_refuses_a_bad_num_classes(value):
    message = _one_line_error(lambda: ConfusionMatrix(value), r"^num_classes must")
    assert repr(value) in message and "21 for PASCAL VOC" in message


def test_confusion_matrix_class_refuses_a_bad_device_and_keeps_its_counts_on_a_bad_batch():
    message = _one_line_error(lambda: ConfusionMatrix(3, device="nonsense"), r"^device must be None or a torch device")
    assert "got 'nonsense' (str)" in message
    preds, target = _maps()
    cm = ConfusionMatrix(3)
    cm.update(preds, target)
    before = cm.matrix.clone()
    bad = target.clone()
    bad[0, 9, 9] = 5
    with pytest.raises(ValueError, match="outside"):
        cm.update(preds, bad)
    assert torch.equal(cm.matrix, before)


@pytest.mark.parametrize("shape", [(1, 0, 8), (1, 8, 0), (0, 8, 8), (2, 0, 0)])
def test_empty_batches_have_no_boundary_and_no_pixel(shape):
    empty = torch.zeros(shape, dtype=torch.int64)
    n = shape[0]
    bf = boundary_f_score(empty, empty, 3)  # the repro: a 1x0x8 batch
    assert bf.scores.shape == bf.precision.shape == bf.recall.shape == (n, 3) and bf.scores.isnan().all()
    assert bf.per_class.shape == (3,) and bf.per_class.isnan().all() and math.isnan(bf.mean)
    assert bf.per_image.shape == (n,) and bf.per_image.isnan().all()
    biou = boundary_iou(empty, empty, 3)
    assert biou.union.tolist() == [0, 0, 0] and biou.per_class.isnan().all() and math.isnan(biou.mean)
    assert math.isnan(trimap_iou(empty, empty, 3, 2))
    assert boundary_band(empty, 2).shape == shape
    cm = confusion_matrix(empty, empty, 3)
    assert cm.tolist() == [[0] * 3] * 3 and math.isnan(float(mean_iou(cm)))
    logits = torch.zeros(shape[0], 3, *shape[1:])
    assert boundary_f_score(logits, empty, 3).scores.isnan().all()


# ------------------------------------------------------------------------------------------------
# What stays accepted: any integer (or bool) mask dtype, any float logits dtype, 1-D pixel lists
# ------------------------------------------------------------------------------------------------


def test_integer_and_bool_masks_and_float_logits_of_any_width_give_the_same_scores():
    preds, target = _maps(3, k=2)
    target = target.masked_fill(target == 255, 0)
    reference = [confusion_matrix(preds, target, 2), boundary_f_score(preds, target, 2, tolerance=1),
                 boundary_iou(preds, target, 2), trimap_iou(preds, target, 2, 2)]  # fmt: skip
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.bool):
        p, t = preds.to(dtype), target.to(dtype)
        got = [confusion_matrix(p, t, 2), boundary_f_score(p, t, 2, tolerance=1), boundary_iou(p, t, 2),
               trimap_iou(p, t, 2, 2)]  # fmt: skip
        assert torch.equal(got[0], reference[0]) and got[3] == reference[3]
        _same(got[1], reference[1])
        _same(got[2], reference[2])
    logits = F.one_hot(preds, 2).permute(0, 3, 1, 2)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert torch.equal(confusion_matrix(logits.to(dtype), target, 2), reference[0])
    # 1-D pixel lists (e.g. pixels picked by a band mask) are fine for the confusion matrix
    keep = boundary_band(target, 1)
    assert torch.equal(confusion_matrix(preds[keep], target[keep], 2), confusion_matrix(
        preds.masked_fill(~keep, 255), target.masked_fill(~keep, 255), 2))


def test_uint8_mask_with_the_voc_ignore_value_is_read_as_255():
    target = torch.tensor([[[0, 1, 255]]], dtype=torch.uint8)
    assert confusion_matrix(torch.tensor([[[0, 1, 0]]]), target, 2).tolist() == [[1, 0], [0, 1]]
    assert np.isclose(boundary_f_score(torch.tensor([[[0, 1, 1]]]), target, 2, tolerance=0).mean, 1.0)
