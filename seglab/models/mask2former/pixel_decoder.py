"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder (MSDeformAttn) plus one FPN level.

Cheng, Misra, Schwing, Kirillov & Girdhar, "Masked-attention Mask Transformer for Universal Image Segmentation",
CVPR 2022, Sec. 3.2 and 4; the deformable attention is Zhu, Su, Lu, Li, Wang & Dai, "Deformable DETR", ICLR 2021::

    layer4 (1/32) ─ 1×1 conv + GN ─┐   flatten, concat: S tokens
    layer3 (1/16) ─ 1×1 conv + GN ─┼─ enc_layers × [deformable attention, FFN] ─ split ─ 1/32, 1/16, 1/8 maps
    layer2 (1/8)  ─ 1×1 conv + GN ─┘                                                        │ (1/8, bilinear ×2)
    layer1 (1/4)  ─ 1×1 conv + GN (lateral) ───────────────────────────────────────────── + ─ 3×3 conv-GN-ReLU
                                                                         ─ 1×1 conv ─ mask features (1/4)

Each token of the three maps (every pixel of every level) attends to only ``levels × points = 3 × 4`` values: at
each level it predicts 4 offsets around its own position (its "reference point") and 4 weights (softmax over the
12), and reads the value map there with bilinear interpolation. That is cheap (linear in the number of pixels)
and mixes the scales, which a plain FPN does only top-down.

``multi_scale_deformable_attention`` is the sampling step written with ``grid_sample``, as the authors' PyTorch
fallback ``ms_deform_attn_core_pytorch`` does (their CUDA kernel computes the same thing faster).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeformableEncoderLayer", "MSDeformAttn", "MSDeformAttnPixelDecoder", "multi_scale_deformable_attention",
           "sine_position_embedding"]


def sine_position_embedding(x: torch.Tensor, num_features: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine position encoding of a map's grid, normalised to ``[0, 2π]`` on each axis.

    Args:
        x: ``(N, C, h, w)``; only its shape, device and dtype are used.
        num_features: F per axis; the result has ``2F`` channels (y first, then x).

    Returns:
        ``(N, 2F, h, w)``: channel ``2i`` holds ``sin(p / T^(2i/F))``, ``2i+1`` ``cos(p / T^(2i/F))``, with
        ``p = 2π · row / h`` (rows counted from 1) for the y half and the same with columns for the x half.
    """
    n, _, h, w = x.shape
    y = torch.arange(1, h + 1, dtype=x.dtype, device=x.device)[None, :, None].expand(n, h, w)
    xs = torch.arange(1, w + 1, dtype=x.dtype, device=x.device)[None, None, :].expand(n, h, w)
    y = y / (h + 1e-6) * 2 * math.pi
    xs = xs / (w + 1e-6) * 2 * math.pi
    exponent = 2 * torch.div(torch.arange(num_features, device=x.device), 2, rounding_mode="floor") / num_features
    dim_t = temperature ** exponent.to(x.dtype)  # (F,)
    pos_x, pos_y = xs[..., None] / dim_t, y[..., None] / dim_t  # (N, h, w, F)
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (N, 2F, h, w)


def multi_scale_deformable_attention(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                                     weights: torch.Tensor) -> torch.Tensor:
    """Read each level's value map at the sampling locations (bilinear, zeros outside) and sum with the weights.

    Args:
        value: ``(N, S, heads, d)``, the ``S = Σ h_l w_l`` tokens of all levels, level after level.
        shapes: ``[(h_l, w_l)]`` of the L levels.
        locations: ``(N, Lq, heads, L, P, 2)`` sampling points as ``(x, y)`` in ``[0, 1]`` (0 and 1 are the outer
            edges of the map, pixel centres at ``(i + 0.5) / w``).
        weights: ``(N, Lq, heads, L, P)`` attention weights (softmax over ``L × P``).

    Returns:
        ``(N, Lq, heads * d)``.
    """
    n, _, heads, d = value.shape
    _, queries, _, levels, points, _ = locations.shape
    grids = (2 * locations - 1).to(value.dtype)  # grid_sample wants [-1, 1] (and, in ONNX, the value's dtype)
    sampled = []
    for level, (h, w) in enumerate(shapes):
        start = sum(hh * ww for hh, ww in shapes[:level])
        v = value[:, start:start + h * w]  # (N, h*w, heads, d)
        v = v.permute(0, 2, 3, 1).reshape(n * heads, d, h, w)  # (N*heads, d, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(n * heads, queries, points, 2)  # (N*heads, Lq, P, 2)
        sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    sampled = torch.stack(sampled, dim=-2).flatten(-2)  # (N*heads, d, Lq, L*P)
    weights = weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    out = (sampled * weights).sum(-1)  # (N*heads, d, Lq)
    return out.reshape(n, heads * d, queries).transpose(1, 2)  # (N, Lq, heads*d)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, Sec. 4.1): ``(N, Lq, C) -> (N, Lq, C)``.

    Each query predicts, per head, level and point, an offset (in pixels of that level) from its reference point
    and an attention weight; the values are a linear map of the flattened multi-level input.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int = 3, num_points: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: head h starts with points 1..P pixels along direction 2πh/heads."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, reference_points: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """``query`` ``(N, Lq, C)`` (position already added), ``value`` ``(N, S, C)``, ``reference_points``
        ``(N, Lq, L, 2)`` as ``(x, y)`` in ``[0, 1]`` -> ``(N, Lq, C)``."""
        n, queries, dim = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(n, value.shape[1], heads, dim // heads)  # (N, S, heads, d)
        offsets = self.sampling_offsets(query).view(n, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, queries, heads, levels * points).softmax(-1)
        weights = weights.view(n, queries, heads, levels, points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)  # (L, 2)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(multi_scale_deformable_attention(value, shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = LN(x + MSDeformAttn(x + pos))``, ``x = LN(x + FFN(x))``; ``(N, S, C)``."""

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, feedforward_dim), nn.Linear(feedforward_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x + pos, x, reference_points, shapes))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


