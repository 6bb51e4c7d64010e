"""LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling) on MobileNetV3-Large: Howard, Sandler, Chu, Chen, Chen,
Tan, Wang, Zhu, Pang, Vasudevan, Le & Adam, "Searching for MobileNetV3", ICCV 2019 (Sec. 6.1.2, Fig. 10).

A real-time head: the last block of MobileNetV3 is dilated (output stride 16 instead of 32); its features go
through one 1×1 conv (960 → 128) gated, channel by channel, by a squeeze-and-excitation-like branch (global
average pool → 1×1 conv → sigmoid); the gated map is upsampled to the stride-8 features, and a 1×1 classifier
on each is summed::

    mobilenet_v3_large ─ high (960, H/16) ─┬ 1×1 conv-BN-ReLU (128) ─(×)─ upsample ─ 1×1 (K) ─(+)─ ×8 ─ logits
                                           └ avg pool ─ 1×1 conv (128) ─ sigmoid ┘               │
                         low  (40, H/8) ──────────────────────────────────────── 1×1 (K) ───────┘

The MobileNetV3 blocks are torchvision's (``torchvision.models.mobilenet_v3_large(dilated=True).features``),
as the ResNets of ``seglab.models.backbones`` are; the head is written here. torchvision's
``lraspp_mobilenet_v3_large`` state dicts load with ``convert_torchvision_lraspp_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .backbones import _load_strict, load_backbone_weights
from .blocks import check_images

__all__ = ["LRASPP", "LRASPPHead", "MobileNetV3LargeBackbone", "convert_torchvision_lraspp_state_dict"]


class MobileNetV3LargeBackbone(nn.Module):
    """MobileNetV3-Large's ``features`` (Howard et al. 2019, Table 1) with the last stage dilated (stride 16).

    ``forward(x)``: ``(N, 3, H, W)`` -> ``{"low": (N, 40, H/8, W/8), "high": (N, 960, H/16, W/16)}`` (ceil
    divisions); ``low`` is the output of the first stride-8 block (``features[4]``, as torchvision's; the paper says only
    "1/8 resolution"), ``high`` of the last layer. ``weights``: ImageNet weights (see
    ``seglab.models.backbones``); torchvision's ``classifier.*`` is dropped.
    """

    def __init__(self, weights: object = None) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).features
        # the first block of each new resolution ("C_n" blocks): its input has the previous stage's stride
        stage_starts = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        self.low_index = stage_starts[-3]  # the first stride-8 block (index 4): torchvision's choice (its "C2")
        self.channels = {"low": self.features[self.low_index].out_channels, "high": self.features[-1].out_channels}
        self.strides = {"low": 8, "high": 16}
        self.name, self.output_stride = "mobilenet_v3_large", 16
        if weights is not None:
            state_dict = load_backbone_weights("mobilenet_v3_large", weights)
            _load_strict(self, {k: v for k, v in state_dict.items() if k.startswith("features.")},
                         "torchvision.models.mobilenet_v3_large")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index == self.low_index:
                features["low"] = x  # (N, 40, H/8, W/8)
        features["high"] = x  # (N, 960, H/16, W/16)
        return features


class LRASPPHead(nn.Module):
    """LR-ASPP head: ``(low (N, C_low, H/8, W/8), high (N, C_high, H/16, W/16)) -> (N, K, H/8, W/8)``.

    ``cbr``: 1×1 conv (C_high → 128) + BN + ReLU; ``scale``: global average pool + 1×1 conv (C_high → 128) +
    sigmoid, a per-channel gate; ``high_classifier`` / ``low_classifier``: 1×1 convs to K, summed.
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.scale(high)  # (N, 128, H/16, W/16) * (N, 128, 1, 1)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)  # (N, 128, H/8, W/8)
        return self.low_classifier(low) + self.high_classifier(x)  # (N, K, H/8, W/8)


class LRASPP(nn.Module):
    """LR-ASPP on MobileNetV3-Large (Howard et al. 2019): the paper's real-time segmentation model.

    Args:
        num_classes: K.
        weights_backbone: ImageNet weights for MobileNetV3-Large (``"IMAGENET1K_V1"``, a file or a state dict).
        inter_channels: width of the head (128, the paper's and torchvision's).

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 for any H, W ≥ 1 (the
    stride-8 scores are interpolated to the input size). 3,221,538 parameters for K = 21, as torchvision's.
    Differences from the paper: a global average pool in the gate instead of the paper's 49×49 pooling with
    stride (16, 20) (torchvision's choice; equal on 1024×2048 Cityscapes crops up to the border); the last stage
    keeps its full width (the paper halves it for segmentation); bilinear upsampling with ``align_corners=False``.
    """

    def __init__(self, num_classes: int, *, weights_backbone: object = None, inter_channels: int = 128) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.output_stride = num_classes, 3, 16
        self.backbone = MobileNetV3LargeBackbone(weights_backbone)
        self.head = LRASPPHead(self.backbone.channels["low"], self.backbone.channels["high"], num_classes, inter_channels)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"low"``, ``"high"``, ``"scores"`` (stride 8) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "LRASPP")
        features = self.backbone(x)  # low: (N, 40, H/8, W/8), high: (N, 960, H/16, W/16)
        features["scores"] = self.head(features["low"], features["high"])  # (N, K, H/8, W/8)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]


def convert_torchvision_lraspp_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision ``lraspp_mobilenet_v3_large`` state dict for ``LRASPP``.

    The only renames: ``backbone.<i>.`` → ``backbone.features.<i>.`` (torchvision wraps ``features`` in an
    ``IntermediateLayerGetter``) and ``classifier.`` → ``head.``. Tensors are shared, not copied. Usage:
    ``LRASPP(21).load_state_dict(convert_torchvision_lraspp_state_dict(tv_model.state_dict()))``.

    Raises:
        ValueError: a key that is not part of a torchvision LR-ASPP state dict.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            converted["backbone.features." + key[len("backbone."):]] = value
        elif key.startswith("classifier."):
            converted["head." + key[len("classifier."):]] = value
        else:
            raise ValueError(f"unexpected key {key!r}: expected a torchvision lraspp_mobilenet_v3_large state dict")
    return converted
