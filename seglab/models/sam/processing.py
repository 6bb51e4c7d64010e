"""SAM's pre- and post-processing: long side to the encoder size, normalise, pad; masks back to the original image.

As the original code (``ResizeLongestSide``, ``Sam.preprocess``, ``Sam.postprocess_masks``) and Hugging Face's
``SamProcessor`` / ``SamImageProcessor`` do it:

1. resize so that the long side is S (1024), the short side ``int(short * S / long + 0.5)``, bilinear with
   antialiasing on uint8 (torchvision's ``resize``, as ``SamImageProcessor``; PIL's bilinear differs by at most
   one grey level);
2. normalise with the ImageNet mean/std (on 0..255 values: ``(x - 255 mean) / (255 std)``);
3. zero-pad on the bottom and right to ``S × S`` (zero = the mean colour after normalising);
4. point and box coordinates, ``(x, y)`` pixels of the original image, are scaled by ``(w'/W, h'/H)``;
5. the model's ``(…, 4S/p, 4S/p)`` mask logits are upsampled (bilinear) to ``S × S``, cropped to the resized
   image ``h' × w'``, and upsampled to the original ``H × W``; ``> 0`` gives the binary mask.

Coordinates are ``(x, y)``: x the column, y the row, in pixels; sizes are ``(height, width)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ...imaging import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["postprocess_masks", "preprocess", "preprocess_shape", "rescale_boxes",
           "rescale_points", "resize_longest_side"]

def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(h', w')`` of an ``height × width`` image whose long side is scaled to ``long_side`` (rounded half up)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _as_chw_uint8(image) -> torch.Tensor:
    if hasattr(image, "convert") and not isinstance(image, (np.ndarray, torch.Tensor)):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an (H, W, 3) RGB array; got shape {image.shape}")
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: PIL's arrays are read-only
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor; got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image tensor must be (3, H, W); got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise TypeError(f"image must hold uint8 values 0..255; got dtype {image.dtype}: convert with (x * 255).round().byte()")
    return image


def resize_longest_side(image, long_side: int = 1024) -> torch.Tensor:
    """Bilinear (antialiased) resize of a uint8 image so its long side is ``long_side``: ``(3, h', w')`` uint8."""
    image = _as_chw_uint8(image)
    size = preprocess_shape(*image.shape[-2:], long_side)
    return TF.resize(image, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def preprocess(images, image_size: int = 1024, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
    """Images (one, or a list of PIL / ``(H, W, 3)`` uint8 arrays / ``(3, H, W)`` uint8 tensors) -> model input.

    Returns ``pixel_values`` ``(N, 3, S, S)`` float32 (normalised, zero-padded bottom/right), the original sizes
    ``[(H, W), ...]`` and the resized sizes ``[(h', w'), ...]`` (what ``postprocess_masks`` needs back).

    Raises:
        TypeError / ValueError: an image that is not RGB uint8.
    """
    if not isinstance(images, (list, tuple)):
        images = [images]
    mean255 = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
    std255 = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
    batch, original_sizes, input_sizes = [], [], []
    for image in images:
        image = _as_chw_uint8(image)
        original_sizes.append(tuple(image.shape[-2:]))
        resized = resize_longest_side(image, image_size)  # (3, h', w') uint8
        input_sizes.append(tuple(resized.shape[-2:]))
        x = (resized.float() - mean255) / std255
        batch.append(F.pad(x, (0, image_size - x.shape[-1], 0, image_size - x.shape[-2])))  # (3, S, S)
    return torch.stack(batch), original_sizes, input_sizes


def rescale_points(points: torch.Tensor, original_size: tuple[int, int], image_size: int = 1024) -> torch.Tensor:
    """``(..., 2)`` (x, y) pixels of an ``original_size = (H, W)`` image -> pixels of the resized image (float32)."""
    height, width = original_size
    new_height, new_width = preprocess_shape(height, width, image_size)
    scale = torch.tensor([new_width / width, new_height / height], dtype=torch.float64)
    return (torch.as_tensor(points, dtype=torch.float64) * scale).float()


def rescale_boxes(boxes: torch.Tensor, original_size: tuple[int, int], image_size: int = 1024) -> torch.Tensor:
    """``(..., 4)`` ``(x0, y0, x1, y1)`` pixels of the original image -> pixels of the resized image (float32)."""
    boxes = torch.as_tensor(boxes)
    return rescale_points(boxes.reshape(*boxes.shape[:-1], 2, 2), original_size, image_size).reshape(boxes.shape)


def postprocess_masks(masks: torch.Tensor, original_sizes: Sequence[tuple[int, int]],
                      input_sizes: Sequence[tuple[int, int]], image_size: int = 1024, binarize: bool = True,
                      mask_threshold: float = 0.0) -> list[torch.Tensor]:
    """Low-resolution logits ``(N, P, M, 4S/p, 4S/p)`` -> one ``(P, M, H_i, W_i)`` mask per image.

    Upsample to ``S × S``, crop the padding (keep the resized ``h' × w'``), upsample to the original ``H × W``
    (bilinear, ``align_corners=False``). ``binarize``: bool masks ``logits > mask_threshold``; else float logits.

    Raises:
        ValueError: ``original_sizes`` or ``input_sizes`` without one ``(H, W)`` per image of ``masks``.
    """
    if len(original_sizes) != masks.shape[0] or len(input_sizes) != masks.shape[0]:
        raise ValueError(f"original_sizes and input_sizes need one (H, W) per image: masks hold {masks.shape[0]}, got "
                         f"{len(original_sizes)} and {len(input_sizes)}")
    out = []
    for logits, (height, width), (new_height, new_width) in zip(masks, original_sizes, input_sizes):
        logits = F.interpolate(logits, (image_size, image_size), mode="bilinear", align_corners=False)  # (P, M, S, S)
        logits = logits[..., :new_height, :new_width]
        logits = F.interpolate(logits, (int(height), int(width)), mode="bilinear", align_corners=False)  # (P, M, H, W)
        out.append(logits > mask_threshold if binarize else logits)
    return out
