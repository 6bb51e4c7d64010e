"""Which output a receptive field is asked about: the model's, or one layer's (``layer_output``), and one
pixel of it (``check_pixel``); shared by the exact and the effective receptive field."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn

from .layers import Pair

__all__ = ["layer_output", "check_pixel"]


class _StopForward(Exception):
    pass


def layer_output(model: nn.Module, x: torch.Tensor, layer: str | None, output_fn) -> torch.Tensor:
    """Output of ``model`` (or of its submodule ``layer``, via a forward hook that stops the forward
    there) as an ``(N, C, h, w)`` tensor; ``output_fn`` picks it from other outputs (dicts with ``"out"``,
    torchvision's, are handled without it).

    Raises:
        ValueError: no module named ``layer`` (close names are listed), or an output that is not
            ``(N, C, h, w)``.
        RuntimeError: ``layer`` is not called by the model's forward.
    """
    if layer is None:
        out = model(x)
    else:
        modules = dict(model.named_modules())
        if layer not in modules:
            close = difflib.get_close_matches(layer, list(modules), n=5)
            raise ValueError(f"no module named {layer!r} in the model; close names: {close}; "
                             "see [name for name, _ in model.named_modules()]")
        captured = []

        def hook(module, inputs, output):
            captured.append(output)
            raise _StopForward  # nothing after this layer is needed

        handle = modules[layer].register_forward_hook(hook)
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"module {layer!r} was not called by the model's forward")
        out = captured[0]
    if output_fn is not None:
        out = output_fn(out)
    elif isinstance(out, Mapping) and "out" in out:  # torchvision segmentation models
        out = out["out"]
    if not (isinstance(out, torch.Tensor) and out.dim() == 4):
        raise ValueError(f"expected the output to be a (N, C, h, w) tensor, got "
                         f"{type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}; "
                         "pass output_fn=... to pick it (e.g. output_fn=lambda out: out[0])")
    return out


def check_pixel(output_pixel, shape, what: str) -> Pair:
    """``output_pixel`` as ``(y, x)`` ints inside a map of size ``shape = (h, w)``; None = its centre.

    Raises:
        ValueError: the pixel lies outside the map (the message names ``what``).
    """
    h, w = shape
    if output_pixel is None:
        return h // 2, w // 2
    y, x = (int(v) for v in output_pixel)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"output_pixel {tuple(output_pixel)} is outside the {what} of size ({h}, {w}); "
                         "it is given in that map's coordinates (y, x)")
    return y, x
