"""What the explorers take from a model: its input tensor, its prediction and its feature maps.

Predictions go through ``seglab.inference.infer_logits``, the one inference path of ``evaluate``,
``predict`` and the notebooks (full size, the input padded to a multiple of the output stride; optional
test-time augmentation, sliding windows and CRF through ``inference=``), so that an explorer shows the
prediction those score. Feature maps come from ``model.forward_features`` (seglab models).

torch and ``seglab.inference`` are imported when a function is called, not with ``seglab.widgets``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from seglab import viz
from seglab.imaging import to_tensor

__all__ = ["model_input", "predict_classes", "feature_maps"]


def model_input(image) -> "torch.Tensor":  # noqa: F821
    """One image as a model input: ``(1, 3, H, W)`` float32, ImageNet-normalised, on the CPU.

    Args:
        image: a normalised float tensor ``(3, H, W)`` or ``(1, 3, H, W)`` (a dataset with
            ``eval_transform``; passed through), or any uint8 image ``seglab.viz.to_rgb`` reads
            (``(H, W, 3)``, ``(3, H, W)``, ``(H, W)``; normalised with ``seglab.imaging.to_tensor``).

    Raises:
        ValueError: a float tensor of another shape, or an image ``to_rgb`` cannot read.
    """
    import torch

    if isinstance(image, torch.Tensor) and image.is_floating_point():
        x = image[None] if image.dim() == 3 else image
        if x.dim() != 4 or tuple(x.shape[:2]) != (1, 3):
            raise ValueError(f"image must be one (3, H, W) normalised float tensor or an (H, W, 3) uint8 image, "
                             f"got a float tensor of shape {tuple(image.shape)}: pick one image of the batch")
        return x
    return to_tensor(viz.to_rgb(image))[None]


def predict_classes(model, image, *, device="cpu", inference: Mapping | None = None) -> np.ndarray:
    """``(H, W)`` int64 predicted classes of one image, from ``seglab.inference.infer_logits`` (no gradients).

    Args:
        model: ``(N, 3, h, w) -> (N, K, h, w)`` logits, in eval mode.
        image: see :func:`model_input`.
        device: where the model runs.
        inference: keyword arguments of ``infer_logits`` (e.g. ``InferenceOptions(...).as_kwargs()`` or
            ``{"scales": (0.75, 1, 1.25), "flip": True}``); None: one full-size pass.

    Raises:
        ValueError: a bad image or inference option, or logits that are not at the input's size (from
            ``infer_logits``).
    """
    from seglab.inference import infer_logits

    x = model_input(image).to(device)  # (1, 3, H, W)
    scores = infer_logits(model, x, **dict(inference or {}))  # (1, K, H, W)
    return scores[0].argmax(0).cpu().numpy()


def feature_maps(model, image, *, device="cpu") -> dict:
    """``{name: (C, h, w) float tensor on the CPU}``: ``model.forward_features`` of one image without its
    ``"logits"`` entry (no gradients); ``{}`` for a model without ``forward_features``.

    Args:
        model: a seglab model in eval mode (or any ``nn.Module``).
        image: see :func:`model_input`.
        device: where the model runs.
    """
    import torch

    if not hasattr(model, "forward_features"):
        return {}
    with torch.no_grad():
        features = model.forward_features(model_input(image).to(device))
    return {name: value[0].cpu() for name, value in features.items() if name != "logits"}
