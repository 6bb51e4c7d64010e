"""Tests for seglab.receptive_field: analytic recurrence == exact gradient support, known values, ERF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from seglab.receptive_field import (
    LayerSpec,
    LinearisedFunctions,
    ReceptiveField,
    analytic_receptive_field,
    effective_receptive_field,
    erf_radius,
    erf_rms_radius,
    exact_receptive_field,
    format_rf_table,
    linearise,
    support_box,
    support_holes,
    support_size,
)

torch.set_num_threads(1)


def shifted_box(box, dy, dx):
    top, left, bottom, right = box
    return top + dy, left + dx, bottom + dy, right + dx


# ------------------------------------------------------------------------------ analytic recurrence
def test_recurrence_hand_computed():
    # three 3x3 convs, padding 1: r = 1 + 2 + 2 + 2 = 7, j = 1, start = -3
    rfs = analytic_receptive_field([nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)], input_size=32)
    assert [rf.rf_size for rf in rfs] == [(3, 3), (5, 5), (7, 7)]
    assert rfs[-1].jump == (1.0, 1.0) and rfs[-1].start == (-3, -3) and rfs[-1].output_size == (32, 32)
    # conv 3 s2 p1 -> r 3, j 2, start -1; pool 2 s2 -> r 3 + 1*2 = 5, j 4; dilated conv k3 d2 p2 -> r 5 + 2*2*4 = 21
    specs = [LayerSpec("conv", 3, 2, 1, name="c1"), dict(kind="pool", kernel_size=2, stride=2),
             LayerSpec("conv", 3, 1, 2, 2)]
    rfs = analytic_receptive_field(specs, input_size=(64, 48))
    assert [rf.rf_size[0] for rf in rfs] == [3, 5, 21]
    assert [rf.jump[0] for rf in rfs] == [2.0, 4.0, 4.0]
    assert [rf.start[0] for rf in rfs] == [-1, -1, -9]
    assert [rf.output_size for rf in rfs] == [(32, 24), (16, 12), (16, 12)]
    assert rfs[0].name == "c1" and rfs[1].name == "1"
    assert rfs[2].box(3, 5) == (-9 + 12, -9 + 20, -9 + 12 + 20, -9 + 20 + 20)
    # the same chain as modules gives the same rows
    modules = nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.MaxPool2d(2), nn.ReLU(),
                            nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    from_modules = analytic_receptive_field(modules, input_size=(64, 48))
    assert [(r.rf_size, r.jump, r.start) for r in from_modules[:2] + from_modules[3:]] == \
           [(r.rf_size, r.jump, r.start) for r in rfs]
    assert from_modules[2].kind == "pointwise" and from_modules[2].rf_size == (5, 5)
    table = format_rf_table(from_modules)
    assert table.splitlines()[0].split() == ["layer", "kind", "kernel", "stride", "dilation", "padding", "out", "rf",
                                             "jump", "start"]
    assert table.splitlines()[-1].split() == ["3", "conv", "3", "1", "2", "2", "16x12", "21", "4", "-9"]


def test_recurrence_non_square_and_upsampling_jump():
    rfs = analytic_receptive_field([nn.Conv2d(1, 1, (3, 5), stride=(2, 1)), nn.ConvTranspose2d(1, 1, 2, 2),
                                    nn.Upsample(scale_factor=2)])
    assert rfs[0].rf_size == (3, 5) and rfs[0].jump == (2.0, 1.0)
    assert rfs[1].jump == (1.0, 0.5) and rfs[2].jump == (0.5, 0.25)
    assert rfs[2].rf_size == (3, 5)  # a 2x2 stride-2 up-conv and nearest upsampling copy, they do not widen
    assert "1/2" in format_rf_table(rfs)


def test_recurrence_errors():
    with pytest.raises(ValueError, match="exact_receptive_field"):
        analytic_receptive_field([nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)])
    with pytest.raises(ValueError, match="exact_receptive_field"):
        analytic_receptive_field([nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)])
    with pytest.raises(ValueError, match="kind must be one of"):
        LayerSpec("dense")
    with pytest.raises(ValueError, match="stride"):
        LayerSpec("conv", 3, 0)
    with pytest.raises(ValueError, match="larger input"):
        analytic_receptive_field([nn.Conv2d(1, 1, 5)], input_size=3)
    with pytest.raises(ValueError, match="sees no input"):  # kernel 1, stride 2: odd outputs are bias only
        analytic_receptive_field([nn.ConvTranspose2d(1, 1, 1, 2)])[0].box(1, 1)


# ------------------------------------------------------------------------------ VGG16 known values
@pytest.fixture(scope="module")
def vgg_features():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).features


def test_vgg16_theoretical_rf(vgg_features):
    rfs = analytic_receptive_field(vgg_features, input_size=224)
    conv5_3, pool5 = rfs[28], rfs[30]
    assert isinstance(vgg_features[28], nn.Conv2d) and isinstance(vgg_features[30], nn.MaxPool2d)
    assert conv5_3.rf_size == (196, 196) and conv5_3.jump == (16.0, 16.0) and conv5_3.output_size == (14, 14)
    assert pool5.rf_size == (212, 212) and pool5.jump == (32.0, 32.0) and pool5.output_size == (7, 7)
    assert conv5_3.start == pool5.start == (-90, -90)
    # the exact support of the centre pixel is that box, filled (no dilation, no holes)
    rf = ReceptiveField(vgg_features, 224)
    for layer, row, box in (("28", conv5_3, (22, 22, 217, 217)), ("30", pool5, (6, 6, 217, 217))):
        c, h, w = rf.output_shape(layer)
        assert (c, h, w) == (512, *row.output_size)
        mask = rf.support((h // 2, w // 2), layer=layer)
        assert row.box(h // 2, w // 2) == box == support_box(mask)
        assert support_size(mask) == row.rf_size and support_holes(mask) == 0
    # a corner pixel's RF is clipped by the image border: the analytic box starts in the padding
    mask = rf.support((0, 0), layer="30")
    assert pool5.box(0, 0) == (-90, -90, 121, 121) and support_box(mask) == (0, 0, 121, 121)


# ------------------------------------------------------------------------------ (a) == (b) on random chains
def _layer(kind, k, s, d, p, ch=2):
    if kind == "conv":
        return nn.Conv2d(ch, ch, k, stride=s, padding=min(p, (d * (k - 1)) // 2 + 1), dilation=d)
    if kind == "maxpool":
        return nn.MaxPool2d(k, stride=s, padding=min(p, k // 2), dilation=d)
    return nn.AvgPool2d(k, stride=s, padding=min(p, k // 2))


layer_params = st.tuples(st.sampled_from(["conv", "conv", "maxpool", "avgpool"]), st.integers(1, 5),
                         st.integers(1, 3), st.integers(1, 3), st.integers(0, 3))


def _interior_pixels(rows, size):
    """Output pixels whose analytic box lies inside the image (the exact support is clipped otherwise)."""
    last = rows[-1]
    h, w = last.output_size
    pixels = [(y, x) for y in range(h) for x in range(w)
              if (b := last.box(y, x))[0] >= 0 and b[1] >= 0 and b[2] < size[0] and b[3] < size[1]]
    return pixels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_params, min_size=1, max_size=4), st.data())
def test_analytic_equals_exact_on_random_chains(params, data):
    layers = [_layer(*p) for p in params]
    model = nn.Sequential(nn.Conv2d(3, 2, 1), *layers)
    rows = analytic_receptive_field(model)
    size = (rows[-1].rf_size[0] + 4 * int(rows[-1].jump[0]) + 8, rows[-1].rf_size[1] + 3 * int(rows[-1].jump[1]) + 9)
    if max(size) > 160:
        return
    rows = analytic_receptive_field(model, input_size=size)
    pixels = _interior_pixels(rows, size)
    assert pixels, "the chosen input size always leaves an interior output pixel"
    y, x = data.draw(st.sampled_from(pixels))
    mask = exact_receptive_field(model, size, (y, x))
    assert support_box(mask) == rows[-1].box(y, x)
    assert support_size(mask) == rows[-1].rf_size


upsample_layers = st.sampled_from([
    lambda: nn.ConvTranspose2d(2, 2, 2, stride=2),
    lambda: nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1),
    lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
    lambda: nn.ConvTranspose2d(2, 2, 5, stride=3, padding=1, dilation=2),
    lambda: nn.Upsample(scale_factor=2, mode="nearest"),
    lambda: nn.Upsample(scale_factor=3, mode="nearest"),
    lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
    lambda: nn.Upsample(scale_factor=3, mode="bilinear"),
    lambda: nn.Upsample(scale_factor=4, mode="bilinear"),
    lambda: nn.Conv2d(2, 2, 3, padding=1),
    lambda: nn.Conv2d(2, 2, 2, stride=2),
    lambda: nn.Conv2d(2, 2, 3, padding=2, dilation=2),
    lambda: nn.MaxPool2d(3, 2, 1),
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(upsample_layers, min_size=1, max_size=4), st.data())
def test_analytic_boxes_with_upsampling_equal_exact_per_phase(makers, data):
    model = nn.Sequential(nn.Conv2d(3, 2, 1), *(make() for make in makers))
    size = (24, 20)
    rows = analytic_receptive_field(model, input_size=size)
    if max(rows[-1].output_size) > 400:
        return
    pixels = _interior_pixels(rows, size)
    if not pixels:
        return
    rf = ReceptiveField(model, size)
    for y, x in data.draw(st.lists(st.sampled_from(pixels), min_size=1, max_size=4)):
        assert support_box(rf.support((y, x))) == rows[-1].box(y, x)


# ------------------------------------------------------------------------------ gridding (Wang et al. 2018)
def dilated_stack(dilations):
    return nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=d, dilation=d) for d in dilations))


def test_dilation_gridding_and_hdc():
    size = 31
    for dilations, pixels, holes in (((2, 2, 2), 49, 120), ((1, 2, 3), 169, 0)):
        model = dilated_stack(dilations)
        assert analytic_receptive_field(model)[-1].rf_size == (13, 13)
        mask = exact_receptive_field(model, size, in_channels=1)
        assert support_size(mask) == (13, 13) and support_box(mask) == (9, 9, 21, 21)
        assert int(mask.sum()) == pixels and support_holes(mask) == holes
    # 2, 2, 2 sees only the even offsets: a 7x7 lattice with spacing 2
    mask = exact_receptive_field(dilated_stack((2, 2, 2)), size, in_channels=1)
    expected = torch.zeros(size, size, dtype=torch.bool)
    expected[9:22:2, 9:22:2] = True
    assert torch.equal(mask, expected)


# ------------------------------------------------------------------------------ skips and ASPP
class ToyUNet(nn.Module):
    """conv -> (skip) ; conv -> maxpool -> conv -> upsample -> concat(skip) -> 1x1."""

    def __init__(self, branches=("skip", "deep")):
        super().__init__()
        self.branches = branches
        self.enc = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        deep = self.up(self.down(skip))
        skip = skip if "skip" in self.branches else torch.zeros_like(skip)
        deep = deep if "deep" in self.branches else torch.zeros_like(deep)
        return self.head(torch.cat([skip, deep], 1))


def test_exact_rf_of_skip_model_is_union_of_branches():
    size, pixel = 32, (15, 16)
    both = exact_receptive_field(ToyUNet(), size, pixel)
    skip = exact_receptive_field(ToyUNet(("skip",)), size, pixel)
    deep = exact_receptive_field(ToyUNet(("deep",)), size, pixel)
    assert torch.equal(both, skip | deep)
    assert support_size(skip) == (3, 3) and support_box(skip) == (14, 15, 16, 17)
    # the deep branch is a chain: conv3, pool2, conv3, conv3, up-conv 2x2 s2 -> its analytic box
    chain = analytic_receptive_field([nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1),
                                      nn.Conv2d(1, 1, 3, padding=1), nn.ConvTranspose2d(1, 1, 2, 2)])
    # rows: pixel 15 -> 7 at half resolution -> 5..9 after two 3x3 -> 10..19 before the pool -> 9..20
    assert support_box(deep) == chain[-1].box(*pixel) == (9, 11, 20, 22)
    assert support_holes(both) == 0 and int(both.sum()) == 12 * 12


class ToyASPP(nn.Module):
    def __init__(self, rates=(6, 12, 18), image_pooling=False):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(3, 4, 1)] + [nn.Conv2d(3, 4, 3, padding=r, dilation=r) for r in rates])
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 4, 1)) if image_pooling else None
        self.project = nn.Conv2d(4 * (len(rates) + 1 + bool(image_pooling)), 2, 1)

    def forward(self, x):
        outs = [F.relu(branch(x)) for branch in self.branches]
        if self.image_pooling is not None:
            outs.append(F.interpolate(self.image_pooling(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


def test_exact_rf_of_aspp_is_sparse():
    size, c = 41, 20
    mask = exact_receptive_field(ToyASPP(), size, (c, c))
    expected = torch.zeros(size, size, dtype=torch.bool)
    for r in (6, 12, 18):
        for dy in (-r, 0, r):
            for dx in (-r, 0, r):
                expected[c + dy, c + dx] = True
    assert torch.equal(mask, expected)
    assert int(mask.sum()) == 25 and support_size(mask) == (37, 37) and support_holes(mask) == 37 * 37 - 25
    # DeepLab's image-pooling branch (global average) makes every pixel part of the RF
    assert exact_receptive_field(ToyASPP(image_pooling=True), size, (c, c)).all()


# ------------------------------------------------------------------------------ linearisation
class FunctionalNet(nn.Module):
    """Activations and pooling called functionally; negative weights: the real gradient dies."""

    def __init__(self, functional=True):
        super().__init__()
        self.functional = functional
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 3)
        self.relu, self.pool, self.drop, self.clip = nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5), nn.Hardtanh()
        with torch.no_grad():
            for conv in (self.c1, self.c2, self.c3):
                conv.weight.copy_(-conv.weight.abs())
                conv.bias.fill_(-1.0)

    def forward(self, x):
        if self.functional:
            x = F.max_pool2d(F.relu(self.c1(x)), 3, 2, 1)
            x = F.dropout(F.hardtanh(self.c2(x)).relu(), 0.5)  # F.dropout defaults to training=True
            return torch.sigmoid(self.c3(torch.relu(x)))
        x = self.pool(self.relu(self.c1(x)))
        x = self.drop(self.relu(self.clip(self.c2(x))))
        return torch.sigmoid(self.c3(self.relu(x)))


def test_functional_calls_are_linearised():
    size, pixel = 32, (7, 7)
    functional = exact_receptive_field(FunctionalNet(True), size, pixel)
    modules = exact_receptive_field(FunctionalNet(False), size, pixel)
    assert torch.equal(functional, modules)
    rows = analytic_receptive_field([nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                                     nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3)])
    assert support_box(functional) == rows[-1].box(*pixel) == (10, 10, 22, 22) and support_holes(functional) == 0
    # without linearisation the ReLUs are dead (negative weights and biases): the real gradient is zero
    x = torch.ones(1, 3, size, size, requires_grad=True)
    FunctionalNet(False).eval()(x)[0, :, 7, 7].sum().backward()
    assert not (x.grad != 0).any()
    # the linearised copy alone cannot reach F.max_pool2d (argmax routing) and F.hardtanh (saturated at
    # 1 = the mean of ones) inside forward: its support is too small; LinearisedFunctions fixes both
    linear = linearise(FunctionalNet(True))
    x = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    linear(x)[0, :, 7, 7].sum().backward()
    without = x.grad[0].sum(0) > 0
    assert int(without.sum()) < int(functional.sum()) and not (without & ~functional).any()
    with LinearisedFunctions():
        x.grad = None
        linear(x)[0, :, 7, 7].sum().backward()
    assert torch.equal(x.grad[0].sum(0) > 0, functional)


def test_linearise_copy_and_user_model_untouched():
    model = FunctionalNet(False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linear = linearise(model)
    # modules keep their class (isinstance checks in forward still work), with a linear forward
    assert type(linear.relu).__name__ == "LinearisedReLU" and isinstance(linear.relu, nn.ReLU)
    assert isinstance(linear.pool, nn.MaxPool2d) and type(linear.pool) is not nn.MaxPool2d
    x = torch.arange(-8.0, 8.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    assert torch.equal(linear.relu(x), x) and torch.equal(linear.drop(x), x) and torch.equal(linear.clip(x), x)
    torch.testing.assert_close(linear.pool(x), F.avg_pool2d(x, 3, 2, 1))
    assert torch.all(linear.c1.weight == 1 / 27) and torch.all(linear.c1.bias == 0)
    assert linear.c1.weight.dtype == torch.float64 and not linear.training
    exact_receptive_field(model, 16)
    effective_receptive_field(model, torch.randn(2, 3, 16, 16))
    assert model.training and isinstance(model.relu, nn.ReLU) and model.c1.weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="return_indices"):
        linearise(nn.Sequential(nn.MaxPool2d(2, return_indices=True)))


class GroupedNet(nn.Module):
    """Channel slicing, an in-place add, grouped / depthwise / transposed convs keeping two branches apart."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=4, dilation=4)
        self.a2 = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 5, padding=2, groups=4)
        self.mix = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=2)

    def forward(self, x):
        x = self.stem(x)
        a = self.a(x[:, :4])
        a += self.a2(x[:, :4])  # in-place residual add, as torchvision ResNets do
        x = torch.cat([a, self.b(x[:, 4:])], 1)  # two branches with different RFs
        return self.up(self.down(self.mix(x)))  # groups=2 all the way: channels 0-3 from a, 4-7 from b


