"""seglab.transforms: shapes and dtypes, nearest-neighbour masks, 255 padding, whole-image evaluation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seglab.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, train_transform

FAST = settings(max_examples=25, deadline=None)


def random_pair(rng: np.random.Generator, height: int, width: int, values=(0, 1, 2, 255)):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.choice(np.asarray(values, dtype=np.int64), size=(height, width))
    return image, mask


@pytest.mark.parametrize(("size", "crop"), [((360, 480), 64), ((30, 20), (48, 40)), ((100, 100), (32, 96))])
def test_train_output_has_crop_size_and_dtypes(size, crop):
    rng = np.random.default_rng(0)
    transform = train_transform(crop)
    height, width = (crop, crop) if isinstance(crop, int) else crop
    for _ in range(5):
        image, mask = random_pair(rng, *size)
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (3, height, width) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (height, width) and out["mask"].dtype == torch.int64


def test_train_pads_masks_with_255_and_images_with_mean():
    rng = np.random.default_rng(1)
    image, mask = random_pair(rng, 20, 30, values=(0, 1, 2))
    out = train_transform((32, 40), scale=(1.0, 1.0), hflip=False, color_jitter=False)(image=image, mask=mask)
    assert torch.equal(out["mask"][:20, :30], torch.from_numpy(mask))  # original pixels untouched, top-left
    assert (out["mask"][20:] == 255).all() and (out["mask"][:, 30:] == 255).all()
    assert (out["image"][:, 20:] == 0).all() and (out["image"][:, :, 30:] == 0).all()  # 0 = the mean colour
    np.testing.assert_array_equal(denormalize(out["image"])[:20, :30], image)


def test_train_scales_masks_with_nearest_neighbour():
    rng = np.random.default_rng(2)
    image, mask = random_pair(rng, 16, 16, values=tuple(range(21)) + (255,))
    out = train_transform(32, scale=(2.0, 2.0), hflip=False, color_jitter=False)(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"].numpy(), mask.repeat(2, axis=0).repeat(2, axis=1))


def test_train_flip_and_jitter_keep_labels_aligned():
    rng = np.random.default_rng(3)
    image, mask = random_pair(rng, 24, 24)
    transform = train_transform(24, scale=(1.0, 1.0))
    outcomes = set()
    for _ in range(30):
        out_mask = transform(image=image, mask=mask)["mask"].numpy()
        if np.array_equal(out_mask, mask):
            outcomes.add("same")
        else:
            np.testing.assert_array_equal(out_mask, mask[:, ::-1])
            outcomes.add("flipped")
    assert outcomes == {"same", "flipped"}


@FAST
@given(
    height=st.integers(5, 70),
    width=st.integers(5, 70),
    crop=st.integers(8, 64),
    labels=st.sets(st.sampled_from([0, 1, 3, 7, 20, 255]), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_train_never_invents_label_values(height, width, crop, labels, seed):
    rng = np.random.default_rng(seed)
    image, mask = random_pair(rng, height, width, values=sorted(labels))
    out = train_transform(crop)(image=image, mask=mask)["mask"]
    assert set(out.unique().tolist()) <= labels | {255}


@FAST
@given(
    height=st.integers(1, 100),
    width=st.integers(1, 100),
    multiple=st.sampled_from([1, 8, 16, 32]),
    seed=st.integers(0, 2**16),
)
def test_eval_keeps_every_pixel_and_pads_to_multiple(height, width, multiple, seed):
    rng = np.random.default_rng(seed)
    image, mask = random_pair(rng, height, width, values=(0, 4, 11, 255))
    out = eval_transform(pad_multiple=multiple)(image=image, mask=mask)
    out_h, out_w = out["mask"].shape
    assert out_h % multiple == 0 and out_w % multiple == 0
    assert height <= out_h < height + multiple and width <= out_w < width + multiple
    assert out["image"].shape == (3, out_h, out_w) and out["image"].dtype == torch.float32
    assert out["mask"].dtype == torch.int64
    np.testing.assert_array_equal(out["mask"][:height, :width].numpy(), mask)  # never cropped, never moved
    assert (out["mask"][height:] == 255).all() and (out["mask"][:, width:] == 255).all()
    assert (out["image"][:, height:] == 0).all() and (out["image"][:, :, width:] == 0).all()
    np.testing.assert_array_equal(denormalize(out["image"])[:height, :width], image)


def test_eval_normalises_with_imagenet_statistics():
    image = np.full((4, 4, 3), (124, 116, 104), dtype=np.uint8)
    out = eval_transform(pad_multiple=None)(image=image, mask=np.zeros((4, 4), np.int64))["image"]
    expected = (np.array([124, 116, 104]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected, dtype=torch.float32))
    assert out.shape == (3, 4, 4)


@pytest.mark.parametrize(
    ("size", "expected"), [((360, 480), (180, 240)), ((333, 500), (160, 240)), ((101, 77), (240, 183))]
)
def test_max_size_resizes_longer_side_with_nearest_masks(size, expected):
    rng = np.random.default_rng(5)
    image, mask = random_pair(rng, *size, values=(0, 5, 11, 255))
    out = eval_transform(pad_multiple=None, max_size=240)(image=image, mask=mask)
    assert tuple(out["mask"].shape) == expected and out["image"].shape[1:] == expected
    assert set(out["mask"].unique().tolist()) <= {0, 5, 11, 255}
    padded = eval_transform(pad_multiple=32, max_size=240)(image=image, mask=mask)["mask"]
    assert torch.equal(padded[: expected[0], : expected[1]], out["mask"]) and padded.shape[1] % 32 == 0
    train = train_transform(64, max_size=240)(image=image, mask=mask)["mask"]
    assert train.shape == (64, 64) and set(train.unique().tolist()) <= {0, 5, 11, 255}


def test_denormalize_shapes_and_errors():
    batch = torch.zeros(2, 3, 5, 6)
    out = denormalize(batch)
    assert out.shape == (2, 5, 6, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0, 0]) == tuple(round(m * 255) for m in IMAGENET_MEAN)
    assert denormalize(batch[0].numpy()).shape == (5, 6, 3)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        denormalize(torch.zeros(5, 6, 3))


def test_presets_are_picklable_for_worker_processes():
    rng = np.random.default_rng(4)
    image, mask = random_pair(rng, 10, 10)
    for transform in (train_transform(16), eval_transform()):
        clone = pickle.loads(pickle.dumps(transform))
        assert clone(image=image, mask=mask)["mask"].dtype == torch.int64


def test_bad_arguments():
    with pytest.raises(ValueError, match="crop_size must be positive"):
        train_transform(0)
    with pytest.raises(ValueError, match="0 < low <= high"):
        train_transform(32, scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="pad_multiple must be >= 1"):
        eval_transform(pad_multiple=0)
    with pytest.raises(ValueError, match="max_size must be a positive"):
        eval_transform(max_size=0)
