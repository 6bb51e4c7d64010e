"""``freeze_sampling``: a copy of a model whose deformable layers sample where they did for one input.

Why: the exact receptive field (``seglab.receptive_field``) is the gradient support of a *linearised* copy,
in which every convolution weight becomes ``1/fan_in``. Applied to a deformable layer as is, that also
rewrites the offset branch, so the copy samples at offsets the trained model never predicts (on the
all-ones input every offset becomes the same constant), and the gradient that flows through the offsets
has both signs. Frozen at the offsets and masks the model predicted *for an image*, a deformable layer is
linear in its input with positive bilinear weights, and the gradient support is exactly the pixels it
reads. (Its offset branch is a plain convolution with an ordinary RF: the pixels that steer where it reads.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .dcnv2 import DeformConv2d
from .dcnv3 import DCNv3

__all__ = ["freeze_sampling", "deformable_layers"]

DEFORMABLE = (DeformConv2d, DCNv3)


def deformable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The ``DeformConv2d`` / ``DCNv3`` submodules of ``model`` by name (``model`` itself as ``""``)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, DEFORMABLE)}


@torch.no_grad()
def freeze_sampling(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` whose deformable layers use, as fixed buffers, the offsets and masks they
    predict when ``model`` runs on ``x``; ``model`` is not modified.

    The copy then computes ``model(x)`` exactly at ``x`` (checked by the tests) and, for other inputs of the
    same size and batch, samples at the same places. Give it to ``seglab.receptive_field.ReceptiveField``
    for the exact RF of the layer as it looked at ``x`` (``x`` of batch 1: the RF is computed on one image).

    Raises:
        ValueError: ``model`` has no ``DeformConv2d`` / ``DCNv3`` layer.
    """
    frozen = copy.deepcopy(model)
    layers = deformable_layers(frozen)
    if not layers:
        raise ValueError("the model has no DeformConv2d or DCNv3 layer: there is no sampling to freeze")
    captured: dict[str, tuple] = {}
    handles = []
    for name, layer in layers.items():
        def hook(module, inputs, _name=name):
            captured[_name] = module.sampling(inputs[0])
        handles.append(layer.register_forward_pre_hook(hook))
    was_training = frozen.training
    try:
        frozen.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
        frozen.train(was_training)
    for name, layer in layers.items():
        if name not in captured:
            raise RuntimeError(f"deformable layer {name!r} was not called by the model's forward")
        layer.fixed_offset, layer.fixed_mask = (t.detach().clone() if t is not None else None for t in captured[name])
    return frozen