@pytest.mark.parametrize("make", [GroupedNet, ToyUNet, ToyASPP, lambda: dilated_stack((1, 2, 5))],
                         ids=["grouped", "unet", "aspp", "dilated"])
def test_fast_strategies_equal_full_width(make):
    torch.manual_seed(0)
    model = make()
    in_channels = 1 if isinstance(model, nn.Sequential) else 3
    fast = ReceptiveField(model, (28, 34), in_channels=in_channels)
    full = ReceptiveField(model, (28, 34), in_channels=in_channels, fast=False)
    c, h, w = fast.output_shape()
    assert full.output_shape() == (c, h, w)
    pixels = [(0, 0), (h // 2, w // 3), (h - 1, w - 1), (h // 3, w - 2)]
    assert torch.equal(fast.supports(pixels), full.supports(pixels))
    for channel in (0, c - 1):
        assert torch.equal(fast.support(pixels[1], channel=channel), full.support(pixels[1], channel=channel))
    for pixel in pixels:
        assert torch.equal(fast.support(pixel), exact_receptive_field(model, (28, 34), pixel, in_channels=in_channels))


def test_grouped_channels_keep_their_own_rf():
    model = GroupedNet()
    rf = ReceptiveField(model, 40, layer="a")
    a, b = rf.support((20, 20)), rf.support((20, 20), layer="b")
    # stem 3x3 then 3x3 dilation 4: offsets {-4, 0, 4} + {-1, 0, 1} miss +-2 -> holes; 3x3 then 5x5 fills 7x7
    assert support_size(a) == (11, 11) and support_holes(a) == 11 * 11 - 9 * 9
    assert support_size(b) == (7, 7) and support_holes(b) == 0
    # grouped convs keep the branches apart up to the output: channel 0 sees through a, channel 7 through b
    rf = ReceptiveField(model, 40)
    first, last = rf.support((20, 20), channel=0), rf.support((20, 20), channel=7)
    tail = [nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, 2, 1), nn.ConvTranspose2d(1, 1, 4, 2, 1)]
    stem = nn.Conv2d(1, 1, 3, padding=1)
    chain_a = analytic_receptive_field([stem, nn.Conv2d(1, 1, 3, padding=4, dilation=4), *tail])
    chain_b = analytic_receptive_field([stem, nn.Conv2d(1, 1, 5, padding=2), *tail])
    assert support_box(first) == chain_a[-1].box(20, 20) and support_box(last) == chain_b[-1].box(20, 20)
    assert support_size(first) == (17, 17) and support_size(last) == (13, 13)
    assert torch.equal(rf.support((20, 20)), first | last)


# ------------------------------------------------------------------------------ layers, queries, errors
def test_intermediate_layer_and_errors(vgg_features):
    model = nn.Sequential(vgg_features[:5])  # conv, relu, conv, relu, pool: nested names "0.0" ... "0.4"
    rf = ReceptiveField(model, 64, layer="0.2")
    assert rf.output_shape() == (64, 64, 64) and rf.output_shape("0.4") == (64, 32, 32)
    assert support_box(rf.support((10, 20))) == (8, 18, 12, 22)
    assert support_box(rf.support((10, 20), layer="0.4")) == (18, 38, 23, 43)  # pool: rows 20-21 of conv2
    many = rf.supports([(10, 20), None, (63, 0)])
    assert many.shape == (3, 64, 64) and many.dtype == torch.bool
    assert torch.equal(many[1], rf.support((32, 32))) and rf.box((63, 0)) == (61, 0, 63, 2)
    with pytest.raises(ValueError, match=r"outside the output map of layer '0.2' of size \(64, 64\)"):
        rf.support((64, 0))
    assert rf.supports([]).shape == (0, 64, 64)
    with pytest.raises(ValueError, match="channel 64 is outside the 64 channels"):
        rf.support(channel=64)
    with pytest.raises(ValueError, match=r"close names: \['0.2'"):
        rf.support(layer="0.21")
    with pytest.raises(ValueError, match="output_fn"):
        exact_receptive_field(nn.Flatten(), 8)
    # dict outputs (torchvision segmentation) and output_fn
    mask = exact_receptive_field(nn.Sequential(nn.Conv2d(3, 2, 3)), 9, output_fn=lambda out: out[:, :1])
    assert support_box(mask) == (3, 3, 5, 5)
    with pytest.raises(ValueError, match="empty"):
        support_box(torch.zeros(4, 4, dtype=torch.bool))


# ------------------------------------------------------------------------------ seglab.models
def test_seglab_unet_exact_rf_is_union_of_path_boxes():
    from seglab.models import build_model

    depth, size = 2, 64
    model = build_model("unet", 3, base_channels=4, depth=depth)
    conv = LayerSpec("conv", 3, 1, 1)
    pool, upconv = LayerSpec("pool", 2, 2), LayerSpec("transposed_conv", 2, 2)
    boxes = []
    for level in range(depth + 1):  # the path that leaves the encoder at `level`
        path = [conv, conv] + [pool, conv, conv] * level
        path += [conv, conv] * (level < depth)  # the decoder's DoubleConv at that level (via the skip)
        path += [upconv, conv, conv] * level + [LayerSpec("conv", 1)]
        boxes.append(analytic_receptive_field(path)[-1].box(32, 32))
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    rf = ReceptiveField(model, size)
    mask = rf.support((32, 32))
    assert support_box(mask) == union and support_holes(mask) == 0
    full = ReceptiveField(model, size, fast=False)
    pixels = [(32, 32), (0, 5), (63, 40)]
    assert torch.equal(rf.supports(pixels), full.supports(pixels))


def test_seglab_deeplab_rf():
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model("deeplabv3", 2, backbone="resnet18")
    rf = ReceptiveField(model, 64)
    assert rf.support((10, 50)).all()  # the ASPP image-pooling branch sees the whole image
    # layer1 of the ResNet (stride 4): the RF of its longest path, conv 7/2, pool 3/2, four 3x3 convs
    chain = analytic_receptive_field([nn.Conv2d(1, 1, 7, 2, 3), nn.MaxPool2d(3, 2, 1)]
                                     + [nn.Conv2d(1, 1, 3, padding=1)] * 4)
    mask = rf.support((8, 8), layer="backbone.layer1")
    assert support_box(mask) == chain[-1].box(8, 8) == (11, 11, 53, 53) and support_holes(mask) == 0
    assert chain[-1].rf_size == (43, 43)  # 7 + 2*2 + 4 * 2*4
    full = ReceptiveField(model, 64, fast=False)
    assert torch.equal(full.support((8, 8), layer="backbone.layer1"), mask)
    assert rf.output_shape("aspp.branches.2") == (256, 4, 4)
    assert torch.equal(full.support((1, 2), layer="aspp.branches.2"), rf.support((1, 2), layer="aspp.branches.2"))


# ------------------------------------------------------------------------------ effective RF
def test_erf_radius_on_known_maps():
    erf = torch.zeros(21, 21)
    erf[10, 10] = 0.9
    erf[10, 13] = 0.1
    assert erf_radius(erf, 0.9, center=(10, 10)) == 0.0
    assert erf_radius(erf, 0.95, center=(10, 10)) == 3.0
    assert erf_radius(erf, 1.0) == pytest.approx(2.7)  # centre of mass at x = 10.3
    ys, xs = torch.meshgrid(torch.arange(201.0), torch.arange(201.0), indexing="ij")
    sigma = 12.0
    gauss = torch.exp(-((ys - 100) ** 2 + (xs - 100) ** 2) / (2 * sigma**2))
    assert erf_rms_radius(gauss) == pytest.approx(sigma * 2**0.5, rel=1e-3)
    assert erf_radius(gauss, 0.95) == pytest.approx(sigma * (-2 * np.log(0.05)) ** 0.5, rel=0.02)  # Rayleigh
    with pytest.raises(ValueError, match="fraction"):
        erf_radius(gauss, 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        erf_radius(torch.zeros(4, 4))


def tiny_fcn(depth=6):
    layers, c = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
        c = 16
    return nn.Sequential(*layers, nn.Conv2d(16, 4, 1))


def synthetic_batches(n, size=32, split="train"):
    from seglab.data.synthetic import SyntheticShapes

    data = SyntheticShapes(split, num_images=n, image_size=size)
    items = [data[i] for i in range(n)]
    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 - 0.5 for im, _ in items])
    masks = torch.stack([torch.from_numpy(m) for _, m in items])
    return images, masks


