"""CLIPSeg's decoder (Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022, Sec. 3,
Fig. 2): a small transformer that reads the frozen CLIP ViT's intermediate token states, is told what to look
for by FiLM, and turns the patch tokens back into a full-resolution mask.

::

    ViT layer 9 ─ Linear→D ─ FiLM(cond) ─ DecoderLayer ─┐           (the deepest layer first)
    ViT layer 6 ─ Linear→D ────────────── + ───────────── DecoderLayer ─┐
    ViT layer 3 ─ Linear→D ──────────────────────────────── + ────────── DecoderLayer
        drop the class token ─ (N, D, h, w) ─ transposed conv(s) ×p ─ logits (N, H, W)

- **reduce**: one Linear per extracted layer maps the ViT's width to ``reduce_dim`` D (64 in "rd64");
- **FiLM** (Perez et al. 2018): the conditional embedding c (the phrase's or a visual prompt's, P numbers)
  scales and shifts every token: ``x ← W_mul·c ⊙ x + W_add·c``, once, before decoder layer
  ``conditional_layer`` (0: the deepest);
- **decoder layers**: post-norm transformer layers (``LN(x + attn(x))``, ``LN(x + MLP(x))``, ReLU MLP),
  one per extracted layer; each adds the next (shallower) reduced activation as a skip connection;
- **upsampling**: one p×p stride-p transposed conv (D → 1), or the "refined" variant (rd64-refined):
  3×3 conv + ReLU, then two transposed convs of kernel and stride p/4 (D → D/2 → 1) with a ReLU between.
"""

from __future__ import annotations

import torch
from torch import nn

from .clip import MLP, Attention

__all__ = ["CLIPSegDecoder", "DecoderLayer", "FiLM"]


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): ``x * mul(c) + add(c)``.

    Shapes: ``forward(x, conditional)``: tokens ``(N, T, D)`` and conditional embeddings ``(N, P)`` ->
    ``(N, T, D)``; the same scale and shift for every token of a sample.
    """

    def __init__(self, conditional_dim: int, dim: int) -> None:
        super().__init__()
        self.mul, self.add = nn.Linear(conditional_dim, dim), nn.Linear(conditional_dim, dim)

    def forward(self, x: torch.Tensor, conditional: torch.Tensor) -> torch.Tensor:
        return self.mul(conditional)[:, None] * x + self.add(conditional)[:, None]


class DecoderLayer(nn.Module):
    """Post-norm transformer layer: ``LN(x + attn(x))`` then ``LN(x + MLP(x))`` (ReLU); ``(N, T, D) -> (N, T, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, activation="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class CLIPSegDecoder(nn.Module):
    """The CLIPSeg decoder (Lüddecke & Ecker 2022, Sec. 3).

    Args:
        vision_width: the ViT's width (768 for ViT-B).
        num_layers: how many ViT layers it reads (``len(extract_layers)``, 3 in the paper).
        conditional_dim: P, the size of the conditional embedding (512).
        reduce_dim: D (64 in rd64).
        num_heads, mlp_dim: each decoder layer's heads and MLP width (4 and 2048 in the published checkpoints).
        patch_size: p, the ViT's patch side: the upsampling factor.
        conditional_layer: the decoder layer FiLM acts before, counted from the deepest (0).
        complex_transposed_conv: the "refined" upsampling (3×3 conv, two transposed convs of stride p/4).
        eps: LayerNorm epsilon.

    Shapes: ``forward(activations, conditional, grid)``: the ViT token states ``(N, 1 + h*w, vision_width)``
    of the extracted layers, *shallowest first*; conditional embeddings ``(N, P)``; grid = (h, w) ->
    logits ``(N, h*s, w*s)`` float32, s = p (s = (p // 4)² in the refined variant: p for p = 16).
    ``reduces[i]`` and ``layers[i]`` serve the i-th activation counted from the deepest.

    Differences from the paper: no dropout in the decoder layers (the original code builds them from
    ``nn.TransformerEncoderLayer``, dropout 0.1 while training; Hugging Face has none either); any (h, w) grid
    (both references assume a square one). The refined variant is the published rd64-refined checkpoint's,
    not described in the paper.
    """

    def __init__(self, vision_width: int, num_layers: int, conditional_dim: int, reduce_dim: int, num_heads: int,
                 mlp_dim: int, patch_size: int, conditional_layer: int = 0, complex_transposed_conv: bool = False,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.conditional_layer = conditional_layer
        self.reduces = nn.ModuleList(nn.Linear(vision_width, reduce_dim) for _ in range(num_layers))
        self.film = FiLM(conditional_dim, reduce_dim)
        self.layers = nn.ModuleList(DecoderLayer(reduce_dim, num_heads, mlp_dim, eps) for _ in range(num_layers))
        if complex_transposed_conv:
            k = patch_size // 4
            self.upsample = nn.Sequential(
                nn.Conv2d(reduce_dim, reduce_dim, 3, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim, reduce_dim // 2, k, stride=k), nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim // 2, 1, k, stride=k),
            )
        else:
            self.upsample = nn.Sequential(nn.ConvTranspose2d(reduce_dim, 1, patch_size, stride=patch_size))

    def forward(self, activations: list[torch.Tensor], conditional: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        x = None
        for i, (activation, reduce, layer) in enumerate(zip(activations[::-1], self.reduces, self.layers)):
            reduced = reduce(activation)  # (N, 1 + h*w, D)
            x = reduced if x is None else x + reduced
            if i == self.conditional_layer:
                x = self.film(x, conditional)
            x = layer(x)
        n, _, dim = x.shape
        x = x[:, 1:].transpose(1, 2).reshape(n, dim, *grid)  # drop the class token: (N, D, h, w)
        return self.upsample(x).squeeze(1)  # (N, h*s, w*s)
