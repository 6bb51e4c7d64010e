"""Analytic (theoretical) receptive field of a chain of layers.

The recurrence of Araujo, Norris & Sim (2019), "Computing Receptive Fields of Convolutional Neural
Networks", Distill. Walking the chain from the input, with jump ``j`` (input pixels between two
neighbouring features) and RF size ``r``::

    r <- r + (k - 1) * d * j        j <- j * s        start <- start - p * j

for a convolution or pooling with kernel ``k``, stride ``s``, dilation ``d`` and padding ``p``
(``start`` = first input pixel seen by output pixel 0; negative = it lies in the padding).
Upsampling divides the jump (``j <- j / s``); then the RF size can depend on the output pixel's
phase, so :func:`analytic_receptive_field` tracks the RF interval of every phase exactly and
reports the largest. Models with branches need :mod:`seglab.receptive_field.exact`.

Coordinates are ``(y, x)`` = (row, column) in pixels; boxes are ``(top, left, bottom, right)``
with both ends included. The analytic RFs ignore the image border (they may start in the padding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from torch import nn

from .layers import LayerSpec, Pair, axis_output_size, layer_spec, size_pair

__all__ = [
    "LayerSpec",
    "LayerRF",
    "layer_spec",
    "analytic_receptive_field",
    "format_rf_table",
]


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
    size = size_pair(input_size, "input_size", 1) if input_size is not None else None
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
            size = tuple(axis_output_size(spec, axis, n) for axis, n in enumerate(size))
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
