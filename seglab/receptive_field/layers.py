"""One layer as the receptive-field recurrence sees it: ``LayerSpec``, read from a module by ``layer_spec``.

A layer is described along each axis by its kernel size ``k``, stride ``s``, padding ``p`` and dilation
``d`` (or an upsampling factor); ``axis_output_size`` gives the feature map size after it with PyTorch's
formulas. ``POINTWISE_MODULES``, ``NORM_MODULES`` and ``DROPOUT_MODULES`` are the modules that leave the
receptive field unchanged (the exact RF replaces them by the identity, see :mod:`.linearised_modules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = [
    "Pair",
    "LayerSpec",
    "layer_spec",
    "size_pair",
    "axis_output_size",
    "POINTWISE_MODULES",
    "NORM_MODULES",
    "DROPOUT_MODULES",
]

Pair = tuple[int, int]

_KINDS = ("conv", "pool", "transposed_conv", "upsample_nearest", "upsample_bilinear", "pointwise")


def size_pair(value, what: str, minimum: int = 0) -> Pair:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``; integers only, each >= ``minimum``.

    Raises:
        ValueError: not one or two integers >= ``minimum``; the message names ``what``.
    """
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
            object.__setattr__(self, name, size_pair(getattr(self, name), f"{self.name or self.kind}: {name}", minimum))


def axis_output_size(spec: LayerSpec, axis: int, n: int) -> int:
    """Feature map size after the layer along ``axis`` (0 = rows, 1 = columns; PyTorch's formulas),
    ``n`` = the size before it (pixels)."""
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


#: Modules that leave the receptive field unchanged: activations, ``Identity`` ...
POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.LogSigmoid, nn.Softsign, nn.Threshold, nn.Identity,
)
#: ... normalisation layers ...
NORM_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm,
    nn.LayerNorm, nn.LocalResponseNorm,
)
#: ... and dropout.
DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)


def _upsample_spec(module: nn.Upsample, name: str) -> LayerSpec:
    if module.scale_factor is None:
        raise ValueError(f"{name}: Upsample(size=...) has no fixed scale factor; give scale_factor "
                         "or use exact_receptive_field")
    scale = size_pair(module.scale_factor, f"{name}: scale_factor (integer factors only)", 1)
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
    if isinstance(module, POINTWISE_MODULES + NORM_MODULES + DROPOUT_MODULES):
        return LayerSpec("pointwise", name=name)
    raise ValueError(f"{label}: cannot use {type(module).__name__} in the analytic recurrence, which "
                     "covers chains of Conv2d / ConvTranspose2d / pooling / Upsample / pointwise layers; "
                     "use exact_receptive_field(model, input_size) for any other model")
