"""seglab.models: registry, properties every model must have, backbones (parity with torchvision, dilation)
and pretrained-weight loading (local files only, never the network).

Model-specific tests: test_models_fcn.py, test_models_unet.py, test_models_deeplab.py.
"""

from __future__ import annotations

import argparse
import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from seglab.models import (
    BACKBONES,
    ResNetBackbone,
    VGG16Backbone,
    build_backbone,
    build_model,
    list_models,
    load_backbone_weights,
)
from seglab.models.backbones import dilate_resnet_stage
from _helpers import randomize_batch_norm

# Small configurations that run in well under a second on 2 CPU cores.
SMALL = {
    "fcn32s": ("fcn32s", {"backbone": "resnet18"}),
    "fcn16s": ("fcn16s", {"backbone": "resnet18"}),
    "fcn8s": ("fcn8s", {"backbone": "resnet18"}),
    "unet": ("unet", {"base_channels": 8}),
    "unet-bilinear-noskip": ("unet", {"base_channels": 8, "upsampling": "bilinear", "skip_connections": False}),
    "unet-valid": ("unet", {"base_channels": 4, "depth": 2, "padding": "valid", "batch_norm": False}),
    "unet-resnet18": ("unet", {"backbone": "resnet18"}),
    "deeplabv3": ("deeplabv3", {"backbone": "resnet18"}),
    "deeplabv3plus": ("deeplabv3plus", {"backbone": "resnet18"}),
}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics/affines and non-zero FCN score layers, so that swapped or missing
    weights would change the outputs (default BN = identity, zero-initialised scores = constant output)."""
    randomize_batch_norm(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[0] in ("classifier", "score_pool4", "score_pool3") and not param.abs().sum():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    return model


def test_list_models():
    assert list_models() == ["fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3", "deeplabv3plus", "fcn_dilated",
                             "pspnet", "deeplabv1", "deeplabv2", "lraspp", "hrnet", "segformer",
                             "ddrnet23_slim", "ddrnet23", "fastfcn", "mask2former"]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'segnet'.*fcn32s.*deeplabv3plus"):
        build_model("segnet", 3)
    with pytest.raises(ValueError, match="unknown FCN backbone 'resnet152'.*vgg16.*resnet101"):
        build_model("fcn8s", 3, backbone="resnet152")
    with pytest.raises(ValueError, match="unknown DeepLab backbone 'vgg16'.*resnet18.*resnet101"):
        build_model("deeplabv3", 3, backbone="vgg16")
    with pytest.raises(ValueError, match="unknown U-Net encoder 'mobilenet'.*resnet34"):
        build_model("unet", 3, backbone="mobilenet")
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'.*vgg16"):
        build_backbone("alexnet")
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("unet", 0)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 97, 131)])
@pytest.mark.parametrize("config", list(SMALL))
def test_train_forward_backward(config, shape):
    """Train mode (N=2: DeepLab's image-pooling BN needs N >= 2), even and odd sizes."""
    torch.manual_seed(0)
    name, kwargs = SMALL[config]
    model = randomize(build_model(name, 5, **kwargs)).train()
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 5, *shape[2:]) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert (logits < 0).any() and (logits.sum(1) - 1).abs().max() > 1e-3  # raw logits, not probabilities
    logits.square().mean().backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{param_name} gets no gradient"
            assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("config", list(SMALL))
def test_eval_batch_of_one_odd_size_is_deterministic(config):
    torch.manual_seed(0)
    name, kwargs = SMALL[config]
    model = randomize(build_model(name, 5, **kwargs)).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.inference_mode():
        first, second = model(x), model(x)
    assert first.shape == (1, 5, 97, 131) and first.dtype == torch.float32
    assert torch.isfinite(first).all() and torch.equal(first, second)


