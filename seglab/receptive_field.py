"""Receptive fields of CNNs: analytic, exact and effective.

Which input pixels can change one output pixel? Three answers, from cheap to real:

1. **Analytic (theoretical) RF of a chain of layers** -- the recurrence of Araujo, Norris & Sim (2019),
   "Computing Receptive Fields of Convolutional Neural Networks", Distill. Walking the chain from the
   input, with jump ``j`` (input pixels between two neighbouring features) and RF size ``r``::

       r <- r + (k - 1) * d * j        j <- j * s        start <- start - p * j

   for a convolution or pooling with kernel ``k``, stride ``s``, dilation ``d`` and padding ``p``
   (``start`` = first input pixel seen by output pixel 0; negative = it lies in the padding).
   Upsampling divides the jump (``j <- j / s``); then the RF size can depend on the output pixel's
   phase, so :func:`analytic_receptive_field` tracks the RF interval of every phase exactly and
   reports the largest. See :func:`analytic_receptive_field`.

2. **Exact theoretical RF of any model** (skips, ASPP branches, concatenations): the set of input
   pixels joined to the output pixel by a path in the network. It is the non-zero set of the input
   gradient of a *linearised* copy: activations -> identity, max-pool -> average-pool, every
   convolution / linear weight -> a positive constant, biases -> 0, normalisation -> identity,
   dropout off (module replacement on a ``copy.deepcopy``, plus a torch function mode for functional
   calls such as ``F.relu`` inside ``forward``). With positive weights and activations nothing
   cancels, so the gradient is ``> 0`` exactly on the support; float64 keeps the smallest path
   weights far from underflow. It shows the holes dilation leaves ("gridding", Wang et al. 2018,
   "Understanding Convolution for Semantic Segmentation"). See :class:`ReceptiveField` and
   :func:`exact_receptive_field`.

3. **Effective RF** (Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective Receptive Field in
   Deep Convolutional Neural Networks"): the mean absolute input gradient of one output pixel of the
   *real* model over real images. It is roughly Gaussian and much smaller than the theoretical RF.
   See :func:`effective_receptive_field`, :func:`erf_radius`, :func:`erf_rms_radius`.

Coordinates are ``(y, x)`` = (row, column) in pixels; boxes are ``(top, left, bottom, right)``
with both ends included. Theoretical RFs ignore the image border (the analytic ones may start in
the padding); exact RFs are clipped to the image because they are computed on it.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "LayerSpec",
    "LayerRF",
    "layer_spec",
    "analytic_receptive_field",
    "format_rf_table",
    "linearise",
    "LinearisedFunctions",
    "ReceptiveField",
    "exact_receptive_field",
    "support_box",
    "support_size",
    "support_holes",
    "effective_receptive_field",
    "erf_radius",
    "erf_rms_radius",
]

Pair = tuple[int, int]

_KINDS = ("conv", "pool", "transposed_conv", "upsample_nearest", "upsample_bilinear", "pointwise")


def _pair(value, what: str, minimum: int = 0) -> Pair:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``; integers only, each >= ``minimum``."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f"{what} must be an int or a pair (h, w) for 2-D layers, got {value!r}")
    out = []
    for v in values:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{what} must be integer(s) >= {minimum}, got {value!r}")
        out.append(v)
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# 1. Analytic receptive field of a chain
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a chain, as the recurrence sees it (2-D; ints or ``(h, w)`` pairs).

    kind: ``"conv"`` (also 1x1 conv), ``"pool"`` (max / average pooling), ``"transposed_conv"``,
    ``"upsample_nearest"``, ``"upsample_bilinear"`` (``align_corners=False``) or ``"pointwise"``
    (ReLU, BatchNorm, dropout: RF unchanged). ``scale_factor`` is used by the upsampling kinds only,
    ``output_padding`` by ``transposed_conv`` only, ``ceil_mode`` by ``pool`` only (output size).

    Raises:
        ValueError: unknown kind, or a size that is not a positive integer (padding >= 0).
    """

    kind: str = "conv"
    kernel_size: int | Pair = 1
    stride: int | Pair = 1
    padding: int | Pair = 0
    dilation: int | Pair = 1
    name: str = ""
    scale_factor: int | Pair = 1
    output_padding: int | Pair = 0
    ceil_mode: bool = False

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"LayerSpec kind must be one of {_KINDS}, got {self.kind!r}")
        for name, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1),
                              ("scale_factor", 1), ("output_padding", 0)):
            object.__setattr__(self, name, _pair(getattr(self, name), f"{self.name or self.kind}: {name}", minimum))


