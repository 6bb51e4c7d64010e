"""seglab.models.pspnet: the pyramid pooling module against a hand-written one, structure and parameter counts
recomputed from the paper's description (Zhao et al. 2017, Sec. 3.3 and Fig. 3), shapes, aux head, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from seglab.models import PSPNet, build_model
from seglab.models.pspnet import PyramidPooling
from _helpers import randomize_batch_norm


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_pyramid_pooling_equals_a_hand_written_one():
    """The PPM written out with functional calls, the way the notebook builds it."""
    torch.manual_seed(0)
    ppm = randomize_batch_norm(PyramidPooling(64, (1, 2, 3, 6))).eval()
    x = torch.randn(2, 64, 13, 17)
    pooled = [x]
    for size, stage in zip((1, 2, 3, 6), ppm.stages):
        conv, bn = stage[1][0], stage[1][1]
        y = F.adaptive_avg_pool2d(x, size)  # (2, 64, size, size)
        y = F.conv2d(y, conv.weight)  # (2, 16, size, size)
        y = F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
        pooled.append(F.interpolate(y, size=(13, 17), mode="bilinear", align_corners=False))
    expected = torch.cat(pooled, 1)
    with torch.no_grad():
        got = ppm(x)
    assert got.shape == (2, 64 + 4 * 16, 13, 17) and ppm.out_channels == 128
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_one_bin_sees_the_whole_map():
    """Global context: through the 1×1 bin, the output at one corner depends on the feature at the other."""
    ppm = PyramidPooling(8, (1,)).eval()
    x = torch.randn(1, 8, 9, 11, requires_grad=True)
    ppm(x)[0, 8:, 0, 0].sum().backward()  # a pooled channel, top-left pixel
    assert (x.grad[0, :, -1, -1] != 0).any() and (x.grad != 0).all()
    local = PyramidPooling(8, (6,)).eval()  # 6×6 bins: the corner bin does not reach the far corner
    x.grad = None
    local(x)[0, 8:, 0, 0].sum().backward()
    assert (x.grad[0, :, -1, -1] == 0).all()


def test_structure_follows_the_paper():
    with torch.device("meta"):
        model = PSPNet(21, backbone="resnet50", aux_loss=True)
    assert model.ppm.bins == (1, 2, 3, 6)
    assert [stage[0].output_size for stage in model.ppm.stages] == [1, 2, 3, 6]
    for stage in model.ppm.stages:  # 1×1 conv reducing 2048 to 1/N = 1/4 of it, then BN + ReLU
        conv = stage[1][0]
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (2048, 512, (1, 1))
        assert isinstance(stage[1][1], nn.BatchNorm2d) and isinstance(stage[1][2], nn.ReLU)
    head = model.classifier[0][0]
    assert (head.in_channels, head.out_channels, head.kernel_size) == (4096, 512, (3, 3))
    assert model.classifier[1].p == 0.1 and model.classifier[2].out_channels == 21
    aux = model.aux_classifier
    assert (aux[0].in_channels, aux[0].out_channels, aux[4].out_channels) == (1024, 256, 21)  # on res4b22 = layer3
    assert model.backbone.output_stride == 8 and model.backbone.dilations == {"layer3": 2, "layer4": 4}


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
@pytest.mark.parametrize("aux_loss", [False, True])
def test_parameter_count_from_the_papers_description(backbone, aux_loss):
    """Backbone (torchvision's, without fc) + PPM (4 × [1×1 conv 2048→512 + BN]) + 3×3 conv 4096→512 + BN +
    1×1 classifier (+ aux: 3×3 conv 1024→256 + BN + 1×1 classifier). The paper prints no totals."""
    k = 21
    with torch.device("meta"):
        model = PSPNet(k, backbone=backbone, aux_loss=aux_loss)
        resnet = getattr(torchvision.models, backbone)()
    expected = n_params(resnet) - n_params(resnet.fc)
    expected += 4 * (2048 * 512 + 2 * 512)
    expected += 3 * 3 * 4096 * 512 + 2 * 512 + 512 * k + k
    if aux_loss:
        expected += 3 * 3 * 1024 * 256 + 2 * 256 + 256 * k + k
    assert n_params(model) == expected
    if backbone == "resnet50":
        assert n_params(model) == (48_957_802 if aux_loss else 46_592_597)  # as in the docstring


def test_shapes_at_an_odd_size():
    model = build_model("pspnet", 5, backbone="resnet18").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 97, 131))
    assert features["layer4"].shape == (1, 512, 13, 17)  # ceil(97/8), ceil(131/8)
    assert features["ppm"].shape == (1, 1024, 13, 17)
    assert features["scores"].shape == (1, 5, 13, 17)
    assert features["logits"].shape == (1, 5, 97, 131) and features["logits"].dtype == torch.float32


def test_train_step_and_aux_head():
    torch.manual_seed(0)
    model = randomize_batch_norm(PSPNet(3, backbone="resnet18", aux_loss=True)).train()
    x = torch.randn(2, 3, 64, 80)
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 3, 64, 80)
    (F.cross_entropy(logits, torch.randint(0, 3, (2, 64, 80))) + 0.4 * aux.square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    calls = []
    model.aux_classifier.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_with_aux(x)[0])
    assert calls == [1]  # only forward_with_aux ran the aux head


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="unknown PSPNet backbone 'vgg16'.*resnet18"):
        build_model("pspnet", 3, backbone="vgg16")
    model = PSPNet(3, backbone="resnet18").train()
    with pytest.raises(ValueError, match="batch of at least 2 images; got 1"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(RuntimeError, match="aux_loss=True"):
        model.forward_with_aux(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
