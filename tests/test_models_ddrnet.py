"""seglab.models.ddrnet: DDRNet-23-slim and DDRNet-23 (Hong et al. 2021).

The layers were checked once against the authors' released code (ydhongHIT/DDRNet, segmentation/DDRNet_23*.py,
loaded with nn.BatchNorm2d for its SyncBatchNorm): with the same weights (``convert_official_ddrnet_state_dict``,
strict load), the stride-8 scores were bitwise equal (max abs diff 0.0) at 256×512 and 1024×2048, in eval and in
train mode, with and without the auxiliary head, for both variants. That code cannot be fetched in CI, so these
tests hold what can be checked by hand: the parameter counts the authors' code gives (and the paper rounds),
the paper's FLOPs, the resolutions of the two branches, the fusion rule, the key conversion, export.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _helpers import randomize_batch_norm
from seglab.models import build_model
from seglab.models.ddrnet import DAPPM, BilateralFusion, DDRNet, convert_official_ddrnet_state_dict

#: variant -> (parameters at K = 19 as the authors' code builds them, the paper's "M params", the paper's GFLOPs
#: at 1024×2048, which are multiply-adds: FlopCounterMode counts 2 FLOPs per multiply-add)
PAPER = {"23-slim": (5_695_987, 5.7, 36.3), "23": (20_148_947, 20.1, 143.1)}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", list(PAPER))
def test_parameters_and_flops_are_the_papers(variant):
    count, paper_millions, paper_gflops = PAPER[variant]
    with torch.device("meta"):  # FLOPs from shapes alone: no memory, no compute
        model = DDRNet(19, variant=variant).eval()
        x = torch.empty(1, 3, 1024, 2048)
    assert _params(model) == count and round(count / 1e6, 1) == paper_millions
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    multiply_adds = counter.get_total_flops() / 2
    print(f"\nDDRNet-{variant}: {count / 1e6:.3f} M params (paper {paper_millions}), {multiply_adds / 1e9:.2f} G "
          f"multiply-adds at 1024x2048 (paper {paper_gflops} GFLOPs)")
    assert round(multiply_adds / 1e9, 1) == paper_gflops


def test_the_auxiliary_head_adds_a_segment_head_on_the_high_branch():
    c, head = 32, 64  # DDRNet-23-slim: the high branch has 2c channels; the head: BN, 3×3 conv, BN, 1×1 conv + bias
    extra = 2 * (2 * c) + 9 * 2 * c * head + 2 * head + head * 19 + 19
    assert _params(DDRNet(19, aux_loss=True)) - _params(DDRNet(19)) == extra


@pytest.mark.parametrize("size", [(128, 256), (97, 131)])
def test_branch_resolutions_and_widths(size):
    model = DDRNet(5).eval()  # slim: c = 32
    h, w = size
    with torch.no_grad():
        f = model.forward_features(torch.randn(1, 3, h, w))

    def at(stride):  # a stride-2 3×3 conv with padding 1 gives ceil(h / 2)
        return (-(-h // stride), -(-w // stride))

    expected = {"stem": (32, 4), "layer1": (32, 4), "layer2": (64, 8), "high3": (64, 8), "low3": (128, 16),
                "high4": (64, 8), "low4": (256, 32), "high5": (128, 8), "low5": (512, 64), "dappm": (128, 64),
                "scores": (5, 8)}
    for name, (channels, stride) in expected.items():
        assert f[name].shape == (1, channels, *at(stride)), name
    assert f["logits"].shape == (1, 5, h, w)


def test_bilateral_fusion_adds_each_branch_into_the_other_from_before_the_fusion():
    torch.manual_seed(0)
    fusion = randomize_batch_norm(BilateralFusion(8, 32, steps=2)).eval()
    high, low = torch.randn(2, 8, 16, 20), torch.randn(2, 32, 4, 5)
    with torch.no_grad():
        new_high, new_low = fusion(high, low)
        down = fusion.down[4](fusion.down[3](F.relu(fusion.down[1](fusion.down[0](high.relu())))))  # 8 -> 16 -> 32
        up = F.interpolate(fusion.compression(low.relu()), size=(16, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(new_high, high + up, rtol=0, atol=0)
    torch.testing.assert_close(new_low, low + down, rtol=0, atol=0)
    assert fusion.down[0].stride == (2, 2) and fusion.down[3].stride == (2, 2) and len(fusion.down) == 5


def test_dappm_is_hierarchical():
    """y_i = process_i(up(scale_i(x)) + y_(i-1)): with scale_2's last conv zeroed, y_2 = process_2(y_1)."""
    torch.manual_seed(0)
    dappm = randomize_batch_norm(DAPPM(16, 8, 12)).eval()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        dappm.scales[2][-1].weight.zero_()
        y0 = dappm.scales[0](x)
        y1 = dappm.process[0](F.interpolate(dappm.scales[1](x), size=(9, 11), mode="bilinear", align_corners=False) + y0)
        y2 = dappm.process[1](y1)
        out = dappm(x)
    assert out.shape == (2, 12, 9, 11)
    assert [type(s[0]).__name__ for s in dappm.scales] == ["Identity", "AvgPool2d", "AvgPool2d", "AvgPool2d",
                                                           "AdaptiveAvgPool2d"]
    assert [(s[0].kernel_size, s[0].stride) for s in dappm.scales[1:4]] == [(5, 2), (9, 4), (17, 8)]
    # y_2 enters the compression through channels 16..24 of the concatenation: recompute the output from y0..y4
    ys = [y0, y1, y2]
    for i in (3, 4):
        ys.append(dappm.process[i - 1](F.interpolate(dappm.scales[i](x), size=(9, 11), mode="bilinear",
                                                     align_corners=False) + ys[-1]))
    with torch.no_grad():
        expected = dappm.compression(torch.cat(ys, 1)) + dappm.shortcut(x)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ["ddrnet23_slim", "ddrnet23"])
