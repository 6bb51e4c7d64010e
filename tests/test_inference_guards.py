"""seglab.inference at its boundary: InferenceOptions (the CLI's test-time flags, validated once) and the
guards of infer_logits / sliding_window_logits against runaway work and garbage (issue 16: items 4-6, 12, 13)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from seglab.inference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_PIXELS,
    MAX_TTA_SCALE,
    MAX_WINDOWS,
    InferenceOptions,
    forward_resized,
    infer_logits,
    sliding_window_logits,
)


def test_inference_options_defaults_parse_and_kwargs():
    assert InferenceOptions().as_kwargs() == {}
    options = InferenceOptions(scales="0.5, 1,1.5", flip=True, window=64, window_stride=40, crf=True, crf_max_size=300)
    assert options.scales == (0.5, 1.0, 1.5)
    assert options.as_kwargs() == {"scales": (0.5, 1.0, 1.5), "flip": True, "window": 64, "stride": 40,
                                   "crf": True, "crf_max_size": 300}  # fmt: skip
    assert InferenceOptions(scales=[1, 2]).scales == (1.0, 2.0)
    assert set(options.as_kwargs()) <= set(inspect.signature(infer_logits).parameters)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.flip = False  # type: ignore[misc]


@pytest.mark.parametrize("fields, flag, needs", [
    ({"scales": "50"}, "--tta-scales", f"> 0 and <= {MAX_TTA_SCALE:g}"),
    ({"scales": "0"}, "--tta-scales", "> 0 and <= 4"),
    ({"scales": "nan"}, "--tta-scales", "> 0 and <= 4"),
    ({"scales": ""}, "--tta-scales", "one or more"),
    ({"scales": "a,b"}, "--tta-scales", "numbers separated by commas"),
    ({"scales": (True,)}, "--tta-scales", "numbers"),
    ({"scales": 2.0}, "--tta-scales", "numbers"),
    ({"flip": "yes"}, "--tta-flip", "True or False"),
    ({"crf": 1}, "--crf", "True or False"),
    ({"window": 0}, "--window", ">= 1"),
    ({"window": 16.5}, "--window", "whole number"),
    ({"window": True}, "--window", "whole number"),
    ({"window_stride": 10}, "--window-stride", "needs --window"),
    ({"window": 32, "window_stride": 40}, "--window-stride", "at most --window"),
    ({"window": 32, "window_stride": 0}, "--window-stride", ">= 1"),
    ({"crf": True, "crf_max_size": 0}, "--crf-max-size", ">= 1"),
    ({"crf_max_size": 500}, "--crf-max-size", "needs --crf"),
])
def test_inference_options_refuse_bad_fields_naming_the_flag(fields, flag, needs):
    with pytest.raises(ValueError) as info:
        InferenceOptions(**fields)
    message = str(info.value)
    assert flag in message and needs in message and "\n" not in message


# ------------------------------------------------------------------------------------------------
# infer_logits / sliding_window_logits / forward_resized: the work checked before it starts
# ------------------------------------------------------------------------------------------------


class Counting(nn.Module):
    """A per-pixel 1x1 convolution that counts its calls (and the pixels it saw)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.calls, self.pixels = 0, 0

    def forward(self, x):
        self.calls += 1
        self.pixels += x.shape[-2] * x.shape[-1]
        return self.conv(x)


def _images(h=40, w=48, n=1):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_tta_scales_are_bounded_and_the_pixel_count_is_checked_first():
    # issue 16 item 5: --tta-scales 50 took 87 s and 6.2 GB on a 70x60 image
    model = Counting()
    with pytest.raises(ValueError, match=r"> 0 and <= 4.*got \(50\.0,\)"):
        infer_logits(model, _images(70, 60), scales=(50.0,))
    assert infer_logits(model, _images(70, 60), scales=(4.0,)).shape == (1, 3, 70, 60)  # the largest allowed
    # DeepLab's six scales with flips on a 2000x2000 image: 17.4 passes' worth of 4 Mpx, refused up front
    model = Counting()
    with pytest.raises(ValueError) as info:
        infer_logits(model, torch.zeros(1, 3, 2000, 2000), scales=(0.5, 0.75, 1, 1.25, 1.5, 1.75), flip=True)
    message = str(info.value)
    assert model.calls == 0 and f"max_pixels = {MAX_PIXELS}" in message and "2000x2000" in message
    pixels = int(re.search(r"on (\d+) pixels", message).group(1))
    assert pixels > MAX_PIXELS and all(flag in message for flag in ("--tta-scales", "--tta-flip", "--max-size"))
    # the count is exact: padded model inputs of every pass
    model = Counting()
    infer_logits(model, _images(40, 48), scales=(1.0, 1.5), flip=True, max_pixels=2 * (64 * 64 + 64 * 96))
    assert model.pixels == 2 * (64 * 64 + 64 * 96)  # 40x48 -> 64x64 padded; 60x72 -> 64x96
    with pytest.raises(ValueError, match="max_pixels"):
        infer_logits(model, _images(40, 48), scales=(1.0, 1.5), flip=True, max_pixels=2 * (64 * 64 + 64 * 96) - 1)


