"""seglab.models.lraspp: identical outputs to torchvision's lraspp_mobilenet_v3_large with the same weights,
the parameter count, backbone weights, shapes and bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seglab.models import LRASPP, build_model
from seglab.models.lraspp import convert_torchvision_lraspp_state_dict
from _helpers import randomize_batch_norm


def test_equals_torchvision_with_the_same_weights():
    torch.manual_seed(0)
    reference = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    randomize_batch_norm(reference).eval()
    ours = LRASPP(21)
    ours.load_state_dict(convert_torchvision_lraspp_state_dict(reference.state_dict()))
    ours.eval()
    x = torch.randn(2, 3, 97, 131)  # odd sizes: stride-8 and stride-16 maps are ceil(H / s)
    with torch.no_grad():
        expected = reference(x)["out"]
        features = ours.forward_features(x)
    assert expected.abs().max() > 0.1  # not a trivially small output
    assert (features["logits"] - expected).abs().max() <= 1e-6
    assert features["low"].shape == (2, 40, 13, 17) and features["high"].shape == (2, 960, 7, 9)
    assert features["scores"].shape == (2, 21, 13, 17)


def test_parameter_count_equals_torchvision():
    with torch.device("meta"):
        ours = build_model("lraspp", 21)
    meta = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.meta
    assert sum(p.numel() for p in ours.parameters()) == meta["num_params"] == 3_221_538


def test_backbone_is_dilated_mobilenet_v3_large():
    model = LRASPP(3)
    assert model.backbone.low_index == 4 and model.backbone.channels == {"low": 40, "high": 960}
    last_stage = [m for m in model.backbone.features[13:16].modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert all(conv.stride == (1, 1) and conv.dilation == (2, 2) for conv in last_stage)  # à trous, not strided
    assert (model.head.cbr[0].out_channels, model.head.scale[1].out_channels) == (128, 128)
    assert isinstance(model.head.scale[0], nn.AdaptiveAvgPool2d) and isinstance(model.head.scale[2], nn.Sigmoid)


def test_imagenet_backbone_weights_from_a_file(tmp_path):
    torch.manual_seed(1)
    classifier = torchvision.models.mobilenet_v3_large()
    torch.save(classifier.state_dict(), tmp_path / "mobilenet_v3_large.pth")
    model = build_model("lraspp", 3, weights_backbone=tmp_path / "mobilenet_v3_large.pth")
    for key, value in classifier.features.state_dict().items():
        assert torch.equal(model.backbone.features.state_dict()[key], value), key


def test_train_step_and_tiny_inputs():
    torch.manual_seed(0)
    model = LRASPP(4).train()
    logits = model(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 4, 64, 48)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 5, 7)).shape == (1, 4, 5, 7)  # any size: ceil strides down to 1×1


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="unexpected key 'head.weight'.*lraspp_mobilenet_v3_large"):
        convert_torchvision_lraspp_state_dict({"head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown lraspp backbone 'resnet50'.*mobilenet_v3_large"):
        build_model("lraspp", 3, backbone="resnet50")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*unsqueeze"):
        LRASPP(3)(torch.zeros(3, 32, 32))
