"""seglab.data.thin_structures: items, determinism, and the properties the task is designed to have, each checked
with an independent tool (scipy.ndimage morphology, torch pooling): fibres are thin and dark, blobs are large and
blue, and a 1/16 summary of the mask keeps the blobs but loses the fibres."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from seglab.data import pad_collate
from seglab.data.thin_structures import THIN_CLASSES, THIN_SPLIT_SIZES, ThinStructures
from seglab.transforms import eval_transform

BLOB, FIBRE = THIN_CLASSES.index("blob"), THIN_CLASSES.index("fibre")


def masks(dataset, count=16):
    return np.stack([dataset[i][1] for i in range(count)])  # (N, S, S)


def test_items_classes_and_lengths():
    ds = ThinStructures("val", num_images=3, image_size=48)
    image, mask = ds[0]
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 48) and mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1, 2}
    assert ds.classes == ("background", "blob", "fibre") and ds.num_classes == 3 and len(ds.colors) == 3
    assert len(ds) == 3 and len(ThinStructures("train")) == THIN_SPLIT_SIZES["train"] == 512
    with pytest.raises(IndexError):
        ds[3]


def test_deterministic_and_split_streams_differ():
    a, b = ThinStructures("train", seed=5)[7], ThinStructures("train", seed=5)[7]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], ThinStructures("val", seed=5)[7][1])
    assert not np.array_equal(a[1], ThinStructures("train", seed=6)[7][1])


def test_with_a_transform_and_pad_collate():
    ds = ThinStructures("train", num_images=4, transform=eval_transform(pad_multiple=None))
    images, labels = pad_collate([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (4, 64, 64) and labels.dtype == torch.int64


def test_class_frequencies():
    frequency = np.bincount(masks(ThinStructures("train"), 32).ravel(), minlength=3) / (32 * 64 * 64)
    assert 0.04 < frequency[FIBRE] < 0.15 and 0.08 < frequency[BLOB] < 0.35  # fibres: a minority, but dense
    # the fibre count scales with the area: the same density at 128×128
    large = np.bincount(masks(ThinStructures("train", image_size=128), 8).ravel(), minlength=3) / (8 * 128 * 128)
    assert abs(large[FIBRE] - frequency[FIBRE]) < 0.03


def test_fibres_are_thin_and_blobs_are_not():
    square = np.ones((3, 3), bool)
    fibres = masks(ThinStructures("train", blobs=(0, 0))) == FIBRE
    kept = sum(ndimage.binary_erosion(m, square).sum() for m in fibres) / fibres.sum()
    assert kept < 0.05  # a 3×3 erosion removes fibres 1 px wide (a few pixels survive where curves cross)
    wide = masks(ThinStructures("train", blobs=(0, 0), fibre_width=4)) == FIBRE
    assert sum(ndimage.binary_erosion(m, square).sum() for m in wide) / wide.sum() > 0.3  # fibre_width works
    blobs = masks(ThinStructures("train", fibres=(0, 0))) == BLOB
    assert sum(ndimage.binary_erosion(m, square).sum() for m in blobs) / blobs.sum() > 0.8


def test_fibres_are_dark_lines_and_blobs_are_blue():
    ds = ThinStructures("train", num_images=16)
    darker, bluer = [], []
    for image, mask in (ds[i] for i in range(16)):
        rgb = image.astype(np.float64)
        fibre = mask == FIBRE
        ring = ndimage.binary_dilation(fibre, iterations=2) & ~fibre  # the pixels around the fibres
        darker.append(rgb[fibre].mean() / rgb[ring].mean())
        if (mask == BLOB).any():
            blue_minus_red = rgb[..., 2] - rgb[..., 0]
            bluer.append(blue_minus_red[mask == BLOB].mean() - blue_minus_red[mask == 0].mean())
    assert max(darker) < 0.6  # a fibre keeps 40 % of the brightness beneath it (plus noise)
    assert min(bluer) > 70  # the blobs' colour cue: +60 blue, -50 red, against a near-grey background


def test_a_one_sixteenth_summary_keeps_blobs_and_loses_fibres():
    """What a decoder without skips starts from: per 16×16 cell, the fraction of each class (the best a stride-16
    summary can say without sub-cell positions), upsampled bilinearly; its argmax recovers blobs, not fibres."""
    target = torch.from_numpy(masks(ThinStructures("val"), 32))  # (N, 64, 64)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()  # (N, 3, 64, 64)
    summary = F.avg_pool2d(onehot, 16)  # (N, 3, 4, 4): class fractions per cell
    guess = F.interpolate(summary, scale_factor=16, mode="bilinear", align_corners=False).argmax(1)  # (N, 64, 64)

    def iou(k):
        return ((guess == k) & (target == k)).sum().item() / ((guess == k) | (target == k)).sum().item()

    assert iou(BLOB) > 0.4 and iou(FIBRE) < 0.05
    assert summary[:, FIBRE].max() < 0.5  # no cell is mostly fibre: fibres are a minority of every cell


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "test2"}, "unknown split 'test2'"),
    ({"num_images": 0}, "num_images must be >= 1"),
    ({"image_size": 16}, "image_size must be >= 32"),
    ({"fibre_width": 0.5}, "fibre_width must be >= 1"),
    ({"fibres": (5, 2)}, r"fibres must be a range \(low, high\)"),
    ({"blobs": (-1, 2)}, r"blobs must be a range"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThinStructures(**kwargs)
