"""seglab.models.deeplab: parity with torchvision's DeepLabV3, output stride, ASPP rates, the V3+ decoder."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seglab.models import DeepLabV3, DeepLabV3Plus, build_model, convert_torchvision_state_dict
from seglab.models.deeplab import ASPP


def randomize_batch_norm(model: nn.Module) -> nn.Module:
    """Non-identity BatchNorm statistics and affines, so that a swapped BN would change the output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, scale in [(module.weight, 0.5, 1.0), (module.running_var, 0.5, 1.0)]:
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * scale + low)
                for tensor in (module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("aux_loss", [False, True])
def test_deeplabv3_resnet50_equals_torchvision(aux_loss):
    torch.manual_seed(0)
    reference = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=aux_loss
    )
    randomize_batch_norm(reference).eval()
    ours = DeepLabV3(21, backbone="resnet50", output_stride=8, aux_loss=aux_loss)
    ours.load_state_dict(convert_torchvision_state_dict(reference.state_dict()))
    ours.eval()
    x = torch.randn(2, 3, 67, 93)
    with torch.no_grad():
        expected = reference(x)
        got = ours.forward_with_aux(x) if aux_loss else (ours(x),)
    assert (got[0] - expected["out"]).abs().max() < 1e-5
    assert expected["out"].abs().max() > 1  # not a trivially small output
    if aux_loss:
        assert (got[1] - expected["aux"]).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_resnet101"])
@pytest.mark.parametrize("aux_loss", [False, True])
def test_parameter_count_equals_torchvision(name, aux_loss):
    with torch.device("meta"):
        reference = getattr(torchvision.models.segmentation, name)(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=aux_loss
        )
        ours = build_model("deeplabv3", 21, backbone=name.split("_")[1], aux_loss=aux_loss)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    if name.endswith("50") and not aux_loss:
        assert sum(p.numel() for p in ours.parameters()) == 39_638_869


def test_convert_rejects_foreign_keys():
    with pytest.raises(ValueError, match="unexpected key 'head.weight'.*deeplabv3_resnet50"):
        convert_torchvision_state_dict({"head.weight": torch.zeros(1)})


@pytest.mark.parametrize("model_class", [DeepLabV3, DeepLabV3Plus])
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_head_input_is_exactly_at_the_output_stride(model_class, backbone, output_stride):
    model = model_class(3, backbone=backbone, output_stride=output_stride).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 64, 96))
    assert features["layer4"].shape[-2:] == (64 // output_stride, 96 // output_stride)
    assert features["aspp"].shape == (1, 256, 64 // output_stride, 96 // output_stride)
    assert features["logits"].shape == (1, 3, 64, 96)
    if model_class is DeepLabV3Plus:
        assert features["decoder"].shape == (1, 256, 16, 24)  # stride 4
    rates = {16: (6, 12, 18), 8: (12, 24, 36)}[output_stride]
    assert model.aspp.atrous_rates == rates
    assert [branch[0].dilation[0] for branch in model.aspp.branches[1:4]] == list(rates)
    assert [branch[0].padding[0] for branch in model.aspp.branches[1:4]] == list(rates)
    expected_dilation = {16: {"layer3": 1, "layer4": 2}, 8: {"layer3": 2, "layer4": 4}}[output_stride]
    assert model.backbone.dilations == expected_dilation
    last_3x3 = model.backbone.layer4[-1].conv2
    assert last_3x3.dilation == (expected_dilation["layer4"],) * 2 and last_3x3.stride == (1, 1)


def test_aspp_structure():
    aspp = ASPP(512, (6, 12, 18))
    kinds = [type(branch).__name__ for branch in aspp.branches]
    assert kinds == ["ConvBNReLU", "ConvBNReLU", "ConvBNReLU", "ConvBNReLU", "ASPPPooling"]
    assert aspp.branches[0][0].kernel_size == (1, 1) and aspp.project[0].in_channels == 5 * 256
    x = torch.randn(2, 512, 5, 7)
    aspp.eval()
    with torch.no_grad():
        pooled = aspp.branches[4](x)
    assert pooled.shape == (2, 256, 5, 7)
    torch.testing.assert_close(pooled, pooled[..., :1, :1].expand_as(pooled))  # image-level: constant over space


def test_deeplabv3plus_decoder_structure():
    model = DeepLabV3Plus(5, backbone="resnet50")
    assert model.decoder.project[0].in_channels == 256 and model.decoder.project[0].out_channels == 48
    assert [conv[0].in_channels for conv in model.decoder.fuse] == [256 + 48, 256]
    assert all(conv[0].kernel_size == (3, 3) and conv[0].out_channels == 256 for conv in model.decoder.fuse)
    assert model.classifier.in_channels == 256 and model.classifier.out_channels == 5


def test_default_configuration():
    with torch.device("meta"):
        model = build_model("deeplabv3plus", 21)
    assert model.backbone.name == "resnet50" and model.output_stride == 16


def test_training_with_one_image_is_explained():
    model = build_model("deeplabv3", 3, backbone="resnet18").train()
    with pytest.raises(ValueError, match="batch of at least 2 images; got 1"):
        model(torch.randn(1, 3, 64, 64))
    model.eval()
    logits = model(torch.randn(1, 3, 64, 64))  # eval mode: N = 1 is fine, and gradients still flow
    logits.mean().backward()
    assert model.backbone.conv1.weight.grad is not None


def test_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride must be 8 or 16; got 32"):
        DeepLabV3(3, backbone="resnet18", output_stride=32)