def test_window_below_pad_multiple_and_too_many_windows_are_refused_first():
    # issue 16 item 6: --window 1 ran one forward pass per pixel
    model = Counting()
    with pytest.raises(ValueError, match=r"window 1 is below the model's pad_multiple 32.*--window 32"):
        infer_logits(model, _images(), window=1)
    with pytest.raises(ValueError, match=r"window \(64, 16\) is below .*pad_multiple 32"):
        sliding_window_logits(model, _images(), window=(64, 16), stride=8)
    assert model.calls == 0
    big = torch.zeros(1, 3, 500, 700)
    with pytest.raises(ValueError) as info:
        infer_logits(model, big, window=32, stride=4)
    message = str(info.value)
    assert model.calls == 0 and f"max_windows = {MAX_WINDOWS}" in message and "500x700" in message
    assert re.search(r"need (\d+) windows", message).group(1) == str(118 * 168)
    assert "--window" in message and "--window-stride" in message
    with pytest.raises(ValueError, match=r"need 6 windows .* max_windows = 5"):
        sliding_window_logits(model, _images(50, 70), window=32, stride=20, max_windows=5)
    with pytest.raises(ValueError, match=r"need 12 windows .*2 flip"):
        infer_logits(model, _images(50, 70), window=32, stride=20, flip=True, max_windows=11)


def test_many_windows_show_a_progress_bar(capsys):
    model = Counting()
    images = _images(64, 96)
    infer_logits(model, images, window=32, stride=16)  # 3 x 5 = 15 windows: no bar
    assert "windows" not in capsys.readouterr().err
    out = infer_logits(model, images, window=32, stride=4, pad_multiple=32)  # 9 x 17 = 153 windows
    err = capsys.readouterr().err
    assert "windows" in err and "153" in err and out.shape == (1, 3, 64, 96)
    sliding_window_logits(model, images, window=32, stride=16, progress=True)
    assert "15" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    ({"max_size": 0}, "max_size must be a whole number >= 1"),
    ({"max_size": -5}, "max_size"),
    ({"max_size": 2.5}, "max_size"),
    ({"max_size": True}, "max_size"),
    ({"pad_multiple": 0}, "pad_multiple"),
    ({"pad_multiple": 10**9}, "pad_multiple must be a whole number from 1 to 1024"),
    ({"window": 16.5}, r"window must be a size in whole pixels >= 1.*got 16.5"),
    ({"window": (32, 32, 32)}, "window must be a size"),
    ({"window": 32, "stride": 2.5}, "stride must be a size"),
    ({"window": 32, "stride": 40}, "stride .* larger than the window"),
    ({"stride": 16}, "needs a window"),
    ({"blend": "cosine"}, "blend"),
    ({"flip": "yes"}, "flip must be True or False"),
    ({"crf": 1}, "crf must be True or False"),
    ({"crf_max_size": 100}, "give crf=True"),
    ({"crf": True, "crf_max_size": 0}, "crf_max_size"),
    ({"scales": "0.5,x"}, "numbers separated by commas"),
    ({"max_pixels": 0}, "max_pixels"),
    ({"max_windows": -1}, "max_windows"),
])  # fmt: skip
def test_bad_arguments_are_a_one_line_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        infer_logits(Counting(), _images(), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("images, error, match", [
    (torch.zeros(1, 3, 0, 8), ValueError, "empty"),
    (torch.zeros(0, 3, 8, 8), ValueError, "empty"),
    (torch.zeros(3, 8, 8), ValueError, r"\(N, 3, H, W\)"),
    (torch.zeros(1, 4, 8, 8), ValueError, r"\(N, 3, H, W\)"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ValueError, "float32"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.float16), ValueError, "float32"),
    (torch.full((1, 3, 8, 8), math.nan), ValueError, "NaN"),
    (np.zeros((1, 3, 8, 8), np.float32), TypeError, "torch.Tensor"),
])  # fmt: skip
def test_bad_images_are_refused(images, error, match):
    for fn in (lambda x: infer_logits(Counting(), x), lambda x: forward_resized(Counting(), x, None),
               lambda x: sliding_window_logits(Counting(), x, window=32, stride=16)):  # fmt: skip
        with pytest.raises(error, match=match):
            fn(images)


