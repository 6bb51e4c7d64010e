"""FastFCN: Wu, Zhang, Huang, Liang & Yu, "FastFCN: Rethinking Dilated Convolution in the Backbone for Semantic
Segmentation", arXiv 1903.11816, 2019.

DeepLab gets stride-8 features by dilating the backbone's last two stages, which makes them run at 4× and 16×
the pixels of the plain network. FastFCN keeps the plain (output stride 32) ResNet and *approximates* the
dilated ``layer4`` with the Joint Pyramid Upsampling module (``JPU``): the last three stages (strides 8, 16, 32)
are each reduced to ``width`` channels by a 3×3 conv, upsampled to stride 8 and concatenated; four parallel
separable 3×3 convs with dilations 1, 2, 4, 8 look at the joint map, and their outputs are concatenated
(``4 * width`` = 2048 channels, as many as ResNet-50's ``layer4``). Any head written for a dilated backbone then
runs on it unchanged; here DeepLabV3's ASPP head, the paper's "DeepLabV3+JPU" row::

    ResNet (output stride 32) ─ layer2 (H/8) ─ 3×3 conv (w) ─────────────┐
                                layer3 (H/16) ─ 3×3 conv (w) ─ up ×2 ─────┤ concat (3w, H/8) ─┬ sep. conv d=1 ─┐
                                layer4 (H/32) ─ 3×3 conv (w) ─ up ×4 ─────┘                   ├ sep. conv d=2 ─┤ concat
                                                                                              ├ sep. conv d=4 ─┤ (4w, H/8)
                                                                                              └ sep. conv d=8 ─┘
        ─ ASPP (rates 12, 24, 36) ─ 3×3 conv ─ 1×1 (K) ─ ×8 ─ logits
    auxiliary loss (training only): layer3 (H/16) ─ FCN head

``model.forward_features(x)`` returns the backbone stages, ``"jpu"``, ``"aspp"``, ``"scores"`` and ``"logits"``.
``benchmarks/fastfcn.py`` measures FLOPs and CPU latency against DeepLabV3 at output stride 8 in one run, and
how closely a fitted JPU reproduces the dilated backbone's ``layer4``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import RESNETS, ResNetBackbone
from .blocks import AuxHead, ConvBNReLU, check_images
from .deeplab import ASPP

__all__ = ["FastFCN", "JPU", "SeparableConv2d"]

JPU_DILATIONS = (1, 2, 4, 8)


class SeparableConv2d(nn.Sequential):
    """Depthwise 3×3 conv (dilation d, one filter per channel) → BN → pointwise 1×1 conv; no biases.

    ``(N, C_in, h, w) -> (N, C_out, h, w)``; ``9 C_in + C_in C_out`` weights instead of ``9 C_in C_out``.
    The BN between the two convs is the authors' code's.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class JPU(nn.Module):
    """Joint Pyramid Upsampling (FastFCN Fig. 4): stride-8/16/32 features -> one stride-8 map ``(N, 4 width, h8, w8)``.

    ``forward(features)`` takes the three maps ``(N, C_8, h8, w8)``, ``(N, C_16, h16, w16)``, ``(N, C_32, h32, w32)``
    (finest first). ``reduce[i]``: 3×3 conv-BN-ReLU to ``width``; the two coarser maps are upsampled (bilinear) to
    ``(h8, w8)``, all three concatenated (``3 width``); ``dilated[j]``: ``SeparableConv2d`` with dilation
    ``JPU_DILATIONS[j]`` (1, 2, 4, 8) to ``width`` → BN → ReLU; the four outputs are concatenated.

    Differences from the paper: bilinear upsampling with ``align_corners=False`` (the authors' code uses True);
    the maps are concatenated finest first (the code: coarsest first; a permutation of the channels).
    """

    def __init__(self, in_channels: Sequence[int], width: int = 512) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"JPU takes the stride-8, 16 and 32 features: in_channels needs 3 values; got {in_channels!r}")
        self.width, self.out_channels = width, len(JPU_DILATIONS) * width
        self.reduce = nn.ModuleList(ConvBNReLU(c, width, 3) for c in in_channels)
        self.dilated = nn.ModuleList(
            nn.Sequential(SeparableConv2d(3 * width, width, d), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for d in JPU_DILATIONS
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        maps = [reduce(x) for reduce, x in zip(self.reduce, features)]  # each (N, width, h_s, w_s)
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        joint = torch.cat(maps, dim=1)  # (N, 3 width, h8, w8)
        return torch.cat([branch(joint) for branch in self.dilated], dim=1)  # (N, 4 width, h8, w8)


class FastFCN(nn.Module):
    """FastFCN (Wu et al. 2019), DeepLabV3 head: ResNet at output stride 32 → JPU → ASPP → classifier → ×8.

    Args:
        num_classes: K.
        backbone: ``"resnet50"`` (default, the paper's ablations) or ``"resnet101"``; ``"resnet18"``/``"resnet34"``
            for CPU work.
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        jpu_width: the JPU's ``width`` (default 512, the paper's: its output has ``4 * 512 = 2048`` channels).
        atrous_rates: ASPP rates; default (12, 24, 36), DeepLabV3's at output stride 8 (the JPU's output stride).
        aux_loss: add ``aux_classifier`` (an FCN head on ``layer3``, as the authors train), ``forward_with_aux`` only.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 for any H, W (the
    stride-8 scores are interpolated to the input size). Training needs N ≥ 2 (ASPP's image pooling).

    Differences from the paper: the head is seglab's ``DeepLabV3`` head (ASPP with torchvision's Dropout(0.5),
    3×3 conv-BN-ReLU, 1×1), so that this model and ``DeepLabV3(output_stride=8)`` differ only in how the
    stride-8 ``layer4`` is obtained (the authors' head: ASPP to 256, 3×3 conv, Dropout(0.1), 1×1); torchvision's
    ResNet with its 7×7 stem (the authors use a ResNet with three 3×3 stem convs); the paper's best head, EncNet,
    is not built; JPU differences: see ``JPU``.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", weights_backbone: object = None,
                 jpu_width: int = 512, atrous_rates: Sequence[int] = (12, 24, 36), aux_loss: bool = False) -> None:
        super().__init__()
        if backbone not in RESNETS:
            raise ValueError(f"unknown FastFCN backbone {backbone!r}; valid: {', '.join(RESNETS)}")
        if isinstance(jpu_width, bool) or not isinstance(jpu_width, int) or jpu_width < 1:
            raise ValueError(f"jpu_width must be a positive int (the paper's is 512); got {jpu_width!r}")
        self.num_classes, self.in_channels, self.output_stride = num_classes, 3, 8
        self.backbone = ResNetBackbone(backbone, output_stride=32, weights=weights_backbone)
        channels = self.backbone.channels
        self.jpu = JPU([channels["layer2"], channels["layer3"], channels["layer4"]], jpu_width)
        self.aspp = ASPP(self.jpu.out_channels, atrous_rates)
        self.classifier = nn.Sequential(ConvBNReLU(256, 256, 3), nn.Conv2d(256, num_classes, 1))
        self.aux_classifier = AuxHead(channels["layer3"], num_classes) if aux_loss else None

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages (``layer4`` at H/32), ``"jpu"``, ``"aspp"``, ``"scores"`` (stride 8) and ``"logits"``."""
        check_images(x, 3, "FastFCN")
        features = self.backbone(x)  # layer2: (N, C2, H/8), layer3: (N, C3, H/16), layer4: (N, C4, H/32)
        features["jpu"] = self.jpu([features["layer2"], features["layer3"], features["layer4"]])  # (N, 4w, H/8, W/8)
        features["aspp"] = self.aspp(features["jpu"])  # (N, 256, H/8, W/8)
        features["scores"] = self.classifier(features["aspp"])  # (N, K, H/8, W/8)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; the aux head sees ``layer3``. Needs ``aux_loss=True``."""
        if self.aux_classifier is None:
            raise RuntimeError("this FastFCN has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features["layer3"])  # (N, K, H/16, W/16)
        return features["logits"], F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
