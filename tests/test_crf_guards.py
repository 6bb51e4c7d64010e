"""seglab.crf at its boundary (issue 16): the memory estimate checked before any work (item 4: a 3000x2250
photo was one 8.6 GB allocation), ``max_size`` (the CLI's ``--crf-max-size``: the CRF on a shrunk copy, scores
upsampled), the grid's bytes per pixel, and a clear ValueError/TypeError for every bad argument (items 12, 13)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

from seglab.crf import (
    MAX_EXACT_PIXELS,
    BilateralGrid,
    crf_features,
    crf_memory_bytes,
    dense_crf,
    exact_gaussian_filter,
    grid_gaussian_filter,
    largest_crf_size,
    mean_field_step,
    separable_gaussian_filter,
)


def _scene(h=24, w=32, k=3, seed=0):
    """Three flat colour regions with noisy logits favouring them."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(1, h, w, dtype=torch.long)
    truth[:, :, w // 2:] = 1
    truth[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 2
    colours = torch.tensor([[200.0, 40, 40], [40.0, 40, 200], [60.0, 180, 60]])
    images = (colours[truth].permute(0, 3, 1, 2) + 10 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 255)
    logits = 2 * F.one_hot(truth, k).permute(0, 3, 1, 2).float() + 1.5 * torch.randn(1, k, h, w, generator=g)
    return images, logits, truth


@pytest.fixture
def address_space_cap():
    """Cap this process's address space at its current size + 1 GiB (restored after): an allocation of more
    fails (RuntimeError / MemoryError) instead of swapping the machine."""
    resource = pytest.importorskip("resource")
    status = open("/proc/self/status").read() if os.path.exists("/proc/self/status") else ""
    match = re.search(r"VmSize:\s+(\d+) kB", status)
    if match is None:
        pytest.skip("needs /proc/self/status (Linux) to cap the address space")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int(match.group(1)) * 1024 + 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_photo_too_large_for_the_crf_is_refused_before_any_work(address_space_cap):
    # issue 16 item 4: 3000x2250 tried one 8.64 GB allocation; now refused at once with the flag that fits,
    # in a process that cannot allocate even 1 GiB more
    logits = torch.zeros(1, 2, 2250, 3000)
    images = torch.zeros(1, 3, 2250, 3000, dtype=torch.uint8)
    images[0, :, 0, 0] = 255  # the full colour range
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        dense_crf(logits, images)
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "\n" not in message and "2250x3000" in message and "max_bytes = 2.00 GiB" in message
    assert float(re.search(r"about ([\d.]+) GiB", message).group(1)) > 2  # the estimate, over the budget
    size = int(re.search(r"--crf-max-size (\d+)", message).group(1))
    assert f"dense_crf(max_size={size})" in message and f"infer_logits(crf_max_size={size})" in message
    # the size offered is the largest that fits the same estimate (full colour range, K = 2)
    assert largest_crf_size(2250, 3000, 2, max_bytes=2 * 2**30) == size
    assert 500 < size < 3000


def test_memory_estimate_bounds_the_measured_peak():
    # in a fresh process: in this one, memory freed by earlier tests would be reused and hide the peak
    code = textwrap.dedent("""
        import re, torch, torch.nn.functional as F
        from seglab.crf import crf_memory_bytes, dense_crf

        def status(field):
            return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

        g = torch.Generator().manual_seed(0)
        images = F.avg_pool2d(torch.randint(0, 256, (1, 3, 240, 320), generator=g).float(), 9, 1, 4)
        logits = torch.randn(1, 21, 240, 320, generator=g)
        flat = images.flatten(2)
        estimate = crf_memory_bytes(240, 320, 21, color_range=tuple((flat.amax(2) - flat.amin(2)).amax(0).tolist()))
        dense_crf(logits[:, :, :8, :8], images[:, :, :8, :8])  # kernels loaded once, outside the measurement
        before = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # resets the peak resident size, VmHWM (Linux >= 4.0)
        dense_crf(logits, images)
        print(status("VmHWM") - before, estimate)
    """)
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs a writable /proc/self/clear_refs (Linux) to measure the peak resident memory")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    peak, estimate = map(int, result.stdout.split())
    print(f"dense CRF 240x320 K=21: peak resident memory grew {peak / 2**20:.0f} MiB, estimate "
          f"{estimate / 2**20:.0f} MiB")
    assert peak <= estimate <= 3 * peak + 64 * 2**20, (peak, estimate)  # an upper bound, not a wild one


def test_refusal_names_the_max_size_that_fits_and_that_size_runs():
    images, logits, _ = _scene(120, 160)
    budget = 80 * 2**20
    with pytest.raises(ValueError, match="--crf-max-size") as info:
        dense_crf(logits, images, max_bytes=budget)
    size = int(re.search(r"--crf-max-size (\d+)", str(info.value)).group(1))
    assert 1 <= size < 160
    out = dense_crf(logits, images, max_bytes=budget, max_size=size)  # the advice works
    assert out.shape == logits.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="max_bytes"):
        dense_crf(logits, images, max_bytes=budget, max_size=size + 1)  # and is the largest that does


def test_max_size_runs_the_crf_on_a_shrunk_copy_and_upsamples():
    images, logits, truth = _scene(60, 80)
    got = dense_crf(logits, images, max_size=40)
    small_logits = F.interpolate(logits, size=(30, 40), mode="bilinear", align_corners=False, antialias=True)
    small_images = F.interpolate(images, size=(30, 40), mode="bilinear", align_corners=False, antialias=True)
    refined = dense_crf(small_logits, small_images.clamp(0, 255))  # the CRF at 40 px, the same parameters
    expected = F.interpolate(refined, size=(60, 80), mode="bilinear", align_corners=False).log_softmax(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(1, 60, 80))
    full = dense_crf(logits, images)
    assert (got.argmax(1) == full.argmax(1)).float().mean() > 0.95  # close to the full-size CRF here
    assert (got.argmax(1) == truth).float().mean() > (logits.argmax(1) == truth).float().mean()
    assert torch.equal(dense_crf(logits, images, max_size=80), full)  # not smaller than the image: full size


def test_batch_images_are_refined_one_at_a_time_exactly():
    images, logits, _ = _scene()
    batch_images, batch_logits = torch.cat([images, images.flip(-1)]), torch.cat([logits, logits.flip(-1)])
    out = dense_crf(batch_logits, batch_images)
    assert torch.equal(out[1:], dense_crf(batch_logits[1:], batch_images[1:]))


def test_grid_keeps_512_bytes_a_pixel_with_int32_indices():
    images, _, _ = _scene(30, 40)
    grid = BilateralGrid(crf_features(images, 10.0, 13.0))
    pixels = 30 * 40
    kept = 0
    for matrix in (grid.slice[0], grid.splat[0]):
        assert matrix.col_indices().dtype == torch.int32 and matrix.crow_indices().dtype == torch.int32
        kept += matrix.col_indices().nbytes + matrix.values().nbytes
    assert kept == 512 * pixels  # 2 matrices x 32 corners x (int32 index + float32 weight)


@pytest.mark.parametrize("kwargs, name", [
    ({"compat_bilateral": math.nan}, "compat_bilateral"),
    ({"compat_bilateral": math.inf}, "compat_bilateral"),
    ({"compat_gaussian": -1.0}, "compat_gaussian"),
    ({"compat_gaussian": True}, "compat_gaussian"),
    ({"sxy_gaussian": 0.0}, "sxy_gaussian"),
    ({"sxy_bilateral": math.nan}, "sxy_bilateral"),
    ({"srgb_bilateral": -13.0}, "srgb_bilateral"),
    ({"srgb_bilateral": "13"}, "srgb_bilateral"),
    ({"num_iterations": 1000}, "num_iterations"),
    ({"num_iterations": 2.5}, "num_iterations"),
    ({"num_iterations": True}, "num_iterations"),
    ({"passes": 100}, "passes"),
    ({"passes": 0}, "passes"),
    ({"max_cells": 0}, "max_cells"),
    ({"max_bytes": -1}, "max_bytes"),
    ({"max_bytes": math.nan}, "max_bytes"),
    ({"max_size": 0}, "max_size"),
    ({"max_size": 2.5}, "max_size"),
    ({"method": "permutohedral"}, "method"),
    ({"normalization": "row"}, "normalization"),
])  # fmt: skip
def test_bad_parameters_are_a_value_error_naming_them(kwargs, name):
    images, logits, _ = _scene(8, 9)
    with pytest.raises(ValueError, match=name) as info:
        dense_crf(logits, images, **kwargs)
    assert "\n" not in str(info.value) and "got" in str(info.value) or "not one of" in str(info.value)


def test_images_must_be_rgb_in_0_255_in_any_integer_type():
    images, logits, _ = _scene(8, 9)
    rgb = images.round()
    expected = dense_crf(logits, rgb.to(torch.uint8))
    for dtype in (torch.int16, torch.int32, torch.int64):
        torch.testing.assert_close(dense_crf(logits, rgb.to(dtype)), expected)
    for bad, match in [(rgb.long() + 100, r"\[0, 255\].*int64 values in \["), (rgb.int() - 300, r"\[0, 255\]"),
                       (rgb > 100, "bool"), (rgb / 255, r"\[0, 1\]"), (rgb.numpy(), "torch.Tensor"),
                       (torch.full_like(rgb, math.nan), r"\[0, 255\]")]:  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=match):
            dense_crf(logits, bad)


