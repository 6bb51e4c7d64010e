"""Mask2Former's transformer decoder: learnable queries, masked attention, round-robin scales, deep supervision.

Cheng et al., CVPR 2022, Sec. 3.2. ``Q`` learnable query features (and ``Q`` learnable query positions) go through
``dec_layers`` layers; layer ``l`` reads the pixel decoder's map at scale ``[1/32, 1/16, 1/8][l % 3]``::

    queries ─ LN ─┬─ class head: Linear -> (N, Q, K+1)               prediction 0 (before any layer)
                  └─ mask head: MLP -> (N, Q, C) · mask features (N, C, H/4, W/4) -> mask logits (N, Q, H/4, W/4)
    for l in 0..dec_layers-1:
        attention mask = sigmoid(previous mask logits, resized to the scale of layer l) < 0.5   (True = blocked)
        queries = LN(queries + masked cross-attention(queries, pixels of scale l))   # only inside the mask
        queries = LN(queries + self-attention(queries))
        queries = LN(queries + FFN(queries))
        prediction l+1 from LN(queries), as above

**Masked attention** (Eq. 2): the cross-attention logits get ``-inf`` where the previous prediction says
"background" for that query, so each query gathers features only from inside its own current mask. A query whose
mask is empty at this scale would have no key at all; the rule is that such a row attends everywhere.
All ``dec_layers + 1`` predictions are returned: the loss supervises every one (deep supervision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pixel_decoder import sine_position_embedding

__all__ = ["Attention", "MaskedAttentionDecoderLayer", "MaskedTransformerDecoder", "MLP"]


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections: ``(N, Lq, D), (N, Lk, D), (N, Lk, D) -> (N, Lq, D)``.

    ``mask`` ``(N, Lq, Lk)`` bool, True where a query may not look (the same for every head).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        n, queries, dim = query.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q_proj(query).view(n, queries, heads, head_dim).transpose(1, 2)  # (N, heads, Lq, d)
        k = self.k_proj(key).view(n, -1, heads, head_dim).transpose(1, 2)  # (N, heads, Lk, d)
        v = self.v_proj(value).view(n, -1, heads, head_dim).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) * head_dim**-0.5  # (N, heads, Lq, Lk)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None], float("-inf"))
        out = scores.softmax(-1) @ v  # (N, heads, Lq, d)
        return self.out_proj(out.transpose(1, 2).reshape(n, queries, dim))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them: ``(…, in_dim) -> (…, out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskedAttentionDecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each post-norm (Mask2Former's order, Sec. 3.2.1)."""

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int) -> None:
        super().__init__()
        self.cross_attn, self.norm1 = Attention(dim, num_heads), nn.LayerNorm(dim)
        self.self_attn, self.norm2 = Attention(dim, num_heads), nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, feedforward_dim), nn.Linear(feedforward_dim, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """``queries``/``query_pos`` ``(N, Q, D)``, ``memory``/``memory_pos`` ``(N, hw, D)``, ``attention_mask``
        ``(N, Q, hw)`` bool (True = blocked) -> ``(N, Q, D)``."""
        x = self.norm1(queries + self.cross_attn(queries + query_pos, memory + memory_pos, memory, attention_mask))
        q = x + query_pos
        x = self.norm2(x + self.self_attn(q, q, x))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class MaskedTransformerDecoder(nn.Module):
    """Queries + ``num_layers`` masked-attention layers + the class and mask heads (shared by all layers).

    Args:
        num_classes: K (the class head has K + 1 outputs: the last is "no object").
        dim: query width D, equal to the pixel decoder's width (paper: 256).
        num_queries: Q (paper: 100; 200 for the largest models).
        num_heads, num_layers, feedforward_dim: paper 8, 9, 2048.

    ``forward(maps, mask_features)``: ``maps`` = pixel decoder's ``[1/32, 1/16, 1/8]`` ``(N, D, h_l, w_l)``,
    ``mask_features`` ``(N, D, H/4, W/4)`` -> dict with lists of ``num_layers + 1`` entries:
    ``"pred_logits"`` ``(N, Q, K+1)``, ``"pred_masks"`` ``(N, Q, H/4, W/4)`` (logits), and ``"attention_masks"``
    (``num_layers`` entries) ``(N, Q, h_l, w_l)`` bool, True where layer l's query could look.
    """

    def __init__(self, num_classes: int, dim: int = 256, *, num_queries: int = 100, num_heads: int = 8,
                 num_layers: int = 9, feedforward_dim: int = 2048) -> None:
        super().__init__()
        self.num_heads, self.num_levels = num_heads, 3
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.query_feat = nn.Embedding(num_queries, dim)  # the queries' content, learned
        self.query_embed = nn.Embedding(num_queries, dim)  # the queries' positions, learned
        self.layers = nn.ModuleList(MaskedAttentionDecoderLayer(dim, num_heads, feedforward_dim)
                                    for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim, dim, 3)
        for layer in self.layers:  # the authors' (DETR's) initialisation of the transformer layers
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def predict(self, queries: torch.Tensor, mask_features: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heads on ``(N, Q, D)`` queries -> class logits ``(N, Q, K+1)``, mask logits ``(N, Q, H/4, W/4)`` and the
        next layer's attention mask ``(N, Q, h*w)`` at ``size`` (bool, True = blocked, no gradient)."""
        x = self.decoder_norm(queries)
        class_logits = self.class_embed(x)
        mask_logits = torch.einsum("nqc,nchw->nqhw", self.mask_embed(x), mask_features)
        resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)  # (N, Q, h, w)
        blocked = (resized.sigmoid().flatten(2) < 0.5).detach()  # (N, Q, h*w): outside the predicted mask
        return class_logits, mask_logits, blocked

    def forward(self, maps: list[torch.Tensor], mask_features: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        n = mask_features.shape[0]
        memories, positions, sizes = [], [], []
        for level, x in enumerate(maps):
            sizes.append((x.shape[2], x.shape[3]))
            positions.append(sine_position_embedding(x, x.shape[1] // 2).flatten(2).transpose(1, 2))  # (N, hw, D)
            memories.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[level])  # (N, hw, D)
        queries = self.query_feat.weight.unsqueeze(0).expand(n, -1, -1)  # (N, Q, D)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(n, -1, -1)
        class_logits, mask_logits, blocked = self.predict(queries, mask_features, sizes[0])
        outputs = {"pred_logits": [class_logits], "pred_masks": [mask_logits], "attention_masks": []}
        for index, layer in enumerate(self.layers):
            level = index % self.num_levels  # round robin: 1/32, 1/16, 1/8, 1/32, …
            blocked = blocked & ~blocked.all(-1, keepdim=True)  # an empty mask attends everywhere
            outputs["attention_masks"].append(~blocked.view(n, -1, *sizes[level]))
            queries = layer(queries, query_pos, memories[level], positions[level], blocked)
            next_size = sizes[(index + 1) % self.num_levels]
            class_logits, mask_logits, blocked = self.predict(queries, mask_features, next_size)
            outputs["pred_logits"].append(class_logits)
            outputs["pred_masks"].append(mask_logits)
        return outputs
