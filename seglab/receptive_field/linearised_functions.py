"""``LinearisedFunctions``: a torch function mode that linearises the *functional* calls made inside a
model's ``forward`` (``F.relu``, ``x.relu()``, ``F.max_pool2d``, ``F.conv2d`` with raw weights, ...),
which module replacement (:func:`.linearised_modules.linearise`) cannot reach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .positive_ops import no_indices, per_channel, positive_pool, positive_weight, shared_channel_conv

__all__ = ["LinearisedFunctions"]


def _identity(func, args, kwargs, strategy):
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        return func(*args, **kwargs)  # e.g. clamp on integer indices
    return x


def _softmax(func, args, kwargs, strategy):
    x = args[0] if args else kwargs["input"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1
    if x.dim() >= 2 and dim % x.dim() == 1:
        return x  # over channels: per-pixel, positive -> identity keeps the support
    return func(*args, **kwargs)


_POOL_DIMS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
              torch.max_pool1d: 1, torch.max_pool2d: 2, torch.max_pool3d: 3}


def _max_pool(func, args, kwargs, strategy):
    kwargs = dict(kwargs)
    x = args[0] if args else kwargs.pop("input")
    pool = lambda t: positive_pool(t, _POOL_DIMS[func], *args[1:], **kwargs)  # noqa: E731
    return per_channel(pool, (x,), {}, strategy)


def _adaptive_max_pool(func, args, kwargs, strategy):
    x = args[0] if args else kwargs["input"]
    output_size = args[1] if len(args) > 1 else kwargs["output_size"]
    if args[2] if len(args) > 2 else kwargs.get("return_indices", False):
        no_indices()
    dims = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}[func]
    return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[dims - 1](x, output_size)


def _conv_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, stride, padding, dilation, groups


def _conv_transpose_args(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return input, weight, stride, padding, output_padding, groups, dilation


def _conv(func, args, kwargs, strategy):
    """Convolution with the positive constant weight ``1 / fan_in`` and no bias."""
    x, weight, stride, padding, dilation, groups = _conv_args(*args, **kwargs)
    if strategy == "full":
        return func(x, positive_weight(weight, x), None, stride, padding, dilation, groups)
    call = lambda x1, kernel: func(x1, kernel, None, stride, padding, dilation, groups)  # noqa: E731
    return shared_channel_conv(call, x, weight, groups, weight.shape[0], strategy)


def _conv_transpose(func, args, kwargs, strategy):
    x, weight, stride, padding, output_padding, groups, dilation = _conv_transpose_args(*args, **kwargs)
    if strategy == "full":
        return func(x, positive_weight(weight, x), None, stride, padding, output_padding, groups, dilation)
    call = lambda x1, kernel: func(x1, kernel, None, stride, padding, output_padding, groups, dilation)  # noqa: E731
    return shared_channel_conv(call, x, weight, groups, weight.shape[1] * groups, strategy)


def _linear(func, args, kwargs, strategy):
    x = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    if strategy == "full":
        return func(x, positive_weight(weight, x))
    return x.mean(-1, keepdim=True).expand(*x.shape[:-1], weight.shape[0]).contiguous()


def _handlers() -> dict:
    table = {}
    T = torch.Tensor
    identity = [
        F.relu, F.relu_, torch.relu, torch.relu_, T.relu, T.relu_, F.relu6, F.leaky_relu, F.leaky_relu_,
        F.elu, F.elu_, F.selu, F.selu_, F.celu, F.celu_, F.gelu, F.silu, F.mish, F.hardswish,
        F.hardsigmoid, F.hardtanh, F.hardtanh_, F.prelu, F.rrelu, F.rrelu_, F.softplus, F.logsigmoid,
        F.softsign, F.threshold, F.threshold_, F.sigmoid, torch.sigmoid, torch.sigmoid_, T.sigmoid,
        T.sigmoid_, F.tanh, torch.tanh, torch.tanh_, T.tanh, T.tanh_, torch.clamp, torch.clip,
        torch.clamp_min, T.clamp, T.clamp_, T.clip, T.clip_, T.clamp_min, T.clamp_min_,
        F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
        torch.dropout, torch.dropout_, torch.feature_dropout, torch.alpha_dropout,
        F.batch_norm, F.instance_norm, F.group_norm, F.layer_norm, F.local_response_norm,
        torch.batch_norm, torch.group_norm, torch.layer_norm, torch.instance_norm,
    ]
    table.update({f: _identity for f in identity})
    table.update({f: _softmax for f in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                                        T.softmax, T.log_softmax)})
    table.update({f: _max_pool for f in _POOL_DIMS})
    table.update({f: _adaptive_max_pool for f in (F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                                                  F.adaptive_max_pool3d)})
    table.update({f: _conv for f in (torch.conv1d, torch.conv2d, torch.conv3d)})
    table.update({f: _conv_transpose for f in (torch.conv_transpose1d, torch.conv_transpose2d,
                                               torch.conv_transpose3d)})
    table[F.linear] = _linear
    per_channel_functions = [F.pad, F.interpolate, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                             F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.add, T.add, T.__add__, T.__radd__]
    table.update({f: per_channel for f in per_channel_functions})
    return table


class LinearisedFunctions(TorchFunctionMode):
    """Context manager: linearise *functional* calls made inside ``forward`` (a torch function mode).

    Inside ``with LinearisedFunctions():`` activations (``F.relu``, ``torch.relu``, ``x.relu()``,
    ``F.gelu``, ``torch.sigmoid``, ``clamp`` on float tensors, ...), dropout and normalisation
    functions return their input; softmax over channels returns its input; ``F.max_pool*`` averages
    over the same windows; ``F.adaptive_max_pool*`` becomes the adaptive average; ``conv*`` /
    ``conv_transpose*`` / ``F.linear`` use the positive constant weight ``1 / fan_in`` and no bias,
    whatever weight they are given. Calls to other functions run unchanged.

    Args:
        strategy: how convolutions are computed (all three give the same support):
            ``"views"`` (fastest): sum the channels of each group, convolve one channel per group,
            and hand back a broadcast view with the real channel count. Every output channel of a
            positive convolution depends on all input channels of its group, so the dependency graph
            -- hence the gradient support -- is that of the full-width network. In-place writes into
            such a view (``out += identity`` in torchvision ResNets) raise a RuntimeError;
            ``"copies"``: the same, with the channels copied out (allows in-place ops);
            ``"full"``: the real channel count, every weight ``1 / fan_in`` (slow; a check).

    In the positive copy every activation is > 0, so a ReLU alone would do no harm; what must be
    caught are saturating functions (``hardtanh``/``relu6``/``clamp`` at an upper bound), max-pooling
    (the gradient goes to the argmax only) and dropout masks (``F.dropout`` defaults to training=True).
    Not handled (the support may then be too small): max/argmax over dims used as pooling,
    interpolation with negative weights (bicubic), subtraction of two feature maps, attention.
    """

    STRATEGIES = ("views", "copies", "full")

    def __init__(self, strategy: str = "views"):
        super().__init__()
        if strategy not in self.STRATEGIES:
            raise ValueError(f"strategy must be one of {self.STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self._table = _handlers()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        handler = self._table.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {}, self.strategy)
