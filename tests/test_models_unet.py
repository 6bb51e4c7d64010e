"""seglab.models.unet: parameter counts, the paper's valid convolutions and overlap-tile strategy,
skip-connection ablation, upsampling modes, the ResNet encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.models import UNet, build_model
from seglab.models.unet import Up


def closed_form_count(in_channels, num_classes, base=64, depth=4, batch_norm=True, upsampling="transpose", skips=True):
    """Parameters of the paper's U-Net, counted from Fig. 1 independently of the implementation."""
    def conv3(c_in, c_out):  # 3×3 conv (+ bias, or + BN weight and bias)
        return 9 * c_in * c_out + (2 * c_out if batch_norm else c_out)

    def double(c_in, c_out):
        return conv3(c_in, c_out) + conv3(c_out, c_out)

    widths = [base * 2**level for level in range(depth + 1)]
    count = double(in_channels, base) + sum(double(a, b) for a, b in zip(widths, widths[1:]))
    for wide, narrow in zip(widths[:0:-1], widths[-2::-1]):  # 1024→512, …, 128→64
        count += (4 if upsampling == "transpose" else 1) * wide * narrow + narrow  # up-conv 2×2 or 1×1, with bias
        count += double(wide if skips else narrow, narrow)
    return count + base * num_classes + num_classes  # final 1×1 conv


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_parameter_counts():
    with torch.device("meta"):
        paper = UNet(2, in_channels=1, padding="valid", batch_norm=False)  # Fig. 1: 1 channel in, 2 classes
        rgb = UNet(2, padding="valid", batch_norm=False)
        default = build_model("unet", 2)
    assert n_params(paper) == closed_form_count(1, 2, batch_norm=False) == 31_030_658
    # The often-quoted 31,031,685 is a Keras reproduction (zhixuhao/unet) whose head is a 3×3 conv to
    # 2 channels then a 1×1 conv to 1 sigmoid output, instead of the paper's single 1×1 conv to 2 classes.
    assert n_params(paper) - (64 * 2 + 2) + (9 * 64 * 2 + 2) + (2 * 1 + 1) == 31_031_685
    assert n_params(rgb) == closed_form_count(3, 2, batch_norm=False) == 31_031_810  # + 2 · 64 · 9 first-conv weights
    assert n_params(default) == closed_form_count(3, 2, batch_norm=True) == 31_037_698  # + BN weight/bias


@pytest.mark.parametrize("kwargs", [
    {"base_channels": 16}, {"base_channels": 8, "depth": 3, "batch_norm": False},
    {"base_channels": 8, "upsampling": "bilinear"}, {"base_channels": 8, "skip_connections": False},
])
def test_small_parameter_counts(kwargs):
    with torch.device("meta"):
        model = build_model("unet", 4, **kwargs)
    expected = closed_form_count(3, 4, base=kwargs["base_channels"], depth=kwargs.get("depth", 4),
                                 batch_norm=kwargs.get("batch_norm", True), upsampling=kwargs.get("upsampling", "transpose"),
                                 skips=kwargs.get("skip_connections", True))
    assert n_params(model) == expected