def reference_points(shapes: list[tuple[int, int]], batch_size: int, levels: int, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    """Each token's own pixel centre ``((j + 0.5) / w, (i + 0.5) / h)``, the same at every level: ``(N, S, L, 2)``."""
    points = []
    for h, w in shapes:
        y, x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device),
                              torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device), indexing="ij")
        points.append(torch.stack((x.reshape(-1) / w, y.reshape(-1) / h), -1))  # (h*w, 2)
    return torch.cat(points)[None, :, None].expand(batch_size, -1, levels, -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """The pixel decoder: backbone maps -> 1/32, 1/16, 1/8 maps for the transformer decoder + 1/4 mask features.

    Args:
        in_channels: channels of the backbone's ``layer1``…``layer4`` (strides 4, 8, 16, 32).
        dim: width of every map it returns (the paper's 256); a multiple of 32 (GroupNorm with 32 groups).
        num_heads, num_layers, feedforward_dim: the deformable encoder (paper: 8 heads, 6 layers, 1024).

    ``forward(features)`` with ``features["layer1"]``…``["layer4"]`` returns ``(mask_features, maps)``:
    ``mask_features`` ``(N, dim, H/4, W/4)`` and ``maps`` ``[(N, dim, H/32, W/32), (…, H/16, …), (…, H/8, …)]``.

    Raises:
        ValueError: ``dim`` not a multiple of 32.
    """

    def __init__(self, in_channels: tuple[int, int, int, int], dim: int = 256, *, num_heads: int = 8,
                 num_layers: int = 6, feedforward_dim: int = 1024) -> None:
        super().__init__()
        if dim % 32:
            raise ValueError(f"hidden_dim must be a multiple of 32 (GroupNorm with 32 groups); got {dim}")
        self.dim, self.num_levels = dim, 3
        self.input_proj = nn.ModuleList(  # index 0 is 1/32 (layer4), 2 is 1/8 (layer2)
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32, dim)) for c in in_channels[1:][::-1])
        self.level_embed = nn.Parameter(torch.randn(self.num_levels, dim))
        self.encoder = nn.ModuleList(DeformableEncoderLayer(dim, num_heads, feedforward_dim) for _ in range(num_layers))
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_channels[0], dim, 1, bias=False), nn.GroupNorm(32, dim))
        self.output_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.GroupNorm(32, dim),
                                         nn.ReLU())
        self.mask_features = nn.Conv2d(dim, dim, 1)
        for conv in (*(p[0] for p in self.input_proj), self.lateral_conv[0], self.output_conv[0], self.mask_features):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill, as the authors' code
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sources = [features["layer4"], features["layer3"], features["layer2"]]
        tokens, positions, shapes = [], [], []
        for level, x in enumerate(sources):
            projected = self.input_proj[level](x)  # (N, dim, h_l, w_l)
            pos = sine_position_embedding(x, self.dim // 2)  # (N, dim, h_l, w_l)
            shapes.append((projected.shape[2], projected.shape[3]))
            tokens.append(projected.flatten(2).transpose(1, 2))  # (N, h_l*w_l, dim)
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level])
        x, pos = torch.cat(tokens, 1), torch.cat(positions, 1)  # (N, S, dim), S = Σ h_l w_l
        points = reference_points(shapes, x.shape[0], self.num_levels, x.device, x.dtype)  # (N, S, 3, 2)
        for layer in self.encoder:
            x = layer(x, pos, points, shapes)
        maps = [t.transpose(1, 2).reshape(x.shape[0], self.dim, h, w)
                for t, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes)]  # 1/32, 1/16, 1/8
        lateral = self.lateral_conv(features["layer1"])  # (N, dim, H/4, W/4)
        y = lateral + F.interpolate(maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_conv(y)  # (N, dim, H/4, W/4)
        return self.mask_features(y), maps