def test_erf_of_trained_model_is_smaller_than_theoretical_rf():
    torch.manual_seed(0)
    model = tiny_fcn(depth=8)
    theoretical = analytic_receptive_field(model)[-1].rf_size[0]
    assert theoretical == 17  # eight 3x3 convs: half-width 8 px
    images, masks = synthetic_batches(64)
    val, _ = synthetic_batches(16, split="val")
    untrained = effective_receptive_field(model, val, batch_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(30):
        batch = torch.arange(step * 8, step * 8 + 8) % 64
        loss = F.cross_entropy(model(images[batch]), masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learned something
    trained = effective_receptive_field(model, val)
    assert model.training  # restored
    support = exact_receptive_field(model, 32)  # centre pixel (16, 16)
    assert support_box(support) == (8, 8, 24, 24)
    offsets = torch.arange(-8.0, 9.0)
    uniform_rms = float(2 * (offsets**2).mean()) ** 0.5  # RMS distance if the ERF filled the RF evenly: 7.07 px
    for erf in (untrained, trained):
        assert erf.shape == (32, 32) and erf.dtype == torch.float64
        assert not (erf[~support] != 0).any()  # the ERF lives inside the theoretical RF
        assert erf[16, 16] > 0
        radius = erf_radius(erf, 0.95, center=(16, 16))
        assert np.pi * radius**2 < theoretical**2  # the disc with 95 % of the mass is smaller than the RF
        assert erf_rms_radius(erf, center=(16, 16)) < 0.7 * uniform_rms  # mass concentrated near the centre
    # Luo et al. 2016: the trained ERF (5.8 px here) lies well inside the theoretical RF (half-width 8 px)
    assert erf_radius(trained, 0.95, center=(16, 16)) < 0.8 * (theoretical - 1) / 2
    # an iterable of (image, mask) batches gives the same map as the tensor
    from_loader = effective_receptive_field(model, [(val[:10], None), (val[10:], None)])
    torch.testing.assert_close(from_loader, trained)
    with pytest.raises(ValueError, match="same size"):
        effective_receptive_field(model, [val[:2], val[:2, :, :16, :16]])
    # one channel, an intermediate layer
    erf = effective_receptive_field(model, val[:4], (3, 3), layer="2", channel=0)
    assert support_box(erf > 0) == (2, 2, 4, 4)


# ------------------------------------------------------------------------------------- the package
def test_package_api_and_layout():
    """The public API is unchanged by the split; each module stays short and takes no private name from
    another (the old exact.py took five from analytic.py, effective.py two from exact.py)."""
    import ast
    from pathlib import Path

    import seglab.receptive_field as rf

    assert rf.__all__ == ["LayerSpec", "LayerRF", "layer_spec", "analytic_receptive_field", "format_rf_table",
                          "linearise", "LinearisedFunctions", "ReceptiveField", "exact_receptive_field",
                          "support_box", "support_size", "support_holes", "effective_receptive_field",
                          "erf_radius", "erf_rms_radius"]
    from seglab.receptive_field.analytic import LayerSpec as analytic_spec  # old module paths still work
    from seglab.receptive_field.exact import LinearisedFunctions as exact_functions
    from seglab.receptive_field.exact import linearise as exact_linearise

    assert (analytic_spec, exact_functions, exact_linearise) == (LayerSpec, LinearisedFunctions, linearise)
    for path in Path(rf.__file__).parent.glob("*.py"):
        source = path.read_text()
        assert len(source.splitlines()) <= 300, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from .{node.module}"