def test_valid_tile_sizes_follow_the_paper():
    model = UNet(2, in_channels=1, base_channels=2, padding="valid", batch_norm=False)
    assert model.output_size(572) == 388 and model.output_size((572, 572)) == (388, 388)
    assert model.margin == 92 and model.input_size_for(388) == 572
    assert model.input_size_for(1) == 188 and model.output_size(188) == 4
    with pytest.raises(ValueError, match="573 is not a valid U-Net tile size.*572, 588"):
        model.output_size(573)
    with torch.no_grad():
        out = model.forward_tile(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert UNet(2, padding="valid", depth=2).margin == 20 and UNet(2).margin == 0


def test_valid_mode_is_translation_equivariant_in_tiles():
    """Valid convs: the output for a sub-tile shifted by a multiple of 2^depth is the same part of the output."""
    torch.manual_seed(0)
    model = UNet(3, base_channels=4, depth=3, padding="valid", batch_norm=False).eval()
    tile = model.input_size_for(40)
    x = torch.randn(1, 3, tile, tile)
    shift, sub = 8, model.input_size_for(40) - 8
    with torch.no_grad():
        full = model.forward_tile(x)
        part = model.forward_tile(x[..., shift : shift + sub, shift : shift + sub])
    size = part.shape[-1]
    assert size == full.shape[-1] - shift
    torch.testing.assert_close(part, full[..., shift : shift + size, shift : shift + size])


def test_valid_mode_overlap_tiles_give_seamless_predictions():
    """forward() mirrors the border (paper Fig. 2); away from a crop's border, predicting the crop alone
    gives the same logits as predicting the whole image."""
    torch.manual_seed(0)
    model = UNet(3, base_channels=4, depth=2, padding="valid", batch_norm=False).eval()
    assert model.margin == 20
    x = torch.randn(1, 3, 96, 100)
    with torch.no_grad():
        whole = model(x)
        crop = model(x[..., 16:80, 16:84])  # offset 16: a multiple of 2^depth keeps the pooling grid
    assert whole.shape == (1, 3, 96, 100) and crop.shape == (1, 3, 64, 68)
    m = model.margin
    torch.testing.assert_close(crop[..., m:-m, m:-m], whole[..., 16 + m : 80 - m, 16 + m : 84 - m])
    assert not torch.allclose(crop[..., :4, :4], whole[..., 16:20, 16:20])  # the mirrored border is not real context
    # Alignment: the bare network on a tile of real pixels predicts the tile's centre, pixel for pixel.
    tile = model.input_size_for(40)  # 80: its output (40 × 40) covers input pixels [m, m + 40)
    with torch.no_grad():
        direct = model.forward_tile(x[..., :tile, :tile])
    assert direct.shape[-2:] == (40, 40)
    torch.testing.assert_close(direct, whole[..., m : m + 40, m : m + 40])


def test_valid_forward_mirrors_small_images():
    model = UNet(2, base_channels=2, padding="valid", batch_norm=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 5, 7)).shape == (1, 2, 5, 7)  # mirrored many times: 5 → 188+
    with pytest.raises(ValueError, match="at least 2×2"):
        model(torch.randn(1, 3, 1, 7))


def test_same_mode_pads_to_the_multiple_and_crops():
    torch.manual_seed(0)
    model = UNet(3, base_channels=4).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        features = model.forward_features(x)
        expected = model.forward_tile(F.pad(x, (0, 13, 0, 15)))[..., :97, :131]
    torch.testing.assert_close(features["logits"], expected)
    assert features["encoder.4"].shape == (1, 64, 7, 9)  # 112 × 144 / 16
    assert [features[f"decoder.{j}"].shape[1] for j in range(4)] == [32, 16, 8, 4]
    with pytest.raises(ValueError, match="divisible by 16"):
        model.output_size(97)


def test_skip_connections_switch():
    with_skips, without = UNet(2, base_channels=8), UNet(2, base_channels=8, skip_connections=False)
    assert with_skips.decoder[0].conv[0][0].in_channels == 128  # 64 (up) + 64 (skip)
    assert without.decoder[0].conv[0][0].in_channels == 64
    # Without skips the logits are a function of the bottleneck alone (the 16× coarser map).
    torch.manual_seed(0)
    without.eval()
    with torch.no_grad():
        features = without.forward_features(torch.randn(1, 3, 64, 64))
        x = features["encoder.4"]  # (1, 128, 4, 4)
        for up in without.decoder:
            x = up(x)
        torch.testing.assert_close(without.classifier(x), features["logits"])


def test_bilinear_upsampling():
    up = Up(32, 16, 16, upsampling="bilinear")
    assert isinstance(up.up[0], torch.nn.Upsample) and up.up[1].out_channels == 16
    assert up(torch.randn(1, 32, 5, 6), torch.randn(1, 16, 10, 12)).shape == (1, 16, 10, 12)


def test_resnet_encoder_stages_and_options():
    model = build_model("unet", 3, backbone="resnet18").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 70, 90))  # padded to 96 × 96
    assert features["layer4"].shape == (1, 512, 3, 3)
    shapes = [tuple(features[f"decoder.{j}"].shape[1:]) for j in range(5)]
    assert shapes == [(256, 6, 6), (128, 12, 12), (64, 24, 24), (32, 48, 48), (16, 96, 96)]
    assert features["logits"].shape == (1, 3, 70, 90)
    with pytest.raises(ValueError, match="leave base_channels/depth unset"):
        UNet(3, encoder="resnet18", base_channels=32)
    with pytest.raises(ValueError, match="padding='same'"):
        UNet(3, encoder="resnet18", padding="valid")


def test_one_channel_input():
    model = UNet(2, in_channels=1, base_channels=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 40, 30)).shape == (2, 2, 40, 30)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(2, 3, 40, 30))
