"""Exact theoretical receptive field of any model: gradient support of a linearised copy.

The exact RF of an output pixel is the set of input pixels joined to it by a path in the network
(skips, ASPP branches, concatenations included). It is the non-zero set of the input gradient of a
*linearised* copy: activations -> identity, max-pool -> average-pool, every convolution / linear
weight -> a positive constant, biases -> 0, normalisation -> identity, dropout off (module
replacement on a ``copy.deepcopy``, plus a torch function mode for functional calls such as
``F.relu`` inside ``forward``). With positive weights and activations nothing cancels, so the
gradient is ``> 0`` exactly on the support; float64 keeps the smallest path weights far from
underflow. It shows the holes dilation leaves ("gridding", Wang et al. 2018, "Understanding
Convolution for Semantic Segmentation"). See :class:`ReceptiveField` and :func:`exact_receptive_field`.

Coordinates are ``(y, x)`` = (row, column) in pixels; boxes are ``(top, left, bottom, right)``
with both ends included. Exact RFs are clipped to the image because they are computed on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .layer_output import check_pixel, layer_output
from .layers import Pair, size_pair
from .linearised_modules import linearise
from .linearised_functions import LinearisedFunctions

__all__ = [
    "linearise",
    "LinearisedFunctions",
    "ReceptiveField",
    "exact_receptive_field",
    "support_box",
    "support_size",
    "support_holes",
]


class ReceptiveField:
    """Exact theoretical receptive fields of one model at one input size, answered quickly.

    Builds the linearised copy once (:func:`linearise`), runs its forward once per layer under
    :class:`LinearisedFunctions` on an all-ones float64 input, keeps the graph, and answers each
    query with one backward pass. The support is exact: input pixel ``(i, j)`` is in it iff a path
    of the network joins it to the output pixel (skips, ASPP branches and concatenations included;
    zero padding is not part of the image). A global-pooling branch (DeepLab's image pooling) makes
    the whole image the RF.

    Args:
        model: any ``nn.Module`` taking ``(N, in_channels, H, W)``; never modified.
        input_size: ``H`` or ``(H, W)`` in pixels.
        in_channels: channels of the input (default 3).
        layer: default module name (as in ``model.named_modules()``) whose output is queried;
            None = the model output. Its output must be ``(N, C, h, w)`` (or use ``output_fn``).
        output_fn: maps the (model or layer) output to a ``(N, C, h, w)`` tensor; dict outputs with
            key ``"out"`` (torchvision) are handled without it.
        fast: True = :class:`LinearisedFunctions` strategy ``"views"`` (falling back to ``"copies"``
            when the model writes in place into a feature map); False = ``"full"``, the full-width
            copy (same answer, much slower; kept as a check).

    Example::

        rf = ReceptiveField(model, 256, layer="encoder.layer3")
        mask = rf.support((5, 7))            # (256, 256) bool
        top, left, bottom, right = support_box(mask)
    """

    def __init__(self, model: nn.Module, input_size: int | Pair, *, in_channels: int = 3,
                 layer: str | None = None, output_fn: Callable | None = None, fast: bool = True):
        self.input_size = size_pair(input_size, "input_size", 1)
        self.in_channels = in_channels
        self.layer, self.output_fn, self.fast = layer, output_fn, fast
        self.linear_model = linearise(model)
        self._graphs: dict = {}

    def _graph(self, layer):
        if layer not in self._graphs:
            param = next(self.linear_model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            x = torch.ones(1, self.in_channels, *self.input_size, dtype=torch.float64, device=device,
                           requires_grad=True)
            for strategy in ("views", "copies") if self.fast else ("full",):
                try:
                    with torch.enable_grad(), LinearisedFunctions(strategy):
                        out = layer_output(self.linear_model, x, layer, self.output_fn)
                    break
                except RuntimeError:  # an in-place write into a broadcast view: copy the channels
                    if strategy != "views":
                        raise
            self._graphs[layer] = (x, out)
        return self._graphs[layer]

    def output_shape(self, layer: str | None = ...) -> tuple[int, int, int]:
        """``(C, h, w)`` of the queried output (the model's, or ``layer``'s)."""
        return tuple(self._graph(self.layer if layer is ... else layer)[1].shape[1:])

    def support(self, output_pixel: Pair | None = None, *, layer: str | None = ...,
                channel: int | None = None) -> torch.Tensor:
        """Exact RF of one output pixel: ``(H, W)`` bool tensor on the CPU (True = in the RF).

        Args:
            output_pixel: ``(y, x)`` in the coordinates of the queried output map (for an
                intermediate layer of stride ``s``, a map of size about ``H/s``); None = its centre
                ``(h // 2, w // 2)``.
            layer: module name to query instead of the default given at construction.
            channel: one output channel; None = all channels (the union of their RFs).

        Raises:
            ValueError: pixel outside the map, unknown layer, non-tensor output.
        """
        return self.supports([output_pixel], layer=layer, channel=channel)[0]

    __call__ = support

    def supports(self, output_pixels: Iterable[Pair | None], *, layer: str | None = ...,
                 channel: int | None = None) -> torch.Tensor:
        """Exact RFs of several output pixels: ``(P, H, W)`` bool, one backward pass each."""
        layer = self.layer if layer is ... else layer
        x, out = self._graph(layer)
        if channel is not None and not 0 <= channel < out.shape[1]:
            raise ValueError(f"channel {channel} is outside the {out.shape[1]} channels of the queried output")
        masks = [torch.zeros(0, *self.input_size, dtype=torch.bool)]
        for pixel in output_pixels:
            y, x_ = check_pixel(pixel, out.shape[2:], f"output map of layer {layer!r}" if layer else "model output")
            picked = out[0, :, y, x_] if channel is None else out[0, channel, y, x_]
            (grad,) = torch.autograd.grad(picked.sum(), x, retain_graph=True)
            masks.append((grad[0].sum(0) > 0).cpu()[None])  # positive paths only: > 0 exactly on the support
        return torch.cat(masks)

    def box(self, output_pixel: Pair | None = None, *, layer: str | None = ...) -> tuple[int, int, int, int]:
        """Bounding box ``(top, left, bottom, right)`` of :meth:`support` (inclusive, pixels)."""
        return support_box(self.support(output_pixel, layer=layer))


def exact_receptive_field(model: nn.Module, input_size: int | Pair, output_pixel: Pair | None = None, *,
                          layer: str | None = None, output_fn: Callable | None = None,
                          channel: int | None = None, in_channels: int = 3, fast: bool = True) -> torch.Tensor:
    """Exact RF of one output pixel of any model: ``(H, W)`` bool tensor (see :class:`ReceptiveField`).

    One-off convenience; for many queries build a :class:`ReceptiveField` once.
    ``output_pixel`` is in the coordinates of ``layer``'s output (None = its centre).
    """
    rf = ReceptiveField(model, input_size, in_channels=in_channels, layer=layer, output_fn=output_fn, fast=fast)
    return rf.support(output_pixel, channel=channel)


def _check_mask(mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"expected a (H, W) mask tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    mask = mask.bool()
    if not mask.any():
        raise ValueError("the receptive field mask is empty (the output pixel sees no input pixel)")
    return mask


def support_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box ``(top, left, bottom, right)`` of a ``(H, W)`` mask, both ends included (pixels).

    Raises:
        ValueError: not 2-D, or empty.
    """
    mask = _check_mask(mask)
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def support_size(mask: torch.Tensor) -> Pair:
    """``(height, width)`` of the bounding box of a ``(H, W)`` mask, in pixels (the RF size)."""
    top, left, bottom, right = support_box(mask)
    return bottom - top + 1, right - left + 1


def support_holes(mask: torch.Tensor) -> int:
    """Pixels inside the bounding box that are *not* in the RF (0 = a filled rectangle; >0 = gridding)."""
    top, left, bottom, right = support_box(mask)
    return int((~mask.bool()[top:bottom + 1, left:right + 1]).sum())
