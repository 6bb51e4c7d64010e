"""``linearise(model)``: the positive float64 copy of a model whose input gradient is ``> 0`` exactly on
the receptive field (module replacement; functional calls are :mod:`.linearised_functions`'s).

On a ``copy.deepcopy`` activations, normalisation and dropout become the identity, max-pooling an
average over the same windows, every convolution / linear weight the constant ``1 / fan_in`` and its
bias 0. With positive weights and activations nothing cancels: a path from an input pixel to the
output pixel gives a positive gradient, and no path gives 0.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DROPOUT_MODULES, NORM_MODULES, POINTWISE_MODULES
from .positive_ops import no_indices, per_channel, positive_pool

__all__ = ["linearise"]


def _identity_forward(self, input, *args, **kwargs):
    return input


def _positive_pool_forward(self, x):
    """Average over the windows of this max-pool (a broadcast input is pooled once, then re-broadcast)."""
    pool = lambda t: positive_pool(t, self._dims, self.kernel_size, self.stride, self.padding,  # noqa: E731
                                   self.dilation, self.ceil_mode)
    return per_channel(pool, (x,), {})


def _adaptive_average_forward(self, x):
    return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[self._dims - 1](x, self.output_size)


_LINEARISED_CLASSES: dict = {}


def _linearised_class(cls: type, forward, dims: int = 0) -> type:
    """``Linearised<cls>``: a subclass of ``cls`` with another forward, so ``isinstance`` checks in the
    model's own code (e.g. ``isinstance(layer, nn.MaxPool2d)``) still hold in the copy."""
    if cls not in _LINEARISED_CLASSES:
        _LINEARISED_CLASSES[cls] = type(f"Linearised{cls.__name__}", (cls,),
                                        {"forward": forward, "_dims": dims, "__module__": __name__})
    return _LINEARISED_CLASSES[cls]


def _linearised_class_of(module: nn.Module) -> type | None:
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, POINTWISE_MODULES + NORM_MODULES + DROPOUT_MODULES + (nn.Softmax2d,)) \
            or (isinstance(module, (nn.Softmax, nn.LogSoftmax)) and module.dim in (1, -3)):
        return _linearised_class(type(module), _identity_forward)
    max_pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    adaptive = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
    for dims, (max_pool, adaptive_pool) in enumerate(zip(max_pools, adaptive), start=1):
        if isinstance(module, (max_pool, adaptive_pool)):
            if module.return_indices:
                no_indices()
            forward = _positive_pool_forward if isinstance(module, max_pool) else _adaptive_average_forward
            return _linearised_class(type(module), forward, dims)
    return None


def linearise(model: nn.Module) -> nn.Module:
    """Linearised float64 copy of ``model`` whose input-gradient support is the exact RF.

    On a ``copy.deepcopy`` (the user's model is never touched), modules are replaced by subclasses of
    their own class named ``Linearised<Class>`` (so ``isinstance`` checks in ``forward`` still hold):
    activation, normalisation, dropout and channel-softmax modules return their input; ``MaxPool``
    averages over the same (dilated) windows, ``AdaptiveMaxPool`` is an adaptive average. Every
    Conv/ConvTranspose/Linear weight becomes the constant ``1 / fan_in`` and its bias 0; all other
    parameters are replaced by their absolute values; the copy is in eval mode, float64, with
    ``requires_grad=False`` on its parameters.

    Functional calls inside ``forward`` (``F.relu``, ``x.relu()``, ``F.max_pool2d``, ``F.dropout``,
    ``F.conv2d`` with raw weights, ...) cannot be swapped like modules: run the copy under
    :class:`LinearisedFunctions`, as :class:`ReceptiveField` does.

    Raises:
        ValueError: max-pooling with ``return_indices=True`` (max-unpooling has no linearisation).
    """
    linear = copy.deepcopy(model)
    for module in linear.modules():
        cls = _linearised_class_of(module)
        if cls is not None:
            module.__class__ = cls  # same attributes, linear forward
    linear = linear.to(torch.float64).eval()
    with torch.no_grad():
        for module in linear.modules():
            is_conv = isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
            for name, param in module.named_parameters(recurse=False):
                if is_conv and name == "weight":
                    param.fill_(1.0 / param[0].numel())
                elif is_conv and name == "bias":
                    param.zero_()
                else:
                    param.abs_()
    for param in linear.parameters():
        param.requires_grad_(False)
    return linear
