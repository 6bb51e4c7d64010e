"""SAM's mask decoder: a two-way transformer between prompt tokens and the image embedding, then hypernetwork masks.

Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 and Appendix A ("Lightweight mask decoder", Fig. 14).
The tokens are learned **output tokens** (one IoU token, ``M + 1`` mask tokens) followed by the prompt tokens.
Each of the two **two-way blocks** runs four steps, each followed by a LayerNorm::

    tokens ─ self-attn ─ token→image cross-attn ─ MLP ─┬─────────────── tokens'
                                                        └ image→token cross-attn ─ image'

(the image embedding is the keys/values of token→image and the queries of image→token: information flows both
ways). The positional codes are added to queries and keys at every attention (the prompt tokens' to the tokens,
the grid's to the image), and the cross-attentions work at half width (``attention_downsample_rate = 2``). A
last token→image attention follows the blocks. Then:

- the image embedding is **upscaled** 4× with two 2×2 stride-2 transposed convolutions (LayerNorm2d + GELU
  between, GELU after): ``(C, h, w) -> (C/8, 4h, 4w)``;
- each mask token goes through its own 3-layer **hypernetwork MLP** to a ``C/8`` vector; the mask is the dot
  product of that vector with the upscaled embedding at every pixel: ``(M + 1, 4h, 4w)`` logits;
- the IoU token goes through a 3-layer MLP to ``M + 1`` predicted IoUs (the mask quality score).

**Multimask output** (Sec. 3, "Resolving ambiguity"): with ``multimask_output=True`` masks 1..M (3: whole,
part, subpart) and their IoUs are returned; with ``False`` mask 0, the token trained for unambiguous prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .image_encoder import LayerNorm2d, MLPBlock

__all__ = ["MLP", "Attention", "MaskDecoder", "TwoWayAttentionBlock", "TwoWayTransformer"]


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width: ``C -> C / downsample_rate``.

    ``forward(q, k, v)``: ``(B, Tq, C)``, ``(B, Tk, C)``, ``(B, Tk, C)`` -> ``(B, Tq, C)``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embedding_dim / downsample_rate ({internal_dim})")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(embedding_dim, internal_dim) for _ in range(3))
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, tokens, width = x.shape
        return x.reshape(b, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)  # (B, heads, T, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._separate_heads(self.q_proj(q))  # (B, heads, Tq, d)
        k, v = self._separate_heads(self.k_proj(k)), self._separate_heads(self.v_proj(v))  # (B, heads, Tk, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Tq, d)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, Tq, C)


class TwoWayAttentionBlock(nn.Module):
    """Self-attn, token→image attn, MLP, image→token attn (Fig. 14): ``(tokens, image) -> (tokens', image')``.

    ``forward(queries, keys, query_pe, key_pe)``: tokens ``(B, T, C)``, image ``(B, hw, C)`` and their codes.
    The first block skips the code in self-attention and replaces the tokens by the attention output (no residual:
    the tokens already *are* the codes there).
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=eps)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim, eps=eps)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=eps)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)  # (B, T, C)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))  # tokens read the image
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))  # (B, hw, C): the image reads the tokens
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks + a final token→image attention.

    ``forward(image_embedding, image_pe, point_embedding)``: ``(B, C, h, w)``, ``(B, C, h, w)``, ``(B, T, C)``
    -> tokens ``(B, T, C)`` and image ``(B, hw, C)``.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0, eps)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_embedding = image_embedding.flatten(2).transpose(1, 2)  # (B, hw, C)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, image_pe)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between: ``(..., in) -> (..., out)`` (hypernetworks, IoU head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """Two-way transformer + upscaling + hypernetwork masks + IoU head (SAM Appendix A, Fig. 14).

    Args:
        transformer_dim: C (256).
        transformer: the ``TwoWayTransformer``.
        num_multimask_outputs: M (3), the masks returned for an ambiguous prompt.
        iou_head_depth, iou_head_hidden_dim: the IoU MLP (3 layers of 256).

    ``forward(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output)``:
    image ``(N, C, h, w)``, its code ``(1, C, h, w)``, sparse ``(N, P, T, C)``, dense ``(N, P', C, h, w)``
    (``P'`` = P or 1) -> mask logits ``(N, P, M or 1, 4h, 4w)`` and predicted IoUs ``(N, P, M or 1)``.
    Each of the P prompts of an image is decoded on its own copy of that image's embedding.
    """

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim, self.transformer = transformer_dim, transformer
        self.num_multimask_outputs, self.num_mask_tokens = num_multimask_outputs, num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, 2, 2), LayerNorm2d(transformer_dim // 4), nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, 2, 2), nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        n, p, _, dim = sparse_prompt_embeddings.shape
        c, h, w = image_embeddings.shape[1:]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # (1 + M + 1, C)
        tokens = torch.cat([output_tokens.expand(n * p, -1, -1), sparse_prompt_embeddings.reshape(n * p, -1, dim)],
                           dim=1)  # (N*P, 1 + M + 1 + T, C)
        src = (image_embeddings[:, None] + dense_prompt_embeddings).expand(n, p, c, h, w).reshape(n * p, c, h, w)
        pos_src = image_pe.expand(n * p, c, h, w)
        hs, src = self.transformer(src, pos_src, tokens)  # (N*P, tokens, C), (N*P, hw, C)
        iou_token_out, mask_tokens_out = hs[:, 0], hs[:, 1:1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(n * p, c, h, w))  # (N*P, C/8, 4h, 4w)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # (N*P, M+1, C/8)
        masks = (hyper_in @ upscaled.flatten(2)).reshape(n, p, self.num_mask_tokens, 4 * h, 4 * w)
        iou_pred = self.iou_prediction_head(iou_token_out).reshape(n, p, self.num_mask_tokens)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, :, chosen], iou_pred[:, :, chosen]
