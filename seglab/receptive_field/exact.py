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

import copy
import difflib
import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .analytic import (
    _DROPOUT_MODULES,
    _NORM_MODULES,
    _POINTWISE_MODULES,
    LayerSpec,
    Pair,
    _axis_output_size,
    _pair,
)

__all__ = [
    "linearise",
    "LinearisedFunctions",
    "ReceptiveField",
    "exact_receptive_field",
    "support_box",
    "support_size",
    "support_holes",
]


def _no_indices():
    raise ValueError("max-pooling with return_indices=True (max-unpooling, SegNet) routes by argmax "
                     "and has no positive linearisation; the exact RF cannot be computed")


def _ntuple(value, dims: int) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return values * dims if len(values) == 1 else values


def _positive_pool(input, dims, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
    """Average over every (dilated) max-pool window: the same windows as max-pool, all inputs count.

    ``dims`` = number of spatial dimensions (1, 2 or 3); padding with zeros, as max-pool pads -inf.
    """
    if return_indices:
        _no_indices()
    k, p, d = _ntuple(kernel_size, dims), _ntuple(padding, dims), _ntuple(dilation, dims)
    s = _ntuple(stride, dims) if stride not in (None, [], ()) else k
    spatial = input.shape[-dims:]
    extra = []  # right padding so that the windows of ceil_mode exist
    for n, ki, si, pi, di in zip(spatial, k, s, p, d):
        out = _axis_output_size(LayerSpec("pool", ki, si, pi, di, ceil_mode=ceil_mode), 0, n)
        extra.append(max(0, (out - 1) * si + di * (ki - 1) + 1 - (n + 2 * pi)))
    x = input.reshape(-1, 1, *spatial)  # every channel pooled on its own
    x = F.pad(x, [q for pi, e in zip(reversed(p), reversed(extra)) for q in (pi, pi + e)])
    kernel = x.new_full((1, 1, *k), 1.0 / math.prod(k))
    y = (F.conv1d, F.conv2d, F.conv3d)[dims - 1](x, kernel, None, s, 0, d)
    return y.reshape(*input.shape[:-dims], *y.shape[-dims:])


def _identity_forward(self, input, *args, **kwargs):
    return input


def _positive_pool_forward(self, x):
    """Average over the windows of this max-pool (a broadcast input is pooled once, then re-broadcast)."""
    pool = lambda t: _positive_pool(t, self._dims, self.kernel_size, self.stride, self.padding,  # noqa: E731
                                    self.dilation, self.ceil_mode)
    return _per_channel(pool, (x,), {})


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
    if isinstance(module, _POINTWISE_MODULES + _NORM_MODULES + _DROPOUT_MODULES + (nn.Softmax2d,)) \
            or (isinstance(module, (nn.Softmax, nn.LogSoftmax)) and module.dim in (1, -3)):
        return _linearised_class(type(module), _identity_forward)
    max_pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    adaptive = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
    for dims, (max_pool, adaptive_pool) in enumerate(zip(max_pools, adaptive), start=1):
        if isinstance(module, (max_pool, adaptive_pool)):
            if module.return_indices:
                _no_indices()
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
    pool = lambda t: _positive_pool(t, _POOL_DIMS[func], *args[1:], **kwargs)  # noqa: E731
    return _per_channel(pool, (x,), {}, strategy)


def _adaptive_max_pool(func, args, kwargs, strategy):
    x = args[0] if args else kwargs["input"]
    output_size = args[1] if len(args) > 1 else kwargs["output_size"]
    if args[2] if len(args) > 2 else kwargs.get("return_indices", False):
        _no_indices()
    dims = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}[func]
    return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[dims - 1](x, output_size)


def _conv_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, stride, padding, dilation, groups


def _conv_transpose_args(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return input, weight, stride, padding, output_padding, groups, dilation


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


def _per_channel(func, args, kwargs, strategy=None):
    """A per-channel op (pad, pooling, interpolation, sum of two maps) applied to one channel when
    every tensor argument is a broadcast view of one channel; the result is broadcast back."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not all(_is_broadcast(t) for t in tensors) \
            or any(t.shape != tensors[0].shape for t in tensors):
        return func(*args, **kwargs)
    args = [_SharedChannel.apply(a) if isinstance(a, torch.Tensor) else a for a in args]
    return _ChannelBroadcast.apply(func(*args, **kwargs), tensors[0].shape[1])


def _shared_channel_conv(call, x, weight, groups, out_channels, strategy):
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


def _positive_weight(weight, x):
    return torch.full(weight.shape, 1.0 / weight[0].numel(), dtype=x.dtype, device=x.device)


def _conv(func, args, kwargs, strategy):
    """Convolution with the positive constant weight ``1 / fan_in`` and no bias."""
    x, weight, stride, padding, dilation, groups = _conv_args(*args, **kwargs)
    if strategy == "full":
        return func(x, _positive_weight(weight, x), None, stride, padding, dilation, groups)
    call = lambda x1, kernel: func(x1, kernel, None, stride, padding, dilation, groups)  # noqa: E731
    return _shared_channel_conv(call, x, weight, groups, weight.shape[0], strategy)


def _conv_transpose(func, args, kwargs, strategy):
    x, weight, stride, padding, output_padding, groups, dilation = _conv_transpose_args(*args, **kwargs)
    if strategy == "full":
        return func(x, _positive_weight(weight, x), None, stride, padding, output_padding, groups, dilation)
    call = lambda x1, kernel: func(x1, kernel, None, stride, padding, output_padding, groups, dilation)  # noqa: E731
    return _shared_channel_conv(call, x, weight, groups, weight.shape[1] * groups, strategy)


def _linear(func, args, kwargs, strategy):
    x = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    if strategy == "full":
        return func(x, _positive_weight(weight, x))
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
    per_channel = [F.pad, F.interpolate, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.add, T.add, T.__add__, T.__radd__]
    table.update({f: _per_channel for f in per_channel})
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


class _StopForward(Exception):
    pass


def _layer_output(model: nn.Module, x: torch.Tensor, layer: str | None, output_fn) -> torch.Tensor:
    """Output of ``model`` (or of its submodule ``layer``, via a forward hook) as ``(N, C, h, w)``."""
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


def _check_pixel(output_pixel, shape, what: str) -> Pair:
    h, w = shape
    if output_pixel is None:
        return h // 2, w // 2
    y, x = (int(v) for v in output_pixel)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"output_pixel {tuple(output_pixel)} is outside the {what} of size ({h}, {w}); "
                         "it is given in that map's coordinates (y, x)")
    return y, x


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
        self.input_size = _pair(input_size, "input_size", 1)
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
                        out = _layer_output(self.linear_model, x, layer, self.output_fn)
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
            y, x_ = _check_pixel(pixel, out.shape[2:], f"output map of layer {layer!r}" if layer else "model output")
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
