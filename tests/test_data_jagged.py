"""seglab.data.jagged: the controlled boundary task of notebook 06, checked against its own geometry."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.data.jagged import JaggedShapes, rim_radius


def test_items_are_deterministic_and_splits_differ():
    a, b = JaggedShapes("train", num_images=4, seed=3), JaggedShapes("train", num_images=4, seed=3)
    for i in range(4):
        (ia, ma), (ib, mb) = a[i], b[i]
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    val = JaggedShapes("val", num_images=4, seed=3)
    assert not np.array_equal(a[0][1], val[0][1])
    image, mask = a[0]
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and mask.dtype == np.int64
    assert set(np.unique(mask)) <= {0, 1, 2} and len(np.unique(mask)) >= 2


def test_teeth_have_the_asked_width_and_depth():
    """Walk the mean rim of every shape: the mask switches in/out 2 * periods times, each tooth about
    tooth_width pixels along the rim; inside the inner rim is all shape, outside the outer rim none."""
    ds = JaggedShapes("val", num_images=16, tooth_width=8.0, tooth_depth=6.0, max_shapes=1)
    for i in range(len(ds)):
        (kind, cy, cx, radius, periods, phase), = ds.describe(i)
        mask = ds[i][1] == kind
        theta = np.linspace(0, 2 * math.pi, 4000, endpoint=False)

        def sample(r):
            y = np.clip((cy + r * np.sin(theta)).astype(int), 0, 95)
            x = np.clip((cx + r * np.cos(theta)).astype(int), 0, 95)
            return mask[y, x]

        assert sample(radius - 3 - 1.5).all() and not sample(radius + 3 + 1.5).any()
        rim = sample(radius)  # the mean rim: half of it in the teeth, half in the gaps
        window = 101  # a majority over ~1/3 of a tooth: a tooth side crossed along pixel corners is one switch
        rim = np.convolve(np.concatenate([rim[-50:], rim, rim[:50]]).astype(float), np.ones(window) / window, "valid") > 0.5
        switches = int((rim != np.roll(rim, 1)).sum())
        assert switches == 2 * periods, (i, switches, periods)
        assert 6.5 <= 2 * math.pi * radius / (2 * periods) <= 9.5  # tooth width along the rim, pixels


def test_the_teeth_are_finer_than_a_stride_16_cell_and_coarser_than_stride_4():
    """Perfect scores pooled to stride 16 and upsampled (notebook 06) lose the teeth; stride 4 keeps them."""
    ds = JaggedShapes("val", num_images=32)
    masks = torch.stack([torch.from_numpy(ds[i][1]) for i in range(len(ds))])
    onehot = F.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    wrong = {}
    for stride in (16, 4):
        coarse = F.avg_pool2d(onehot, stride)
        pred = F.interpolate(coarse, size=(96, 96), mode="bilinear", align_corners=False).argmax(1)
        wrong[stride] = float((pred != masks).float().mean())
    assert wrong[16] > 3 * wrong[4], wrong


def test_colour_tells_the_class():
    ds = JaggedShapes("val", num_images=16)
    for i in range(len(ds)):
        image, mask = ds[i]
        for kind in (1, 2):
            if (mask == kind).sum() > 50:
                r, g, b = image[mask == kind].astype(float).mean(0) / 255
                hue = colorsys.rgb_to_hsv(r, g, b)[0]
                assert (hue < 0.15) if kind == 1 else (0.45 < hue < 0.72), (i, kind, hue)


def test_rim_radius_waves():
    theta = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    gear = rim_radius(1, theta, 10.0, 4, 2.0, 0.0)
    np.testing.assert_allclose(gear, [11, 9, 11, 9, 11, 9, 11, 9])
    star = rim_radius(2, np.array([0.0, math.pi / 4]), 10.0, 4, 2.0, 0.0)  # valley at 0, tip half a period on
    np.testing.assert_allclose(star, [9.0, 11.0])
    with pytest.raises(ValueError, match="kind"):
        rim_radius(3, theta, 10.0, 4, 2.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [(dict(split="dev"), "split"), (dict(num_images=0), "num_images"),
                                           (dict(image_size=32), "image_size"), (dict(tooth_width=0), "tooth"),
                                           (dict(max_shapes=0), "max_shapes")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JaggedShapes(**kwargs)
