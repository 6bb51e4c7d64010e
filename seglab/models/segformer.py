"""SegFormer: Xie, Wang, Yu, Anandkumar, Alvarez & Luo, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", NeurIPS 2021.

The encoder, Mix Transformer (MiT), is a four-stage pyramid of transformer blocks (strides 4, 8, 16, 32):

- **overlapping patch embedding**: a strided convolution (7×7 stride 4, then 3×3 stride 2) + LayerNorm turns
  the image or the previous stage's map into tokens ``(N, h*w, C)``; patches overlap, unlike ViT's;
- **efficient self-attention**: queries come from every token, keys and values from a map shrunk by the
  reduction ratio R (a R×R stride-R conv + LayerNorm), so attention costs ``(hw)² / R²`` instead of ``(hw)²``;
- **Mix-FFN**: Linear → 3×3 depthwise conv → GELU → Linear; the depthwise conv leaks position information,
  so there is no positional encoding and any input size works.

The all-MLP decoder maps each stage to 256 channels with a Linear layer, upsamples them to stride 4,
concatenates, fuses with a 1×1 conv and classifies::

    image ─ stage1 (C1, H/4) ─ stage2 (C2, H/8) ─ stage3 (C3, H/16) ─ stage4 (C4, H/32)
               │ Linear→256       │ Linear→256      │ Linear→256        │ Linear→256, all upsampled to H/4
               └──────────────────┴─ concat (1024) ─┴─ 1×1 conv-BN-ReLU (256) ─ 1×1 (K) ─ ×4 ─ logits (H)

``model.forward_features(x)`` returns ``"stage1"``…``"stage4"`` ``(N, C_i, h_i, w_i)``, ``"scores"`` (stride 4)
and ``"logits"``. Hugging Face ``SegformerForSemanticSegmentation`` state dicts (old and new key names)
load with ``convert_hf_segformer_state_dict``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import check_images

__all__ = ["MIT_CONFIGS", "AllMLPDecoder", "EfficientSelfAttention", "MixFFN", "MixTransformer",
           "OverlapPatchEmbed", "SegFormer", "convert_hf_segformer_state_dict"]

# variant -> (stage widths, blocks per stage, decoder width); all: heads (1, 2, 5, 8), R (8, 4, 2, 1), MLP ratio 4
MIT_CONFIGS = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
HEADS, REDUCTION_RATIOS, PATCH_SIZES, STRIDES = (1, 2, 5, 8), (8, 4, 2, 1), (7, 3, 3, 3), (4, 2, 2, 2)
MIN_SIZE = 29  # stage 1 (ceil(H/4)) must hold one 8×8 reduction window


class OverlapPatchEmbed(nn.Module):
    """k×k stride-s conv (padding k//2) + LayerNorm: ``(N, C_in, H, W) -> (N, h*w, C)``, h = ceil(H/s)."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (N, C, h, w)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w  # (N, h*w, C)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with keys/values from a map reduced R× per side: ``(N, hw, C) -> (N, hw, C)``."""

    def __init__(self, dim: int, num_heads: int, reduction_ratio: int) -> None:
        super().__init__()
        self.num_heads, self.reduction_ratio = num_heads, reduction_ratio
        self.query, self.key, self.value, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        if reduction_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, reduction_ratio, reduction_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        kv = x
        if self.reduction_ratio > 1:
            kv = self.sr(x.transpose(1, 2).reshape(n, dim, h, w))  # (N, C, h/R, w/R)
            kv = self.sr_norm(kv.flatten(2).transpose(1, 2))  # (N, hw/R², C)
        q = self.query(x).reshape(n, tokens, heads, head_dim).transpose(1, 2)  # (N, heads, hw, d)
        k = self.key(kv).reshape(n, -1, heads, head_dim).transpose(1, 2)  # (N, heads, hw/R², d)
        v = self.value(kv).reshape(n, -1, heads, head_dim).transpose(1, 2)
        attention = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)  # (N, heads, hw, hw/R²)
        out = (attention @ v).transpose(1, 2).reshape(n, tokens, dim)  # (N, hw, C)
        return self.proj(out)


