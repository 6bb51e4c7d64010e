"""seglab.models.fcn: bilinear-initialised upsampling, skip fusion geometry, the paper's VGG16 configuration.

Not compared with torchvision's ``fcn_resnet50``: its head (dilated ResNet at stride 8, 3×3 conv 512,
bilinear interpolation, no skips) is not the paper's FCN, so there is no state dict to share.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
import torchvision

from seglab.models import FCN, build_model
from seglab.models.fcn import BilinearUpsample, bilinear_kernel


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_bilinear_init_reproduces_interpolate_in_the_interior(factor):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9)
    upsample = BilinearUpsample(3, factor)
    with torch.no_grad():
        got = upsample(x)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == expected.shape == (2, 3, 7 * factor, 9 * factor)
    border = factor  # interpolate clamps at the edge, the transposed conv sees zeros: they differ there only
    torch.testing.assert_close(got[..., border:-border, border:-border], expected[..., border:-border, border:-border])
    assert not torch.allclose(got[..., :1, :], expected[..., :1, :])  # the border really differs (zero padding)


def test_bilinear_upsample_runs_in_float32_under_autocast():
    # bf16 transposed convolutions with large kernels are many times slower on CPUs: the upsampling leaves autocast
    torch.manual_seed(0)
    upsample = BilinearUpsample(3, 32)
    x = torch.randn(2, 3, 4, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = upsample(x)
        inside = nn.ConvTranspose2d(3, 3, 64, stride=32, padding=16, bias=False)(x)  # what autocast would do
    assert got.dtype == torch.float32 and inside.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(got, upsample(x.float()))  # the same float32 computation as without autocast
    got.sum().backward()
    assert upsample.weight.grad is not None and upsample.weight.grad.dtype == torch.float32


def test_bilinear_kernel_is_per_channel_and_separable():
    kernel = bilinear_kernel(2, 2)
    assert kernel.shape == (2, 2, 4, 4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(kernel[0, 0], taps[:, None] * taps[None, :])
    assert kernel[0, 1].abs().sum() == 0 and torch.equal(kernel[1, 1], kernel[0, 0])
    with pytest.raises(ValueError, match="even integer"):
        BilinearUpsample(2, 3)


def test_learned_versus_fixed_upsampling():
    learned = build_model("fcn8s", 3, backbone="resnet18")
    fixed = build_model("fcn8s", 3, backbone="resnet18", upsampling="bilinear")
    for model, trainable in [(learned, True), (fixed, False)]:
        for name in ("upscore2", "upscore_pool4", "upscore"):
            layer = getattr(model, name)
            assert layer.weight.requires_grad is trainable
            torch.testing.assert_close(layer.weight.detach(), bilinear_kernel(3, layer.factor))
    fixed(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert fixed.upscore.weight.grad is None and fixed.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="'learned' or 'bilinear'"):
        FCN(3, backbone="resnet18", upsampling="nearest")


@pytest.mark.parametrize("variant, keys", [
    ("32s", ["score_fr"]), ("16s", ["score_fr", "fuse_pool4"]), ("8s", ["score_fr", "fuse_pool4", "fuse_pool3"]),
])
def test_skip_fusion_geometry(variant, keys):
    model = FCN(4, variant=variant, backbone="resnet18").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 97, 131))  # padded to 128 × 160
    sizes = {"score_fr": (4, 5), "fuse_pool4": (8, 10), "fuse_pool3": (16, 20)}
    assert [k for k in features if k in sizes] == keys
    for key in keys:
        assert features[key].shape == (1, 4, *sizes[key])
    assert features["layer2"].shape[-2:] == (16, 20) and features["layer4"].shape[-2:] == (4, 5)
    assert features["logits"].shape == (1, 4, 97, 131)


def test_zero_initialised_scores_still_learn_through_the_skips():
    """The paper zero-initialises score layers: the first logits are 0, yet every score layer gets a gradient."""
    model = FCN(3, variant="8s", backbone="resnet18")
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    logits = model(x)
    assert logits.abs().max() == 0
    F.cross_entropy(logits, target).backward()
    for name in ("classifier", "score_pool4", "score_pool3"):
        assert getattr(model, name).weight.grad.abs().sum() > 0, name


def test_padding_is_cropped_away():
    """Any H, W: the input is zero-padded to a multiple of 32 and the logits cropped back."""
    torch.manual_seed(0)
    model = FCN(3, variant="8s", backbone="resnet18").eval()
    for name in ("classifier", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.01)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        got = model(x)
        expected = model(F.pad(x, (0, 26, 0, 14)))[..., :50, :70]
    torch.testing.assert_close(got, expected)


def _paper_parameter_count(num_classes: int, variant: str) -> int:
    """torchvision's VGG16 minus its 1000-way classifier, plus the FCN score and upsampling layers."""
    with torch.device("meta"):
        vgg16 = sum(p.numel() for p in torchvision.models.vgg16().parameters())
    k = num_classes
    score = lambda c: c * k + k  # noqa: E731  (1×1 conv with bias)
    count = vgg16 - (4096 * 1000 + 1000) + score(4096)
    factors = {"32s": [32], "16s": [2, 16], "8s": [2, 2, 8]}[variant]
    count += sum(k * k * (2 * f) ** 2 for f in factors)  # transposed convs, no bias
    count += {"32s": 0, "16s": score(512), "8s": score(512) + score(256)}[variant]
    return count


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_paper_vgg16_parameter_count(variant):
    with torch.device("meta"):
        model = build_model(f"fcn{variant}", 21)
    count = sum(p.numel() for p in model.parameters())
    assert count == _paper_parameter_count(21, variant)
    assert 134e6 < count < 137e6  # the paper's Table 1 lists 134M for FCN-VGG16


@pytest.mark.slow
def test_paper_vgg16_fcn8s_forward_backward_odd_size():
    torch.manual_seed(0)
    model = build_model("fcn8s", 3)  # backbone vgg16, the paper's
    logits = model(torch.randn(1, 3, 97, 131))
    assert logits.shape == (1, 3, 97, 131) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.randint(0, 3, (1, 97, 131))).backward()
    assert model.score_pool3.weight.grad.abs().sum() > 0


def test_aux_head_on_stride_16_features():
    model = FCN(3, variant="16s", backbone="resnet18", aux_loss=True).eval()
    assert model.aux_classifier[0].in_channels == model.backbone.channels["layer3"] == 256
    with torch.no_grad():
        logits, aux = model.forward_with_aux(torch.randn(1, 3, 50, 70))
    assert logits.shape == aux.shape == (1, 3, 50, 70)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown FCN variant '4s'.*32s, 16s, 8s"):
        FCN(3, variant="4s")
