"""Fuzz every public function of seglab.metrics (issue 16): random tensors (dtype float16/32/64, int64/32, uint8,
bool; rank 1 to 5, zero sizes included; NaN, inf, negative and huge values) and random parameters (good ones,
and 0, negative, NaN, inf, huge, bool, str, None). Each example returns results of the documented shape and
dtype whose scores are fractions in [0, 1] or nan (the documented "undefined"), never inf, or raises a one-line
ValueError that starts with the argument's name. Nothing else: no TypeError or RuntimeError from inside torch.

The module runs under an address-space cap (current size + 3 GiB) so that a runaway allocation fails the
example instead of the machine. ``pytest tests/test_fuzz_metrics.py -s`` prints the examples run and seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _helpers import FuzzTally, fraction, fractions

import seglab.metrics as metrics

RESULT_TYPES = {"BoundaryFScore", "BoundaryIoU"}  # NamedTuples returned by the boundary scores, not functions
ARGUMENTS = ("preds ", "preds_or_logits ", "target ", "num_classes ", "ignore_index ", "tolerance ",
             "dilation_ratio ", "band_width ", "cm ", "device ")  # fmt: skip
TALLY = FuzzTally(ARGUMENTS)
EXAMPLES, ACCEPTED = TALLY.examples, TALLY.accepted  # examples run, and returned a result, per function
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def memory_cap():
    """Cap the address space at its current size + 3 GiB for this module; report examples and seconds."""
    with TALLY.capped("seglab.metrics fuzz"):
        yield


# --- strategies ---------------------------------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]
COMMON = [0, 1, 2, 3, 255]  # valid class indices of small K and VOC's ignore value, drawn most often


def _elements(dtype):
    if dtype == np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.floating):
        width = np.dtype(dtype).itemsize * 8
        return st.one_of(st.sampled_from(COMMON + [0.5, -1.0]), st.floats(width=width, allow_nan=True,
                                                                             allow_infinity=True))  # fmt: skip
    info = np.iinfo(dtype)
    return st.one_of(st.sampled_from([v for v in COMMON + [-1] if info.min <= v <= info.max]),
                     st.integers(int(info.min), int(info.max)))  # fmt: skip


SHAPES = hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6)
IMAGE_SHAPES = hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9)  # (N, H, W): what most take


@st.composite
def tensors(draw, shape=None, dtypes=DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(st.one_of(IMAGE_SHAPES, SHAPES)) if shape is None else shape
    return torch.from_numpy(draw(hnp.arrays(dtype, shape, elements=_elements(dtype))))


def _mostly(valid, garbage):
    """Most draws from ``valid`` (st.one_of would favour the garbage), so that many examples reach the computation."""
    return st.integers(0, 4).flatmap(lambda i: garbage if i == 4 else valid)


@st.composite
def _valid_pair(draw, num_classes):
    """(preds_or_logits, target, ignore_index) that the metrics accept when ``num_classes`` is valid: integer
    class indices (any integer dtype, bool for two classes) with VOC's 255 ignored, and float logits that may
    hold +-inf and huge values but no NaN."""
    k = num_classes if type(num_classes) is int and 0 < num_classes <= 8 else 3
    shape = draw(IMAGE_SHAPES)
    ignore_index = draw(st.sampled_from([255, None]))
    target_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8] + ([np.bool_] if k == 2 else [])))
    labels = list(range(k)) + ([255] if ignore_index == 255 and target_dtype != np.bool_ else [])
    elements = st.booleans() if target_dtype == np.bool_ else st.sampled_from(labels)
    target = torch.from_numpy(draw(hnp.arrays(target_dtype, shape, elements=elements)))
    if draw(st.booleans()):
        dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        width = np.dtype(dtype).itemsize * 8
        logits = hnp.arrays(dtype, (shape[0], k, *shape[1:]), elements=st.floats(width=width, allow_nan=False))
        return torch.from_numpy(draw(logits)), target, ignore_index
    preds = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, k - 1)))
    return torch.from_numpy(preds).to(target.dtype), target, ignore_index


@st.composite
def _garbage_pair(draw, num_classes):
    """Any dtype, shape and values: preds of target's shape, logits with a class dim at 1, or any other shape."""
    target = draw(tensors())
    channels = num_classes if type(num_classes) is int and 0 < num_classes <= 8 else 3
    kind = draw(st.sampled_from(["same", "logits", "logits", "other"]))
    if kind == "same":
        shape = tuple(target.shape)
    elif kind == "logits":
        shape = (*target.shape[:1], draw(st.sampled_from([channels, channels, 0, channels + 1])), *target.shape[1:])
    else:
        shape = draw(SHAPES)
    return draw(tensors(shape)), target, draw(IGNORE_INDEX)


