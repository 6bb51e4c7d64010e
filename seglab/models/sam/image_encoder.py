"""SAM's image encoder: a plain ViT with windowed and global attention, decomposed relative positions, a neck.

Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 and Appendix A ("Image encoder"): an MAE-pretrained
ViT (Dosovitskiy et al. 2021) adapted to 1024×1024 inputs as in ViTDet (Li et al. 2022):

- **patch embedding**: a 16×16 stride-16 convolution, ``(N, 3, 1024, 1024) -> (N, 64, 64, C)`` (channels last,
  as the whole trunk keeps them), plus a learned absolute position embedding ``(1, 64, 64, C)``;
- **blocks**: pre-norm transformer blocks; most attend inside non-overlapping 14×14 windows (the 64×64 grid
  is zero-padded to 70×70 first), a few (``global_attn_indexes``, e.g. 2, 5, 8, 11 in ViT-B) attend globally;
- **decomposed relative positions** (MViTv2, Li et al. 2022): the attention logit of query ``(i, j)`` and key
  ``(k, l)`` gets ``q · R_h[i - k] + q · R_w[j - l]``, two learned tables of ``2 s - 1`` rows (s the window or
  grid side) instead of one ``(2 s - 1)²`` table;
- **neck**: 1×1 conv to 256 channels → LayerNorm2d → 3×3 conv → LayerNorm2d, no biases:
  ``(N, C, 64, 64) -> (N, 256, 64, 64)``, the image embedding the prompt encoder and mask decoder read.

Module and parameter names are those of the original code (``facebookresearch/segment-anything``), so its
checkpoints load without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "ImageEncoderViT", "LayerNorm2d", "MLPBlock", "PatchEmbed", "RelPosAttention", "window_partition",
           "window_unpartition"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(N, C, H, W)`` map (each pixel normalised on its own), eps 1e-6."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """``Linear(C -> hidden) → activation → Linear(hidden -> C)`` on ``(..., C)`` (GELU in the encoder, ReLU in the decoder)."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1, self.lin2, self.act = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim), act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(N, H, W, C)`` to multiples of ``window_size`` and cut it into windows.

    Returns ``(N * nh * nw, window_size, window_size, C)`` (windows in row-major order per image) and the padded
    ``(Hp, Wp)``; ``window_unpartition`` inverts it.
    """
    n, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, -w % window_size, 0, -h % window_size))  # (N, Hp, Wp, C)
    hp, wp = x.shape[1:3]
    x = x.reshape(n, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int, padded_size: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``window_partition``: windows ``(N * nh * nw, ws, ws, C)`` -> ``(N, H, W, C)`` (padding cut off)."""
    (hp, wp), (h, w) = padded_size, size
    n = windows.shape[0] // (hp * wp // window_size**2)
    x = windows.reshape(n, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, -1)  # (N, Hp, Wp, C)
    return x[:, :h, :w].contiguous()


class PatchEmbed(nn.Module):
    """p×p stride-p convolution: ``(N, 3, H, W) -> (N, H/p, W/p, C)`` (channels last)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a ``(B, h, w, C)`` grid with decomposed relative position biases.

    ``size`` is the grid side the tables are made for (the window side, or the whole grid for a global block);
    ``rel_pos_h`` and ``rel_pos_w`` hold ``2 * size - 1`` rows of ``head_dim`` each: row ``d + size - 1`` is the
    offset ``d`` = query row (column) minus key row (column). Shape ``(B, h, w, C) -> (B, h, w, C)`` with
    ``h = w = size``.
    """

    def __init__(self, dim: int, num_heads: int, size: int, qkv_bias: bool = True, use_rel_pos: bool = True) -> None:
        super().__init__()
        self.num_heads, self.use_rel_pos = num_heads, use_rel_pos
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, head_dim))

    def relative_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``q`` ``(B, heads, h*w, d)`` -> additive bias ``(B, heads, h*w, h*w)``: ``q·R_h[i-k] + q·R_w[j-l]``."""
        if self.rel_pos_h.shape[0] != 2 * h - 1 or self.rel_pos_w.shape[0] != 2 * w - 1:
            raise ValueError(f"relative position tables of {self.rel_pos_h.shape[0]} rows need a "
                             f"{(self.rel_pos_h.shape[0] + 1) // 2}-wide grid; got {h}×{w}")
        offsets_h = torch.arange(h, device=q.device)[:, None] - torch.arange(h, device=q.device)[None, :] + h - 1
        offsets_w = torch.arange(w, device=q.device)[:, None] - torch.arange(w, device=q.device)[None, :] + w - 1
        table_h, table_w = self.rel_pos_h[offsets_h], self.rel_pos_w[offsets_w]  # (h, h, d), (w, w, d)
        q = q.reshape(*q.shape[:2], h, w, -1)  # (B, heads, h, w, d)
        bias_h = torch.einsum("bnhwd,hkd->bnhwk", q, table_h)  # (B, heads, h, w, h): over key rows
        bias_w = torch.einsum("bnhwd,wld->bnhwl", q, table_w)  # (B, heads, h, w, w): over key columns
        return (bias_h[..., :, None] + bias_w[..., None, :]).reshape(*q.shape[:2], h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, dim = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, hw, d)
        q, k, v = qkv.unbind(0)
        bias = self.relative_bias(q, h, w) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, hw, d)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, dim))


class Block(nn.Module):
    """Pre-norm ViT block, windowed (``window_size > 0``) or global (``0``): ``(N, h, w, C) -> (N, h, w, C)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid_size: int,
                 qkv_bias: bool = True, use_rel_pos: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = RelPosAttention(dim, num_heads, window_size or grid_size, qkv_bias, use_rel_pos)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = x.shape[1:3]
            x, padded_size = window_partition(x, self.window_size)  # (N * windows, ws, ws, C)
            x = window_unpartition(self.attn(x), self.window_size, padded_size, size)  # (N, h, w, C)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """ViT image encoder (SAM Appendix A): ``(N, 3, S, S)`` float32 -> image embedding ``(N, out_chans, S/p, S/p)``.

    Args:
        img_size: S, the square input side (1024 in the released models).
        patch_size: p (16).
        embed_dim, depth, num_heads, mlp_ratio: the ViT's width, blocks, heads and MLP width ratio.
        out_chans: channels of the image embedding (256).
        window_size: side of the attention windows, in patches (14); ``global_attn_indexes``: blocks that
            attend over the whole grid instead.
        qkv_bias, use_rel_pos, use_abs_pos: as the released models (all True).

    Raises:
        ValueError: images that are not ``(N, 3, S, S)``.
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (2, 5, 8, 11), qkv_bias: bool = True,
                 use_rel_pos: bool = True, use_abs_pos: bool = True) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.img_size, grid = img_size, img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, grid, qkv_bias,
                  use_rel_pos)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.img_size, self.img_size):
            raise ValueError(f"images must be (N, 3, {self.img_size}, {self.img_size}); got {tuple(x.shape)}: "
                             "resize the longest side and pad with seglab.models.sam.preprocess")
        x = self.patch_embed(x)  # (N, S/p, S/p, C), channels last
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (N, out_chans, S/p, S/p)
