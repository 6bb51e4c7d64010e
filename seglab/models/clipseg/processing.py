"""CLIPSeg's image pre-processing, as Hugging Face's ``CLIPSegProcessor`` (its ``ViTImageProcessor``) does it,
and the way back from logits to a mask at the photo's size.

``preprocess``: RGB uint8 images of any size -> resized to 352×352 (bilinear with antialiasing, on the uint8
values, as torchvision does it) -> ``(x / 255 - mean) / std`` -> ``(N, 3, 352, 352)`` float32. The default
mean/std are ImageNet's, the values of the published CIDAS checkpoints' ``preprocessor_config.json`` and of
the original code's quickstart (not CLIP's own ``CLIP_MEAN``/``CLIP_STD``, offered here too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = ["CLIPSEG_IMAGE_SIZE", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "postprocess", "preprocess"]

CLIPSEG_IMAGE_SIZE = 352  # the side CLIPSeg was trained at (the original code's Resize((352, 352)))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _to_uint8_chw(image, index: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        tensor = image
    else:
        array = np.array(image.convert("RGB") if hasattr(image, "convert") else image)  # a writable copy
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"images[{index}] must be RGB (H, W, 3); got shape {array.shape}: convert it to RGB")
        tensor = torch.from_numpy(array).permute(2, 0, 1)
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"images[{index}] must be a (3, H, W) tensor; got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"images[{index}] must hold uint8 values 0–255; got {tensor.dtype}: pass the decoded photo")
    return tensor


def preprocess(images, size: int = CLIPSEG_IMAGE_SIZE, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """RGB photos -> the batch CLIPSeg takes.

    Args:
        images: a PIL image, an ``(H, W, 3)`` uint8 array, a ``(3, H, W)`` / ``(N, 3, H, W)`` uint8 tensor, or a
            list of these (sizes may differ).
        size: the output side (352, CLIPSeg's training size).
        mean, std: per channel, on the 0–1 scale.

    Returns:
        ``(N, 3, size, size)`` float32: each image resized (bilinear, antialiased, rounded back to uint8 as
        torchvision does for uint8 input), then ``(x / 255 - mean) / std``.

    Raises:
        ValueError / TypeError: an image that is not RGB or not uint8 (the message names its index).
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    batch = [TF.resize(_to_uint8_chw(image, i), [size, size], interpolation=TF.InterpolationMode.BILINEAR,
                       antialias=True) for i, image in enumerate(images)]  # (3, size, size) uint8 each
    scale_mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
    scale_std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
    return torch.stack([(image.float() - scale_mean) / scale_std for image in batch])  # (N, 3, size, size)


def postprocess(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits ``(N, h, w)`` -> mask probabilities ``(N, H, W)`` float32 in [0, 1] at the photo's ``size``
    (bilinear resize of the logits, then sigmoid); threshold them (e.g. ``> 0.5``) for a binary mask.

    Raises:
        ValueError: ``logits`` not 3-D ``(N, h, w)``.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, h, w) as CLIPSeg returns them; got shape {tuple(logits.shape)}")
    resized = F.interpolate(logits[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return resized.sigmoid()
