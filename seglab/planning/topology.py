"""The U-Net a patch size allows: pooling steps per axis, kernel sizes, widths, and its memory estimate.

Two rules of nnU-Net (Isensee, Jaeger, Kohl, Petersen & Maier-Hein, "nnU-Net: a self-configuring method
for deep learning-based biomedical image segmentation", Nature Methods 18, 2021; Online Methods,
"Rule-based parameters"), re-implemented from their description and from nnunetv2's
``experiment_planning/experiment_planners/network_topology.py`` (``get_pool_and_conv_props``) and the
feature-map count of ``dynamic_network_architectures``' ``PlainConvUNet.compute_conv_feature_map_size``:

- :func:`pooling_topology`: pool an axis by 2 while its feature map stays at least 8 pixels (so the
  bottleneck keeps at least ``min_edge = 4``), and only axes whose spacing is within a factor 2 of the
  finest one; an axis pooled alone must still be at least ``3 * min_edge``. A kernel is 3 along an axis
  once that axis' spacing is within a factor 2 of the finest (1 before, for strongly anisotropic data).
  The patch is then padded up to a multiple of ``2 ** pools`` per axis.
- :func:`feature_map_elements`: how many activations one image of the patch puts through the network's
  convolutions (every conv output, the transposed-conv outputs and the final 1x1 logits), the number
  nnU-Net v2 compares with its reference value to fit a GPU memory budget (``seglab.planning.plan``).

Shapes: sizes and spacings are ``(H, W)`` pairs in pixels and in physical units (1.0 for natural images).
Differences from nnunetv2: none in the results (``tests/test_planning.py`` compares them when
``nnunetv2`` is installed); the estimate is computed from the topology by formula instead of building
the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Topology", "pooling_topology", "pad_to_multiple", "features_per_stage", "feature_map_elements"]


@dataclass(frozen=True)
class Topology:
    """The encoder a patch allows (one entry per resolution stage in the tuples; stage 0 = full size).

    ``num_pool_per_axis`` (pools along H, along W), ``strides`` (``(1, 1)`` for stage 0, then ``(2, 2)``,
    ``(2, 1)`` ...), ``kernel_sizes`` (conv kernel of every stage, the bottleneck's last), and
    ``patch_size``: the patch padded up to a multiple of ``divisor = 2 ** num_pool_per_axis``.
    """

    num_pool_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        """What every patch side must be a multiple of: ``2 ** pools`` per axis."""
        return tuple(2**n for n in self.num_pool_per_axis)


def pad_to_multiple(size: Sequence[float], multiple: Sequence[int]) -> tuple[int, ...]:
    """Each ``size[i]`` rounded *up* to a multiple of ``multiple[i]`` (a multiple stays as it is)."""
    return tuple(int(math.ceil(s / m) * m) for s, m in zip(size, multiple))


def _check_pair(name: str, values: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be positive finite numbers, one per axis (e.g. (512, 512)); got {values}")
    return values


def pooling_topology(spacing: Sequence[float], patch_size: Sequence[float], min_edge: int = 4) -> Topology:
    """Pooling steps, strides and kernel sizes for ``patch_size`` (nnU-Net's rule; see the module docstring).

    Args:
        spacing: physical size of a pixel per axis (``(1.0, 1.0)`` for natural images).
        patch_size: pixels per axis (may be fractional, e.g. a median shape ``359.5``: sizes are halved
            with ceil as nnU-Net does).
        min_edge: smallest edge of the bottleneck feature map (nnU-Net: 4).

    Returns:
        A :class:`Topology`; its ``patch_size`` is ``patch_size`` padded up to ``2 ** pools`` per axis.

    Example (hand-computed): ``(512, 512)`` at spacing 1 halves 512 -> 4 in 7 steps: 7 pools per axis,
    8 stages, divisor 128, patch unchanged. ``(360, 480)``: H 360 -> 6 (6 pools), W 480 -> 8 after 6
    pools, and W alone may only pool from >= 12: 6 pools each, patch padded to ``(384, 512)``.

    Raises:
        ValueError: spacing / patch_size not positive, of different lengths, or ``min_edge < 1``.
    """
    spacing, size = _check_pair("spacing", spacing), _check_pair("patch_size", patch_size)
    if len(spacing) != len(size):
        raise ValueError(f"spacing {spacing} and patch_size {size} must have one entry per axis each")
    if min_edge < 1:
        raise ValueError(f"min_edge must be >= 1 pixel, got {min_edge}")
    dim = len(size)
    current_spacing, current_size = list(spacing), list(size)
    pools, kernel = [0] * dim, [1] * dim
    strides, kernels = [(1,) * dim], []
    while True:
        # axes that can still be halved and keep >= min_edge, among those within 2x of the finest spacing
        fit = [a for a in range(dim) if current_size[a] >= 2 * min_edge]
        if not fit:
            break
        finest = min(current_spacing[a] for a in fit)
        axes = [a for a in fit if current_spacing[a] / finest < 2]
        if len(axes) == 1 and current_size[axes[0]] < 3 * min_edge:
            break  # an axis pooled on its own must stay >= 3 * min_edge
        for a in range(dim):  # a kernel becomes 3 (for good) once its axis is within 2x of the finest spacing
            if kernel[a] == 1 and current_spacing[a] / min(current_spacing) < 2:
                kernel[a] = 3
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if a in axes else 1 for a in range(dim)))
        for a in axes:
            pools[a] += 1
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
    kernels.append((3,) * dim)  # the bottleneck: always 3x3
    padded = pad_to_multiple(size, [2**n for n in pools])
    return Topology(tuple(pools), tuple(strides), tuple(kernels), padded)


def features_per_stage(num_stages: int, base: int = 32, maximum: int = 512) -> tuple[int, ...]:
    """Channels of each stage: ``base`` doubled per stage, capped at ``maximum`` (nnU-Net 2-D: 32 and 512)."""
    if num_stages < 1 or base < 1 or maximum < base:
        raise ValueError(f"need num_stages >= 1 and 1 <= base <= maximum; got {num_stages}, {base}, {maximum}")
    return tuple(min(maximum, base * 2**s) for s in range(num_stages))


def feature_map_elements(patch_size: Sequence[int], strides: Sequence[Sequence[int]], features: Sequence[int],
                         num_classes: int, convs_per_stage: int = 2, convs_per_stage_decoder: int = 2) -> int:
    """Activations of one ``patch_size`` image through nnU-Net's plain U-Net (the planner's memory proxy).

    Stage ``s`` has size ``size_s = size_{s-1} // strides[s]`` (floor, from ``patch_size``) and
    ``features[s]`` channels. Counted: each encoder conv output (``convs_per_stage * F_s * |size_s|``);
    in the decoder, at every stage but the bottleneck, the transposed-conv output and each conv output
    (``(1 + convs_per_stage_decoder) * F_s * |size_s|``); the 1x1 logits at full size
    (``num_classes * |size_0|``; no deep-supervision heads). Inputs, norms and nonlinearities are not counted.

    Raises:
        ValueError: ``strides`` and ``features`` of different lengths, or an empty network.
    """
    if len(strides) != len(features) or not strides:
        raise ValueError(f"strides ({len(strides)}) and features ({len(features)}) need one entry per stage")
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // t for s, t in zip(size, stride)]
        sizes.append(math.prod(size))  # pixels of stage s
    encoder = sum(convs_per_stage * f * n for f, n in zip(features, sizes))
    decoder = sum((1 + convs_per_stage_decoder) * f * n for f, n in zip(features[:-1], sizes[:-1]))
    return int(encoder + decoder + num_classes * sizes[0])