def test_train_step_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, 4, aux_loss=True).train()
    x = torch.randn(2, 3, 64, 96)
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 4, 64, 96) and logits.dtype == torch.float32
    (logits.square().mean() + 0.4 * aux.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_aux_head_only_through_forward_with_aux():
    model = build_model("ddrnet23_slim", 3, aux_loss=True).eval()
    calls = []
    model.aux_classifier.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        logits = model(x)
        assert calls == []
        main, aux = model.forward_with_aux(x)
    assert calls == [1] and torch.equal(main, logits) and aux.shape == (1, 3, 70, 90)
    with pytest.raises(RuntimeError, match="aux_loss=True"):
        build_model("ddrnet23_slim", 3).forward_with_aux(x)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="batch of at least 2 images"):
        build_model("ddrnet23_slim", 3).train()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown DDRNet variant '39'; valid: 23-slim, 23"):
        DDRNet(3, variant="39")
    with pytest.raises(ValueError, match="ddrnet takes no weights_backbone"):
        build_model("ddrnet23", 3, weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="unknown ddrnet23_slim backbone 'resnet18'; valid: ddrnet23_slim"):
        build_model("ddrnet23_slim", 3, backbone="resnet18")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build_model("ddrnet23_slim", 3)(torch.zeros(1, 1, 32, 32))


def test_official_key_names_convert():
    """Hand-checked renames of the authors' DualResNet keys (one per rule), and unknown keys are refused."""
    renames = {
        "conv1.0.weight": "stem.0.weight", "conv1.4.running_var": "stem.4.running_var",
        "layer1.1.bn2.weight": "layer1.1.bn2.weight", "layer3.0.downsample.1.bias": "layer3_low.0.downsample.1.bias",
        "layer3_.1.conv2.weight": "layer3_high.1.conv2.weight", "layer5_.0.bn3.weight": "layer5_high.0.bn3.weight",
        "layer5.0.conv3.weight": "layer5_low.0.conv3.weight", "compression3.1.weight": "fuse3.compression.1.weight",
        "down4.3.weight": "fuse4.down.3.weight", "spp.scale0.2.weight": "dappm.scales.0.3.weight",
        "spp.scale4.1.bias": "dappm.scales.4.1.bias", "spp.process1.0.weight": "dappm.process.0.0.weight",
        "spp.process4.2.weight": "dappm.process.3.2.weight", "spp.compression.2.weight": "dappm.compression.2.weight",
        "spp.shortcut.0.running_mean": "dappm.shortcut.0.running_mean", "final_layer.bn1.weight": "classifier.0.weight",
        "final_layer.conv1.weight": "classifier.2.weight", "final_layer.conv2.bias": "classifier.5.bias",
        "model.seghead_extra.bn2.num_batches_tracked": "aux_classifier.3.num_batches_tracked",
        "module.layer4_.0.bn1.weight": "layer4_high.0.bn1.weight",
    }
    value = torch.zeros(1)
    assert convert_official_ddrnet_state_dict(dict.fromkeys(renames, value)) == {new: value for new in renames.values()}
    ours = DDRNet(19, aux_loss=True).state_dict()
    assert set(renames.values()) <= set(ours)  # every target exists in the model
    for bad in ("fc.weight", "final_layer.scale_factor"):
        with pytest.raises(ValueError, match="unexpected key"):
            convert_official_ddrnet_state_dict({bad: value})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddrnet23_slim", "ddrnet23"])
def test_exports_to_onnx_and_matches_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="the test extra holds onnxruntime: pip install -e '.[test]'")
    from seglab.export import export_onnx, onnx_max_abs_diff

    torch.manual_seed(0)
    model = randomize_batch_norm(build_model(name, 5)).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(64, 96))
    generator = torch.Generator().manual_seed(1)
    diff = max(onnx_max_abs_diff(model, path, torch.randn(n, 3, 64, 96, generator=generator)) for n in (1, 3))
    with torch.no_grad():
        spread = model(torch.randn(1, 3, 64, 96, generator=generator)).std()
    print(f"\n{name}: onnxruntime vs PyTorch max abs diff {diff:.2e} (logit std {spread:.2e})")
    assert spread > 1e-3 and diff < 1e-4 * max(1.0, float(spread))
