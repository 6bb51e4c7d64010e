"""seglab.models.deeplab_v1v2: parameter counts and receptive fields against the papers' numbers (DeepLab v1
Table 2 = v2 Table 3, and v1 Sec. 3.1), the atrous VGG16, ASPP's summed branches, shapes and bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seglab.models import DeepLabV1, DeepLabV2, build_model
from seglab.models.deeplab_v1v2 import ASPPSum, DeepLabVGG16
from seglab.receptive_field import analytic_receptive_field

# DeepLab v1 Table 2: fc6 kernel, input stride (= rate), fc6/fc7 width -> receptive field, parameters (M)
TABLE_2 = {
    "DeepLab-CRF-7x7": (7, 4, 4096, 224, 134.3),
    "DeepLab-CRF": (4, 4, 4096, 128, 65.1),
    "DeepLab-CRF-4x4": (4, 8, 4096, 224, 65.1),
    "DeepLab-CRF-LargeFOV": (3, 12, 1024, 224, 20.5),
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rf_size(layers) -> int:
    return analytic_receptive_field(list(layers))[-1].rf_size[0]


@pytest.mark.parametrize("row", list(TABLE_2))
def test_parameter_counts_equal_table_2(row):
    kernel, rate, width, _, millions = TABLE_2[row]
    with torch.device("meta"):
        model = DeepLabV1(21, fc6_kernel_size=kernel, fc6_dilation=rate, fc_channels=width)
    assert round(n_params(model) / 1e6, 1) == millions
    if row == "DeepLab-CRF-LargeFOV":
        assert n_params(model) == 20_505_429


def test_receptive_fields_against_the_papers_numbers():
    """v1 Sec. 3.1: VGG16 in convolutional mode has a 404×404 RF, 308×308 with fc6 subsampled to 4×4.
    Table 2 gives each fc6 choice's RF as the field its taps span plus one stride-32 cell, on the 224 × 224
    input: our full-network RF minus the table's is the same constant for all four rows, and fc6's own
    contribution (k - 1) · rate · 8 is the table's number minus 32."""
    with torch.device("meta"):
        vgg = torchvision.models.vgg16().features
    assert rf_size([*vgg, nn.Conv2d(512, 8, 7)]) == 404
    assert rf_size([*vgg, nn.Conv2d(512, 8, 4)]) == 308
    offsets = set()
    for kernel, rate, width, table_rf, _ in TABLE_2.values():
        with torch.device("meta"):
            model = DeepLabV1(21, fc6_kernel_size=kernel, fc6_dilation=rate, fc_channels=width)
        rfs = analytic_receptive_field([*model.backbone.features, *model.head])
        before_fc6 = rfs[len(model.backbone.features) - 1]
        assert before_fc6.jump == (8, 8)  # pool4/pool5 with stride 1: stride 8, not 32
        assert rfs[-1].rf_size[0] - before_fc6.rf_size[0] == (kernel - 1) * rate * 8 == table_rf - 32
        offsets.add(rfs[-1].rf_size[0] - table_rf)
    assert len(offsets) == 1
    with torch.device("meta"):
        large_fov = DeepLabV1(21)
    assert rf_size([*large_fov.backbone.features, *large_fov.head]) == 419  # DeepLab's Caffe 3×3 pools


def test_aspp_rf_is_its_widest_branch():
    with torch.device("meta"):
        model = DeepLabV2(21, backbone="vgg16")
    branches = [rf_size([*model.backbone.features, *branch]) for branch in model.head.branches]
    assert branches == [227 + 2 * rate * 8 for rate in (6, 12, 18, 24)]  # pool5 RF 227 + fc6's span
    assert max(branches) == 611


