"""DCNv2: a convolution whose taps move, through ``torchvision.ops.deform_conv2d``.

- Dai, Qi, Xiong, Li, Zhang, Hu & Wei, "Deformable Convolutional Networks", ICCV 2017 (DCNv1: offsets).
- Zhu, Hu, Lin & Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019 (DCNv2: + masks).

A k×k convolution reads the ``K = k²`` taps ``p0 + p_k`` of a regular grid. A deformable one reads them at
``p0 + p_k + Δp_k(p0)``, with offsets ``Δp_k`` predicted from the input by a plain convolution of the same
kernel, stride, padding and dilation (``offset_conv``), sampled bilinearly (between pixels: a blend of the
four around; off the image: 0), and DCNv2 weights each tap by a modulation scalar ``m_k = sigmoid(·)`` in
(0, 1) predicted by the same convolution (eq. 3 of the DCNv2 paper)::

    y(p0) = sum_k  w_k · m_k(p0) · x(p0 + p_k + Δp_k(p0))  + b

As both papers, ``offset_conv`` starts at zero: offsets 0 and masks ``sigmoid(0) = 0.5``, so DCNv2 starts as
its plain convolution with the weights halved (bias unchanged), and DCNv1 (``modulation="none"``) starts as
exactly its plain convolution. The papers also lower the learning rate of the offset branch (0.1×); here
it trains at the model's rate.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv2d", "dcnv2_locations", "MODULATIONS"]

MODULATIONS = ("sigmoid", "none")  # DCNv2's masks in (0, 1); DCNv1 without masks


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return values


def dcnv2_locations(offset: torch.Tensor, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """Where ``deform_conv2d`` samples: ``(N, G, K, H', W', 2)`` positions ``(y, x)`` in input pixels (pixel
    centres at integers), for offsets ``(N, 2·G·K, H', W')`` in torchvision's layout (row-major taps, ``(dy, dx)``).

    Tap ``k = i·kw + j`` of output pixel ``(r, c)`` lies at ``(r·s - p + i·d + dy, c·s - p + j·d + dx)``.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1),
                                              _pair(padding, "padding", 0), _pair(dilation, "dilation", 1))
    n, channels, ho, wo = offset.shape
    taps = kh * kw
    if channels % (2 * taps):
        raise ValueError(f"offset must have 2·offset_groups·{taps} channels, got {channels}")
    factory = dict(dtype=offset.dtype, device=offset.device)
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, **factory) * dh, torch.arange(kw, **factory) * dw, indexing="ij")
    taps_yx = torch.stack((tap_y, tap_x), -1).reshape(taps, 1, 1, 2)  # (K, 1, 1, 2), row-major
    rows, cols = torch.arange(ho, **factory) * sh - ph, torch.arange(wo, **factory) * sw - pw
    corners = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1)  # (H', W', 2): the grid's first tap
    moves = offset.reshape(n, channels // (2 * taps), taps, 2, ho, wo).permute(0, 1, 2, 4, 5, 3)  # (N, G, K, H', W', 2)
    return corners + taps_yx + moves


class DeformConv2d(nn.Module):
    """DCNv2 (or DCNv1) layer: ``(N, in_channels, H, W) -> (N, out_channels, H', W')``, sizes as ``nn.Conv2d``.

    ``weight`` ``(out_channels, in_channels/groups, k, k)`` and ``bias`` are initialised as ``nn.Conv2d``'s;
    ``offset_conv`` (``in_channels -> 3·G·K`` with modulation, ``2·G·K`` without; ``G = offset_groups``)
    starts at zero. Its output channels: ``[:2GK]`` offsets in torchvision's layout (tap-major ``(dy, dx)``,
    pixels), ``[2GK:]`` mask logits.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as ``nn.Conv2d``.
        padding: as ``nn.Conv2d``; None = "same" for stride 1 (``dilation·(k-1)//2``).
        offset_groups: channel groups with their own offsets (and masks); divides ``in_channels``.
        modulation: ``"sigmoid"`` (DCNv2, masks in (0, 1), 0.5 at init) or ``"none"`` (DCNv1).

    ``fixed_offset`` / ``fixed_mask`` (buffers, None by default): when set (``freeze_sampling``), ``forward``
    samples there instead of predicting, e.g. for an exact receptive field. Differences from the paper: the
    offset branch is not given a lower learning rate.

    Raises:
        ValueError: bad sizes, an unknown ``modulation``, channels not divisible by the groups.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=None, dilation=1,
                 groups: int = 1, bias: bool = True, *, offset_groups: int = 1, modulation: str = "sigmoid") -> None:
        super().__init__()
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS} (DCNv2, DCNv1), got {modulation!r}")
        for name, value, divisor in (("in_channels", in_channels, groups), ("out_channels", out_channels, groups),
                                     ("in_channels", in_channels, offset_groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % divisor:
                raise ValueError(f"{name} must be a positive multiple of {divisor} (groups / offset_groups), "
                                 f"got {value!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride, self.dilation = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
        same = tuple(d * (k - 1) // 2 for k, d in zip(self.kernel_size, self.dilation))
        self.padding = _pair(same if padding is None else padding, "padding", 0)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.offset_groups, self.modulation = offset_groups, modulation
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        outputs = (3 if modulation == "sigmoid" else 2) * offset_groups * taps
        self.offset_conv = nn.Conv2d(in_channels, outputs, self.kernel_size, self.stride, self.padding, self.dilation)
        self.register_buffer("fixed_offset", None, persistent=False)
        self.register_buffer("fixed_mask", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's initialisation
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_conv.weight)  # offsets 0, masks 0.5: the regular grid (both papers)
        nn.init.zeros_(self.offset_conv.bias)

    def predict_sampling(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offsets ``(N, 2·G·K, H', W')`` (pixels) and masks ``(N, G·K, H', W')`` in (0, 1) (None for DCNv1)."""
        out = self.offset_conv(x)  # (N, 3GK or 2GK, H', W')
        moves = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        mask = out[:, moves:].sigmoid() if self.modulation == "sigmoid" else None
        return out[:, :moves], mask

    def sampling(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The offsets and masks ``forward`` uses: the fixed ones if set, else :meth:`predict_sampling`."""
        if self.fixed_offset is not None:
            return self.fixed_offset, self.fixed_mask
        return self.predict_sampling(x)

    def sampling_locations(self, x: torch.Tensor) -> torch.Tensor:
        """Where each output pixel samples: ``(N, G, K, H', W', 2)`` positions ``(y, x)``, input pixels."""
        offset, _ = self.sampling(x)
        return dcnv2_locations(offset, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DeformConv2d expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        offset, mask = self.sampling(x)
        # under autocast offset_conv returns 16-bit offsets, and torchvision's CPU kernel has no autocast rule:
        # run the deformable convolution in the 32/64-bit type of the input and weights, as its CUDA rule does
        dtype = torch.promote_types(x.dtype, self.weight.dtype)
        with torch.autocast(x.device.type, enabled=False):
            x, offset, weight, bias, mask = (None if t is None else t.to(dtype)
                                             for t in (x, offset, self.weight, self.bias, mask))
            return deform_conv2d(x, offset, weight, bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"offset_groups={self.offset_groups}, modulation={self.modulation!r}")
