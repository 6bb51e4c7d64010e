"""SAM's prompt encoder: points and boxes become tokens, a mask prompt becomes a map added to the image embedding.

Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 and Appendix A ("Prompt encoder"):

- **sparse prompts** (points, boxes): each point is encoded by its position plus a learned embedding of its type.
  The position code is the random Fourier features of Tancik et al. (2020): with ``B`` a fixed ``(2, F)`` Gaussian
  matrix and ``u`` the point scaled to ``[-1, 1]²``, ``pe(u) = [sin(2π u B), cos(2π u B)]`` (2F = 256 channels).
  The types, learned vectors added to the position code: positive point, negative point, box top-left corner,
  box bottom-right corner, and "not a point" (a padding token that *replaces* the position code: SAM appends
  one when a prompt has points and no box);
- **dense prompt** (a mask, e.g. the previous prediction's low-resolution logits): two 2×2 stride-2 convolutions
  (each LayerNorm2d + GELU) then a 1×1 to 256 channels: ``(4h, 4w) -> (h, w)``; without a mask a learned
  "no mask" vector is broadcast over the grid.

Coordinates are ``(x, y)`` in pixels of the encoder's input frame (the resized image, before padding: 1024 on
the long side for the real model); pixel ``(i, j)``'s centre is ``(j + 0.5, i + 0.5)``: SAM adds the 0.5.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .image_encoder import LayerNorm2d

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier position code (Tancik et al. 2020): coordinates in ``[0, 1]²`` ``(..., 2)`` -> ``(..., 2F)``.

    ``positional_encoding_gaussian_matrix`` ``(2, F)`` is drawn once from ``N(0, scale²)`` and never trained (a
    buffer, stored in the state dict so that a checkpoint fixes it).
    """

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` (x, y) in ``[0, 1]`` -> ``(..., 2F)``: ``[sin(2π(2c-1)B), cos(2π(2c-1)B)]``."""
        coords = (2 * coords - 1).to(self.positional_encoding_gaussian_matrix.dtype)
        coords = 2 * math.pi * (coords @ self.positional_encoding_gaussian_matrix)  # (..., F)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The code of every cell centre of an ``h × w`` grid: ``(2F, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)  # (2F, h, w)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates ``(..., 2)`` (x, y) in an ``image_size = (H, W)`` frame -> ``(..., 2F)``."""
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self.encode(coords / scale)


class PromptEncoder(nn.Module):
    """Embed points, boxes and a mask: sparse tokens ``(N, P, T, C)`` and a dense map ``(N, P', C, h, w)``.

    Args:
        embed_dim: C (256), the mask decoder's width.
        image_embedding_size: ``(h, w)`` of the image embedding (64×64).
        input_image_size: ``(H, W)`` of the encoder's input frame (1024×1024).
        mask_in_chans: hidden channels of the mask downscaler (16).

    ``forward(points, point_labels, boxes, mask_inputs)`` takes (all optional, at least one given; checked by
    ``Sam``): ``points`` ``(N, P, K, 2)`` float (x, y) pixels, ``point_labels`` ``(N, P, K)`` int (1 positive,
    0 negative, -1 padding), ``boxes`` ``(N, P, 4)`` float ``(x0, y0, x1, y1)`` pixels, ``mask_inputs``
    ``(N, P', 4h, 4w)`` float logits with ``P'`` = P or 1. Returns sparse ``(N, P, T, C)`` with
    ``T = K + 1`` (points only: one padding token is appended), ``K + 2`` (points and a box), 2 (a box) or 0
    (a mask only), and dense ``(N, P', C, h, w)`` (``P' = 1`` without a mask: the no-mask embedding).
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int],
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim, self.image_embedding_size, self.input_image_size = embed_dim, image_embedding_size, input_image_size
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, 2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, 2), LayerNorm2d(mask_in_chans), nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Position code of the image embedding's grid: ``(1, C, h, w)``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:  # a "not a point" token, so that the decoder sees the same token count with or without a box
            points = torch.cat([points, points.new_zeros(*points.shape[:-2], 1, 2)], dim=-2)  # (N, P, K+1, 2)
            labels = torch.cat([labels, labels.new_full((*labels.shape[:-1], 1), -1)], dim=-1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)  # (N, P, K', C)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0) * self.point_embeddings[0].weight
        return embedding + (labels == 1) * self.point_embeddings[1].weight

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(*boxes.shape[:-1], 2, 2)  # (N, P, 2, 2): top-left, bottom-right
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)  # (N, P, 2, C)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])  # (2, C)
        return embedding + corner_types

    def forward(self, points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None,
                mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = []
        if points is not None:
            tokens.append(self._embed_points(points, point_labels, pad=boxes is None))  # (N, P, K(+1), C)
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))  # (N, P, 2, C)
        if tokens:
            sparse = torch.cat(tokens, dim=2)
        else:  # a mask alone: no sparse token
            sparse = self.no_mask_embed.weight.new_zeros(*mask_inputs.shape[:2], 0, self.embed_dim)
        if mask_inputs is not None:
            n, p = mask_inputs.shape[:2]
            dense = self.mask_downscaling(mask_inputs.reshape(n * p, 1, *mask_inputs.shape[2:]))  # (N*P', C, h, w)
            dense = dense.reshape(n, p, *dense.shape[1:])  # (N, P', C, h, w)
        else:
            dense = self.no_mask_embed.weight.reshape(1, 1, -1, 1, 1).expand(sparse.shape[0], 1, -1,
                                                                               *self.image_embedding_size)
        return sparse, dense