@pytest.mark.parametrize("name", ["fcn8s", "deeplabv3", "deeplabv3plus"])
def test_aux_head_only_through_forward_with_aux(name):
    model = build_model(name, 4, backbone="resnet18", aux_loss=True).eval()
    calls = []
    model.aux_classifier.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        logits = model(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (1, 4, 70, 90)
        assert calls == []  # forward never runs the aux head
        main, aux = model.forward_with_aux(x)
    assert calls == [1] and torch.equal(main, logits) and aux.shape == (1, 4, 70, 90)
    plain = build_model(name, 4, backbone="resnet18")
    assert plain.aux_classifier is None
    with pytest.raises(RuntimeError, match="aux_loss=True"):
        plain.forward_with_aux(x)


def test_bad_input_is_explained():
    model = build_model("unet", 2, base_channels=4)
    with pytest.raises(TypeError, match="float images.*eval_transform"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*unsqueeze"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\); got \(1, 1, 32, 32\)"):
        build_model("deeplabv3", 2, backbone="resnet18")(torch.zeros(1, 1, 32, 32))


# ---------------------------------------------------------------- backbones against torchvision


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_resnet_backbone_equals_torchvision(name):
    torch.manual_seed(0)
    reference = randomize(getattr(torchvision.models, name)()).eval()
    ours = ResNetBackbone(name, weights=reference.state_dict()).eval()
    getter = IntermediateLayerGetter(reference, {"relu": "stem", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"})
    x = torch.randn(1, 3, 75, 100)
    with torch.no_grad():
        expected, got = getter(x), ours(x)
    assert list(got) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    for key, value in expected.items():
        assert got[key].shape[1] == ours.channels[key]
        assert got[key].shape[-2] == -(-75 // ours.strides[key])  # ceil(H / stride)
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("output_stride, replace", [(16, [False, False, True]), (8, [False, True, True])])
def test_dilated_resnet50_equals_torchvision_replace_stride_with_dilation(output_stride, replace):
    torch.manual_seed(0)
    reference = randomize(torchvision.models.resnet50(replace_stride_with_dilation=replace)).eval()
    ours = ResNetBackbone("resnet50", output_stride=output_stride, weights=reference.state_dict()).eval()
    for name, conv in reference.named_modules():
        if isinstance(conv, nn.Conv2d):
            mine = ours.get_submodule(name)
            assert (mine.stride, mine.dilation, mine.padding) == (conv.stride, conv.dilation, conv.padding), name
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected = IntermediateLayerGetter(reference, {"layer4": "out"})(x)["out"]
        got = ours(x)["layer4"]
    assert got.shape[-2:] == (64 // output_stride, 80 // output_stride)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_basicblock_dilation_follows_the_documented_rule():
    backbone = ResNetBackbone("resnet18", output_stride=8)
    assert backbone.dilations == {"layer3": 2, "layer4": 4}
    expected = {  # (stride, dilation) of every conv in layer3/layer4
        "layer3.0.conv1": (1, 1), "layer3.0.conv2": (1, 2), "layer3.0.downsample.0": (1, 1),
        "layer3.1.conv1": (1, 2), "layer3.1.conv2": (1, 2),
        "layer4.0.conv1": (1, 2), "layer4.0.conv2": (1, 4), "layer4.0.downsample.0": (1, 1),
        "layer4.1.conv1": (1, 4), "layer4.1.conv2": (1, 4),
    }
    for name, (stride, dilation) in expected.items():
        conv = backbone.get_submodule(name)
        assert conv.stride == (stride, stride) and conv.dilation == (dilation, dilation), name
        assert conv.padding == ((dilation, dilation) if conv.kernel_size == (3, 3) else (0, 0)), name
    os16 = ResNetBackbone("resnet18", output_stride=16)
    assert os16.layer3[0].conv1.stride == (2, 2) and os16.layer4[0].conv1.dilation == (1, 1)
    assert os16.layer4[0].conv2.dilation == (2, 2) and os16.layer4[1].conv1.dilation == (2, 2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_atrous_output_is_the_strided_output_on_a_denser_grid(name, output_stride):
    """The à trous algorithm: dilated features sampled every 32/s pixels equal the strided net's features."""
    torch.manual_seed(0)
    strided = randomize(ResNetBackbone(name)).eval()
    dense = ResNetBackbone(name, output_stride=output_stride, weights=strided.state_dict()).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        coarse, fine = strided(x)["layer4"], dense(x)["layer4"]
    step = 32 // output_stride
    assert fine.shape[-2:] == (64 // output_stride, 96 // output_stride)
    # equal up to float32 summation order (a wrong dilation gives differences of the order of the values)
    torch.testing.assert_close(fine[..., ::step, ::step], coarse, rtol=0, atol=1e-5 * coarse.abs().max().item())


def test_dilate_resnet_stage_returns_new_dilation():
    stage = torchvision.models.resnet18().layer4
    assert dilate_resnet_stage(stage, 2) == 4
    assert stage[0].conv1.dilation == (2, 2) and stage[0].conv2.dilation == (4, 4)


@pytest.mark.slow
def test_vgg16_backbone_equals_torchvision_and_fc_layers_are_convolutionalised():
    torch.manual_seed(0)
    reference = torchvision.models.vgg16().eval()
    ours = VGG16Backbone(reference.state_dict()).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = ours(x)
        for key, end in [("pool3", 17), ("pool4", 24), ("pool5", 31)]:
            torch.testing.assert_close(got[key], reference.features[:end](x), rtol=0, atol=1e-5)
        expected_fc7 = reference.classifier[:5](torch.flatten(reference.avgpool(reference.features(x)), 1))
    assert got["fc7"].shape == (1, 4096, 7, 7)
    # At 224×224 pool5 is 7×7: the centre of the 7×7 "same"-padded fc6 sees all of it, like the Linear layer.
    torch.testing.assert_close(got["fc7"][0, :, 3, 3], expected_fc7[0], rtol=0, atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters()) - (4096 * 1000 + 1000)


def test_vgg16_feature_shapes_and_output_stride():
    with torch.device("meta"):
        backbone = VGG16Backbone()
        features = backbone(torch.empty(2, 3, 96, 128))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "pool1": (2, 64, 48, 64), "pool2": (2, 128, 24, 32), "pool3": (2, 256, 12, 16),
        "pool4": (2, 512, 6, 8), "pool5": (2, 512, 3, 4), "fc7": (2, 4096, 3, 4),
    }
    with pytest.raises(ValueError, match="vgg16 has output_stride 32 only"):
        build_backbone("vgg16", output_stride=8)


# ---------------------------------------------------------------- pretrained weights, offline


def _random_resnet18_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return randomize(torchvision.models.resnet18(), seed).state_dict()


def _assert_backbone_has(backbone: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    assert set(own) == {k for k in state_dict if not k.startswith("fc.")}
    for key, value in own.items():
        assert torch.equal(value, state_dict[key]), key


@pytest.mark.parametrize("name, kwargs", [("deeplabv3", {}), ("fcn32s", {}), ("unet", {})])
def test_weights_backbone_from_a_local_file(tmp_path, name, kwargs):
    state_dict = _random_resnet18_state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict, path)
    model = build_model(name, 3, backbone="resnet18", weights_backbone=str(path), **kwargs)
    _assert_backbone_has(model.encoder if name == "unet" else model.backbone, state_dict)
    torch.save({"state_dict": state_dict}, tmp_path / "wrapped.pt")  # a training checkpoint's wrapper
    _assert_backbone_has(ResNetBackbone("resnet18", weights=tmp_path / "wrapped.pt"), state_dict)


def test_weights_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model("deeplabv3", 3, backbone="resnet18", weights_backbone=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="IMAGENET_FOO.*ResNet18_Weights.*IMAGENET1K_V1"):
        build_model("deeplabv3", 3, backbone="resnet18", weights_backbone="IMAGENET_FOO")
    torch.save(_random_resnet18_state_dict(), tmp_path / "r18.pth")
    with pytest.raises(RuntimeError, match="do not fit torchvision.models.resnet50"):
        build_model("deeplabv3", 3, backbone="resnet50", weights_backbone=tmp_path / "r18.pth")
    torch.save({"config": argparse.Namespace(lr=0.1)}, tmp_path / "unsafe.pth")  # not loadable weights-only
    with pytest.raises(RuntimeError, match="weights-only state dict"):
        ResNetBackbone("resnet18", weights=tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="weights_backbone needs a pretrained encoder"):
        build_model("unet", 3, weights_backbone=tmp_path / "r18.pth")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """torch hub cache in tmp_path; any download attempt fails as it would without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_weights_backbone_by_name_offline_fails_clearly(offline_hub):
    with pytest.raises(RuntimeError) as info:
        build_model("deeplabv3", 3, backbone="resnet18", weights_backbone="IMAGENET1K_V1")
    message = str(info.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "needs internet access" in message and str(offline_hub) in message
    assert "weights_backbone='/path/to/resnet18-f37072fd.pth'" in message and "weights_only=True" in message


def test_weights_backbone_by_name_reads_the_hub_cache(offline_hub):
    """The error message's advice works: a file in the hub cache is used without any download."""
    state_dict = _random_resnet18_state_dict(seed=2)
    offline_hub.mkdir(parents=True)
    torch.save(state_dict, offline_hub / "resnet18-f37072fd.pth")
    loaded = load_backbone_weights("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())
    model = build_model("fcn8s", 3, backbone="resnet18", weights_backbone="ResNet18_Weights.IMAGENET1K_V1")
    _assert_backbone_has(model.backbone, state_dict)


def test_backbone_registry():
    assert BACKBONES == ("vgg16", "resnet18", "resnet34", "resnet50", "resnet101")


# ---------------------------------------------------------------------------------- the model table
# The smallest backbone each model accepts: every row of the table builds the class it names.
TABLE_CLASSES = {
    "fcn32s": ("FCN", "resnet18"), "fcn16s": ("FCN", "resnet18"), "fcn8s": ("FCN", "resnet18"),
    "unet": ("UNet", None), "deeplabv3": ("DeepLabV3", "resnet18"), "deeplabv3plus": ("DeepLabV3Plus", "resnet18"),
    "fcn_dilated": ("DilatedFCN", "resnet18"), "pspnet": ("PSPNet", "resnet18"), "deeplabv1": ("DeepLabV1", None),
    "deeplabv2": ("DeepLabV2", "resnet18"), "lraspp": ("LRASPP", None), "hrnet": ("HRNet", None),
    "segformer": ("SegFormer", None), "ddrnet23_slim": ("DDRNet", None), "ddrnet23": ("DDRNet", None),
    "fastfcn": ("FastFCN", "resnet18"), "mask2former": ("Mask2Former", "resnet18"),
}


def test_every_model_in_the_table_builds_its_class():
    import seglab.models as models

    assert list(TABLE_CLASSES) == list_models() == list(models.MODELS)
    for name, (class_name, backbone) in TABLE_CLASSES.items():
        model = build_model(name, 3, backbone=backbone)
        assert type(model).__name__ == class_name, name
    assert build_model("fcn16s", 3, backbone="resnet18").variant == "16s"
    assert build_model("hrnet", 3, backbone="hrnet_w32").width == 32
    assert build_model("segformer", 3, backbone="mit_b1").variant == "b1"


def test_table_options_are_the_model_classes_keyword_arguments():
    """``model_options(name)`` lists exactly what the class takes, less what ``build_model`` itself fills in."""
    import inspect

    import seglab.models as models

    filled = {"num_classes", "backbone", "encoder", "weights_backbone", "variant", "width"}
    for name, (class_name, _) in TABLE_CLASSES.items():
        parameters = set(inspect.signature(getattr(models, class_name)).parameters) - filled
        assert set(models.model_options(name)) == parameters, name
    assert models.model_options("deeplabv3") == ("output_stride", "atrous_rates", "aux_loss")


def test_options_a_model_does_not_take_are_named():
    with pytest.raises(ValueError, match="model 'unet' takes no option output_stride; its options: in_channels"):
        build_model("unet", 3, output_stride=8)
    with pytest.raises(ValueError, match="unknown model 'segnet'; valid: fcn32s"):
        from seglab.models import model_options

        model_options("segnet")
    with pytest.raises(ValueError, match="unknown lraspp backbone 'resnet18'; valid: mobilenet_v3_large"):
        build_model("lraspp", 3, backbone="resnet18")
    with pytest.raises(ValueError, match="segformer takes no weights_backbone"):
        build_model("segformer", 3, weights_backbone="IMAGENET1K_V1")