class MixFFN(nn.Module):
    """Mix-FFN: Linear (C → 4C) → 3×3 depthwise conv → GELU → Linear (4C → C); ``(N, hw, C) -> (N, hw, C)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)  # (N, hw, 4C)
        x = self.dwconv(x.transpose(1, 2).reshape(x.shape[0], -1, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))  # (N, hw, C)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + ffn(LN(x))``, each with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, reduction_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, reduction_ratio)
        self.ffn = MixFFN(dim, 4 * dim)
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:  # stochastic depth: drop the branch for whole samples
        if not self.training or self.drop_path == 0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) >= self.drop_path
        return x * keep / (1 - self.drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm1(x), h, w))
        return x + self._drop(self.ffn(self.norm2(x), h, w))


class Stage(nn.Module):
    """Patch embedding → blocks → LayerNorm: ``(N, C_in, H', W') -> (N, C, ceil(H'/s), ceil(W'/s))``."""

    def __init__(self, index: int, in_channels: int, dim: int, depth: int, drop_paths: list[float]) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, PATCH_SIZES[index], STRIDES[index])
        self.blocks = nn.ModuleList(Block(dim, HEADS[index], REDUCTION_RATIOS[index], p) for p in drop_paths)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)  # (N, hw, C)
        for block in self.blocks:
            x = block(x, h, w)
        return self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (N, C, h, w)


class MixTransformer(nn.Module):
    """MiT-B0…B5 encoder: ``(N, 3, H, W) -> [(N, C_i, ceil(H/2^(i+2)), ceil(W/2^(i+2))) for i in 0..3]``."""

    def __init__(self, variant: str = "b0", drop_path_rate: float = 0.1) -> None:
        super().__init__()
        widths, depths, _ = MIT_CONFIGS[variant]
        total = sum(depths)  # stochastic depth grows linearly with depth, 0 in the first block
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(4)]
        self.channels = widths
        self.stages = nn.ModuleList(
            Stage(i, 3 if i == 0 else widths[i - 1], widths[i], depths[i], rates[starts[i]: starts[i] + depths[i]])
            for i in range(4)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class AllMLPDecoder(nn.Module):
    """All-MLP decoder (SegFormer Sec. 3.2): per-stage Linear → upsample to stride 4 → concat → fuse → classify.

    ``forward(features)``: the four stage maps -> ``(N, K, H/4, W/4)`` scores. The concat order is
    stage 4, 3, 2, 1 (the reference code's).
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, dim) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(len(in_channels) * dim, dim, 1, bias=False), nn.BatchNorm2d(dim),
                                  nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        projected = []
        for x, linear in zip(features, self.linear_c):
            n, _, h, w = x.shape
            x = linear(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)  # (N, 256, h_i, w_i)
            projected.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))  # (N, 256, H/4, W/4)
        x = self.fuse(torch.cat(projected[::-1], dim=1))  # (N, 1024, H/4, W/4) -> (N, 256, H/4, W/4)
        return self.classifier(self.dropout(x))  # (N, K, H/4, W/4)


class SegFormer(nn.Module):
    """SegFormer-B0…B5 (Xie et al. 2021): Mix Transformer encoder + all-MLP decoder.

    Args:
        num_classes: K.
        variant: ``"b0"`` (default, 3.8M parameters) … ``"b5"`` (see ``MIT_CONFIGS``).
        drop_path_rate: stochastic depth of the last block (0.1, the paper's), linear from 0 in the first.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 for any H, W ≥ 29 (the
    stride-4 scores are interpolated to the input size). Parameters: 3,752,694 for B0 with K = 150 (ADE20K,
    the paper's 3.8M), 84,708,694 for B5 (84.7M).

    Raises:
        ValueError: an image smaller than 29×29 (stage 1's 8×8 key/value reduction would get no window).

    Differences from the paper: LayerNorm eps 1e-5 (the reference code uses 1e-6; Hugging Face uses 1e-5);
    ``weights_backbone`` (ImageNet-pretrained MiT) is not offered: load a Hugging Face checkpoint's state dict
    with ``convert_hf_segformer_state_dict`` instead.
    """

    def __init__(self, num_classes: int, *, variant: str = "b0", drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if variant not in MIT_CONFIGS:
            raise ValueError(f"unknown SegFormer variant {variant!r}; valid: {', '.join(MIT_CONFIGS)}")
        self.num_classes, self.in_channels, self.variant, self.output_stride = num_classes, 3, variant, 4
        self.encoder = MixTransformer(variant, drop_path_rate)
        self.decoder = AllMLPDecoder(self.encoder.channels, num_classes, MIT_CONFIGS[variant][2])

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"stage1"``…``"stage4"``, ``"scores"`` ``(N, K, ceil(H/4), ceil(W/4))`` and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "SegFormer")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"SegFormer needs images of at least {MIN_SIZE}×{MIN_SIZE} pixels; got "
                             f"{tuple(x.shape[-2:])}: pad or resize them to at least 32×32")
        stages = self.encoder(x)  # (N, C_i, H/2^(i+2), W/2^(i+2))
        features = {f"stage{i + 1}": f for i, f in enumerate(stages)}
        features["scores"] = self.decoder(stages)  # (N, K, H/4, W/4)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]


