"""seglab.models.deformable: DCNv2 (torchvision), DCNv3 (plain PyTorch), the deformable stage, frozen sampling.

Oracles: ``torchvision.ops.deform_conv2d`` (DCNv3's core must equal it in the equivalent configuration),
``F.conv2d`` (zero offsets reduce both to plain / depthwise convolutions), hand-indexed pixels (integer
offsets read exactly the pixel the location functions name), and hand-computed bilinear neighbourhoods
(the exact receptive field of a frozen deformable layer).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from seglab.models.deformable import (
    DCNv3,
    DeformableSegNet,
    DeformableStage,
    DeformConv2d,
    dcnv2_locations,
    dcnv3_locations,
    dcnv3_sample,
    freeze_sampling,
    to_torchvision_layout,
)
from seglab.receptive_field import ReceptiveField, exact_receptive_field, support_box

# kernel, stride, padding, dilation, groups, channels
CONFIGS = [(3, 1, 1, 1, 1, 8), (3, 1, 1, 1, 4, 8), (3, 2, 1, 1, 2, 8), (5, 1, 2, 1, 2, 6), (3, 1, 2, 2, 3, 6),
           (3, 1, 0, 1, 1, 4), (1, 1, 0, 1, 2, 4)]


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("k, s, p, d, groups, channels", CONFIGS)
def test_dcnv3_core_is_deform_conv2d_with_depthwise_ones(dtype, tol, k, s, p, d, groups, channels):
    # sum_k m_gk x_c(p0 + p_k + dp_gk) = deform_conv2d with weight 1 per channel (groups = C), offset_groups = G;
    # any masks (not softmaxed here: the softmax is the module's choice), offsets of several pixels, off the image too
    gen = torch.Generator().manual_seed(k * 100 + groups * 10 + s)
    n, h, w = 2, 9, 11
    x = torch.randn(n, h, w, channels, generator=gen, dtype=dtype)
    ho, wo = _out(h, k, s, p, d), _out(w, k, s, p, d)
    offset = 3 * torch.randn(n, ho, wo, groups * k * k * 2, generator=gen, dtype=dtype)
    mask = 2 * torch.rand(n, ho, wo, groups * k * k, generator=gen, dtype=dtype) - 0.5
    ours = dcnv3_sample(x, offset, mask, k, stride=s, padding=p, dilation=d, groups=groups)
    tv_offset, tv_mask = to_torchvision_layout(offset, mask, k, groups)
    ones = torch.ones(channels, 1, k, k, dtype=dtype)
    reference = deform_conv2d(x.permute(0, 3, 1, 2), tv_offset, ones, None, (s, s), (p, p), (d, d), tv_mask)
    assert ours.shape == (n, ho, wo, channels)
    assert (ours - reference.permute(0, 2, 3, 1)).abs().max() <= tol


def test_dcnv3_module_with_identity_projections_is_deform_conv2d():
    torch.manual_seed(0)
    layer = DCNv3(8, 3, groups=2)
    nn.init.normal_(layer.offset.weight, std=0.5)  # non-trivial offsets and masks
    nn.init.normal_(layer.mask.weight, std=0.5)
    for proj in (layer.input_proj, layer.output_proj):
        nn.init.eye_(proj.weight)
        nn.init.zeros_(proj.bias)
    x = torch.randn(2, 7, 6, 8)
    offset, mask = layer.predict_sampling(x)
    torch.testing.assert_close(mask.reshape(2, 7, 6, 2, 9).sum(-1), torch.ones(2, 7, 6, 2))  # softmax over points
    tv_offset, tv_mask = to_torchvision_layout(offset, mask, 3, 2)
    reference = deform_conv2d(x.permute(0, 3, 1, 2), tv_offset, torch.ones(8, 1, 3, 3), None, 1, 1, 1, tv_mask)
    assert (layer(x) - reference.permute(0, 2, 3, 1)).abs().max() <= 1e-5


def test_zero_offsets_and_uniform_masks_are_a_depthwise_box_filter():
    x = torch.randn(2, 10, 12, 6)
    offset = torch.zeros(2, 10, 12, 3 * 9 * 2)
    mask = torch.full((2, 10, 12, 3 * 9), 1 / 9)
    box = F.conv2d(x.permute(0, 3, 1, 2), torch.full((6, 1, 3, 3), 1 / 9), padding=1, groups=6)
    torch.testing.assert_close(dcnv3_sample(x, offset, mask, 3, groups=3), box.permute(0, 2, 3, 1))


def test_zero_offsets_and_per_point_masks_are_a_grouped_depthwise_conv():
    # masks constant over the image: m_gk is the weight of tap k for every channel of group g
    groups, channels = 2, 4
    taps = torch.rand(groups, 3, 3)  # (G, kh, kw), row-major like a conv kernel
    mask = taps.transpose(1, 2).reshape(1, 1, 1, -1).expand(1, 8, 8, -1)  # DCNv3's order: x-major
    x = torch.randn(1, 8, 8, channels)
    weight = taps.repeat_interleave(channels // groups, 0)[:, None]  # (C, 1, 3, 3)
    plain = F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1, groups=channels).permute(0, 2, 3, 1)
    torch.testing.assert_close(dcnv3_sample(x, torch.zeros(1, 8, 8, groups * 18), mask, 3, groups=groups), plain)


def test_dcnv3_module_starts_as_a_box_filter_between_its_projections():
    torch.manual_seed(0)
    layer = DCNv3(8, 3, groups=4)
    x = torch.randn(1, 6, 6, 8)
    values = layer.input_proj(x).permute(0, 3, 1, 2)
    box = F.conv2d(values, torch.full((8, 1, 3, 3), 1 / 9), padding=1, groups=8).permute(0, 2, 3, 1)
    torch.testing.assert_close(layer(x), layer.output_proj(box))


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, None, 1, 1), (2, 1, 1, 2), (1, None, 2, 4)])
def test_dcnv1_starts_as_its_plain_convolution_and_dcnv2_at_half_weights(stride, padding, dilation, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 11, 9)
    v1 = DeformConv2d(8, 12, 3, stride, padding, dilation, groups, modulation="none")
    pad = dilation if padding is None else padding
    plain = F.conv2d(x, v1.weight, v1.bias, stride, pad, dilation, groups)
    torch.testing.assert_close(v1(x), plain)
    v2 = DeformConv2d(8, 12, 3, stride, padding, dilation, groups)  # masks sigmoid(0) = 0.5 (the DCNv2 paper)
    half = F.conv2d(x, 0.5 * v2.weight, v2.bias, stride, pad, dilation, groups)
    torch.testing.assert_close(v2(x), half)


def test_location_functions_name_the_pixel_an_integer_offset_reads():
    # one channel, one tap switched on: the output is the input pixel at the location (or 0 off the image)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 7, 8, generator=gen)
    offset = torch.randint(-3, 4, (1, 18, 7, 8), generator=gen).float()
    locations = dcnv2_locations(offset, 3, 1, 1, 1)[0, 0]  # (K, H, W, 2)
    for tap in (0, 5, 7):
        weight = torch.zeros(1, 1, 9)
        weight[0, 0, tap] = 1
        out = deform_conv2d(x, offset, weight.view(1, 1, 3, 3), padding=1)[0, 0]
        for (r, c), value in zip(torch.cartesian_prod(torch.arange(7), torch.arange(8)).tolist(), out.flatten()):
            y, x_ = (int(v) for v in locations[tap, r, c])
            expected = x[0, 0, y, x_] if 0 <= y < 7 and 0 <= x_ < 8 else torch.tensor(0.0)
            torch.testing.assert_close(value, expected)
    values = torch.randn(1, 7, 8, 1, generator=gen)
    moves = torch.randint(-3, 4, (1, 7, 8, 18), generator=gen).float()
    points = dcnv3_locations(moves, (7, 8), 3)[0, :, :, 0]  # (H, W, P, 2)
    for point in (0, 3, 8):
        mask = torch.zeros(1, 7, 8, 9)
        mask[..., point] = 1
        out = dcnv3_sample(values, moves, mask, 3)[0, ..., 0]
        for r in range(7):
            for c in range(8):
                y, x_ = (int(v) for v in points[r, c, point])
                expected = values[0, y, x_, 0] if 0 <= y < 7 and 0 <= x_ < 8 else torch.tensor(0.0)
                torch.testing.assert_close(out[r, c], expected)


def test_offsets_learn_from_zero():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 2, 3)
    x = torch.randn(4, 3, 16, 16)
    layer(x).square().mean().backward()
    assert layer.offset_conv.weight.grad.abs().sum() > 0 and layer.offset_conv.bias.grad.abs().sum() > 0


def test_deform_conv_runs_under_bf16_autocast():
    # the engine trains in bf16 on CPUs with a native bf16 path: offset_conv then returns bf16 offsets
    layer = DeformConv2d(3, 2, 3).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert out.shape == (2, 2, 12, 12) and layer.offset_conv.weight.grad is not None
    torch.testing.assert_close(out.float(), layer(x), atol=0.05, rtol=0.05)


def _bilinear_neighbourhoods(points: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size) bool: the pixels with a nonzero bilinear weight for some point (y, x), inside the image."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    for y, x in points.tolist():
        for yy in {int(torch.floor(torch.tensor(y))), int(torch.ceil(torch.tensor(y)))}:
            for xx in {int(torch.floor(torch.tensor(x))), int(torch.ceil(torch.tensor(x)))}:
                if 0 <= yy < size and 0 <= xx < size and (1 - abs(y - yy)) * (1 - abs(x - xx)) > 0:
                    mask[yy, xx] = True
    return mask


def test_frozen_sampling_gives_the_exact_rf_of_a_deformable_layer():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 4, 3)
    nn.init.normal_(layer.offset_conv.weight, std=0.3)
    nn.init.normal_(layer.offset_conv.bias, std=2.0)
    x = torch.randn(1, 3, 24, 24)
    frozen = freeze_sampling(layer, x)
    assert layer.fixed_offset is None  # the model is untouched
    assert torch.equal(frozen(x), layer(x))
    for pixel in ((12, 12), (3, 20), (0, 0)):
        support = ReceptiveField(frozen, 24).support(pixel)
        points = layer.sampling_locations(x)[0, 0, :, pixel[0], pixel[1]]  # (K, 2)
        assert torch.equal(support, _bilinear_neighbourhoods(points, 24))


def test_an_untrained_deformable_layer_has_the_rf_of_its_plain_convolution():
    layer = DeformConv2d(3, 4, 3)
    support = exact_receptive_field(freeze_sampling(layer, torch.randn(1, 3, 20, 20)), 20, (10, 10))
    assert support_box(support) == (9, 9, 11, 11) and int(support.sum()) == 9
    stage = DeformableStage(8, depth=2, groups=2)  # two 3×3 DCNv3 blocks at init: a 5×5 RF (a power-of-2 map:
    frozen = freeze_sampling(stage, torch.randn(1, 8, 32, 32))  # grid_sample's coordinates round-trip exactly)
    support = ReceptiveField(frozen, 32, in_channels=8).support((16, 16))
    assert support_box(support) == (14, 14, 18, 18) and int(support.sum()) == 25


def test_freeze_sampling_needs_a_deformable_layer():
    with pytest.raises(ValueError, match="no DeformConv2d or DCNv3"):
        freeze_sampling(nn.Conv2d(3, 3, 3), torch.randn(1, 3, 8, 8))


def test_stage_and_tiny_model_shapes_and_training():
    stage = DeformableStage(16, depth=2, groups=4, downsample=True)
    assert stage(torch.randn(2, 16, 9, 10)).shape == (2, 32, 5, 5) and stage.out_channels == 32
    torch.manual_seed(0)
    model = DeformableSegNet(3, channels=16, depths=(1, 1), groups=(2, 4))
    images = torch.randn(2, 3, 37, 30)
    masks = F.interpolate(torch.randint(0, 3, (2, 1, 4, 3)).float(), size=(37, 30)).long()[:, 0]  # coarse regions
    assert model(images).shape == (2, 3, 37, 30)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # it overfits one batch


@pytest.mark.parametrize("build, match", [
    (lambda: DCNv3(10, 3, groups=4), "multiple of groups"),
    (lambda: DCNv3(8, 4, groups=2), "odd"),
    (lambda: DeformConv2d(6, 4, 3, offset_groups=4), "multiple of 4"),
    (lambda: DeformConv2d(4, 4, 3, modulation="tanh"), "modulation"),
    (lambda: DeformableStage(8, depth=0, groups=2), "depth"),
    (lambda: DeformableStage(8, depth=1, groups=3), "divisible"),
])
def test_bad_arguments_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="channels-last"):
        DCNv3(8, 3, groups=2)(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        DeformConv2d(3, 4, 3)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="offset must be"):
        dcnv3_sample(torch.randn(1, 5, 5, 4), torch.zeros(1, 5, 5, 10), torch.ones(1, 5, 5, 9), 3)
    with pytest.raises(ValueError, match="mask must be"):
        dcnv3_sample(torch.randn(1, 5, 5, 4), torch.zeros(1, 5, 5, 18), torch.ones(1, 5, 5, 8), 3)


def test_frozen_tiny_model_reproduces_its_output():
    torch.manual_seed(0)
    model = DeformableSegNet(2, channels=8, depths=(1, 1), groups=(2, 2)).eval()
    for block in (m for m in model.modules() if isinstance(m, DCNv3)):
        nn.init.normal_(block.offset.bias, std=1.0)
    x = torch.randn(1, 3, 32, 32)
    frozen = freeze_sampling(model, x)
    assert torch.equal(frozen(x), model(x))
    support = ReceptiveField(frozen, 32).support((16, 16))
    assert support.any() and support.shape == (32, 32)


def test_show_sampling_locations_draws_one_panel_per_layer():
    from matplotlib.figure import Figure

    from seglab.viz import show_sampling_locations

    image = torch.randn(3, 16, 16)
    grid = torch.cartesian_prod(torch.arange(7.0, 10.0), torch.arange(7.0, 10.0))  # (9, 2)
    support = torch.zeros(16, 16, dtype=torch.bool)
    support[7:10, 7:10] = True
    fig = show_sampling_locations(image, (8, 8), {"plain": grid, "moved": grid + torch.tensor([0.0, 4.5])}, grid=grid,
                                  supports={"plain": support}, weights={"moved": torch.rand(9)}, target=(8, 14))
    assert isinstance(fig, Figure) and len([ax for ax in fig.axes if ax.images]) == 2
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        show_sampling_locations(image, (8, 8), {"plain": torch.zeros(9)})
    with pytest.raises(ValueError, match="differ in size"):
        show_sampling_locations(image, (8, 8), {"plain": grid}, supports={"plain": torch.zeros(5, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="one value per tap"):
        show_sampling_locations(image, (8, 8), {"plain": grid}, weights={"plain": torch.ones(4)})
