"""A deformable backbone stage (InternImage's basic block, repeated) and a tiny segmenter built from it.

Wang et al., "InternImage: Exploring Large-Scale Vision Foundation Models with Deformable Convolutions",
CVPR 2023, section 3.2 and Fig. 3: the basic block is a transformer block with DCNv3 in place of
attention, pre-norm (channels last)::

    x = x + DCNv3(LN(x))          # spatial mixing: K learned sampling points per group
    x = x + MLP(LN(x))            # channel mixing: Linear C -> 4C, GELU, Linear 4C -> C

- :class:`DeformableBlock`: one such block, ``(N, H, W, C) -> (N, H, W, C)``;
- :class:`DeformableStage`: ``depth`` blocks, then optionally InternImage's downsampling (3×3 conv, stride 2,
  C -> 2C, LayerNorm), on seglab's ``(N, C, H, W)`` maps (channels-last inside);
- :class:`DeformableSegNet`: stem (two 3×3 stride-2 convs, H/4) -> stages -> 1×1 classifier -> bilinear
  upsampling to the input size: ``(N, 3, H, W) -> (N, K, H, W)`` logits.

Differences from the paper: no stochastic depth (drop path); layer scale optional (off by default, as
InternImage-T/S/B); ``DeformableSegNet`` is a small FCN-style model for a CPU, not InternImage-T with UperNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import check_images
from .dcnv3 import DCNv3

__all__ = ["DeformableBlock", "DeformableStage", "DeformableSegNet"]


class DeformableBlock(nn.Module):
    """InternImage's basic block: ``x + DCNv3(LN(x))``, then ``x + MLP(LN(x))``; ``(N, H, W, C)`` both ways.

    Args:
        channels: ``C``; groups: DCNv3 groups (``C`` divisible by them); kernel_size: DCNv3's grid (odd).
        mlp_ratio: hidden width of the MLP, in multiples of ``C`` (4 in the paper).
        layer_scale: initial value of a learned per-channel scale on both branches (None = none).
    """

    def __init__(self, channels: int, groups: int, *, kernel_size: int = 3, mlp_ratio: float = 4.0,
                 layer_scale: float | None = None) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.norm1 = nn.LayerNorm(channels, eps=1e-6)
        self.dcn = DCNv3(channels, kernel_size, groups)
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        scale = (lambda: nn.Parameter(torch.full((channels,), float(layer_scale)))) if layer_scale else (lambda: None)
        self.gamma1, self.gamma2 = scale(), scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dcn(self.norm1(x))  # (N, H, W, C)
        x = x + (y if self.gamma1 is None else self.gamma1 * y)
        y = self.mlp(self.norm2(x))  # (N, H, W, C)
        return x + (y if self.gamma2 is None else self.gamma2 * y)


class DeformableStage(nn.Module):
    """``depth`` :class:`DeformableBlock` s, then (``downsample=True``) a 3×3 stride-2 conv ``C -> 2C`` + LayerNorm.

    Shape: ``(N, C, H, W) -> (N, C, H, W)``, or ``(N, 2C, ceil(H/2), ceil(W/2))`` with ``downsample``; the
    blocks run channels-last inside (one permute in, one out), so the stage drops into a seglab backbone.

    Raises:
        ValueError: ``depth < 1``, or ``channels`` not divisible by ``groups``.
    """

    def __init__(self, channels: int, depth: int, groups: int, *, kernel_size: int = 3, mlp_ratio: float = 4.0,
                 layer_scale: float | None = None, downsample: bool = False) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1 (blocks in the stage), got {depth!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
            raise ValueError(f"channels={channels} must be divisible by groups={groups!r}")
        self.channels = channels
        self.blocks = nn.Sequential(*[DeformableBlock(channels, groups, kernel_size=kernel_size, mlp_ratio=mlp_ratio,
                                                      layer_scale=layer_scale) for _ in range(depth)])
        self.down_conv = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False) if downsample else None
        self.down_norm = nn.LayerNorm(2 * channels, eps=1e-6) if downsample else None

    @property
    def out_channels(self) -> int:
        return self.channels * (2 if self.down_conv is not None else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"DeformableStage expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        x = self.blocks(x.permute(0, 2, 3, 1))  # (N, H, W, C)
        if self.down_conv is None:
            return x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
        x = self.down_conv(x.permute(0, 3, 1, 2))  # (N, 2C, H/2, W/2)
        return self.down_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class DeformableSegNet(nn.Module):
    """A tiny InternImage-style segmenter: ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` logits.

    ``stem``: 3×3 conv stride 2 (``C/2``) + LN + GELU + 3×3 conv stride 2 (``C``) + LN, as InternImage's
    (H/4); ``stages``: one :class:`DeformableStage` per entry of ``depths`` (all but the last downsample, so
    the width doubles and the stride reaches ``4·2^(S-1)``); ``classifier``: 1×1 conv; bilinear upsampling to
    the input size. Any H, W (the stride-2 convs round up).

    Args:
        num_classes: ``K``; channels: ``C`` of the first stage; depths: blocks per stage;
        groups: DCNv3 groups per stage (an int = the same for every stage), each dividing that stage's width.
    """

    def __init__(self, num_classes: int, *, channels: int = 32, depths: Sequence[int] = (2, 2),
                 groups: int | Sequence[int] = (2, 4), in_channels: int = 3) -> None:
        super().__init__()
        depths = tuple(depths)
        groups = (groups,) * len(depths) if isinstance(groups, int) else tuple(groups)
        if not depths or len(groups) != len(depths):
            raise ValueError(f"depths {depths} and groups {groups} must be non-empty and of the same length")
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1),
                                  _ChannelsLastNorm(channels // 2), nn.GELU(),
                                  nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1),
                                  _ChannelsLastNorm(channels))
        stages, width = [], channels
        for i, (depth, group) in enumerate(zip(depths, groups)):
            stages.append(DeformableStage(width, depth, group, downsample=i < len(depths) - 1))
            width = stages[-1].out_channels
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"stem", "stage1", ..., "logits"}``: the intermediate maps ``(N, C_i, H_i, W_i)`` and the logits."""
        check_images(x, self.in_channels, "DeformableSegNet")
        features = {"stem": self.stem(x)}  # (N, C, H/4, W/4)
        y = features["stem"]
        for i, stage in enumerate(self.stages, start=1):
            y = features[f"stage{i}"] = stage(y)  # (N, C·2^i, H/2^(i+2), W/2^(i+2)) for all but the last
        scores = self.classifier(y)  # (N, K, h, w)
        features["logits"] = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["logits"]  # (N, K, H, W)


class _ChannelsLastNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``(N, C, H, W)`` map (InternImage's "LN, channels first")."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
