"""seglab.interactive: the clickers, NoC, the flood-fill baseline and SAM's click loss on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.imaging import to_tensor
from seglab.interactive import (ClickTrainingConfig, FloodFillSegmenter, click_curves, mask_iou, nano_sam_64,
                                next_click, normalize_images, number_of_clicks, sam_click_curves, sam_click_loss,
                                sample_boxes, sample_error_points, sample_first_points, summarize_clicks,
                                synthetic_objects, train_sam_clicks)
from seglab.models.sam import Sam


def _square(size=9, top=2, left=2, side=5):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


# ---- the evaluation clicker -------------------------------------------------------------------------------------

def test_next_click_first_click_is_object_centre():
    assert next_click(np.zeros((9, 9), bool), _square()) == (4, 4, True)  # centre of rows/cols 2..6


def test_next_click_none_when_exact():
    assert next_click(_square(), _square()) is None


def test_next_click_picks_largest_region_and_sign():
    target = _square(size=11)  # rows/cols 2..6
    prediction = target.copy()
    prediction[2:7, 2] = False  # false-negative strip of 5 pixels
    prediction[8:11, 8:11] = True  # false-positive 3x3 block in the corner: 9 pixels, the largest error
    # distances to the nearest pixel outside the block (the image border counts): 2 at its centre, 1 elsewhere
    assert next_click(prediction, target) == (9, 9, False)
    prediction[8:11, 8:11] = False
    prediction[0, 8:10] = True  # a 2-pixel false positive: now the strip is larger; its first pixel (all at 1)
    assert next_click(prediction, target) == (2, 2, True)


def test_next_click_tie_prefers_false_negative():
    target = np.zeros((6, 6), bool)
    target[0, 0:3] = True
    prediction = target.copy()
    prediction[0, 0:3] = False  # 3 false negatives
    prediction[5, 0:3] = True  # 3 false positives
    assert next_click(prediction, target)[2] is True


def test_next_click_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# ---- training clicks ----------------------------------------------------------------------------------------------

def test_sample_first_points_inside_target():
    targets = torch.zeros(50, 8, 8, dtype=torch.bool)
    targets[:, 3:5, 5:7] = True
    targets[-1] = False
    points, labels = sample_first_points(targets, torch.Generator().manual_seed(0))
    assert points.shape == (50, 1, 1, 2) and labels.shape == (50, 1, 1)
    x, y = points[:-1, 0, 0].long().unbind(1)
    assert targets[torch.arange(49), y, x].all() and (labels[:-1] == 1).all() and labels[-1] == -1
    assert len({tuple(p) for p in points[:-1, 0, 0].tolist()}) == 4  # all 4 pixels drawn (uniform)


def test_sample_error_points_sign():
    targets = torch.zeros(40, 6, 6, dtype=torch.bool)
    targets[:, :3] = True
    predictions = torch.zeros_like(targets)
    predictions[:20, :3, :3] = True  # first half: false negatives only (rows 0..2, cols 3..5)
    predictions[20:] = True  # second half: false positives only (rows 3..5)
    predictions[-1] = targets[-1]  # exact: padding
    points, labels = sample_error_points(predictions, targets, torch.Generator().manual_seed(0))
    x, y = points[:, 0, 0].long().unbind(1)
    assert (labels[:20] == 1).all() and (x[:20] >= 3).all() and (y[:20] <= 2).all()
    assert (labels[20:-1] == 0).all() and (y[20:-1] >= 3).all() and labels[-1] == -1


def test_sample_boxes_contain_noise_and_stay_inside():
    targets = torch.zeros(200, 32, 32, dtype=torch.bool)
    targets[:, 10:20, 5:25] = True
    boxes = sample_boxes(targets, torch.Generator().manual_seed(0))
    assert boxes.shape == (200, 1, 4)
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes >= 0).all() and (boxes <= 32).all()
    mean = boxes[:, 0].mean(0)
    assert torch.allclose(mean, torch.tensor([5.0, 10.0, 24.0, 19.0]), atol=0.6)
    assert boxes[:, 0, 0].std() > 1  # noise: std 10 % of the 20-pixel side
    with pytest.raises(ValueError, match="non-empty"):
        sample_boxes(torch.zeros(1, 4, 4, dtype=torch.bool))


# ---- metrics ------------------------------------------------------------------------------------------------------

def test_number_of_clicks_by_hand():
    ious = np.array([
        [0.90, 0.95, 0.95, 0.95],  # reaches 0.85 and 0.90 at click 1
        [0.50, 0.86, 0.89, 0.91],  # 0.85 at click 2, 0.90 at click 4
        [0.10, 0.20, 0.30, 0.84],  # never: the cap, 4
    ])
    assert number_of_clicks(ious, 0.85).tolist() == [1, 2, 4]
    assert number_of_clicks(ious, 0.90).tolist() == [1, 4, 4]
    assert number_of_clicks(ious, 0.85, max_clicks=2).tolist() == [1, 2, 2]
    row = summarize_clicks(ious, at=(1, 3), max_clicks=4)
    assert row["NoC@85"] == pytest.approx(7 / 3) and row["NoC@90"] == pytest.approx(3)
    assert row["NoF@85"] == 1 and row["NoF@90"] == 1 and row["IoU@1"] == pytest.approx(0.5)
    assert row["IoU@3"] == pytest.approx((0.95 + 0.89 + 0.30) / 3)


def test_number_of_clicks_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        number_of_clicks(np.ones((2, 3)), 85)
    with pytest.raises(ValueError, match="max_clicks"):
        number_of_clicks(np.ones((2, 3)), 0.85, max_clicks=20)
    with pytest.raises(ValueError, match="ious"):
        number_of_clicks(np.ones(3), 0.85)


def test_normalize_images_is_to_tensor_per_image_and_refuses_bad_input():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    got = normalize_images(images)
    assert got.shape == (2, 3, 5, 6) and got.dtype == torch.float32
    assert torch.equal(got[1], to_tensor(images[1]))
    with pytest.raises(ValueError, match="images must be"):
        normalize_images(images[0])  # one image, no batch dimension
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(images.astype(np.float32))


def test_mask_iou_by_hand():
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[0, :2], b[0, 1:3] = True, True
    assert mask_iou(a, b) == pytest.approx(1 / 3) and mask_iou(b & False, a & False) == 1.0


# ---- the flood-fill baseline -------------------------------------------------------------------------------------

def test_flood_fill_positive_and_negative_clicks():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200  # right half bright
    image[0:2, 0:2] = 100  # a grey block in the dark half
    seg = FloodFillSegmenter(image, tolerance=30, sigma=0)
    left = seg.segment([(5, 1, True)])
    assert left.sum() == 32 - 4 and not left[:, 4:].any() and not left[0:2, 0:2].any()
    both = seg.segment([(5, 1, True), (5, 6, True)])
    assert both.sum() == 64 - 4
    assert seg.segment([(5, 1, True), (5, 6, True), (5, 6, False)]).sum() == 28  # negative removes its region
    with pytest.raises(ValueError, match="outside"):
        seg.segment([(8, 0, True)])
    with pytest.raises(ValueError, match="tolerance"):
        FloodFillSegmenter(image, tolerance=0)


def test_click_curves_flood_fill_hand_case():
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:6, 2:6] = 255
    target = image[..., 0] > 0
    seg = FloodFillSegmenter(image, tolerance=30, sigma=0)
    curves = click_curves(lambda i, clicks: seg.segment(clicks), [target], max_clicks=3)
    assert curves.tolist() == [[1.0, 1.0, 1.0]]  # one click floods the square exactly; then nothing to fix


# ---- SAM's click loss ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_batch():
    images, targets = synthetic_objects("train", 4)
    return normalize_images(images[:3]), torch.from_numpy(targets[:3])


def test_sam_click_loss_shapes_and_backward(tiny_batch):
    torch.manual_seed(0)
    model = Sam(nano_sam_64())
    images, targets = tiny_batch
    assert images.shape == (3, 3, 64, 64) and targets.shape == (3, 64, 64)
    for box in (0.0, 1.0):
        loss, parts = sam_click_loss(model, images, targets, ClickTrainingConfig(click_rounds=2, box_probability=box),
                                     torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert set(parts) == {"focal", "dice", "iou_mse", "first_iou", "last_iou"}
        loss.backward()
        assert model.mask_decoder.iou_prediction_head.layers[0].weight.grad is not None
        assert model.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0
        model.zero_grad()


def test_sam_click_loss_bad_targets(tiny_batch):
    model = Sam(nano_sam_64())
    images, targets = tiny_batch
    with pytest.raises(ValueError, match="targets"):
        sam_click_loss(model, images, targets[:2])
    with pytest.raises(ValueError, match="non-empty"):
        sam_click_loss(model, images, torch.zeros_like(targets))


def test_sam_click_curves_shape(tiny_batch):
    images, targets = synthetic_objects("val", 2)
    model = Sam(nano_sam_64())
    curves = sam_click_curves(model, images, targets, max_clicks=3)
    assert curves.shape == (len(images), 3) and ((curves >= 0) & (curves <= 1)).all()
    with pytest.raises(ValueError, match="patch_size"):
        sam_click_curves(Sam("nano"), images, targets, max_clicks=1)


# ---- a short training beats the untrained model --------------------------------------------------------------------

def _held_out_loss(model, images, targets):
    """SAM's click loss on held-out objects with fixed clicks (generator seed 0), no gradient."""
    with torch.no_grad():
        return sam_click_loss(model, normalize_images(images), torch.from_numpy(targets), ClickTrainingConfig(),
                              torch.Generator().manual_seed(0))[0].item()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_short_training_beats_untrained(seed):
    """40 steps of 8 (about 15 s of CPU) lower SAM's click loss on held-out shapes. Measured on seeds 0, 1, 2
    (2026-12-08): 1.057 -> 0.955, 1.066 -> 0.958, 1.077 -> 0.952 (drops 0.10-0.125); the test asks for 0.05.
    (Click IoU does not yet improve after 40 steps; see benchmarks/sam_clicks.py for that.)"""
    torch.manual_seed(seed)
    train_images, train_targets = synthetic_objects("train", 128)
    val_images, val_targets = synthetic_objects("val", 16)
    model = Sam(nano_sam_64())
    before = _held_out_loss(model, val_images, val_targets)
    train_sam_clicks(model, train_images, train_targets, steps=40, batch_size=8, lr=2e-3, seed=seed)
    after = _held_out_loss(model, val_images, val_targets)
    assert after < before - 0.05, (before, after)
