"""The positive operations a linearised network is made of, shared by modules and functional calls.

In the linearised copy of a network (:mod:`.linearised_modules`) every weight is the positive constant
``1 / fan_in`` and every activation positive, so nothing cancels and the input gradient is ``> 0``
exactly on the receptive field. These are its building blocks:

- ``positive_pool``: max-pooling replaced by the average over the same (dilated) windows (the
  gradient of a max goes to the argmax only; the average keeps every path);
- ``shared_channel_conv``: a positive convolution computed on one channel per group. All output
  channels of a positive convolution are alike and depend on every input channel of their group, so
  summing the channels first and broadcasting the result (``_ChannelBroadcast``: a view, no copy)
  keeps the dependency graph at the cost of a one-channel network;
- ``per_channel``: a per-channel op (pad, pooling, interpolation, a sum of two maps) applied once to
  a broadcast feature map and broadcast back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layers import LayerSpec, axis_output_size

__all__ = ["no_indices", "ntuple", "positive_pool", "per_channel", "shared_channel_conv", "positive_weight"]


def no_indices():
    """Raise: max-pooling that returns indices has no positive linearisation."""
    raise ValueError("max-pooling with return_indices=True (max-unpooling, SegNet) routes by argmax "
                     "and has no positive linearisation; the exact RF cannot be computed")


def ntuple(value, dims: int) -> tuple:
    """``3 -> (3,) * dims``; a tuple or list of ``dims`` values passes unchanged."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return values * dims if len(values) == 1 else values


def positive_pool(input, dims, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
    """Average over every (dilated) max-pool window: the same windows as max-pool, all inputs count.

    ``dims`` = number of spatial dimensions (1, 2 or 3); padding with zeros, as max-pool pads -inf.
    """
    if return_indices:
        no_indices()
    k, p, d = ntuple(kernel_size, dims), ntuple(padding, dims), ntuple(dilation, dims)
    s = ntuple(stride, dims) if stride not in (None, [], ()) else k
    spatial = input.shape[-dims:]
    extra = []  # right padding so that the windows of ceil_mode exist
    for n, ki, si, pi, di in zip(spatial, k, s, p, d):
        out = axis_output_size(LayerSpec("pool", ki, si, pi, di, ceil_mode=ceil_mode), 0, n)
        extra.append(max(0, (out - 1) * si + di * (ki - 1) + 1 - (n + 2 * pi)))
    x = input.reshape(-1, 1, *spatial)  # every channel pooled on its own
    x = F.pad(x, [q for pi, e in zip(reversed(p), reversed(extra)) for q in (pi, pi + e)])
    kernel = x.new_full((1, 1, *k), 1.0 / math.prod(k))
    y = (F.conv1d, F.conv2d, F.conv3d)[dims - 1](x, kernel, None, s, 0, d)
    return y.reshape(*input.shape[:-dims], *y.shape[-dims:])


class _ChannelSum(torch.autograd.Function):
    """``(N, C, *S) -> (N, 1, *S)`` sum over channels; O(1) per pixel on broadcast inputs, both ways."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x[:, :1] * x.shape[1] if x.stride(1) == 0 else x.sum(1, keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape)  # a broadcast view: nothing is copied


class _ChannelBroadcast(torch.autograd.Function):
    """``(N, 1, *S) -> (N, C, *S)`` as a broadcast view (all channels share one memory location)."""

    @staticmethod
    def forward(ctx, y, channels):
        return y.expand(y.shape[0], channels, *y.shape[2:])

    @staticmethod
    def backward(ctx, grad):
        return (grad[:, :1] * grad.shape[1] if grad.stride(1) == 0 else grad.sum(1, keepdim=True)), None


class _SharedChannel(torch.autograd.Function):
    """``(N, C, *S) -> (N, 1, *S)``: the one channel of a broadcast view (all channels alike)."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x[:, :1].clone()

    @staticmethod
    def backward(ctx, grad):
        return (grad / ctx.shape[1]).expand(ctx.shape)


def _is_broadcast(t) -> bool:
    """A batched feature map whose channels all share one memory location (made by expand)."""
    return isinstance(t, torch.Tensor) and t.dim() >= 3 and t.shape[1] > 1 and t.stride(1) == 0


def per_channel(func, args, kwargs, strategy=None):
    """A per-channel op (pad, pooling, interpolation, sum of two maps) applied to one channel when
    every tensor argument is a broadcast view of one channel; the result is broadcast back."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not all(_is_broadcast(t) for t in tensors) \
            or any(t.shape != tensors[0].shape for t in tensors):
        return func(*args, **kwargs)
    args = [_SharedChannel.apply(a) if isinstance(a, torch.Tensor) else a for a in args]
    return _ChannelBroadcast.apply(func(*args, **kwargs), tensors[0].shape[1])


def shared_channel_conv(call, x, weight, groups, out_channels, strategy):
    """Positive convolution computed on one channel per group (``strategy`` "views" or "copies").

    Every output channel of a positive convolution depends on all input channels of its group, so
    summing each group's channels first and repeating the result keeps the dependency graph.
    """
    unbatched = x.dim() == weight.dim() - 1
    x = x.unsqueeze(0) if unbatched else x
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    taps = math.prod(weight.shape[2:])
    if groups == 1:
        x = _ChannelSum.apply(x)  # (N, 1, *S)
    else:
        x = x.reshape(n, groups, c // groups, *spatial).sum(2)  # (N, g, *S)
    kernel = x.new_full((groups, 1, *weight.shape[2:]), groups / (c * taps))  # values stay near 1
    y = call(x, kernel)  # (N, g, *S')
    if groups == 1 and strategy == "views":
        y = _ChannelBroadcast.apply(y, out_channels)  # (N, C_out, *S'), a view
    else:
        y = y.repeat_interleave(out_channels // groups, dim=1)  # (N, C_out, *S'), copied
    return y[0] if unbatched else y


def positive_weight(weight, x):
    """The constant ``1 / fan_in`` in the shape of ``weight``, in the dtype and on the device of ``x``."""
    return torch.full(weight.shape, 1.0 / weight[0].numel(), dtype=x.dtype, device=x.device)
