"""CLIP's two encoders as CLIPSeg uses them: Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", ICML 2021 (Sec. 2.4), frozen inside CLIPSeg (Lüddecke & Ecker, CVPR 2022, Sec. 3).

Both are stacks of the same pre-norm transformer layer (``x + attn(LN(x))``, then ``x + MLP(LN(x))``, MLP
with QuickGELU ``x·σ(1.702x)``) and both end in a bias-free linear projection into one shared embedding space
of ``projection_dim`` numbers:

- ``CLIPVisionTransformer`` (ViT): p×p patches → a linear embedding (a stride-p conv without bias) → a
  class token in front → learned position embeddings (bicubically interpolated when the grid differs from
  the pretraining one) → LayerNorm → layers → the class token through LayerNorm and the projection;
- ``CLIPTextTransformer``: token + position embeddings → layers with a causal mask (token t sees tokens
  ≤ t) → LayerNorm → the end-of-text token's state through the projection ("EOT pooling": the end token has
  the largest id in the vocabulary, so its position is ``input_ids.argmax(-1)``).

CLIPSeg reads the vision encoder's intermediate layers (``forward_layers``) and needs the text (or a visual
prompt's) embedding only to condition its decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "CLIPTextTransformer", "CLIPVisionTransformer", "EncoderLayer", "MLP", "quick_gelu"]


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 * x)`` (any shape, elementwise)."""
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention: ``(N, T, D) -> (N, T, D)``; ``causal=True`` masks the future (text encoder)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}: pick a divisor of {dim}")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q, k, v = (proj(x).reshape(n, tokens, self.num_heads, head_dim).transpose(1, 2)  # (N, heads, T, d)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        # softmax(q kᵀ / √d) v, with -inf above the diagonal when causal: (N, heads, T, d)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(n, tokens, dim)  # (N, T, D)
        return self.out_proj(out)


class MLP(nn.Module):
    """``fc1 (D -> hidden) -> activation -> fc2 (hidden -> D)``; QuickGELU in CLIP, ReLU in CLIPSeg's decoder."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        if activation not in ("quick_gelu", "relu"):
            raise ValueError(f"activation must be 'quick_gelu' or 'relu'; got {activation!r}")
        self.activation = quick_gelu if activation == "quick_gelu" else F.relu
        self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))  # (N, T, hidden) -> (N, T, D)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: ``x + attn(LN(x))`` then ``x + MLP(LN(x))``; ``(N, T, D) -> (N, T, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.mlp = MLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


class CLIPVisionTransformer(nn.Module):
    """CLIP's ViT image encoder (Radford et al. 2021, Sec. 2.4; Dosovitskiy et al. 2021).

    Args:
        image_size: the side the position embeddings were learned at (224 for CLIP ViT-B/16); other sizes
            interpolate them.
        patch_size: p, the side of a patch in pixels.
        width, layers, heads, mlp_dim: the transformer (768, 12, 12, 3072 for ViT-B).
        projection_dim: P, the size of the shared image-text embedding.
        eps: LayerNorm epsilon.

    Shapes: ``forward(images)``: ``(N, 3, H, W)`` float32 -> image embedding ``(N, P)`` float32;
    ``forward_layers(images, num_layers)``: the token states after each of the first ``num_layers`` layers,
    each ``(N, 1 + h*w, width)`` (class token first, then the patches row by row; h = H // p, w = W // p).
    Pixels past the last full patch are ignored (the stride-p convolution drops them).

    Differences from the paper: none in the computation; the position embeddings are interpolated as Hugging
    Face does (bicubic, ``align_corners=False``) whenever the patch grid is not the pretraining one.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, mlp_dim: int,
                 projection_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.patch_size, self.grid_size = patch_size, image_size // patch_size
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.position_embedding = nn.Parameter(torch.randn(1 + self.grid_size**2, width) * 0.02)
        self.pre_norm = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(EncoderLayer(width, heads, mlp_dim, eps) for _ in range(layers))
        self.post_norm = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Linear(width, projection_dim, bias=False)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h×w patch grid: ``(1 + h*w, width)`` (class token's first)."""
        g = self.grid_size
        if (h, w) == (g, g):
            return self.position_embedding
        width = self.position_embedding.shape[1]
        grid = self.position_embedding[1:].reshape(1, g, g, width).permute(0, 3, 1, 2)  # (1, width, g, g)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)  # (1, width, h, w)
        return torch.cat([self.position_embedding[:1], grid.permute(0, 2, 3, 1).reshape(h * w, width)])

    def forward_layers(self, images: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]:
        """Token states after layers 1…num_layers (all layers by default), each ``(N, 1 + h*w, width)``."""
        x = self.patch_embed(images)  # (N, width, h, w)
        n, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, h*w, width)
        x = torch.cat([self.class_embedding.expand(n, 1, width), x], dim=1)  # (N, 1 + h*w, width)
        x = self.pre_norm(x + self.positions(h, w))
        states = []
        for block in self.blocks[:num_layers]:
            x = block(x)
            states.append(x)
        return states

    def pool(self, last_state: torch.Tensor) -> torch.Tensor:
        """The class token of the last layer through LayerNorm and the projection: ``(N, P)``."""
        return self.proj(self.post_norm(last_state[:, 0]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_layers(images)[-1])  # (N, P)


class CLIPTextTransformer(nn.Module):
    """CLIP's text encoder (Radford et al. 2021, Sec. 2.4): a causal transformer pooled at the end token.

    Args:
        vocab_size: the token vocabulary (49408 for CLIP's BPE; a small ``WordTokenizer``'s ``vocab_size``).
        context_length: the most tokens a phrase may have, start and end tokens included (77 in CLIP).
        width, layers, heads, mlp_dim: the transformer (512, 12, 8, 2048 in CLIP ViT-B/16).
        projection_dim: P, the size of the shared image-text embedding.
        eps: LayerNorm epsilon.

    Shapes: ``forward(input_ids)``: ``(N, T)`` int64, T ≤ context_length, each row holding its end token
    (the largest id of the vocabulary) once before any padding -> text embedding ``(N, P)`` float32.
    Padding after the end token never reaches it (causal mask), so no attention mask is needed.

    Differences from the paper: the pooled position is ``input_ids.argmax(-1)``, the rule of OpenAI's code
    (Hugging Face's checkpoints with ``eos_token_id=49407`` look for that id instead: the same position for
    every phrase CLIP's tokenizer makes).
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int, mlp_dim: int,
                 projection_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(EncoderLayer(width, heads, mlp_dim, eps) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Linear(width, projection_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        tokens = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding[:tokens]  # (N, T, width)
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.final_norm(x)
        eot = x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]  # (N, width)
        return self.proj(eot)  # (N, P)