def pairs(num_classes):
    """(preds_or_logits, target, ignore_index), mostly valid."""
    return _mostly(_valid_pair(num_classes), _garbage_pair(num_classes))


@st.composite
def _valid_matrix(draw):
    k = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float16, np.float32, np.float64]))
    if np.issubdtype(dtype, np.floating):  # up to max / 64: 36 entries still sum to a finite float64
        elements = st.floats(0, float(np.finfo(dtype).max) / 64, width=np.dtype(dtype).itemsize * 8)
    else:
        elements = st.integers(0, int(np.iinfo(dtype).max))
    return torch.from_numpy(draw(hnp.arrays(dtype, (k, k), elements=elements)))


NUM_CLASSES = _mostly(st.integers(1, 5), st.sampled_from([0, -1, 2.5, True, None, "3", math.nan, 10**6, 2**70]))
IGNORE_INDEX = st.sampled_from([255, None, -1, 0, 2.5, True, "255", 2**70])
BAD_NUMBERS = st.sampled_from([None, True, "1", [1], math.nan, math.inf, -math.inf, -1, -(10**400)])
TOLERANCE = _mostly(st.one_of(st.none(), st.floats(0, 30), st.floats(0, 1e308), st.integers(0, 10**400)),
                    st.one_of(BAD_NUMBERS, st.floats(max_value=-1e-300)))  # fmt: skip
DILATION_RATIO = _mostly(st.one_of(st.floats(1e-6, 1.5), st.floats(1e-300, 1e308), st.integers(1, 10**12)),
                         st.one_of(BAD_NUMBERS, st.floats(max_value=0.0), st.just(0)))  # fmt: skip
BAND_WIDTH = _mostly(st.one_of(st.integers(1, 12), st.integers(12, 10**15)),
                     st.one_of(BAD_NUMBERS, st.integers(-2, 0), st.sampled_from([2.5, 0.0, 3.0])))  # fmt: skip
CMS = _mostly(_valid_matrix(), st.one_of(st.integers(0, 6).flatmap(lambda k: tensors((k, k))), tensors(SHAPES)))


# --- checks -------------------------------------------------------------------------------------------------------


_run, _refused_cleanly = TALLY.run, TALLY.refused_cleanly
_fractions, _fraction = fractions, fraction


def _image_batch(target) -> tuple[int, int, int]:
    assert target.dim() == 3  # a result means an (N, H, W) target was accepted
    return tuple(target.shape)


# --- one property per public function -----------------------------------------------------------------------------

FUZZED = {"confusion_matrix", "ConfusionMatrix", "iou_per_class", "mean_iou", "pixel_accuracy", "mean_class_accuracy",
          "frequency_weighted_iou", "boundary_band", "trimap_iou", "boundary_f_score", "boundary_iou"}  # fmt: skip


def test_every_public_function_is_fuzzed():
    """Every public name of seglab.metrics is fuzzed here or in tests/test_fuzz_metrics_panoptic.py (result
    NamedTuples and constant tuples are exempt)."""
    import test_fuzz_metrics_panoptic as panoptic  # only its name sets: its tests are collected in their own file

    exempt = RESULT_TYPES | panoptic.RESULT_TYPES | panoptic.CONSTANTS
    assert not FUZZED & panoptic.FUZZED
    assert set(metrics.__all__) - exempt == FUZZED | panoptic.FUZZED


def test_the_memory_cap_is_live():
    with pytest.raises(RuntimeError, match="allocate"):  # 4 GiB: past the cap, refused instead of swapping
        torch.empty(4 * 2**30, dtype=torch.uint8)