_HF_RENAMES = (  # Hugging Face key (transformers >= 5, then < 5) -> ours; {0}, {1}: stage and block indices
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.", "encoder.stages.{0}.patch_embed.norm."),
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.proj\.", "encoder.stages.{0}.patch_embed.proj."),
    (r"segformer\.stages\.(\d+)\.layer_norm\.", "encoder.stages.{0}.norm."),
    (r"segformer\.stages\.(\d+)\.blocks\.(\d+)\.", "encoder.stages.{0}.blocks.{1}."),
    (r"segformer\.encoder\.patch_embeddings\.(\d+)\.layer_norm\.", "encoder.stages.{0}.patch_embed.norm."),
    (r"segformer\.encoder\.patch_embeddings\.(\d+)\.proj\.", "encoder.stages.{0}.patch_embed.proj."),
    (r"segformer\.encoder\.layer_norm\.(\d+)\.", "encoder.stages.{0}.norm."),
    (r"segformer\.encoder\.block\.(\d+)\.(\d+)\.", "encoder.stages.{0}.blocks.{1}."),
    (r"decode_head\.(?:linear_projections|linear_c)\.(\d+)\.proj\.", "decoder.linear_c.{0}."),
    (r"decode_head\.linear_fuse\.", "decoder.fuse.0."),
    (r"decode_head\.batch_norm\.", "decoder.fuse.1."),
    (r"decode_head\.classifier\.", "decoder.classifier."),
)
_HF_BLOCK_RENAMES = {  # inside a block
    "layernorm_before.": "norm1.", "layer_norm_1.": "norm1.", "layernorm_after.": "norm2.", "layer_norm_2.": "norm2.",
    "attention.q_proj.": "attn.query.", "attention.self.query.": "attn.query.",
    "attention.k_proj.": "attn.key.", "attention.self.key.": "attn.key.",
    "attention.v_proj.": "attn.value.", "attention.self.value.": "attn.value.",
    "attention.o_proj.": "attn.proj.", "attention.output.dense.": "attn.proj.",
    "attention.sequence_reduction.sequence_reduction.": "attn.sr.", "attention.self.sr.": "attn.sr.",
    "attention.sequence_reduction.layer_norm.": "attn.sr_norm.", "attention.self.layer_norm.": "attn.sr_norm.",
    "mlp.fc1.": "ffn.fc1.", "mlp.dense1.": "ffn.fc1.", "mlp.fc2.": "ffn.fc2.", "mlp.dense2.": "ffn.fc2.",
    "mlp.dwconv.dwconv.": "ffn.dwconv.",
}


def convert_hf_segformer_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a Hugging Face ``SegformerForSemanticSegmentation`` state dict for ``SegFormer``.

    Both naming schemes load: transformers ≥ 5 (``segformer.stages.<i>.blocks.<j>.attention.q_proj``) and the
    older one of the hub checkpoints (``segformer.encoder.block.<i>.<j>.attention.self.query``). Only names
    change (HF's ``attention``/``mlp``/``linear_fuse``/``batch_norm`` → ``attn``/``ffn``/``fuse.0``/``fuse.1``);
    tensors are shared, not copied.

    Raises:
        ValueError: a key that is not part of a SegFormer semantic-segmentation state dict.
    """
    converted = {}
    for key, value in state_dict.items():
        for pattern, template in _HF_RENAMES:
            match = re.match(pattern, key)
            if match:
                rest = key[match.end():]
                if ".blocks." in template:
                    for old, new in _HF_BLOCK_RENAMES.items():
                        if rest.startswith(old):
                            rest = new + rest[len(old):]
                            break
                    else:
                        raise ValueError(f"unexpected key {key!r} in a SegFormer block")
                converted[template.format(*match.groups()) + rest] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: expected a Hugging Face SegformerForSemanticSegmentation state dict")
    return converted