def test_model_output_is_checked_in_one_place():
    images = _images()  # 40x48
    conv = Counting().eval()
    expected = infer_logits(conv, images)

    class TorchvisionStyle(nn.Module):  # torchvision.models.segmentation return {"out": ..., "aux": ...}
        def forward(self, x):
            return {"out": conv(x), "aux": conv(x)[:, :1]}

    torch.testing.assert_close(infer_logits(TorchvisionStyle(), images), expected)
    torch.testing.assert_close(infer_logits(TorchvisionStyle(), images, scales=(1.0, 1.5), window=32),
                               infer_logits(conv, images, scales=(1.0, 1.5), window=32))  # fmt: skip
    cases = [
        (lambda x: conv(x)[..., ::2, ::2], ValueError, r"at the input's size; upsample them inside the model"),
        (lambda x: conv(x) * math.nan, ValueError, "non-finite scores"),
        (lambda x: torch.where(conv(x) > 0, math.inf, conv(x)), ValueError, "non-finite scores"),
        (lambda x: {"logits": conv(x)}, ValueError, r"keys \['logits'\].*'out'"),
        (lambda x: (conv(x),), TypeError, "tuple"),
        (lambda x: conv(x).argmax(1, keepdim=True), ValueError, "int64 logits"),
        (lambda x: conv(x)[:, :0], ValueError, "K >= 1"),
    ]
    for model, error, match in cases:
        for kwargs in ({}, {"max_size": 32}, {"scales": (1.0, 1.5)}, {"window": 32, "stride": 16}):
            with pytest.raises(error, match=match):
                infer_logits(model, images, **{**kwargs, "pad_multiple": 32})
    with pytest.raises(ValueError, match=r"shape \(1, 3, 32, 32\) for an input of shape \(1, 3, 64, 64\)"):
        infer_logits(lambda x: conv(x[..., :32, :32]), images)  # the repro: (1, 3, 32, 32) for 40x48
    with pytest.raises(ValueError, match="classes at one test-time pass"):
        infer_logits(lambda x: conv(x)[:, : 2 + (x.shape[-1] > 64)], images, scales=(1.0, 1.5))
    with pytest.raises(TypeError, match="callable"):
        infer_logits("model", images)


def test_crf_options_are_checked_before_the_model_runs():
    model = Counting()
    rgb = torch.randint(0, 256, (1, 3, 40, 48))
    for bad, match in [(rgb + 300, r"crf_images must be RGB in \[0, 255\]"), (rgb > 3, "bool"),
                       (rgb[..., :20], r"crf_images must be \(N, 3, H, W\) = \(1, 3, 40, 48\)")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            infer_logits(model, _images(), crf=True, crf_images=bad)
    with pytest.raises(ValueError, match="give crf=True"):
        infer_logits(model, _images(), crf_images=rgb)
    # a photo the CRF cannot hold is refused before the model runs, naming --crf-max-size
    with pytest.raises(ValueError, match=r"before the model runs.*--crf-max-size \d+"):
        infer_logits(model, torch.zeros(1, 3, 1500, 2000), crf=True, max_size=512)
    assert model.calls == 0


def test_crf_max_size_runs_the_crf_on_a_shrunk_copy():
    from seglab.crf import dense_crf

    model = Counting().eval()
    rgb = torch.randint(0, 256, (1, 3, 40, 48), dtype=torch.uint8)
    images = (rgb.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    scores = infer_logits(model, images)
    got = infer_logits(model, images, crf=True, crf_images=rgb, crf_max_size=24)
    torch.testing.assert_close(got, dense_crf(scores, rgb, max_size=24))
    assert got.shape == (1, 3, 40, 48) and torch.isfinite(got).all()
    assert not torch.equal(got, infer_logits(model, images, crf=True, crf_images=rgb))
    options = InferenceOptions(crf=True, crf_max_size=24)
    torch.testing.assert_close(infer_logits(model, images, crf_images=rgb, **options.as_kwargs()), got)
