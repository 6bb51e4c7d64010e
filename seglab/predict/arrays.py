"""The model on in-memory images: class indices at each image's full size (``predict_batch``, ``predict_image``).

Images are normalised with the ImageNet statistics (``seglab.imaging.to_tensor``), and
``seglab.inference.infer_logits`` runs every step: shrink so the longer side is at most ``max_size`` (never
below one pixel, so extreme aspect ratios keep their content), pad bottom/right to a multiple of
``pad_multiple``, crop the logits and upsample them bilinearly to the full size before the argmax (the steps
of ``seglab.engine.forward_resized``, the full-size validation of ``fit``), plus the test-time augmentation,
sliding-window and CRF options of ``inference``.
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from seglab.imaging import to_tensor
from seglab.inference import infer_logits

__all__ = ["predict_batch", "predict_image", "MAX_LOGIT_ELEMENTS"]

#: N * K * H * W per forward (512 MB of float32 logits at full size): larger batches are split.
MAX_LOGIT_ELEMENTS = 2**27


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    batch_size: int = 4,
    inference: dict | None = None,
) -> list[np.ndarray]:
    """Class indices for each of ``images``, at each image's full size.

    Args:
        model: returns ``(N, K, h, w)`` logits for ``(N, 3, h, w)`` ImageNet-normalised input (eval mode
            is set here).
        images: ``(H_i, W_i, 3) uint8`` RGB arrays (``seglab.data.read_image``).
        max_size: run the model with the longer side shrunk to at most this many pixels (None: full size).
        pad_multiple: pad the model input bottom/right to a multiple of this (the model's stride).
        device: where the model is (default: the device of its first parameter).
        batch_size: images of the same size per forward pass (images of different sizes never
            share a batch, so batching does not change any prediction); a batch whose full-size logits
            would exceed ``MAX_LOGIT_ELEMENTS`` is split.
        inference: keyword arguments of ``seglab.inference.infer_logits`` (``scales``, ``flip``, ``window``,
            ``stride``, ``blend``, ``crf``, ``crf_max_size``; ``InferenceOptions.as_kwargs()``): test-time
            augmentation, sliding windows, dense CRF. With ``crf`` the CRF's colour kernel gets ``images``
            themselves (uint8), not the normalised tensor turned back into colours.

    Returns:
        One ``(H_i, W_i) int64`` array of class indices in ``[0, K)`` per image, in order.

    Raises:
        ValueError: an image that is not ``(H, W, 3) uint8``, ``batch_size`` not an integer >= 1, or what
            ``infer_logits`` refuses (its message names the option).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be an integer >= 1, got {batch_size!r}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.eval()
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            raise ValueError(f"images[{i}] must be an (H, W, 3) uint8 RGB array, got {got}: read files with "
                             "seglab.data.read_image")  # fmt: skip
        groups[image.shape[:2]].append(i)
    results: list[np.ndarray | None] = [None] * len(images)
    num_classes = 32  # a guess until the first forward tells
    for (height, width), indices in groups.items():
        pos = 0
        while pos < len(indices):
            # at most batch_size images, and full-size logits under MAX_LOGIT_ELEMENTS (at least one image)
            n = max(1, min(batch_size, MAX_LOGIT_ELEMENTS // max(1, num_classes * height * width)))
            chunk, pos = indices[pos:pos + n], pos + n
            x = torch.stack([to_tensor(images[i]) for i in chunk]).to(device)  # (N, 3, H, W)
            options = dict(inference or {})
            if options.get("crf") and options.get("crf_images") is None:  # the CRF sees the photo's own colours
                rgb = np.stack([images[i] for i in chunk])  # (N, H, W, 3) uint8
                options["crf_images"] = torch.from_numpy(rgb).permute(0, 3, 1, 2).to(device)  # (N, 3, H, W) uint8
            logits = infer_logits(model, x, max_size=max_size, pad_multiple=pad_multiple, **options)  # (N, K, H, W)
            logits = logits.float()
            num_classes = logits.shape[1]
            pred = logits.argmax(1).to("cpu", torch.int64).numpy()  # (N, H, W)
            for j, i in enumerate(chunk):
                results[i] = pred[j]
    return results  # type: ignore[return-value]


def predict_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    inference: dict | None = None,
) -> np.ndarray:
    """Class indices ``(H, W) int64`` in ``[0, K)`` for one ``(H, W, 3) uint8`` RGB image, at its full size.

    See ``predict_batch`` for the arguments and errors.
    """
    return predict_batch(model, [image], max_size=max_size, pad_multiple=pad_multiple, device=device,
                         inference=inference)[0]  # fmt: skip
