"""seglab.data.scaled_shapes: the controlled task of notebook 10's TTA section. Oracles: the layout's own geometry
(areas of discs and squares), nearest-neighbour downsampling between zooms, and determinism."""

import math

import numpy as np
import pytest

from seglab.data.scaled_shapes import CANVAS_SIZE, ScaledShapes


def test_items_sizes_and_classes():
    for zoom in (0.5, 1.0, 2.0):
        data = ScaledShapes("val", 4, zoom=zoom)
        image, mask = data[0]
        side = round(CANVAS_SIZE * zoom)
        assert image.shape == (side, side, 3) and image.dtype == np.uint8
        assert mask.shape == (side, side) and mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1, 2}
    assert ScaledShapes("train").num_classes == 3 and len(ScaledShapes("train")) == 512


def test_the_layout_does_not_depend_on_zoom_and_masks_agree():
    small, large = ScaledShapes("val", 8, zoom=1.0), ScaledShapes("val", 8, zoom=2.0)
    for i in range(8):
        assert small.describe(i)["shapes"] == large.describe(i)["shapes"]
        m1, m2 = small[i][1], large[i][1]
        # pixel (y, x) at zoom 1 has its centre at (2y + 1, 2x + 1) at zoom 2, on a sub-pixel boundary: compare
        # the 2x2 block's majority instead, away from ties
        agree = (m2[0::2, 0::2] == m1) | (m2[1::2, 1::2] == m1)
        assert agree.mean() > 0.99


def test_areas_match_the_layout():
    data = ScaledShapes("val", 16, zoom=4.0)  # fine pixels: areas close to the continuous ones
    for i in range(16):
        shapes = data.describe(i)["shapes"]
        mask = data[i][1]
        for label in (1, 2):
            expected = sum((math.pi if c == 1 else 4.0) * (r * 4.0) ** 2 for c, _y, _x, r in shapes if c == label)
            assert abs(int((mask == label).sum()) - expected) <= 0.03 * expected + 40


def test_determinism_and_split_seeds():
    a, b = ScaledShapes("val", 2, seed=3), ScaledShapes("val", 2, seed=3)
    assert np.array_equal(a[1][0], b[1][0]) and np.array_equal(a[1][1], b[1][1])
    assert a.describe(0)["shapes"] != ScaledShapes("train", 2, seed=3).describe(0)["shapes"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ScaledShapes("nope")
    with pytest.raises(ValueError, match="num_images"):
        ScaledShapes("val", 0)
    with pytest.raises(ValueError, match="zoom"):
        ScaledShapes("val", 2, zoom=0.1)