@dataclass(frozen=True)
class LayerRF:
    """Receptive field after one layer of a chain (every size a ``(h, w)`` pair, in input pixels).

    ``rf_size``: RF size (the largest over output pixels when upsampling makes it phase-dependent);
    ``jump``: input pixels between neighbouring output pixels (the product of strides, divided by
    upsampling factors); ``start``: first input pixel seen by output pixel ``(0, 0)`` (negative when
    it lies in the zero padding; None when that pixel sees nothing); ``output_size``: the feature map
    size when ``input_size`` was given, else None. :meth:`box` gives the RF box of any output pixel.
    """

    name: str
    kind: str
    kernel_size: Pair
    stride: Pair
    dilation: Pair
    padding: Pair
    scale_factor: Pair
    rf_size: Pair
    jump: tuple[float, float]
    start: tuple[int | None, int | None]
    output_size: Pair | None = None
    _maps: tuple = field(default=(), repr=False, compare=False)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """RF box ``(top, left, bottom, right)`` (inclusive, input pixels) of output pixel ``(y, x)``.

        Raises:
            ValueError: the pixel sees no input (a transposed convolution with kernel < stride).
        """
        rows, cols = self._maps[0].interval(y), self._maps[1].interval(x)
        if rows is None or cols is None:
            raise ValueError(f"output pixel ({y}, {x}) of layer {self.name!r} sees no input pixel")
        return rows[0], cols[0], rows[1], cols[1]


