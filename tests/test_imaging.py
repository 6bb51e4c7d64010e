"""seglab.imaging: the one source of the ImageNet statistics and the image <-> tensor pair.

The presets of ``seglab.transforms`` normalise with albumentations; ``to_tensor`` with torch: both must
give the same tensor, and ``to_image`` must undo both exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab import imaging, inference, transforms, viz
from seglab.imaging import IMAGENET_MEAN, IMAGENET_STD, denormalize, to_image, to_tensor


def _image(height=13, width=17, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_statistics_are_imagenets_and_shared():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    for module in (transforms, viz):  # re-exported, not re-typed
        assert module.IMAGENET_MEAN is IMAGENET_MEAN and module.IMAGENET_STD is IMAGENET_STD, module.__name__
    assert (inference.IMAGENET_MEAN, inference.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)  # what evaluate uses


def test_to_tensor_normalises_by_hand():
    image = _image()
    x = to_tensor(image)
    assert x.shape == (3, 13, 17) and x.dtype == torch.float32
    by_hand = (image.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x.numpy(), by_hand.transpose(2, 0, 1), atol=1e-6)
    mean_colour = np.broadcast_to(np.rint(np.array(IMAGENET_MEAN) * 255).astype(np.uint8), (2, 2, 3))
    assert to_tensor(mean_colour).abs().max() < 0.01  # the mean colour is (about) 0: what padding fills with


def test_transforms_eval_preset_agrees_with_to_tensor_and_round_trips():
    image = _image(37, 29, seed=1)
    mask = np.zeros(image.shape[:2], np.int64)
    preset = transforms.eval_transform(pad_multiple=None)(image=image, mask=mask)["image"]
    torch.testing.assert_close(preset, to_tensor(image), atol=2e-6, rtol=0)  # albumentations vs torch arithmetic
    np.testing.assert_array_equal(to_image(preset), image)
    np.testing.assert_array_equal(to_image(to_tensor(image)), image)
    np.testing.assert_array_equal(transforms.denormalize(preset), image)  # the presets' inverse is to_image
    padded = transforms.eval_transform(pad_multiple=32)(image=image, mask=mask)["image"]  # (3, 64, 32)
    np.testing.assert_array_equal(to_image(padded)[:37, :29], image)
    assert (padded[:, 37:] == 0).all()  # padding is the mean colour


def test_to_image_batches_arrays_and_other_statistics():
    images = np.stack([_image(seed=s) for s in range(3)])  # (3, H, W, 3)
    batch = torch.stack([to_tensor(im) for im in images])  # (3, 3, H, W)
    out = to_image(batch)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(to_image(batch[0].numpy()), images[0])
    unit = torch.from_numpy(images[0].transpose(2, 0, 1) / 255.0)  # float64 in [0, 1], no normalisation
    np.testing.assert_array_equal(to_image(unit, (0, 0, 0), (1, 1, 1)), images[0])
    np.testing.assert_array_equal(to_image(torch.full((3, 1, 1), 9.0))[0, 0], [255, 255, 255])  # clipped


def test_denormalize_gives_float_rgb_on_the_same_device():
    image = _image(seed=2)
    batch = to_tensor(image)[None]
    rgb = denormalize(batch)
    assert rgb.shape == batch.shape and rgb.dtype == torch.float32 and rgb.device == batch.device
    torch.testing.assert_close(rgb[0], torch.from_numpy(image).permute(2, 0, 1).float(), atol=1e-4, rtol=0)
    assert denormalize(torch.full((1, 3, 2, 2), -9.0)).max() == 0  # clamped to [0, 255]
    assert denormalize(batch[0]).shape == (3, 13, 17)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: to_tensor(np.zeros((4, 5, 3), np.float32)), r"image must be an \(H, W, 3\) uint8.*float32"),
        (lambda: to_tensor(np.zeros((3, 4, 5), np.uint8)), r"image must be an \(H, W, 3\) uint8.*\(3, 4, 5\)"),
        (lambda: to_tensor(_image(), std=(0.2, 0.0, 0.2)), "std > 0"),
        (lambda: to_image(np.zeros((4, 5, 3), np.float32)), r"\(3, H, W\) or \(N, 3, H, W\).*\(4, 5, 3\)"),
        (lambda: to_image(np.zeros((3, 4, 5)), mean=(0.5, 0.5)), "3 numbers"),
        (lambda: denormalize(np.zeros((1, 3, 2, 2), np.float32)), "torch tensor"),
        (lambda: denormalize(torch.zeros(1, 1, 2, 2)), r"\(N, 3, H, W\).*\(1, 1, 2, 2\)"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_module_needs_no_torch_at_import():
    import subprocess
    import sys

    code = "import sys, seglab.imaging; assert 'torch' not in sys.modules, 'seglab.imaging imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert imaging.__all__ == ["IMAGENET_MEAN", "IMAGENET_STD", "to_tensor", "to_image", "denormalize"]
