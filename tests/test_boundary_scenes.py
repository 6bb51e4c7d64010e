"""seglab.data.boundary_scenes: the controlled task of notebook 10's CRF section. Oracles: hand-computed pooling,
the scenes' own definition (label edges are colour edges), and the claim the notebook builds on (a dense CRF
moves the coarse boundaries onto the image's edges)."""

import math

import pytest
import torch

from seglab.crf import dense_crf
from seglab.data.boundary_scenes import boundary_scenes, coarse_logits, draw_scene
from seglab.metrics import boundary_band, boundary_f_score, confusion_matrix, mean_iou


def test_shapes_dtypes_and_determinism():
    rgb, masks, logits = boundary_scenes(3, seed=5, size=(40, 56), num_classes=3)
    assert rgb.shape == (3, 3, 40, 56) and rgb.dtype == torch.float32
    assert masks.shape == (3, 40, 56) and masks.dtype == torch.int64
    assert logits.shape == (3, 3, 40, 56) and logits.dtype == torch.float32
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 255 and torch.equal(rgb, rgb.round())
    assert int(masks.min()) >= 0 and int(masks.max()) < 3
    again = boundary_scenes(3, seed=5, size=(40, 56), num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip((rgb, masks, logits), again))
    other = boundary_scenes(3, seed=6, size=(40, 56), num_classes=3)
    assert not torch.equal(masks, other[1])


def test_every_class_is_drawn_and_label_edges_are_colour_edges():
    rgb, masks, _ = boundary_scenes(4, seed=0, pixel_noise=0.0, min_contrast=80.0)
    for image, mask in zip(rgb, masks):
        assert len(mask.unique()) >= 3  # shapes may cover each other, but rarely all of one class
        for k in mask.unique().tolist():
            colours = image[:, mask == k]  # one flat colour per class without noise
            assert bool((colours == colours[:, :1]).all())
        means = torch.stack([image[:, mask == k][:, 0] for k in mask.unique().tolist()])
        assert float(torch.pdist(means).min()) >= 80.0


def test_coarse_logits_by_hand():
    mask = torch.zeros(1, 16, 16, dtype=torch.int64)
    mask[:, :, :4] = 1  # class 1 fills half of the left 8x8 cells
    logits = coarse_logits(mask, 2, stride=8, noise=0.0)
    # cells: left column p(1) = 0.5, right column p(1) = 0 (clamped to 1e-3); bilinear between the cell centres
    # (x = 4 and 12 in pixel coordinates, align_corners=False), constant outside them
    assert torch.allclose(logits[0, 1, :, 0], torch.full((16,), math.log(0.5)))
    assert torch.allclose(logits[0, 1, :, 15], torch.full((16,), math.log(1e-3)))
    left, right = math.log(0.5), math.log(1e-3)
    # pixel 7 (centre 7.5) sits 3.5 / 8 of the way from the left centre to the right one
    assert float(logits[0, 1, 0, 7]) == pytest.approx(left + 3.5 / 8 * (right - left), abs=1e-5)
    assert float(logits[0, 1, 0, 7:9].mean()) == pytest.approx((left + right) / 2, abs=1e-5)
    assert torch.allclose(logits[0, 0, :, 15], torch.zeros(16), atol=1e-6)  # p(0) = 1 -> log 1


def test_coarse_errors_sit_at_boundaries():
    _, masks, logits = boundary_scenes(4, seed=1, stride=8)
    wrong = logits.argmax(1) != masks
    assert wrong.any()
    band = boundary_band(masks, 8, ignore_index=None)  # within 7 px of a label edge
    assert bool((wrong & ~band).sum() == 0)


def test_a_dense_crf_sharpens_the_coarse_boundaries():
    rgb, masks, logits = boundary_scenes(2, seed=0, size=(48, 64))
    refined = dense_crf(logits, rgb)
    before, after = logits.argmax(1), refined.argmax(1)
    miou = [float(mean_iou(confusion_matrix(p, masks, 4))) for p in (before, after)]
    bf = [boundary_f_score(p, masks, 4).mean for p in (before, after)]
    assert miou[1] > miou[0] + 0.03 and bf[1] > bf[0] + 0.1, (miou, bf)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        boundary_scenes(0)
    with pytest.raises(ValueError, match="min_contrast"):
        boundary_scenes(1, num_classes=8, min_contrast=300.0)
    with pytest.raises(ValueError, match="mask must be"):
        coarse_logits(torch.zeros(4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="num_classes"):
        coarse_logits(torch.full((1, 4, 4), 3), 2)
    with pytest.raises(ValueError, match="stride"):
        coarse_logits(torch.zeros(1, 4, 4, dtype=torch.int64), 2, stride=0)
    assert draw_scene(20, 24, 3, torch.Generator().manual_seed(0)).shape == (20, 24)
