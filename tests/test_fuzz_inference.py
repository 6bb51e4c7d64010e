"""Fuzz every public function of seglab.inference and seglab.crf (issue 16): random tensors (dtype float16/32/64,
int64, uint8, bool; rank 2 to 5, zero sizes included; NaN, inf, negative, huge and [0, 255] values), random
parameters (good ones, and 0, negative, NaN, inf, huge, bool, str, floats where ints go) and misbehaving
models (NaN scores, logits of the wrong size, torchvision's dict, a tuple). Each example returns a finite result
of the documented shape, or raises a one-line ValueError or TypeError. Nothing else: no RuntimeError,
IndexError, OverflowError or MemoryError from inside torch.

The module runs under an address-space cap (current size + 4 GiB) so that a runaway allocation fails the
example instead of the machine. ``pytest tests/test_fuzz_inference.py -s`` prints examples and seconds.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import address_space_cap

import seglab.crf as crf
import seglab.inference as inference

EXAMPLES = Counter()  # examples run per function
ACCEPTED = Counter()  # of which returned a result (the others were refused with a ValueError / TypeError)
FUZZ = settings(max_examples=int(os.environ.get("SEGLAB_FUZZ_EXAMPLES", 60)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
CONSTANTS = {"MAX_TTA_SCALE", "MAX_PIXELS", "MAX_WINDOWS", "IMAGENET_MEAN", "IMAGENET_STD", "MAX_EXACT_PIXELS",
             "MAX_ITERATIONS", "DEFAULT_MAX_BYTES"}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def memory_cap():
    """Cap the address space at its current size + 4 GiB for this module; report examples and seconds."""
    start = time.perf_counter()
    with address_space_cap(4 * 2**30):
        yield
        print(f"\nseglab.inference + seglab.crf fuzz: {sum(EXAMPLES.values())} examples ({sum(ACCEPTED.values())} "
              f"returned a result, the others refused) in {time.perf_counter() - start:.1f} s; per function (run, "
              "returned): " + ", ".join(f"{name} ({n}, {ACCEPTED[name]})" for name, n in EXAMPLES.items()))


# --- strategies ---------------------------------------------------------------------------------------------------

DTYPES = [torch.float16, torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]
FILLS = ["normal", "rgb", "nan", "inf", "huge", "negative", "zeros"]


@st.composite
def tensors(draw, shape=None, dtypes=DTYPES, fills=FILLS):
    """A tensor of a random dtype, shape (rank 2-5, sides 0-6, unless given) and fill."""
    dtype = draw(st.sampled_from(dtypes))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 6), min_size=2, max_size=5)))
    fill = draw(st.sampled_from(fills))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if fill == "rgb":
        x = (torch.rand(shape, generator=g, dtype=torch.float64) * 255).round()
    elif fill == "huge":
        x = x * 1e300 if dtype == torch.float64 else x * 1e38
    elif fill == "negative":
        x = -x.abs() * 300
    elif fill == "zeros":
        x = torch.zeros(shape, dtype=torch.float64)
    elif fill in ("nan", "inf") and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = math.nan if fill == "nan" else -math.inf
    if dtype == torch.bool:
        return x > 0
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        return x.nan_to_num(0.0, info.max, info.min).clamp(info.min, info.max).to(dtype)
    return x.to(dtype)


def _mostly(valid, garbage, odds: int = 4):
    """One draw in ``odds`` from ``garbage``, the others from ``valid`` (st.one_of would favour the garbage), so
    that many examples reach the computation."""
    return st.integers(1, odds).flatmap(lambda i: garbage if i == odds else valid)


def _rarely(valid, garbage):
    """For each of several arguments of one call: one draw in 12 is garbage."""
    return _mostly(valid, garbage, 12)


SIDES = st.integers(1, 7)
BAD = st.sampled_from([0, -1, 2.5, math.nan, math.inf, True, "3", None, 10**30])


@st.composite
def normalised_images(draw):
    """Mostly (N, 3, H, W) float32 ImageNet-normalised images, sometimes anything."""
    shape = (draw(st.integers(1, 2)), 3, draw(SIDES), draw(SIDES))
    valid = tensors(shape, dtypes=[torch.float32, torch.float32, torch.float64], fills=["normal", "zeros"])
    return draw(_mostly(valid, tensors()))


@st.composite
def models(draw):
    """A per-pixel model (any float dtype), K = 2 or 3, or one that misbehaves."""
    k = draw(st.integers(2, 3))
    kind = draw(st.sampled_from(["good"] * 12 + ["dict"] * 2 + ["nan", "half_size", "tuple", "ints", "inf"]))

    def good(x):
        return torch.stack([x.sum(1), x[:, 0] - x[:, 1], x[:, 2]][:k], 1)

    return {"good": good, "dict": lambda x: {"out": good(x)}, "nan": lambda x: good(x) * math.nan,
            "half_size": lambda x: good(x)[..., ::2, ::2], "tuple": lambda x: (good(x),),
            "ints": lambda x: good(x).long(), "inf": lambda x: good(x) / 0}[kind], k  # fmt: skip


def _refused_cleanly(error: Exception) -> None:
    message = str(error)
    assert isinstance(error, (ValueError, TypeError)), f"{type(error).__name__}: {message}"
    assert "\n" not in message and message, message


def _run(name, call, check):
    EXAMPLES[name] += 1
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - anything but a clean ValueError / TypeError fails the example
        _refused_cleanly(error)
        return
    check(result)
    ACCEPTED[name] += 1


def _finite(t, shape, dtype=None) -> None:
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(shape), (type(t), getattr(t, "shape", None), shape)
    assert dtype is None or t.dtype == dtype, t.dtype
    assert bool(torch.isfinite(t).all()), t


FUZZED = {"InferenceOptions", "infer_logits", "sliding_window_logits", "forward_resized", "parse_scales",
          "BilateralGrid", "crf_features", "crf_memory_bytes", "dense_crf", "exact_gaussian_filter",
          "grid_gaussian_filter", "largest_crf_size", "mean_field_step", "separable_gaussian_filter",
          "PermutohedralLattice", "lattice_gaussian_filter"}  # fmt: skip


def test_every_public_function_is_fuzzed():
    assert (set(inference.__all__) | set(crf.__all__)) - CONSTANTS == FUZZED


# --- seglab.inference ---------------------------------------------------------------------------------------------


@FUZZ
@given(images=normalised_images(), model=models(), data=st.data())
def test_infer_logits(images, model, data):
    model, k = model
    kwargs = {
        "max_size": data.draw(_rarely(st.sampled_from([None, 4, 9]), BAD)),
        "pad_multiple": data.draw(_rarely(st.sampled_from([1, 2, 4]), BAD)),
        "scales": data.draw(_rarely(st.sampled_from([(1.0,), (1.0, 1.5), (0.5, 2.0), (4.0,)]),
                                    st.sampled_from([(), (50.0,), (math.nan,), "1,x", (True,), 2.0, "0.5,1"]))),
        "flip": data.draw(_rarely(st.booleans(), st.sampled_from(["yes", 1, None]))),
        "window": data.draw(_rarely(st.sampled_from([None, None, 4, (4, 6)]), BAD)),
        "crf": data.draw(_rarely(st.sampled_from([False, False, True]), st.sampled_from([1, "no"]))),
    }  # fmt: skip
    if kwargs["window"] is not None and data.draw(st.booleans()):
        kwargs["stride"] = data.draw(_rarely(st.sampled_from([2, 3]), BAD))
    if kwargs["crf"] is True and data.draw(st.booleans()):
        kwargs["crf_max_size"] = data.draw(_rarely(st.sampled_from([3, 5]), BAD))
        if data.draw(st.booleans()):
            kwargs["crf_images"] = data.draw(_rarely(tensors(images.shape, fills=["rgb"]), tensors()))
    n, _, h, w = images.shape if images.dim() == 4 else (0, 0, 0, 0)
    _run("infer_logits", lambda: infer(model, images, kwargs),
         lambda out: _finite(out, (n, k, h, w), torch.float32))  # fmt: skip


def infer(model, images, kwargs):
    return inference.infer_logits(model, images, **kwargs)


@FUZZ
@given(images=normalised_images(), model=models(), window=_mostly(st.sampled_from([2, 3, (2, 5)]), BAD),
       stride=_mostly(st.sampled_from([1, 2]), BAD), pad_multiple=_mostly(st.sampled_from([1, 2]), BAD),
       blend=st.sampled_from(["gaussian", "uniform", "cosine"]))
def test_sliding_window_logits(images, model, window, stride, pad_multiple, blend):
    model, k = model
    n, _, h, w = images.shape if images.dim() == 4 else (0, 0, 0, 0)
    _run("sliding_window_logits",
         lambda: inference.sliding_window_logits(model, images, window=window, stride=stride, blend=blend,
                                                 pad_multiple=pad_multiple),
         lambda out: _finite(out, (n, k, h, w), torch.float32))  # fmt: skip


@FUZZ
@given(images=normalised_images(), model=models(), max_size=_mostly(st.sampled_from([None, 1, 3, 8]), BAD),
       pad_multiple=_mostly(st.sampled_from([1, 4, 32]), BAD))
def test_forward_resized(images, model, max_size, pad_multiple):
    model, k = model
    n, _, h, w = images.shape if images.dim() == 4 else (0, 0, 0, 0)
    _run("forward_resized", lambda: inference.forward_resized(model, images, max_size, pad_multiple),
         lambda out: _finite(out, (n, k, h, w)))


SCALE_TEXT = _mostly(st.sampled_from(["0.5,1,1.5", "1", "4", " 1 , 2 ", (0.75, 1.25), [1, 2]]), st.one_of(
                     st.text(max_size=12), st.lists(st.one_of(st.floats(), st.integers(-5, 5), st.booleans(),
                                                                 st.text(max_size=3)), max_size=4),
                     st.sampled_from(["4.0001", "0", "nan", 1.5, None, (), "1,,2", [True]])))  # fmt: skip


@FUZZ
@given(text=SCALE_TEXT)
def test_parse_scales(text):
    def check(scales):
        assert isinstance(scales, tuple) and scales and all(type(s) is float and 0 < s <= 4 for s in scales)

    _run("parse_scales", lambda: inference.parse_scales(text), check)


@FUZZ
@given(scales=SCALE_TEXT, flip=_rarely(st.booleans(), BAD), window=_rarely(st.sampled_from([None, 32, 512]), BAD),
       window_stride=_rarely(st.sampled_from([None, None, 16, 341]), BAD), crf=_rarely(st.booleans(), BAD),
       crf_max_size=_rarely(st.sampled_from([None, None, 500]), BAD))
def test_inference_options(scales, flip, window, window_stride, crf, crf_max_size):
    def check(options):
        kwargs = options.as_kwargs()
        assert set(kwargs) <= {"scales", "flip", "window", "stride", "crf", "crf_max_size"}

    def build():
        try:
            return inference.InferenceOptions(scales, flip, window, window_stride, crf, crf_max_size)
        except ValueError as error:  # each message names the flag
            assert re.match(r"--(tta-scales|tta-flip|window|window-stride|crf|crf-max-size)\b", str(error)), error
            raise

    _run("InferenceOptions", build, check)


# --- seglab.crf ---------------------------------------------------------------------------------------------------


@st.composite
def crf_inputs(draw):
    """(logits, images): mostly a valid pair of (N, K, H, W) float logits and (N, 3, H, W) RGB, sometimes anything."""
    n, k, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(SIDES), draw(SIDES)
    valid = st.tuples(tensors((n, k, h, w), dtypes=[torch.float16, torch.float32, torch.float64],
                              fills=["normal", "huge", "negative", "zeros"]),
                      tensors((n, 3, h, w), dtypes=[torch.uint8, torch.float32, torch.int64, torch.float64],
                              fills=["rgb", "zeros"]))  # fmt: skip
    garbage = st.tuples(tensors(), tensors())
    return draw(_mostly(valid, garbage))


SIGMA = _mostly(st.one_of(st.floats(0.5, 200.0), st.sampled_from([1e-3, 1e6])), BAD)
WEIGHT = _mostly(st.floats(0.0, 20.0), st.one_of(BAD, st.sampled_from([-1.0, 1e7])))
RARE_SIGMA = _rarely(st.one_of(st.floats(0.5, 200.0), st.sampled_from([1e-3, 1e6])), BAD)
RARE_WEIGHT = _rarely(st.floats(0.0, 20.0), st.one_of(BAD, st.sampled_from([-1.0, 1e7])))


@FUZZ
@given(pair=crf_inputs(), method=st.sampled_from(["fast", "fast", "exact", "lattice"]), data=st.data())
def test_dense_crf(pair, method, data):
    logits, images = pair
    kwargs = {"num_iterations": data.draw(_rarely(st.integers(0, 3), st.sampled_from([-1, 2.5, 1000, True]))),
              "sxy_gaussian": data.draw(RARE_SIGMA), "compat_gaussian": data.draw(RARE_WEIGHT),
              "sxy_bilateral": data.draw(RARE_SIGMA), "srgb_bilateral": data.draw(RARE_SIGMA),
              "compat_bilateral": data.draw(RARE_WEIGHT)}  # fmt: skip
    if data.draw(st.booleans()):
        kwargs["max_size"] = data.draw(_rarely(st.sampled_from([2, 5]), BAD))
    if data.draw(st.booleans()):
        kwargs["normalization"] = data.draw(st.sampled_from(["symmetric", "none", "row"]))
    if method == "fast" and data.draw(st.booleans()):
        kwargs["passes"] = data.draw(_rarely(st.integers(1, 3), BAD))
    _run("dense_crf", lambda: crf.dense_crf(logits, images, method=method, **kwargs),
         lambda out: _finite(out, logits.shape, torch.float32))


@FUZZ
@given(pair=crf_inputs(), method=st.sampled_from(["fast", "exact"]), q_garbage=st.booleans(), data=st.data())
def test_mean_field_step(pair, method, q_garbage, data):
    logits, images = pair
    q = data.draw(tensors()) if q_garbage or not logits.is_floating_point() else logits.float().softmax(1)

    def check(out):
        _finite(out, logits.shape)
        assert bool(((out >= 0) & (out <= 1)).all())

    _run("mean_field_step", lambda: crf.mean_field_step(logits, q, images, method=method,
                                                        compat_bilateral=data.draw(WEIGHT)), check)  # fmt: skip


@FUZZ
@given(images=_mostly(st.builds(lambda n, h, w: (n, 3, h, w), st.integers(1, 2), SIDES, SIDES).flatmap(
    lambda s: tensors(s, fills=["rgb", "zeros"])), tensors()), sxy=SIGMA, srgb=st.one_of(st.none(), SIGMA))
def test_crf_features(images, sxy, srgb):
    shape = (images.shape[0], 2 if srgb is None else 5, *images.shape[2:]) if images.dim() == 4 else None
    _run("crf_features", lambda: crf.crf_features(images, sxy, srgb), lambda out: _finite(out, shape))


@st.composite
def values_and_features(draw):
    n, h, w = draw(st.integers(1, 2)), draw(SIDES), draw(SIDES)
    valid = st.tuples(tensors((n, draw(st.integers(1, 3)), h, w), dtypes=[torch.float16, torch.float32, torch.float64],
                              fills=["normal", "huge", "zeros"]),
                      tensors((n, draw(st.integers(1, 5)), h, w), dtypes=[torch.float32, torch.float64],
                              fills=["normal", "zeros", "huge"]))  # fmt: skip
    return draw(_mostly(valid, st.tuples(tensors(), tensors())))


@FUZZ
@given(pair=values_and_features())
def test_exact_gaussian_filter(pair):
    values, features = pair
    _run("exact_gaussian_filter", lambda: crf.exact_gaussian_filter(values, features),
         lambda out: _finite(out, values.shape, values.dtype))


@FUZZ
@given(pair=values_and_features(), sxy=SIGMA)
def test_separable_gaussian_filter(pair, sxy):
    values, _ = pair
    _run("separable_gaussian_filter", lambda: crf.separable_gaussian_filter(values, sxy),
         lambda out: _finite(out, values.shape, values.dtype))


@FUZZ
@given(pair=values_and_features(), passes=_mostly(st.integers(1, 3), BAD),
       max_cells=_mostly(st.sampled_from([2**25, 1000]), BAD))
def test_grid_gaussian_filter(pair, passes, max_cells):
    values, features = pair
    _run("grid_gaussian_filter", lambda: crf.grid_gaussian_filter(values, features, passes=passes, max_cells=max_cells),
         lambda out: _finite(out, values.shape, values.dtype))


@FUZZ
@given(pair=values_and_features(), passes=_mostly(st.integers(1, 3), BAD))
def test_bilateral_grid(pair, passes):
    values, features = pair

    def build_and_filter():
        grid = crf.BilateralGrid(features, passes=passes)
        return grid.filter(values), grid.self_weight

    def check(result):
        out, self_weight = result
        _finite(out, values.shape, values.dtype)
        _finite(self_weight, (features.shape[0], 1, *features.shape[2:]))

    _run("BilateralGrid", build_and_filter, check)


@FUZZ
@given(pair=values_and_features())
def test_lattice_gaussian_filter(pair):
    values, features = pair
    _run("lattice_gaussian_filter", lambda: crf.lattice_gaussian_filter(values, features),
         lambda out: _finite(out, values.shape, values.dtype))


@FUZZ
@given(pair=values_and_features())
def test_permutohedral_lattice(pair):
    values, features = pair

    def build_and_filter():
        lattice = crf.PermutohedralLattice(features)
        return lattice.filter(values), lattice.self_weight

    def check(result):
        out, self_weight = result
        _finite(out, values.shape, values.dtype)
        _finite(self_weight, (features.shape[0], 1, *features.shape[2:]))

    _run("PermutohedralLattice", build_and_filter, check)


SIZE = _rarely(st.integers(1, 5000), st.sampled_from([0, -3, 2.5, True, None, "9", 2**70]))


@FUZZ
@given(height=SIZE, width=SIZE, k=SIZE, sxy=RARE_SIGMA, srgb=RARE_SIGMA, passes=_rarely(st.integers(1, 4), BAD),
       color_range=_rarely(st.one_of(st.floats(0, 255), st.tuples(*[st.floats(0, 255)] * 3)),
                           st.sampled_from([300, -1, math.nan, (1, 2), "255"])),
       method=_rarely(st.sampled_from(["fast", "exact"]), st.just("grid")),
       dtype=_rarely(st.sampled_from([torch.float32, torch.float64]), st.just(torch.int64)),
       max_bytes=_rarely(st.sampled_from([2**31, 2**20, 1e12]), BAD))
def test_crf_memory_bytes_and_largest_size(height, width, k, sxy, srgb, passes, color_range, method, dtype, max_bytes):
    options = dict(sxy_bilateral=sxy, srgb_bilateral=srgb, passes=passes, color_range=color_range, method=method,
                   dtype=dtype)  # fmt: skip

    def size_check(size):
        assert size is None or (type(size) is int and 1 <= size <= max(height, width))

    _run("crf_memory_bytes", lambda: crf.crf_memory_bytes(height, width, k, **options),
         lambda out: type(out) is int and out > 0 or pytest.fail(repr(out)))
    _run("largest_crf_size", lambda: crf.largest_crf_size(height, width, k, max_bytes=max_bytes, **options), size_check)