def test_atrous_vgg16_structure_and_weights():
    reference = nn.Module()
    reference.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # = vgg16().features
    state_dict = reference.state_dict() | {"classifier.6.weight": torch.zeros(1000, 4096)}  # the fc part is dropped
    backbone = DeepLabVGG16(state_dict)
    for index in range(31):
        layer = backbone.features[index]
        if isinstance(layer, nn.Conv2d):
            assert torch.equal(layer.weight, reference.features[index].weight)
            assert layer.dilation == ((2, 2) if index in (24, 26, 28) else (1, 1)) and layer.padding == layer.dilation
        if isinstance(layer, nn.MaxPool2d):
            assert (layer.kernel_size, layer.padding, layer.ceil_mode) == (3, 1, True)
            assert layer.stride == (1 if index in (23, 30) else 2)
    with torch.device("meta"):  # shapes only: Caffe's rounding gives 65 × 65 scores on a 513 × 513 input
        features = DeepLabVGG16()(torch.empty(1, 3, 513, 512))
    assert features["pool5"].shape == (1, 512, 65, 65)


def test_largefov_head_structure():
    model = DeepLabV1(21)
    fc6, fc7, fc8 = model.head.fc6, model.head.fc7, model.head.fc8
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == ((3, 3), (12, 12), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels, fc8.out_channels) == ((1, 1), 1024, 21)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet101"])
def test_aspp_parameter_counts_from_the_papers_description(backbone):
    """v2 Fig. 7 ASPP-L: four fc6 (3×3, rate r, 1024) → fc7 (1×1, 1024) → fc8 (K) branches on VGG16; on
    ResNet-101 each branch is one 3×3 conv 2048 → K. The paper prints no totals."""
    k = 21
    with torch.device("meta"):
        model = DeepLabV2(k, backbone=backbone)
        classifier = getattr(torchvision.models, backbone)()
    if backbone == "vgg16":
        expected = n_params(classifier.features) + 4 * (9 * 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * k + k)
    else:
        expected = n_params(classifier) - n_params(classifier.fc) + 4 * (9 * 2048 * k + k)
    assert n_params(model) == expected == {"vgg16": 37_877_652, "resnet101": 44_048_532}[backbone]


def test_aspp_sums_its_branches():
    torch.manual_seed(0)
    aspp = ASPPSum(16, 5, (6, 12, 18, 24)).eval()
    assert [b.dilation for b in aspp.branches] == [(r, r) for r in (6, 12, 18, 24)]
    assert all(b.padding == b.dilation and b.kernel_size == (3, 3) and b.out_channels == 5 for b in aspp.branches)
    x = torch.randn(2, 16, 30, 31)
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), sum(branch(x) for branch in aspp.branches))
    model = DeepLabV2(5, backbone="resnet18")
    assert model.backbone.output_stride == 8 and model.head.atrous_rates == (6, 12, 18, 24)


@pytest.mark.parametrize("name, kwargs", [("deeplabv1", {}), ("deeplabv2", {"backbone": "resnet18"})])
def test_train_step_and_odd_sizes(name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, 4, **kwargs).train()
    logits = model(torch.randn(2, 3, 49, 67))
    assert logits.shape == (2, 4, 49, 67) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 97, 131))
    scores = (13, 18) if name == "deeplabv1" else (13, 17)  # Caffe's pool rounding (n // 2 + 1) vs ceil(n / 8)
    assert features["scores"].shape == (1, 4, *scores) and features["logits"].shape == (1, 4, 97, 131)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="unknown deeplabv1 backbone 'resnet50'.*vgg16"):
        build_model("deeplabv1", 3, backbone="resnet50")
    with pytest.raises(ValueError, match="unknown DeepLab v2 backbone 'alexnet'.*vgg16.*resnet101"):
        build_model("deeplabv2", 3, backbone="alexnet")
    with pytest.raises(TypeError, match="float images"):
        DeepLabV1(3)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="branch must be 'vgg' or 'conv'"):
        ASPPSum(8, 3, branch="mlp")
    with pytest.raises(ValueError, match="output stride 8 only; got 16"):
        build_model("deeplabv2", 3, backbone="resnet18", output_stride=16)
    assert DeepLabV1(3, output_stride=8).output_stride == 8