def test_logits_must_be_finite_floats():
    images, logits, _ = _scene(8, 9)
    half = dense_crf(logits.half(), images)  # computed in float32
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    with pytest.raises(ValueError, match="floating-point"):
        dense_crf(logits.long(), images)
    with pytest.raises(ValueError, match="NaN or infinite"):
        dense_crf(torch.where(logits > 1, math.inf, logits), images)
    with pytest.raises(TypeError, match="torch.Tensor"):
        dense_crf(logits.numpy(), images)


@pytest.mark.parametrize("logits_shape, images_shape", [
    ((0, 3, 8, 9), (0, 3, 8, 9)), ((1, 0, 8, 9), (1, 3, 8, 9)), ((1, 3, 0, 9), (1, 3, 0, 9)),
    ((1, 3, 8, 0), (1, 3, 8, 0)),
])  # fmt: skip
def test_empty_input_or_no_classes_is_a_clear_error(logits_shape, images_shape):
    # issue 16 item 13: dense_crf on an empty batch, an empty image or K = 0
    with pytest.raises(ValueError, match="empty") as info:
        dense_crf(torch.zeros(logits_shape), torch.zeros(images_shape))
    assert "at least 1" in str(info.value) or "at least one" in str(info.value)


def test_the_other_public_functions_check_their_arguments():
    images, logits, _ = _scene(8, 9)
    features = crf_features(images, 3.0, 13.0)
    with pytest.raises(ValueError, match="sxy"):
        crf_features(images, 0.0)
    with pytest.raises(ValueError, match="srgb"):
        crf_features(images, 3.0, math.inf)
    with pytest.raises(ValueError, match="MAX_EXACT_PIXELS"):
        exact_gaussian_filter(torch.zeros(1, 1, 65, 64), torch.zeros(1, 2, 65, 64))
    assert 65 * 64 > MAX_EXACT_PIXELS
    with pytest.raises(ValueError, match="share N, H and W"):
        exact_gaussian_filter(logits, features[..., :4])
    with pytest.raises(ValueError, match="empty"):
        separable_gaussian_filter(torch.zeros(1, 2, 0, 4), 3.0)
    with pytest.raises(ValueError, match="sxy"):
        separable_gaussian_filter(logits, -3.0)
    with pytest.raises(ValueError, match="2\\^9"):
        BilateralGrid(torch.zeros(1, 9, 4, 4))
    with pytest.raises(ValueError, match="max_cells"):
        BilateralGrid(features * 1e6)  # a grid of ~1e30 cells is refused before anything is built
    with pytest.raises(ValueError, match="H, W"):
        BilateralGrid(features).filter(logits[..., :4])
    with pytest.raises(ValueError, match="share N, H and W"):
        grid_gaussian_filter(logits[:, :, :4], features)
    with pytest.raises(ValueError, match="shape of logits"):
        mean_field_step(logits, logits.softmax(1)[:, :2], images)
    with pytest.raises(ValueError, match="height"):
        crf_memory_bytes(0, 10, 3)
    with pytest.raises(ValueError, match="color_range"):
        crf_memory_bytes(10, 10, 3, color_range=300)
    with pytest.raises(ValueError, match="dtype"):
        crf_memory_bytes(10, 10, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="max_bytes"):
        largest_crf_size(10, 10, 3, max_bytes=0)
    assert largest_crf_size(10, 10, 3, max_bytes=1) is None  # not even 1 px fits one byte