@FUZZ
@given(st.data(), NUM_CLASSES)
def test_fuzz_confusion_matrix(data, num_classes):
    preds, target, ignore_index = data.draw(pairs(num_classes))

    def check(cm):
        assert cm.dtype == torch.int64 and cm.shape == (num_classes, num_classes)
        assert bool((cm >= 0).all()) and int(cm.sum()) <= target.numel()

    _run("confusion_matrix", lambda: metrics.confusion_matrix(preds, target, num_classes, ignore_index), check)


@FUZZ
@given(st.data(), NUM_CLASSES, _mostly(st.sampled_from([None, "cpu"]), st.sampled_from(["nonsense", 3.5, True])))
def test_fuzz_confusion_matrix_class(data, num_classes, device):
    first = data.draw(pairs(num_classes))
    ignore_index = first[2]
    batches = [first[:2], data.draw(pairs(num_classes))[:2]]

    def call():
        cm = metrics.ConfusionMatrix(num_classes, ignore_index, device)
        for preds, target in batches:
            before = cm.matrix.clone()
            try:
                cm.update(preds, target)
            except ValueError as error:  # a refused batch leaves the counts as they were
                _refused_cleanly(error)
                assert torch.equal(cm.matrix, before)
        return cm

    def check(cm):
        out = cm.compute()
        assert set(out) == {"mIoU", "iou_per_class", "pixel_accuracy", "mean_class_accuracy", "fw_iou"}
        assert len(out["iou_per_class"]) == num_classes
        for value in [v for k, v in out.items() if k != "iou_per_class"] + out["iou_per_class"]:
            _fraction(value)

    _run("ConfusionMatrix", call, check)


@FUZZ
@given(CMS)
def test_fuzz_matrix_scores(cm):
    _run("iou_per_class", lambda: metrics.iou_per_class(cm), lambda iou: _fractions(iou, cm.shape[:1]))
    for name in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        _run(name, lambda: getattr(metrics, name)(cm), lambda score: _fractions(score, ()))


@FUZZ
@given(st.data(), BAND_WIDTH)
def test_fuzz_boundary_band(data, band_width):
    _, target, ignore_index = data.draw(pairs(3))

    def check(band):
        assert band.dtype == torch.bool and band.shape == target.shape

    _run("boundary_band", lambda: metrics.boundary_band(target, band_width, ignore_index), check)


@FUZZ
@given(st.data(), NUM_CLASSES, BAND_WIDTH)
def test_fuzz_trimap_iou(data, num_classes, band_width):
    preds, target, ignore_index = data.draw(pairs(num_classes))
    _run("trimap_iou", lambda: metrics.trimap_iou(preds, target, num_classes, band_width, ignore_index), _fraction)


@FUZZ
@given(st.data(), NUM_CLASSES, TOLERANCE)
def test_fuzz_boundary_f_score(data, num_classes, tolerance):
    preds, target, ignore_index = data.draw(pairs(num_classes))

    def check(result):
        n, _, _ = _image_batch(target)
        assert isinstance(result, metrics.BoundaryFScore)
        _fractions(result.per_class, (num_classes,))
        _fraction(result.mean)
        _fractions(result.per_image, (n,))
        for field in (result.scores, result.precision, result.recall):
            _fractions(field, (n, num_classes))

    _run("boundary_f_score", lambda: metrics.boundary_f_score(preds, target, num_classes, tolerance=tolerance,
                                                               ignore_index=ignore_index), check)  # fmt: skip


@FUZZ
@given(st.data(), NUM_CLASSES, DILATION_RATIO)
def test_fuzz_boundary_iou(data, num_classes, dilation_ratio):
    preds, target, ignore_index = data.draw(pairs(num_classes))

    def check(result):
        _image_batch(target)
        assert isinstance(result, metrics.BoundaryIoU)
        _fractions(result.per_class, (num_classes,))
        _fraction(result.mean)
        for counts in (result.intersection, result.union):
            assert counts.dtype == torch.int64 and counts.shape == (num_classes,)
        assert bool((result.intersection >= 0).all() and (result.intersection <= result.union).all())
        assert int(result.union.sum()) <= target.numel() * num_classes

    _run("boundary_iou", lambda: metrics.boundary_iou(preds, target, num_classes, dilation_ratio=dilation_ratio,
                                                       ignore_index=ignore_index), check)  # fmt: skip
