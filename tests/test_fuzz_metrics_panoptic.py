"""Fuzz the panoptic and instance metrics of seglab.metrics (``panoptic_quality``, ``PanopticQuality``,
``instance_average_precision``, ``InstanceAP``, ``mask_iou``) in the style of tests/test_fuzz_metrics.py: random
maps and per-image dicts (mostly valid; else any dtype, rank, size, NaN / inf / negative / huge values, wrong
containers) and random parameters (good ones, and 0, negative, NaN, inf, huge, bool, str, None). Each example
returns a result of the documented types and shapes whose scores are fractions in [0, 1] or nan, or raises a
one-line ValueError that starts with the argument's name. A streaming metric left a refused batch's counts as
they were, and equals the one-call function on the batches it accepted.

The module runs under the same address-space cap as tests/test_fuzz_metrics.py (current size + 3 GiB).
``FUZZED``, ``RESULT_TYPES`` and ``CONSTANTS`` feed ``test_every_public_function_is_fuzzed`` there.
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

FUZZED = {"panoptic_quality", "PanopticQuality", "instance_average_precision", "InstanceAP", "mask_iou"}
RESULT_TYPES = {"PanopticResult", "InstanceAPResult"}  # NamedTuples the functions return
CONSTANTS = {"COCO_IOU_THRESHOLDS", "COCO_RECALL_THRESHOLDS"}  # tuples of floats, nothing to call
ARGUMENTS = ("preds ", "preds[", "targets ", "targets[", "things ", "stuffs ", "symmetric_void ",
             "iou_thresholds ", "max_detections ", "masks1 ", "masks2 ")  # fmt: skip
TALLY = FuzzTally(ARGUMENTS)
EXAMPLES, ACCEPTED = TALLY.examples, TALLY.accepted  # examples run, and returned a result, per function
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def memory_cap():
    """Cap the address space at its current size + 3 GiB for this module; report examples and seconds."""
    with TALLY.capped("panoptic / instance fuzz"):
        yield


# --- strategies ---------------------------------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]
INTEGER_DTYPES = [np.int64, np.int32, np.uint8]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _elements(dtype):
    if dtype == np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.floating):
        width = np.dtype(dtype).itemsize * 8
        return st.one_of(st.sampled_from([0.0, 1.0, 0.5, -1.0]), st.floats(width=width))
    info = np.iinfo(dtype)
    return st.one_of(st.sampled_from([v for v in (0, 1, 2, 3, -1, 255) if info.min <= v <= info.max]),
                     st.integers(int(info.min), int(info.max)))  # fmt: skip


@st.composite
def tensors(draw, shape=None, dtypes=DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(SHAPES) if shape is None else shape
    return torch.from_numpy(draw(hnp.arrays(dtype, shape, elements=_elements(dtype))))


def _mostly(valid, garbage):
    """Most draws from ``valid`` (st.one_of would favour the garbage), so that many examples reach the computation."""
    return st.integers(0, 4).flatmap(lambda i: garbage if i == 4 else valid)


NOT_TENSORS = st.sampled_from([None, 3, 2.5, "map", [], [[1, 2]], {"masks": None}, math.nan])

# panoptic: classes 0..5, split into things and stuffs
CLASS_SPLITS = st.lists(st.sampled_from(["thing", "stuff", "neither"]), min_size=1, max_size=6).filter(
    lambda roles: "neither" not in set(roles) or len(set(roles)) > 1
)
BAD_CLASSES = st.sampled_from([None, 3, "12", [-1], [2.5], [True], [math.nan], [10**6], [2**70], [1, 1.0],
                               torch.tensor([1, 2]), np.array([1])])  # fmt: skip
SYMMETRIC_VOID = _mostly(st.booleans(), st.sampled_from([None, 0, 1, "False", math.nan, np.bool_(True)]))


@st.composite
def classes(draw):
    """(things, stuffs): mostly disjoint sets of ids < 6 (as sets, lists, tuples or numpy ints), else garbage."""
    if draw(st.integers(0, 5)) == 5:
        things, stuffs = draw(BAD_CLASSES), draw(st.one_of(BAD_CLASSES, st.just({0})))
        return (things, stuffs) if draw(st.booleans()) else (stuffs, things)
    roles = draw(CLASS_SPLITS)
    kind = draw(st.sampled_from([set, list, tuple, lambda ids: [np.int64(i) for i in ids]]))
    things = kind([i for i, role in enumerate(roles) if role == "thing"])
    stuffs = kind([i for i, role in enumerate(roles) if role == "stuff"])
    if draw(st.integers(0, 9)) == 0 and roles:  # a class that is both
        things, stuffs = kind(list(things) + [0]), kind(list(stuffs) + [0])
    return things, stuffs


def _known(things, stuffs) -> list[int]:
    try:
        ids = sorted({int(i) for i in [*things, *stuffs]})
    except (TypeError, ValueError, OverflowError):
        ids = []
    return [i for i in ids if 0 <= i < 6] or [0, 1]


@st.composite
def _valid_map(draw, known, shape):
    num_segments = draw(st.integers(0, 5))
    dtype = draw(st.sampled_from(INTEGER_DTYPES))
    segments = draw(hnp.arrays(dtype, shape, elements=st.integers(0, num_segments)))
    labels = draw(hnp.arrays(draw(st.sampled_from(INTEGER_DTYPES)), (num_segments,), elements=st.sampled_from(known)))
    pair = (torch.from_numpy(segments), torch.from_numpy(labels))
    return list(pair) if draw(st.integers(0, 5)) == 0 else pair


@st.composite
def _garbage_map(draw, known, shape):
    kind = draw(st.sampled_from(["tensors", "tensors", "ids", "labels", "one", "triple", "other"]))
    if kind == "tensors":  # any dtype / rank / values
        return draw(tensors()), draw(tensors())
    if kind == "ids":  # ids past the labels, negative or huge
        segments = draw(hnp.arrays(np.int64, shape, elements=st.integers(-(2**63), 2**63 - 1)))
        return torch.from_numpy(segments), torch.tensor(known[:1])
    if kind == "labels":  # labels neither thing nor stuff, negative, huge, float
        labels = draw(tensors((draw(st.integers(0, 3)),)))
        return torch.zeros(shape, dtype=torch.int64), labels
    if kind == "one":
        return draw(tensors())
    if kind == "triple":
        return torch.zeros(shape, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(1)
    return draw(NOT_TENSORS)


IMAGE_SIDES = st.tuples(st.integers(0, 7), st.integers(0, 7))


def maps(known, shape):
    return _mostly(_valid_map(known, shape), _garbage_map(known, shape))


@st.composite
def panoptic_batch(draw, known):
    """(preds, targets): one map each, or sequences of them; mostly all valid, of one length and image size, else
    with garbage maps, other sizes, other lengths or no sequence at all."""
    clean = draw(st.integers(0, 3)) > 0
    draw_map = (lambda shape: draw(_valid_map(known, shape))) if clean else (lambda shape: draw(maps(known, shape)))
    if draw(st.integers(0, 2)) == 0:
        shape = draw(IMAGE_SIDES)
        return draw_map(shape), draw_map(shape)
    shapes = [draw(IMAGE_SIDES) for _ in range(draw(st.integers(0, 3)))]
    preds = [draw_map(s) for s in shapes]
    targets = [draw_map(s if clean or draw(st.integers(0, 4)) else draw(IMAGE_SIDES)) for s in shapes]
    if not clean and draw(st.integers(0, 4)) == 0:
        targets = targets[:-1] if targets else [draw_map((2, 2))]
    if not clean and draw(st.integers(0, 4)) == 0:
        return draw(NOT_TENSORS), targets
    return (tuple(preds) if draw(st.booleans()) else preds), targets


# instance AP: classes 0..3
@st.composite
def _valid_image(draw, shape, with_scores):
    num = draw(st.integers(0, 4))
    masks = draw(hnp.arrays(draw(st.sampled_from([np.bool_, np.bool_, np.uint8])), (num, *shape),
                            elements=st.integers(0, 1)))  # fmt: skip
    labels = draw(hnp.arrays(draw(st.sampled_from(INTEGER_DTYPES)), (num,), elements=st.integers(0, 3)))
    image = {"masks": torch.from_numpy(masks), "labels": torch.from_numpy(labels)}
    if with_scores:
        dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        score = st.one_of(st.floats(0, 1, width=np.dtype(dtype).itemsize * 8), st.sampled_from([0.5, 0.5, 0.9]),
                          st.floats(width=np.dtype(dtype).itemsize * 8, allow_nan=False))  # fmt: skip
        image["scores"] = torch.from_numpy(draw(hnp.arrays(dtype, (num,), elements=score)))
    return image


@st.composite
def _garbage_image(draw, shape, with_scores):
    image = draw(_valid_image(shape, with_scores))
    kind = draw(st.sampled_from(["replace", "replace", "replace", "drop", "other"]))
    if kind == "drop":
        image.pop(draw(st.sampled_from(sorted(image))))
    elif kind == "replace":  # one entry of any dtype, rank, size, values (NaN scores, huge labels, float masks)
        image[draw(st.sampled_from(sorted(image)))] = draw(st.one_of(tensors(), NOT_TENSORS))
    else:
        return draw(st.one_of(NOT_TENSORS, st.just({1: "a", "masks": 2}), tensors()))
    return image


@st.composite
def instance_batch(draw):
    """(preds, targets): lists of per-image dicts; mostly all valid, of one length and mask size, else with garbage
    dicts, other sizes, other lengths or no list at all."""
    clean = draw(st.integers(0, 3)) > 0
    shapes = [draw(IMAGE_SIDES) for _ in range(draw(st.integers(0, 3)))]

    def image(shape, with_scores):
        valid = _valid_image(shape, with_scores)
        return draw(valid if clean else _mostly(valid, _garbage_image(shape, with_scores)))

    preds = [image(s, True) for s in shapes]
    targets = [image(s if clean or draw(st.integers(0, 4)) else draw(IMAGE_SIDES), False) for s in shapes]
    if not clean and draw(st.integers(0, 4)) == 0:
        targets = targets[:-1] if targets else [image((2, 2), False)]
    if not clean and draw(st.integers(0, 4)) == 0:
        return draw(st.one_of(NOT_TENSORS, tensors(), st.just({"masks": torch.zeros(0, 2, 2)}))), targets
    return (tuple(preds) if draw(st.booleans()) else preds), targets


IOU_THRESHOLDS = _mostly(
    st.one_of(st.just(metrics.COCO_IOU_THRESHOLDS), st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4),
              st.just([0.5, 0.75]), st.just((1,))),
    st.sampled_from([[], None, 0.5, "0.5", [0.0], [-0.5], [1.5], [math.nan], [math.inf], [True], [None],
                     torch.tensor([0.5]), [10**400]]),
)  # fmt: skip
MAX_DETECTIONS = _mostly(st.one_of(st.integers(1, 5), st.just(100), st.integers(1, 10**30)),
                         st.sampled_from([0, -1, None, True, 2.5, "100", math.inf, math.nan, np.int64(0)]))  # fmt: skip


# --- checks -------------------------------------------------------------------------------------------------------


_run, _refused_cleanly = TALLY.run, TALLY.refused_cleanly
_fractions, _fraction = fractions, fraction


def _check_panoptic(result, things, stuffs) -> None:
    assert isinstance(result, metrics.PanopticResult)
    for score in result[:9]:
        _fraction(score)
    k = max(int(i) for i in [*things, *stuffs]) + 1
    for per_class in (result.pq_per_class, result.sq_per_class, result.rq_per_class):
        _fractions(per_class, (k,))
    for counts in (result.tp, result.fp, result.fn):
        assert counts.dtype == torch.int64 and counts.shape == (k,) and bool((counts >= 0).all())
    assert result.iou_sum.dtype == torch.float64 and result.iou_sum.shape == (k,)
    assert bool(((result.iou_sum >= 0) & (result.iou_sum <= result.tp + 1e-9)).all())
    appears = (result.tp + result.fp + result.fn) > 0
    assert torch.equal(appears, ~result.pq_per_class.isnan())  # nan exactly for the classes that never appear
    assert math.isnan(result.pq) == (not bool(appears.any()))


def _check_instance(result, iou_thresholds) -> None:
    assert isinstance(result, metrics.InstanceAPResult)
    for score in result[:3]:
        _fraction(score)
    k = len(result.ap_per_class)
    _fractions(result.ap_per_class, (k,))
    _fractions(result.ap50_per_class, (k,))
    _fractions(result.precision, (len(iou_thresholds), 101, k))
    if 0.5 not in [float(t) for t in iou_thresholds]:
        assert math.isnan(result.ap50)


# --- one property per public name ---------------------------------------------------------------------------------


@FUZZ
@given(st.data(), classes(), SYMMETRIC_VOID)
def test_fuzz_panoptic_quality(data, things_stuffs, symmetric_void):
    things, stuffs = things_stuffs
    preds, targets = data.draw(panoptic_batch(_known(things, stuffs)))
    _run("panoptic_quality",
         lambda: metrics.panoptic_quality(preds, targets, things=things, stuffs=stuffs, symmetric_void=symmetric_void),
         lambda result: _check_panoptic(result, things, stuffs))  # fmt: skip


@FUZZ
@given(st.data(), classes(), SYMMETRIC_VOID)
def test_fuzz_panoptic_quality_class(data, things_stuffs, symmetric_void):
    things, stuffs = things_stuffs
    batches = [data.draw(panoptic_batch(_known(things, stuffs))) for _ in range(2)]
    accepted = []

    def call():
        metric = metrics.PanopticQuality(things=things, stuffs=stuffs, symmetric_void=symmetric_void)
        for preds, targets in batches:
            before = metric.compute()
            try:
                metric.update(preds, targets)
                accepted.append((preds, targets))
            except ValueError as error:  # a refused batch leaves the counts as they were
                _refused_cleanly(error)
                after = metric.compute()
                assert all(torch.equal(getattr(before, f), getattr(after, f)) for f in ("tp", "fp", "fn", "iou_sum"))
        return metric

    def check(metric):
        result = metric.compute()
        _check_panoptic(result, things, stuffs)
        one_call = metrics.PanopticQuality(things=things, stuffs=stuffs, symmetric_void=symmetric_void)
        for preds, targets in accepted:
            one_call.update(preds, targets)
        expected = one_call.compute()
        assert all(torch.equal(getattr(result, f), getattr(expected, f)) for f in ("tp", "fp", "fn"))
        metric.reset()
        assert int(metric.compute().tp.sum()) == 0

    _run("PanopticQuality", call, check)


@FUZZ
@given(instance_batch(), IOU_THRESHOLDS, MAX_DETECTIONS)
def test_fuzz_instance_average_precision(batch, iou_thresholds, max_detections):
    preds, targets = batch
    _run("instance_average_precision",
         lambda: metrics.instance_average_precision(preds, targets, iou_thresholds=iou_thresholds,
                                                    max_detections=max_detections),
         lambda result: _check_instance(result, iou_thresholds))  # fmt: skip


@FUZZ
@given(instance_batch(), instance_batch(), IOU_THRESHOLDS, MAX_DETECTIONS)
def test_fuzz_instance_ap_class(first, second, iou_thresholds, max_detections):
    accepted = []

    def call():
        metric = metrics.InstanceAP(iou_thresholds=iou_thresholds, max_detections=max_detections)
        for preds, targets in (first, second):
            before = metric.compute().precision
            try:
                metric.update(preds, targets)
                accepted.append((preds, targets))
            except ValueError as error:  # a refused batch leaves what was seen as it was
                _refused_cleanly(error)
                assert torch.equal(metric.compute().precision.nan_to_num(-1), before.nan_to_num(-1))
        return metric

    def check(metric):
        result = metric.compute()
        _check_instance(result, iou_thresholds)
        expected = metrics.instance_average_precision([p for b in accepted for p in b[0]],
                                                      [t for b in accepted for t in b[1]],
                                                      iou_thresholds=iou_thresholds, max_detections=max_detections)
        assert torch.equal(result.precision.nan_to_num(-1), expected.precision.nan_to_num(-1))

    _run("InstanceAP", call, check)


@FUZZ
@given(st.data())
def test_fuzz_mask_iou(data):
    if data.draw(st.integers(0, 2)):  # mostly two mask stacks of one size
        side = data.draw(IMAGE_SIDES)
        dtypes = [np.bool_, np.bool_, np.uint8] if data.draw(st.integers(0, 3)) else DTYPES
        masks1, masks2 = (data.draw(tensors((data.draw(st.integers(0, 4)), *side), dtypes)) for _ in range(2))
    else:
        masks1, masks2 = (data.draw(st.one_of(tensors(), NOT_TENSORS)) for _ in range(2))

    def check(iou):
        _fractions(iou, (len(masks1), len(masks2)))
        self_iou = metrics.mask_iou(masks1, masks1).diagonal()  # 1 for a non-empty mask with itself, else 0
        assert torch.equal(self_iou, masks1.flatten(1).bool().any(1).double())

    _run("mask_iou", lambda: metrics.mask_iou(masks1, masks2), check)


def test_sizes_follow_the_segments_and_classes_present_not_the_ids():
    # a 2x2 map with 10**5 labels: the overlap table is (U + 1) x (U + 1) for the U segments present, not 10**10
    # entries; a class id of 10**9 is refused instead of sizing a (T, 101, 10**9) precision table
    labels = torch.ones(10**5, dtype=torch.int64)
    segments = torch.tensor([[0, 1], [2, 10**5]])
    result = metrics.panoptic_quality((segments, labels), (segments, labels), things={1}, stuffs={0})
    assert result.tp.tolist() == [0, 3] and result.pq == 1.0
    image = {"masks": torch.ones(1, 2, 2, dtype=torch.bool), "labels": torch.tensor([10**9])}
    with pytest.raises(ValueError, match=r"^preds\[0\]\['labels'\] must be class ids in \[0, 4096\)"):
        metrics.instance_average_precision([{**image, "scores": torch.ones(1)}], [image])
