"""seglab.models.hrnet: the same stage outputs as timm's hrnet_w18 (features_only) with the same weights, the
structure of Wang et al. 2020 (Fig. 2), its parameter count for W48, shapes and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seglab.models import HRNet, build_model
from seglab.models.hrnet import convert_timm_hrnet_state_dict


def tame_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affines, scaled so that activations stay O(1) through 30+ residual blocks."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.3 + 0.1)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def test_features_equal_timm_hrnet_w18_with_the_same_weights(tmp_path):
    timm = pytest.importorskip("timm", reason="timm (test oracle, in the test extra) is not installed")
    torch.manual_seed(0)
    reference = timm.create_model("hrnet_w18", features_only=True, feature_location="", pretrained=False)
    tame_batch_norm(reference).eval()
    torch.save(reference.state_dict(), tmp_path / "hrnet_w18.pth")
    ours = build_model("hrnet", 19, fusion_upsampling="nearest",  # timm's (ImageNet) fusion
                       weights_backbone=tmp_path / "hrnet_w18.pth")
    ours.eval()
    x = torch.randn(1, 3, 64, 96)  # timm's Upsample(scale_factor) needs sizes divisible by 32
    with torch.no_grad():
        expected = reference(x)
        got = ours.forward_features(x)
    assert reference.feature_info.channels() == [64, 18, 36, 72, 144]
    for name, value in zip(["stem", "branch1", "branch2", "branch3", "branch4"], expected):
        assert got[name].shape == value.shape, name
        assert value.abs().max() > 0.1, name  # not vanishing
        assert (got[name] - value).abs().max() <= 1e-6 * value.abs().max(), name  # 0.0 measured


def test_timm_classification_checkpoint_loads_without_its_head():
    timm = pytest.importorskip("timm", reason="timm (test oracle, in the test extra) is not installed")
    with torch.device("meta"):
        classifier = timm.create_model("hrnet_w18", pretrained=False)
    state_dict = {k: torch.zeros(v.shape) for k, v in classifier.state_dict().items()}
    assert any(k.startswith("incre_modules.") for k in state_dict)
    converted = convert_timm_hrnet_state_dict(state_dict)
    model = HRNet(3)
    assert set(converted) == {k for k in model.state_dict() if not k.startswith("head.")}
    model.load_timm_state_dict(state_dict)
    assert not model.stem[0].weight.any() and model.head[3].weight.any()  # backbone loaded, head kept


def test_structure_follows_the_paper():
    model = HRNet(19)
    assert model.channels == (18, 36, 72, 144)
    assert [len(stage) for stage in model.stages] == [1, 4, 3]  # HR modules in stages 2, 3, 4
    assert [len(stage[0].branches) for stage in model.stages] == [2, 3, 4]  # a new stream per stage
    for stage in model.stages:
        for module in stage:
            assert all(len(branch) == 4 for branch in module.branches)  # 4 residual units per stream
            assert len(module.fuse_layers) == len(module.branches)  # every stream gets every other one
    assert len(model.layer1) == 4 and model.layer1[0].conv3.out_channels == 256
    fuse = model.stages[2][0].fuse_layers
    assert fuse[0][3][0].kernel_size == (1, 1)  # up: 1×1 conv (then upsampling)
    assert [step[0].stride for step in fuse[3][0]] == [(2, 2)] * 3  # down: three strided 3×3 convs
    assert model.head[0].in_channels == 270 and model.head[3].out_channels == 19  # 18+36+72+144 concatenated


def test_parameter_counts():
    with torch.device("meta"):
        w48 = HRNet(19, width=48)
        w18 = build_model("hrnet", 19)
    assert round(sum(p.numel() for p in w48.parameters()) / 1e6, 1) == 65.9  # the paper's Cityscapes table
    assert sum(p.numel() for p in w18.parameters()) == 9_641_119


def test_any_input_size_and_train_step():
    torch.manual_seed(0)
    model = tame_batch_norm(HRNet(4)).train()
    features = model.forward_features(torch.randn(2, 3, 49, 67))  # streams: 13×17, 7×9, 4×5, 2×3
    assert [features[f"branch{i}"].shape[-2:] for i in range(1, 5)] == [(13, 17), (7, 9), (4, 5), (2, 3)]
    assert features["concat"].shape == (2, 270, 13, 17) and features["logits"].shape == (2, 4, 49, 67)
    features["logits"].square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="unknown hrnet backbone 'hrnet_w64'.*hrnet_w18.*hrnet_w48"):
        build_model("hrnet", 3, backbone="hrnet_w64")
    with pytest.raises(ValueError, match="fusion_upsampling must be"):
        HRNet(3, fusion_upsampling="bicubic")
    with pytest.raises(ValueError, match="unexpected key 'fc.weight'.*timm hrnet"):
        convert_timm_hrnet_state_dict({"fc.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="HRNet has no torchvision weights names; pass a timm hrnet_w18 state dict"):
        build_model("hrnet", 3, weights_backbone="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model("hrnet", 3, weights_backbone="/nonexistent/missing.pth")
    with pytest.raises(RuntimeError, match="do not fit timm's hrnet_w32: missing"):
        HRNet(3, width=32, weights_backbone={"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(RuntimeError, match="(?s)do not fit timm.s hrnet_w18.*size mismatch"):
        HRNet(3, weights_backbone={"conv1.weight": torch.zeros(1)})
