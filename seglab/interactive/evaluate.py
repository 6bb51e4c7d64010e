"""Run the evaluation clicker against a click segmenter: IoU curves ``(num_objects, max_clicks)``.

``click_curves`` works with any segmenter ``segment(object_index, clicks) -> mask`` (e.g. the flood-fill baseline);
``sam_click_curves`` runs SAM on all objects at once, one click round at a time, as SAM is used interactively
(Kirillov et al. 2023, Sec. 3 and 7.1): the image is encoded once; every click adds a point to the object's prompt
(all earlier points stay) and the previous low-resolution mask logits go back in as the mask prompt; the first
click asks for 3 masks and keeps the one with the highest predicted IoU, later clicks ask for one.

The IoU is measured on the ``H × W`` image, the mask being the logits ``> 0`` cropped to it (the model's mask
resolution must equal its input size: ``4 S / p == S``, i.e. ``patch_size == 4``, as in the 64-pixel nano-SAM of
``seglab.interactive.training``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..models.sam import Sam
from .clicks import next_click
from .metrics import mask_iou
from .training import normalize_images

__all__ = ["click_curves", "sam_click_curves"]


def click_curves(segment: Callable[[int, list[tuple[int, int, bool]]], np.ndarray], targets: Sequence[np.ndarray],
                 max_clicks: int = 20) -> np.ndarray:
    """IoU after each of ``max_clicks`` clicks of ``next_click``, per object: ``(len(targets), max_clicks)`` float64.

    ``segment(i, clicks)`` returns the ``(H, W)`` bool mask of object ``i`` for clicks ``[(row, col, positive)]``.
    Once a mask is exact the clicker stops and the IoU is carried to the end.

    Raises:
        ValueError: ``max_clicks < 1``; a target or a returned mask of another shape (``mask_iou``).
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1; got {max_clicks}")
    curves = np.zeros((len(targets), max_clicks))
    for i, target in enumerate(targets):
        target = np.asarray(target, dtype=bool)
        clicks: list[tuple[int, int, bool]] = []
        mask = np.zeros_like(target)
        for k in range(max_clicks):
            click = next_click(mask, target)
            if click is not None:
                clicks.append(click)
                mask = np.asarray(segment(i, clicks), dtype=bool)
            curves[i, k] = mask_iou(mask, target)
    return curves


@torch.no_grad()
def sam_click_curves(model: Sam, images: np.ndarray, targets: np.ndarray, max_clicks: int = 20,
                     batch_size: int = 64, feed_mask: bool = True) -> np.ndarray:
    """IoU curves of SAM driven by ``next_click``: ``(N, max_clicks)`` float64.

    Args:
        model: a ``Sam`` whose mask resolution is its input size (``patch_size == 4``); put in eval mode here.
        images: ``(N, H, W, 3)`` uint8, ``H, W <= model.config.image_size``.
        targets: ``(N, H, W)`` bool, one object per image.
        batch_size: objects decoded together.
        feed_mask: give the previous mask logits back as the mask prompt (SAM's interactive use).

    Raises:
        ValueError: mismatched shapes, or a model whose masks are not at its input resolution.
    """
    size = model.config.image_size
    if 4 * size // model.config.patch_size != size:
        raise ValueError(f"sam_click_curves needs masks at the input resolution (patch_size 4); got patch_size "
                         f"{model.config.patch_size}")
    if images.ndim != 4 or targets.shape != images.shape[:3]:
        raise ValueError(f"images (N, H, W, 3) and targets (N, H, W) must agree; got {images.shape}, {targets.shape}")
    model.eval()
    height, width = targets.shape[1:]
    curves = np.zeros((len(images), max_clicks))
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        target = targets[chunk].astype(bool)
        n = len(target)
        embeddings = model.encode_image(normalize_images(images[chunk]))  # (n, C, S/p, S/p)
        points = torch.zeros(n, 1, 0, 2)
        labels = torch.zeros(n, 1, 0, dtype=torch.long)
        masks = np.zeros_like(target)
        logits = None  # (n, 1, S, S)
        for k in range(max_clicks):
            new_points, new_labels = torch.zeros(n, 1, 1, 2), torch.full((n, 1, 1), -1, dtype=torch.long)
            for i in range(n):
                click = next_click(masks[i], target[i])
                if click is not None:
                    new_points[i, 0, 0] = torch.tensor([click[1], click[0]], dtype=torch.float32)  # (x, y)
                    new_labels[i, 0, 0] = int(click[2])
            points, labels = torch.cat([points, new_points], 2), torch.cat([labels, new_labels], 2)
            mask_inputs = logits if (feed_mask and logits is not None) else None
            out, iou = model.decode(embeddings, points, labels, mask_inputs=mask_inputs, multimask_output=k == 0)
            best = iou.argmax(-1)  # (n, 1)
            index = best[..., None, None, None].expand(-1, -1, 1, *out.shape[-2:])
            logits = out.gather(2, index)[:, :, 0]  # (n, 1, S, S): the kept mask
            fresh = (logits[:, 0, :height, :width] > 0).numpy()
            done = (new_labels[:, 0, 0] == -1).numpy()
            masks = np.where(done[:, None, None], masks, fresh)  # an exact mask stays as it is
            curves[chunk, k] = [mask_iou(m, t) for m, t in zip(masks, target)]
    return curves
