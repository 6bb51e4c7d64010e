"""Effective receptive field (Luo, Li, Urtasun & Zemel 2016).

"Understanding the Effective Receptive Field in Deep Convolutional Neural Networks": the mean
absolute input gradient of one output pixel of the *real* model over real images. It is roughly
Gaussian and much smaller than the theoretical RF (:mod:`seglab.receptive_field.exact`).
See :func:`effective_receptive_field`, :func:`erf_radius`, :func:`erf_rms_radius`.

Coordinates are ``(y, x)`` = (row, column) in pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .layer_output import check_pixel, layer_output
from .layers import Pair

__all__ = [
    "effective_receptive_field",
    "erf_radius",
    "erf_rms_radius",
]


def _batches(images, batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):  # (image, mask) from a DataLoader
            batch = batch[0]
        if not isinstance(batch, torch.Tensor) or batch.dim() not in (3, 4):
            raise ValueError("images must be a (N, C, H, W) tensor or an iterable of (C, H, W) / "
                             "(N, C, H, W) tensors or (image, mask) batches")
        yield batch if batch.dim() == 4 else batch.unsqueeze(0)


def effective_receptive_field(model: nn.Module, images, output_pixel: Pair | None = None, *,
                              layer: str | None = None, output_fn: Callable | None = None,
                              channel: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """Effective receptive field (Luo et al. 2016): mean ``|d out / d input|`` over real images.

    For each image, back-propagates ``sum_c out[c, y, x]`` (or ``out[channel, y, x]``) of the model in
    eval mode (or of module ``layer``'s output) to the input, takes the absolute gradient summed over
    input channels, and averages over images. Departs from the paper: the paper back-propagates a
    single unit; summing over class logits is the default here (pick one with ``channel``).

    Args:
        model: any ``nn.Module``; its train/eval flags are restored and no ``.grad`` is written.
        images: ``(N, C, H, W)`` float tensor (normalised as the model expects), or an iterable of
            such batches / ``(C, H, W)`` tensors / ``(image, mask)`` pairs (e.g. a DataLoader). All
            images must share ``H, W``.
        output_pixel: ``(y, x)`` in the output map's coordinates; None = its centre.
        layer, output_fn: as in :class:`ReceptiveField`.
        channel: output channel to back-propagate; None = sum over channels.
        batch_size: images per backward pass when ``images`` is one tensor.

    Returns:
        ``(H, W)`` float64 tensor on the CPU, >= 0 (gradient magnitude per input pixel; not normalised).

    Raises:
        ValueError: no images, images of different sizes, bad output_pixel or output.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    flags = {m: m.training for m in model.modules()}
    model.eval()
    total, count, size = None, 0, None
    try:
        for batch in _batches(images, batch_size):
            if size is None:
                size = tuple(batch.shape[-2:])
            elif tuple(batch.shape[-2:]) != size:
                raise ValueError(f"all images must have the same size for an ERF; got {size} and "
                                 f"{tuple(batch.shape[-2:])} (crop or resize them)")
            x = batch.to(device=device, dtype=dtype).requires_grad_(True)
            with torch.enable_grad():
                out = layer_output(model, x, layer, output_fn)
                y, x_ = check_pixel(output_pixel, out.shape[2:],
                                     f"output map of layer {layer!r}" if layer else "model output")
                picked = out[:, :, y, x_] if channel is None else out[:, channel, y, x_]
                (grad,) = torch.autograd.grad(picked.sum(), x)  # images are independent in eval mode
            part = grad.detach().abs().sum(1).sum(0).double().cpu()  # (H, W)
            total = part if total is None else total + part
            count += batch.shape[0]
    finally:
        for module, training in flags.items():
            module.training = training
    if count == 0:
        raise ValueError("no images given")
    return total / count


def _erf_weights(erf: torch.Tensor, center):
    if not isinstance(erf, torch.Tensor) or erf.dim() != 2:
        raise ValueError(f"erf must be a (H, W) tensor, got {getattr(erf, 'shape', type(erf).__name__)}")
    w = erf.detach().double().cpu()
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("erf must be finite, non-negative and not all zero")
    ys, xs = torch.meshgrid(torch.arange(w.shape[0], dtype=torch.float64),
                            torch.arange(w.shape[1], dtype=torch.float64), indexing="ij")
    if center is None:
        center = (float((w * ys).sum() / w.sum()), float((w * xs).sum() / w.sum()))
    dist = torch.sqrt((ys - center[0]) ** 2 + (xs - center[1]) ** 2)
    return w.flatten(), dist.flatten()


def erf_radius(erf: torch.Tensor, fraction: float = 0.95, center: tuple[float, float] | None = None) -> float:
    """Radius (pixels) of the smallest disc around ``center`` that holds ``fraction`` of the ERF mass.

    Distances are between pixel centres. ``center`` is ``(y, x)`` in input pixels -- for a model
    whose output has the input's resolution pass the output pixel itself; None = the ERF's centre
    of mass. Compare with the theoretical half-width ``(rf_size - 1) / 2``.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or an erf that is not a non-negative ``(H, W)`` map.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    w, dist = _erf_weights(erf, center)
    order = torch.argsort(dist)
    mass = torch.cumsum(w[order], 0)
    index = int(torch.searchsorted(mass, (fraction - 1e-6) * mass[-1]))  # tolerance: float32 maps
    return float(dist[order][min(index, len(order) - 1)])


def erf_rms_radius(erf: torch.Tensor, center: tuple[float, float] | None = None) -> float:
    """Root-mean-square distance (pixels) of the ERF mass from ``center`` (None = centre of mass).

    For an isotropic Gaussian ERF of standard deviation ``sigma`` this is ``sigma * sqrt(2)``.
    """
    w, dist = _erf_weights(erf, center)
    return float(torch.sqrt((w * dist ** 2).sum() / w.sum()))