class _AxisMap:
    """Along one axis: output index ``o`` sees input pixels ``[lo(o), hi(o)]`` (or nothing).

    Periodic-affine: ``lo(o + period) = lo(o) + shift``, so the jump is ``shift / period``. Plain
    conv/pool chains have period 1; upsampling by ``s`` multiplies the period by ``s``.
    """

    def __init__(self, period: int, shift: int, lo: tuple, hi: tuple):
        self.period, self.shift, self.lo, self.hi = period, shift, lo, hi

    def interval(self, o: int) -> tuple[int, int] | None:
        q, phase = divmod(o, self.period)
        if self.lo[phase] is None:
            return None
        return self.lo[phase] + q * self.shift, self.hi[phase] + q * self.shift

    @property
    def jump(self) -> Fraction:
        return Fraction(self.shift, self.period)

    @property
    def rf_size(self) -> int:
        return max((h - l + 1 for l, h in zip(self.lo, self.hi) if l is not None), default=0)

    def then(self, taps: Callable[[int], list[int]], a: int, b: int) -> _AxisMap:
        """Map after a layer whose output ``o`` reads input indices ``taps(o)``, ``taps(o+a) = taps(o)+b``."""
        period = a * self.period // math.gcd(b, self.period)
        shift = self.shift * (period // a) * b // self.period
        lo, hi = [], []
        for o in range(period):
            seen = [iv for i in taps(o) if (iv := self.interval(i)) is not None]
            lo.append(min((iv[0] for iv in seen), default=None))
            hi.append(max((iv[1] for iv in seen), default=None))
        return _AxisMap(period, shift, tuple(lo), tuple(hi))._reduced()

    def _reduced(self) -> _AxisMap:
        """Same map with the smallest period (keeps periods small after up- then down-sampling)."""
        for p in range(1, self.period):
            if self.period % p or (self.shift * p) % self.period:
                continue
            step = self.shift * p // self.period
            if all((self.lo[o] is None and self.lo[o - p] is None)
                   or (self.lo[o] is not None and self.lo[o - p] is not None
                       and self.lo[o] == self.lo[o - p] + step and self.hi[o] == self.hi[o - p] + step)
                   for o in range(p, self.period)):
                return _AxisMap(p, step, self.lo[:p], self.hi[:p])
        return self


def _axis_step(spec: LayerSpec, axis: int):
    """``(taps, a, b)`` of one layer along one axis (see :meth:`_AxisMap.then`)."""
    k, s, p, d = spec.kernel_size[axis], spec.stride[axis], spec.padding[axis], spec.dilation[axis]
    f = spec.scale_factor[axis]
    if spec.kind in ("conv", "pool"):
        return (lambda o: [o * s - p + t * d for t in range(k)]), 1, s
    if spec.kind == "transposed_conv":  # output o = i * s - p + t * d
        return (lambda o: [(o + p - t * d) // s for t in range(k) if (o + p - t * d) % s == 0]), s, 1
    if spec.kind == "upsample_nearest":
        return (lambda o: [o // f]), f, 1
    if spec.kind == "upsample_bilinear":  # source coordinate (o + 0.5) / f - 0.5 (align_corners=False)
        def taps(o):
            src = Fraction(2 * o + 1, 2 * f) - Fraction(1, 2)
            i0 = math.floor(src)
            return [i0] if src == i0 else [i0, i0 + 1]
        return taps, f, 1
    return (lambda o: [o]), 1, 1  # pointwise


def _axis_output_size(spec: LayerSpec, axis: int, n: int) -> int:
    """Feature map size after the layer (PyTorch's formulas), ``n`` = size before it."""
    k, s, p, d = spec.kernel_size[axis], spec.stride[axis], spec.padding[axis], spec.dilation[axis]
    if spec.kind in ("conv", "pool"):
        span = n + 2 * p - d * (k - 1) - 1
        if spec.kind == "pool" and spec.ceil_mode:
            out = -(-span // s) + 1
            if (out - 1) * s >= n + p:  # last window must start inside the input or left padding
                out -= 1
            return out
        return span // s + 1
    if spec.kind == "transposed_conv":
        return (n - 1) * s - 2 * p + d * (k - 1) + spec.output_padding[axis] + 1
    if spec.kind.startswith("upsample"):
        return n * spec.scale_factor[axis]
    return n


_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.LogSigmoid, nn.Softsign, nn.Threshold, nn.Identity,
)
_NORM_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm,
    nn.LayerNorm, nn.LocalResponseNorm,
)
_DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)


def _upsample_spec(module: nn.Upsample, name: str) -> LayerSpec:
    if module.scale_factor is None:
        raise ValueError(f"{name}: Upsample(size=...) has no fixed scale factor; give scale_factor "
                         "or use exact_receptive_field")
    scale = _pair(module.scale_factor, f"{name}: scale_factor (integer factors only)", 1)
    if module.mode in ("nearest", "nearest-exact"):
        return LayerSpec("upsample_nearest", scale_factor=scale, name=name)
    if module.mode == "bilinear" and not module.align_corners:
        return LayerSpec("upsample_bilinear", scale_factor=scale, name=name)
    raise ValueError(f"{name}: Upsample(mode={module.mode!r}, align_corners={module.align_corners}) "
                     "is not translation-invariant or not 2-D linear; use exact_receptive_field")


def layer_spec(module: nn.Module, name: str = "") -> LayerSpec:
    """The :class:`LayerSpec` of one 2-D layer: Conv2d, ConvTranspose2d, Max/AvgPool2d, LPPool2d,
    Upsample (integer ``scale_factor``; nearest, or bilinear with ``align_corners=False``) and
    pointwise layers (activations, normalisation, dropout, Identity).

    Raises:
        ValueError: any other module (blocks with skips, global pooling, Linear, Flatten, 1-D/3-D
            layers): the recurrence applies to chains of such layers only -- use
            :func:`exact_receptive_field` for the rest.
    """
    label = name or type(module).__name__
    if isinstance(module, nn.ConvTranspose2d):
        return LayerSpec("transposed_conv", module.kernel_size, module.stride, module.padding,
                         module.dilation, name, output_padding=module.output_padding)
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if isinstance(padding, str):  # "valid" or "same" (stride 1); PyTorch puts the odd pixel right
            total = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
            if padding == "same" and any(t % 2 for t in total):
                raise ValueError(f"{label}: padding='same' with an even kernel pads asymmetrically; "
                                 "use exact_receptive_field")
            padding = (0, 0) if padding == "valid" else tuple(t // 2 for t in total)
        return LayerSpec("conv", module.kernel_size, module.stride, padding, module.dilation, name)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return LayerSpec("pool", module.kernel_size, stride, getattr(module, "padding", 0),
                         getattr(module, "dilation", 1), name, ceil_mode=module.ceil_mode)
    if isinstance(module, nn.Upsample):
        return _upsample_spec(module, label)
    if isinstance(module, _POINTWISE_MODULES + _NORM_MODULES + _DROPOUT_MODULES):
        return LayerSpec("pointwise", name=name)
    raise ValueError(f"{label}: cannot use {type(module).__name__} in the analytic recurrence, which "
                     "covers chains of Conv2d / ConvTranspose2d / pooling / Upsample / pointwise layers; "
                     "use exact_receptive_field(model, input_size) for any other model")


def _flatten(item, prefix: str = ""):
    """Yield ``(name, module_or_spec)`` leaves of nested Sequential / ModuleList / lists."""
    if isinstance(item, (nn.Sequential, nn.ModuleList)):
        for child_name, child in item.named_children():
            yield from _flatten(child, f"{prefix}.{child_name}" if prefix else child_name)
    elif isinstance(item, (nn.Module, LayerSpec, Mapping)):
        yield prefix, item
    elif isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
        for i, child in enumerate(item):
            if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], str):
                child_name, child = child
            else:
                child_name = str(i)
            yield from _flatten(child, f"{prefix}.{child_name}" if prefix else child_name)
    else:
        raise ValueError(f"{prefix or 'layers'}: expected an nn.Module, a LayerSpec or a dict of "
                         f"LayerSpec fields, got {type(item).__name__}")


def analytic_receptive_field(layers, input_size: int | Pair | None = None) -> list[LayerRF]:
    """Theoretical receptive field after every layer of a chain (Araujo et al. 2019, Distill).

    Args:
        layers: an ``nn.Sequential`` / ``nn.ModuleList`` (nested ones are flattened, names dotted,
            e.g. ``torchvision.models.vgg16().features``), or a list of modules, :class:`LayerSpec`,
            dicts of LayerSpec fields, or ``(name, item)`` pairs.
        input_size: ``H`` or ``(H, W)``; when given, each row also holds the feature map size.

    Returns:
        One :class:`LayerRF` per layer, in order (``result[i]`` is the RF *after* layer ``i``).
        Sizes, jumps and starts are in input pixels. For conv/pool chains this is the recurrence
        ``r += (k-1)*d*j; j *= s; start -= p*j``. Upsampling (``ConvTranspose2d``, ``Upsample``)
        divides the jump; the RF interval of each output phase is tracked exactly (ignoring the
        image border), so :meth:`LayerRF.box` equals the bounding box of the exact support of an
        interior pixel, and ``rf_size`` is the largest over phases.

    Raises:
        ValueError: a layer outside the chain vocabulary (see :func:`layer_spec`), bad sizes, or a
            feature map that shrinks below one pixel for ``input_size``.
    """
    size = _pair(input_size, "input_size", 1) if input_size is not None else None
    maps = (_AxisMap(1, 1, (0,), (0,)), _AxisMap(1, 1, (0,), (0,)))
    result = []
    for name, item in _flatten(layers):
        if isinstance(item, nn.Module):
            spec = layer_spec(item, name)
        else:
            spec = item if isinstance(item, LayerSpec) else LayerSpec(**{"name": name, **item})
        name = spec.name or name
        maps = tuple(m.then(*_axis_step(spec, axis)) for axis, m in enumerate(maps))
        if size is not None:
            size = tuple(_axis_output_size(spec, axis, n) for axis, n in enumerate(size))
            if min(size) < 1:
                raise ValueError(f"layer {name!r} ({spec.kind}) gives a feature map of size {size} for "
                                 f"input_size={input_size}; use a larger input")
        starts = tuple(None if m.lo[0] is None else m.lo[0] for m in maps)
        result.append(LayerRF(name, spec.kind, spec.kernel_size, spec.stride, spec.dilation, spec.padding,
                              spec.scale_factor, (maps[0].rf_size, maps[1].rf_size),
                              (float(maps[0].jump), float(maps[1].jump)), starts, size, maps))
    return result


def _cell(pair) -> str:
    if pair is None:
        return "-"
    a, b = (f"{v:g}" if isinstance(v, float) else str(v) for v in pair)
    return a if a == b else f"{a}x{b}"


def format_rf_table(rfs: Sequence[LayerRF]) -> str:
    """Plain-text table of :func:`analytic_receptive_field` rows (``"3x5"`` when h != w).

    Columns: layer, kind, kernel, stride (``1/f`` for upsampling), dilation, padding, out (feature
    map size, if known), rf, jump, start.
    """
    header = ("layer", "kind", "kernel", "stride", "dilation", "padding", "out", "rf", "jump", "start")
    rows = [header]
    for rf in rfs:
        upsample = rf.kind.startswith("upsample")
        stride = "1/" + _cell(rf.scale_factor) if upsample else _cell(rf.stride)
        rows.append((rf.name, rf.kind, "-" if upsample else _cell(rf.kernel_size), stride,
                     _cell(rf.dilation), _cell(rf.padding), _cell(rf.output_size), _cell(rf.rf_size),
                     _cell(rf.jump), _cell(rf.start)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ----------------------------------------------------------------------------------------------
# 2. Exact theoretical receptive field: gradient support of a linearised copy
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# 3. Effective receptive field
# ----------------------------------------------------------------------------------------------


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
                out = _layer_output(model, x, layer, output_fn)
                y, x_ = _check_pixel(output_pixel, out.shape[2:],
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
