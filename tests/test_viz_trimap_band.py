"""The trimap band that ``viz.compare_predictions`` draws, and ``viz.image_trimap_iou``, on padded masks:
padding strips (trailing whole rows / columns of 255 at the bottom and right, where seglab pads) are not boundaries, ignored pixels are never band,
and an ignore outline inside the image (VOC) still is a boundary. Expected bands are written out by hand."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from seglab import viz
from seglab.viz.skips import _boundary_band

# a 6x8 mask, class 0 left of column 4, class 1 from column 4: with band_width 2 the band is the pixels within
# 1 px (Chebyshev) of a pixel whose 4-neighbour has another label, i.e. columns 2..5 (labelled by hand)
MASK = np.zeros((6, 8), dtype=np.int64)
MASK[:, 4:] = 1
BAND = np.zeros((6, 8), dtype=bool)
BAND[:, 2:6] = True


def padded(mask, rows=3, cols=3):
    out = np.full((mask.shape[0] + rows, mask.shape[1] + cols), 255, dtype=np.int64)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def test_band_of_an_unpadded_mask_is_the_hand_computed_band():
    np.testing.assert_array_equal(_boundary_band(MASK, 2, 255), BAND)


def test_padding_strips_are_not_drawn_as_band():
    band = _boundary_band(padded(MASK), 2, 255)
    expected = np.zeros((9, 11), dtype=bool)
    expected[:6, :8] = BAND  # nothing along the padding's edge (columns 6-7, rows 4-5 stay out), nothing in it
    np.testing.assert_array_equal(band, expected)


def test_only_bottom_right_strips_are_padding_and_an_all_ignore_mask():
    mask = np.full((10, 12), 255, dtype=np.int64)
    mask[2:8, 3:11] = MASK  # ignore above and left (annotation: its edge is a boundary), padding below and right
    band = _boundary_band(mask, 2, 255)
    expected = np.zeros((10, 12), dtype=bool)
    expected[2:8, 3:11] = BAND
    expected[2:4, 3:11] = expected[2:8, 3:5] = True  # within 1 px of the edges along the top and left ignore strips
    np.testing.assert_array_equal(band, expected)
    assert not _boundary_band(np.full((4, 4), 255, dtype=np.int64), 2, 255).any()


def test_an_ignore_outline_inside_the_image_is_a_boundary_but_not_band():
    mask = np.zeros((9, 9), dtype=np.int64)
    mask[3:6, 3:6] = 1
    mask[2, 2:7] = mask[6, 2:7] = mask[2:7, 2] = mask[2:7, 6] = 255  # a VOC-style 255 outline around the square
    band = _boundary_band(mask, 1, 255)  # band_width 1: the edge pixels themselves
    assert not band[mask == 255].any()
    assert band[3:6, 3:6].sum() == 8  # the square's ring next to the outline (its centre is not an edge)
    assert band[1, 2:7].all() and band[7, 2:7].all()  # the background next to the outline (4-neighbours)
    assert not band[0].any() and not band[1, 1] and not band[1, 7]


def test_image_trimap_iou_ignores_the_padding():
    pred = MASK.copy()
    pred[:, 4] = 0  # one column wrong, inside the band
    # hand count inside the band (columns 2..5): class 0 TP 12, FP 6, class 1 TP 6, FN 6 -> IoU 12/18 and 6/12
    expected = (12 / 18 + 6 / 12) / 2
    assert viz.image_trimap_iou(pred, MASK, 2, 2) == pytest.approx(expected)
    assert viz.image_trimap_iou(padded(pred), padded(MASK), 2, 2) == pytest.approx(expected)
    assert np.isnan(viz.image_trimap_iou(np.zeros((4, 4), dtype=np.int64), np.full((4, 4), 255), 2, 2))


def test_compare_predictions_draws_no_band_on_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)
    fig = viz.compare_predictions(image, padded(MASK), {"model": padded(MASK)}, ["a", "b"],
                                  [(255, 0, 0), (0, 0, 255)], band_width=2, ignore_index=255)
    band_panel = [ax for ax in fig.axes if ax.get_title().startswith("trimap band")][0]
    shown = np.asarray(band_panel.get_images()[0].get_array())
    yellow = np.all(shown == (255, 200, 0), axis=-1)
    assert yellow[:6, :8].sum() == BAND.sum() and not yellow[6:].any() and not yellow[:, 8:].any()
