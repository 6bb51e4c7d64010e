"""PSPNet: Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017.

A dilated ResNet (output stride 8) gives a feature map ``(N, C, H/8, W/8)``; the pyramid pooling module
(``PyramidPooling``, the paper's Fig. 3 (c)) average-pools it into 1×1, 2×2, 3×3 and 6×6 bins, reduces each
pooled map to ``C / 4`` channels with a 1×1 conv, upsamples them back bilinearly and concatenates them with
the features: global context next to local evidence. A 3×3 conv and a 1×1 classifier give the scores::

    backbone ─ layer4 (C, H/8) ─┬──────────────────────────────────────┐
                                ├ pool 1×1 ─ 1×1 conv (C/4) ─ upsample ─┤
                                ├ pool 2×2 ─ 1×1 conv (C/4) ─ upsample ─┤ concat (2C)
                                ├ pool 3×3 ─ 1×1 conv (C/4) ─ upsample ─┤ ─ 3×3 conv (512) ─ 1×1 (K) ─ ×8 ─ logits
                                └ pool 6×6 ─ 1×1 conv (C/4) ─ upsample ─┘
    auxiliary loss (training only): layer3 (1024, H/8) ─ 3×3 conv (256) ─ 1×1 (K)

``model.forward_features(x)`` returns the backbone stages, ``"ppm"``, ``"scores"`` and ``"logits"``;
``model.forward_with_aux(x)`` adds the auxiliary logits (the paper weights their loss by 0.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import RESNETS, ResNetBackbone
from .blocks import AuxHead, ConvBNReLU, check_images

__all__ = ["PSPNet", "PyramidPooling"]


class PyramidPooling(nn.Module):
    """Pyramid pooling module (PSPNet Fig. 3 (c)): ``(N, C, h, w) -> (N, C + len(bins) * C_b, h, w)``.

    ``stages[i]`` = AdaptiveAvgPool2d(``bins[i]``) → 1×1 conv (C → C_b, no bias) → BN → ReLU, then bilinear
    upsampling to ``(h, w)``; the output is ``cat([x, stage_0(x), …], dim=1)``. ``C_b = C // len(bins)``
    ("reduce the dimension of context representation to 1/N of the original one", N = 4 pyramid levels).
    Bins larger than the map (h < 6) are fine: adaptive pooling then repeats pixels.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.out_channels = in_channels + len(self.bins) * (in_channels // len(self.bins))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), ConvBNReLU(in_channels, in_channels // len(self.bins), 1))
            for size in self.bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2 and 1 in self.bins:
            raise ValueError("PSPNet's 1×1 pyramid bin has BatchNorm over one value per image, so training needs "
                             f"a batch of at least 2 images; got {x.shape[0]}: use batch_size >= 2, or model.eval() "
                             "to predict")
        h, w = x.shape[-2:]
        pooled = [  # each (N, C/4, h, w), from a (N, C/4, bin, bin) map
            F.interpolate(stage(x), size=(h, w), mode="bilinear", align_corners=False) for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)  # (N, 2C, h, w) for 4 bins


class PSPNet(nn.Module):
    """PSPNet (Zhao et al. 2017) on a dilated ResNet (output stride 8).

    Args:
        num_classes: K.
        backbone: ``"resnet50"`` (default, the paper's ablation network), ``"resnet101"`` (its VOC/Cityscapes
            results), ``"resnet18"``/``"resnet34"`` (CPU work; C = 512 instead of 2048).
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        bins: pyramid bin sizes, default the paper's (1, 2, 3, 6).
        aux_loss: add ``aux_classifier`` on ``layer3`` (the paper's "res4b22" deep supervision), used by
            ``forward_with_aux`` only.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32, any H, W (the stride-8
    scores are interpolated to the input size). Training needs N ≥ 2 (BatchNorm after the 1×1 bin).

    Parameters (K = 21, ResNet-50, torchvision stem): 46,592,597 without and 48,957,802 with the aux head;
    the tests recompute these from the paper's description. The paper gives no parameter counts.

    Differences from the paper: torchvision's ResNet (one 7×7 stem conv, stride in the 3×3 conv) instead of the
    paper's ResNet with a three-conv 3×3 stem; bilinear interpolation with ``align_corners=False`` (Caffe's
    Interp layer aligns corners); the head's 3×3 conv (2C → 512) + BN + ReLU + Dropout(0.1) and the aux
    head's layout follow the authors' released code (the paper says only "a convolution layer").
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", weights_backbone: object = None,
                 bins: Sequence[int] = (1, 2, 3, 6), aux_loss: bool = False) -> None:
        super().__init__()
        if backbone not in RESNETS:
            raise ValueError(f"unknown PSPNet backbone {backbone!r}; valid: {', '.join(RESNETS)}")
        self.num_classes, self.in_channels, self.output_stride = num_classes, 3, 8
        self.backbone = ResNetBackbone(backbone, output_stride=8, weights=weights_backbone)
        self.ppm = PyramidPooling(self.backbone.channels["layer4"], bins)
        self.classifier = nn.Sequential(
            ConvBNReLU(self.ppm.out_channels, 512, 3), nn.Dropout(0.1), nn.Conv2d(512, num_classes, 1)
        )
        self.aux_classifier = AuxHead(self.backbone.channels["layer3"], num_classes) if aux_loss else None

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages, ``"ppm"``, ``"scores"`` (stride 8) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "PSPNet")
        features = self.backbone(x)  # layer4: (N, C, H/8, W/8)
        features["ppm"] = self.ppm(features["layer4"])  # (N, 2C, H/8, W/8)
        features["scores"] = self.classifier(features["ppm"])  # (N, K, H/8, W/8)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; the aux head sees ``layer3``. Needs ``aux_loss=True``."""
        if self.aux_classifier is None:
            raise RuntimeError("this PSPNet has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features["layer3"])  # (N, K, H/8, W/8)
        return features["logits"], F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
