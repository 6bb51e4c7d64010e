"""Images and the tensors models see: the ImageNet statistics and the one image <-> tensor pair.

Every seglab model takes images normalised channel by channel with the mean and standard deviation
of the ImageNet training set, measured on RGB values scaled to [0, 1] (the statistics torchvision's
pretrained weights were trained with; torchvision ``transforms.Normalize`` documentation and its
``references/segmentation``). Pixel ``v`` (0..255) of channel ``c`` becomes
``(v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]``, so the mean colour becomes 0: the value padding
uses everywhere in seglab.

- ``to_tensor``: ``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32, normalised (what a model eats);
- ``to_image``: ``(3, H, W)`` or ``(N, 3, H, W)`` normalised -> ``(H, W, 3)`` / ``(N, H, W, 3)`` uint8
  RGB (for pictures and files);
- ``denormalize``: ``(N, 3, H, W)`` normalised tensor -> RGB float32 in [0, 255], same shape and device
  (for computations on colours, e.g. the dense CRF's bilateral kernel).

``seglab.transforms`` (the albumentations presets), ``seglab.inference``, ``seglab.predict``,
``seglab.viz`` and ``seglab.widgets`` take the statistics from here; ``tests/test_imaging.py`` checks
that the presets and ``to_tensor`` agree and that both round-trip through ``to_image``.

Needs numpy; torch is imported by ``to_tensor`` only (``to_image`` and ``denormalize`` use the tensor
they are given), so ``seglab.viz`` can use this module without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_tensor", "to_image", "denormalize"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel (R, G, B) mean of ImageNet's training images, on values scaled to [0, 1]."""

IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel (R, G, B) standard deviation of ImageNet's training images, on values scaled to [0, 1]."""


def _statistics(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``mean``, ``std`` as float32 arrays of 3, checked (std > 0)."""
    mean_array, std_array = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean_array.shape != (3,) or std_array.shape != (3,) or not (std_array > 0).all():
        raise ValueError(f"mean and std must be 3 numbers each (R, G, B; std > 0) on the [0, 1] scale, got "
                         f"mean={tuple(mean)!r}, std={tuple(std)!r}: pass e.g. IMAGENET_MEAN, IMAGENET_STD")
    return mean_array, std_array


def to_tensor(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> "torch.Tensor":  # noqa: F821
    """The model input for one image: ``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32, normalised.

    ``out[c] = (image[..., c] / 255 - mean[c]) / std[c]``, on the CPU; the same numbers as
    ``seglab.transforms.eval_transform(pad_multiple=None)`` (albumentations ``Normalize``) to float32
    rounding. Add the batch dimension with ``to_tensor(image)[None]`` -> ``(1, 3, H, W)``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (e.g. ``np.asarray(PIL.Image.open(path).convert("RGB"))``).
        mean, std: per-channel statistics on the [0, 1] scale (ImageNet's by default).

    Returns:
        ``(3, H, W)`` float32 ``torch.Tensor`` (a new tensor; the image is not modified).

    Raises:
        ValueError: ``image`` is not an ``(H, W, 3)`` uint8 array (the message gives its dtype and shape),
            or ``mean``/``std`` are not 3 numbers (std > 0).
    """
    import torch

    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got dtype {array.dtype} shape {array.shape}: "
                         "convert it first (e.g. np.asarray(pil_image.convert('RGB')))")
    mean_array, std_array = _statistics(mean, std)
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)  # (3, H, W) in [0, 1]
    return (x - torch.from_numpy(mean_array).view(3, 1, 1)) / torch.from_numpy(std_array).view(3, 1, 1)


def to_image(tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Displayable RGB from normalised tensors: the inverse of :func:`to_tensor`.

    ``(3, H, W)`` -> ``(H, W, 3)`` uint8; ``(N, 3, H, W)`` -> ``(N, H, W, 3)`` uint8. Each value is
    multiplied by ``std``, shifted by ``mean``, scaled by 255, rounded to the nearest integer and clipped
    to 0..255, so ``to_image(to_tensor(image))`` gives ``image`` back exactly.

    Args:
        tensor: a float ``torch.Tensor`` (any device; detached and copied to the CPU) or numpy array,
            channels first, normalised with ``mean``/``std``.
        mean, std: the statistics it was normalised with, on the [0, 1] scale (ImageNet's by default;
            ``(0, 0, 0)`` and ``(1, 1, 1)`` for values already in [0, 1]).

    Returns:
        ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 numpy array.

    Raises:
        ValueError: the input is not ``(3, H, W)`` or ``(N, 3, H, W)`` (channels first, 3 channels), or
            ``mean``/``std`` are not 3 numbers.
    """
    if hasattr(tensor, "detach"):
        array = tensor.detach().cpu().float().numpy()
    else:
        array = np.asarray(tensor, np.float32)
    if array.ndim not in (3, 4) or array.shape[-3] != 3:
        raise ValueError(f"to_image expects a normalised (3, H, W) or (N, 3, H, W) image (channels first), got "
                         f"shape {array.shape}: for an (H, W, 3) array use it as it is, or move the channels first")
    mean_array, std_array = _statistics(mean, std)
    rgb = np.moveaxis(array, -3, -1) * std_array + mean_array  # (..., H, W, 3) in [0, 1]
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def denormalize(images: "torch.Tensor", mean: Sequence[float] = IMAGENET_MEAN,  # noqa: F821
                std: Sequence[float] = IMAGENET_STD) -> "torch.Tensor":  # noqa: F821
    """Undo the normalisation of a batch, keeping it a float tensor: RGB in [0, 255].

    ``out = clamp((images * std + mean) * 255, 0, 255)`` per channel, not rounded, on the device of
    ``images`` (for computations on colours, e.g. the bilateral kernel of ``seglab.crf.dense_crf``; use
    :func:`to_image` for pictures). Not to be confused with ``seglab.transforms.denormalize``, which
    returns uint8 ``(H, W, 3)`` pictures (it is :func:`to_image`).

    Args:
        images: ``(N, 3, H, W)`` (or one ``(3, H, W)``) float tensor, normalised with ``mean``/``std``.
        mean, std: the statistics, on the [0, 1] scale (ImageNet's by default).

    Returns:
        float32 tensor of the same shape and device, values in [0, 255].

    Raises:
        ValueError: ``images`` is not a ``(N, 3, H, W)`` or ``(3, H, W)`` tensor, or ``mean``/``std`` are
            not 3 numbers.
    """
    if not hasattr(images, "new_tensor") or images.dim() not in (3, 4) or images.shape[-3] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"denormalize expects a normalised (N, 3, H, W) or (3, H, W) torch tensor, got {shape}: "
                         "convert numpy arrays with torch.from_numpy, or use to_image for pictures")
    mean_array, std_array = _statistics(mean, std)
    x = images.float()
    mean_t = x.new_tensor(mean_array).view(3, 1, 1)
    std_t = x.new_tensor(std_array).view(3, 1, 1)
    return ((x * std_t + mean_t) * 255.0).clamp(0.0, 255.0)
