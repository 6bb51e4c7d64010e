"""DCNv3, InternImage's deformable operator, in plain PyTorch (``F.grid_sample``), channels-last.

Wang, Dai, Chen, Huang, Li, Zhu, Hu, Lu, Lu, Li, Wang & Qiao, "InternImage: Exploring Large-Scale Vision
Foundation Models with Deformable Convolutions", CVPR 2023 (eq. 2)::

    y(p0) = sum_g sum_k  m_gk(p0) · w_g · x_g(p0 + p_k + Δp_gk(p0))

``G`` groups of ``C / G`` channels; in each group ``P = kh·kw`` sampling points, each moved by a learned
offset ``Δp_gk`` and weighted by a modulation scalar ``m_gk``, **softmax-normalised over the P points** of the
group (DCNv2's sigmoid masks are not normalised). Unlike DCNv2 there is no weight per sampling point: one
projection ``w_g`` is shared by all points (``input_proj``), the points are mixed by the masks alone (a
depthwise aggregation), and an ``output_proj`` mixes the channels. Offsets and masks are predicted from the
input by a depthwise convolution (+ LayerNorm + GELU) and two linear heads.

- :func:`dcnv3_sample` is the operator's core (``x`` given, offsets and masks given): the sum over the points.
  Its layout is InternImage's, so its checkpoints' offset/mask heads work unchanged: inputs
  ``(N, H, W, C)``, offsets ``(N, H', W', G·P·2)`` as ``(dx, dy)`` per point, points **x-major**
  (``k = ix·kh + iy``), masks ``(N, H', W', G·P)``.
- :func:`to_torchvision_layout` rewrites offsets and masks in ``torchvision.ops.deform_conv2d``'s layout
  (row-major points, ``(dy, dx)``, channels first). With it the core *is* ``deform_conv2d`` with a depthwise
  all-ones weight and ``offset_groups = G``, for any masks, softmaxed or not (the tests check max abs diff
  < 1e-5 in float32): the softmax is a choice of the module, not of the operator.
- :class:`DCNv3` is the module (``(N, H, W, C) -> (N, H, W, C)``).

Differences from InternImage's module: stride 1 only (its depthwise offset branch runs at stride 1, so its
own module cannot take a stride either); no ``center_feature_scale`` (used by InternImage-H/G only) and no
``remove_center``. ``offset_scale`` scales the whole kernel around its centre, as InternImage's kernel does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DCNv3", "dcnv3_sample", "dcnv3_locations", "to_torchvision_layout"]


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return values


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def dcnv3_locations(offset: torch.Tensor, input_size: tuple[int, int], kernel_size=3, *, stride=1, padding=None,
                    dilation=1, groups: int = 1, offset_scale: float = 1.0) -> torch.Tensor:
    """Where DCNv3 samples: ``(N, H', W', G, P, 2)`` positions ``(y, x)`` in input pixels (pixel centres at
    integers), for offsets ``(N, H', W', G·P·2)`` in :func:`dcnv3_sample`'s layout.

    Point ``k = ix·kh + iy`` of output pixel ``(i, j)`` with kernel centre ``c = (i·s - p + d·(kh-1)//2, ...)``
    lies at ``c + offset_scale · ((iy·d - d·(kh-1)//2, ix·d - d·(kw-1)//2) + Δp)``; with zero offsets and
    ``offset_scale = 1`` these are the taps of a plain convolution.
    """
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1), \
        _pair(dilation, "dilation", 1)
    ph, pw = _pair(padding if padding is not None else (dh * (kh - 1) // 2, dw * (kw - 1) // 2), "padding", 0)
    h, w = input_size
    points = kh * kw
    if offset.dim() != 4 or offset.shape[3] != groups * points * 2:
        raise ValueError(f"offset must be (N, H', W', groups·kh·kw·2) = (N, H', W', {groups * points * 2}), "
                         f"got {tuple(offset.shape)}")
    n, ho, wo = offset.shape[:3]
    if (ho, wo) != (_output_size(h, kh, sh, ph, dh), _output_size(w, kw, sw, pw, dw)):
        raise ValueError(f"offset map {(ho, wo)} does not match the output size of a {kh}×{kw} kernel (stride "
                         f"{(sh, sw)}, padding {(ph, pw)}, dilation {(dh, dw)}) on a {h}×{w} input")
    factory = dict(dtype=offset.dtype, device=offset.device)
    cy, cx = dh * (kh - 1) // 2, dw * (kw - 1) // 2  # kernel centre, from its first tap
    tap_x, tap_y = torch.meshgrid(torch.arange(kw, **factory) * dw - cx, torch.arange(kh, **factory) * dh - cy,
                                  indexing="ij")  # (kw, kh): x-major, InternImage's order
    taps = torch.stack((tap_y, tap_x), -1).reshape(points, 2)  # (P, 2) as (y, x)
    rows = torch.arange(ho, **factory) * sh - ph + cy
    cols = torch.arange(wo, **factory) * sw - pw + cx
    centres = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1)  # (H', W', 2) as (y, x)
    moves = offset.reshape(n, ho, wo, groups, points, 2).flip(-1)  # (dx, dy) -> (dy, dx)
    return centres[:, :, None, None] + offset_scale * (taps + moves)  # (N, H', W', G, P, 2)


def dcnv3_sample(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_size=3, *, stride=1,
                 padding=None, dilation=1, groups: int = 1, offset_scale: float = 1.0) -> torch.Tensor:
    """DCNv3's core: ``y_c(p0) = sum_k m_gk(p0) · x_c(p0 + p_k + Δp_gk(p0))`` for each channel ``c`` of group ``g``.

    Bilinear sampling with zeros outside the image (``F.grid_sample``, ``align_corners=False``), so points
    between pixels read a blend of the four around them and points off the image read 0. The positions pass
    through ``grid_sample``'s normalised coordinates, which round: a point exactly on a pixel may come back
    ~1e-16 px off it, giving a neighbour a weight of that size. Values do not notice; an *exact* receptive
    field (gradient > 0) of an untrained layer then gains a one-pixel fringe, except on maps whose sides are
    powers of two, where the round trip is exact. (``torchvision.ops.deform_conv2d`` works in pixels: exact.)

    Args:
        x: ``(N, H, W, C)`` float, channels last; ``C`` divisible by ``groups``.
        offset: ``(N, H', W', G·P·2)`` in pixels, ``(dx, dy)`` per point, points x-major (InternImage).
        mask: ``(N, H', W', G·P)`` modulation weights (the module softmaxes them; any values work here).
        kernel_size, stride, padding, dilation: of the regular grid the offsets start from; ``padding=None``
            is "same" (``dilation·(k-1)//2``). ``H' = (H + 2p - d(k-1) - 1)//s + 1``.
        groups: ``G``, offset groups (each its own offsets and masks).
        offset_scale: scales the kernel around its centre (InternImage's; 1.0 = as given).

    Returns:
        ``(N, H', W', C)``, the dtype of ``x``.

    Raises:
        ValueError: shapes that do not fit together (the message gives the expected one).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (N, H, W, C), channels last, got {tuple(x.shape)}: use x.permute(0, 2, 3, 1)")
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"the {c} channels of x are not divisible by groups={groups}")
    locations = dcnv3_locations(offset, (h, w), kernel_size, stride=stride, padding=padding, dilation=dilation,
                                groups=groups, offset_scale=offset_scale)  # (N, H', W', G, P, 2) as (y, x)
    _, ho, wo, _, points, _ = locations.shape
    if mask.shape != (n, ho, wo, groups * points):
        raise ValueError(f"mask must be (N, H', W', groups·kh·kw) = {(n, ho, wo, groups * points)}, "
                         f"got {tuple(mask.shape)}")
    size = torch.tensor([h, w], dtype=locations.dtype, device=locations.device)
    grid = ((locations + 0.5) / size * 2 - 1).flip(-1)  # grid_sample wants (x, y) in [-1, 1] (pixel edges)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * groups, ho, wo * points, 2)  # (N·G, H', W'·P, 2)
    values = x.reshape(n, h, w, groups, c // groups).permute(0, 3, 4, 1, 2).reshape(n * groups, c // groups, h, w)
    sampled = F.grid_sample(values, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(n, groups, c // groups, ho, wo, points)  # (N, G, C/G, H', W', P)
    weights = mask.reshape(n, ho, wo, groups, points).permute(0, 3, 1, 2, 4)[:, :, None]  # (N, G, 1, H', W', P)
    out = (sampled * weights).sum(-1)  # (N, G, C/G, H', W')
    return out.permute(0, 3, 4, 1, 2).reshape(n, ho, wo, c)  # (N, H', W', C)


def to_torchvision_layout(offset: torch.Tensor, mask: torch.Tensor, kernel_size=3, groups: int = 1):
    """DCNv3 offsets ``(N, H', W', G·P·2)`` and masks ``(N, H', W', G·P)`` in ``torchvision.ops.deform_conv2d``'s
    layout: ``(N, 2·G·P, H', W')`` (row-major points, ``(dy, dx)``) and ``(N, G·P, H', W')``.

    Then ``dcnv3_sample(x, offset, mask, k, groups=G)`` equals ``deform_conv2d(x.permute(0, 3, 1, 2), *converted,
    weight=torch.ones(C, 1, k, k), padding=(k-1)//2, mask=...)``, permuted back (``offset_scale = 1``).
    """
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    n, ho, wo = offset.shape[:3]
    offset = offset.reshape(n, ho, wo, groups, kw, kh, 2).transpose(4, 5).flip(-1)  # (.., G, kh, kw, (dy, dx))
    mask = mask.reshape(n, ho, wo, groups, kw, kh).transpose(4, 5)  # (.., G, kh, kw)
    return offset.reshape(n, ho, wo, -1).permute(0, 3, 1, 2), mask.reshape(n, ho, wo, -1).permute(0, 3, 1, 2)


class DCNv3(nn.Module):
    """InternImage's deformable operator as a module: ``(N, H, W, C) -> (N, H, W, C)``, channels last.

    ``input_proj`` (Linear C → C, the shared ``w_g``) → :func:`dcnv3_sample` at offsets and masks predicted
    from the *input* by ``dw_conv`` (depthwise k×k) → ``dw_norm`` (LayerNorm) → GELU → ``offset`` (Linear C →
    G·P·2) and ``mask`` (Linear C → G·P, softmax over the P points of each group) → ``output_proj`` (C → C).

    Initialisation as InternImage: the offset and mask heads are zero, so the layer starts on the regular
    k×k grid with uniform masks ``1/P`` (a box filter per channel between two projections); the
    projections are Xavier-uniform with zero bias.

    Args:
        channels: ``C``, divisible by ``groups``.
        kernel_size: ``k`` (odd), of the sampling grid and (by default) of the depthwise offset branch.
        groups: ``G``; each group of ``C/G`` channels has its own P points and masks.
        dilation: of the regular grid the offsets start from.
        offset_scale: scales the kernel around its centre (1.0 in InternImage).
        dw_kernel_size: kernel of the depthwise offset branch (None = ``kernel_size``).

    ``fixed_offset`` / ``fixed_mask`` (buffers, None by default): when set (``seglab.models.deformable.
    freeze_sampling``), ``forward`` samples there instead of predicting, e.g. for an exact receptive field.
    Differences from the paper: see the module docstring (stride 1, no centre feature scale).
    """

    def __init__(self, channels: int, kernel_size: int = 3, groups: int = 4, *, dilation: int = 1,
                 offset_scale: float = 1.0, dw_kernel_size: int | None = None) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1 or channels % groups:
            raise ValueError(f"channels must be a positive multiple of groups={groups}, got {channels!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be an odd int (the grid needs a centre), got {kernel_size!r}")
        self.channels, self.kernel_size, self.groups = channels, kernel_size, groups
        self.dilation, self.offset_scale = dilation, offset_scale
        points = kernel_size * kernel_size
        dw_kernel_size = dw_kernel_size or kernel_size
        self.input_proj = nn.Linear(channels, channels)
        self.dw_conv = nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels)
        self.dw_norm = nn.LayerNorm(channels, eps=1e-6)
        self.offset = nn.Linear(channels, groups * points * 2)
        self.mask = nn.Linear(channels, groups * points)
        self.output_proj = nn.Linear(channels, channels)
        self.register_buffer("fixed_offset", None, persistent=False)
        self.register_buffer("fixed_mask", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for head in (self.offset, self.mask):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        for proj in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def predict_sampling(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets ``(N, H, W, G·P·2)`` (pixels) and softmaxed masks ``(N, H, W, G·P)`` of input ``(N, H, W, C)``."""
        n, h, w, _ = x.shape
        features = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (N, H, W, C), depthwise k×k
        features = F.gelu(self.dw_norm(features))
        mask = self.mask(features).reshape(n, h, w, self.groups, -1).softmax(-1)  # sums to 1 over each group's P
        return self.offset(features), mask.reshape(n, h, w, -1)

    def sampling(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets and masks ``forward`` uses: the fixed ones if set, else :meth:`predict_sampling`."""
        if self.fixed_offset is not None:
            return self.fixed_offset, self.fixed_mask
        return self.predict_sampling(x)

    def sampling_locations(self, x: torch.Tensor) -> torch.Tensor:
        """Where each output pixel samples: ``(N, H, W, G, P, 2)`` positions ``(y, x)``, input pixels."""
        offset, _ = self.sampling(x)
        return dcnv3_locations(offset, x.shape[1:3], self.kernel_size, dilation=self.dilation, groups=self.groups,
                               offset_scale=self.offset_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.channels:
            raise ValueError(f"DCNv3 expects (N, H, W, {self.channels}) channels-last input, got {tuple(x.shape)}: "
                             "permute (N, C, H, W) maps with x.permute(0, 2, 3, 1)")
        offset, mask = self.sampling(x)
        values = self.input_proj(x)  # (N, H, W, C)
        out = dcnv3_sample(values, offset, mask, self.kernel_size, dilation=self.dilation, groups=self.groups,
                           offset_scale=self.offset_scale)  # (N, H, W, C)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
                f"dilation={self.dilation}, offset_scale={self.offset_scale}")
