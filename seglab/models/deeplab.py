"""DeepLabV3 and DeepLabV3+ on an atrous ResNet.

- Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017 (V3).
- Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic
  Image Segmentation", ECCV 2018 (V3+).

The backbone's last stages are dilated instead of strided, so its features keep stride ``output_stride``
(8 or 16) instead of 32; Atrous Spatial Pyramid Pooling (``ASPP``) looks at them with a 1×1 conv, three
3×3 convs at rates (6, 12, 18) at stride 16 or (12, 24, 36) at stride 8, and image-level pooling::

    V3:  backbone ─ layer4 (H/s) ─ aspp ─ classifier ─ bilinear ×s ─ logits (H)
    V3+: backbone ─ layer4 (H/s) ─ aspp ─────────── ×s/4 ─┐
                    layer1 (H/4) ─ decoder.project (48) ──┴ concat ─ decoder.fuse ─ classifier ─ ×4 ─ logits

Intermediate maps for teaching: ``model.forward_features(x)`` returns the backbone stages (``stem``,
``layer1``…``layer4``), ``"aspp"``, ``"decoder"`` (V3+), ``"scores"`` and ``"logits"``; the submodules are
``model.backbone``, ``model.aspp``, ``model.decoder`` (V3+), ``model.classifier``, ``model.aux_classifier``.
torchvision's ``deeplabv3_resnet50/101`` state dicts load with ``convert_torchvision_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import RESNETS, ResNetBackbone
from .blocks import AuxHead, ConvBNReLU, check_images

__all__ = ["ASPP", "ASPPPooling", "DeepLabV3", "DeepLabV3Plus", "DeepLabV3PlusDecoder", "convert_torchvision_state_dict"]

ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}  # the papers' rates for each output stride


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool → 1×1 conv → BN → ReLU → broadcast back.

    ``(N, C_in, h, w) -> (N, C_out, h, w)``. Training needs N ≥ 2 (BatchNorm over a 1×1 map).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise ValueError("DeepLab's ASPP image-pooling branch has BatchNorm over a 1×1 map, so training needs a "
                             f"batch of at least 2 images; got {x.shape[0]}: use batch_size >= 2, or model.eval() to predict")
        h, w = x.shape[-2:]
        x = super().forward(x)  # (N, C_out, 1, 1)
        # a broadcast; bilinear interpolation (as torchvision) keeps the outputs bitwise equal to torchvision's
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)  # (N, C_out, h, w)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3 Fig. 5): five parallel branches, concatenated, projected.

    ``branches``: [1×1 conv, 3×3 conv rate r for r in atrous_rates, ASPPPooling], each → 256 + BN + ReLU;
    ``project``: 1×1 conv (5·256 → 256) + BN + ReLU + Dropout(0.5). ``(N, C_in, h, w) -> (N, 256, h, w)``.
    Differences from the paper: the Dropout(0.5) after the projection is torchvision's (the V3 paper has none).
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int] = (6, 12, 18), out_channels: int = 256) -> None:
        super().__init__()
        self.atrous_rates = tuple(atrous_rates)
        self.branches = nn.ModuleList([ConvBNReLU(in_channels, out_channels, 1)])
        self.branches.extend(ConvBNReLU(in_channels, out_channels, 3, dilation=rate) for rate in self.atrous_rates)
        self.branches.append(ASPPPooling(in_channels, out_channels))
        self.project = nn.Sequential(
            nn.Conv2d(len(self.branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([branch(x) for branch in self.branches], dim=1)  # (N, 5*256, h, w)
        return self.project(x)  # (N, 256, h, w)


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+ decoder (Fig. 2): low-level features 1×1 → 48, concat with the upsampled ASPP output, two 3×3 convs.

    ``forward(x, low_level)``: ``(N, 256, H/s, W/s)``, ``(N, C_low, H/4, W/4)`` -> ``(N, 256, H/4, W/4)``.
    Differences from the paper: plain (not depthwise-separable) 3×3 convs; bilinear with align_corners=False.
    """

    def __init__(self, low_level_channels: int, in_channels: int = 256, low_level_out: int = 48, out_channels: int = 256) -> None:
        super().__init__()
        self.project = ConvBNReLU(low_level_channels, low_level_out, 1)
        self.fuse = nn.Sequential(ConvBNReLU(in_channels + low_level_out, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3))

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.project(low_level)  # (N, 48, H/4, W/4)
        x = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear", align_corners=False)  # (N, 256, H/4, W/4)
        return self.fuse(torch.cat([x, low_level], dim=1))  # (N, 304, H/4, W/4) -> (N, 256, H/4, W/4)


class _DeepLab(nn.Module):
    """Shared construction and aux head of DeepLabV3 and V3+ (see their docstrings)."""

    def __init__(self, num_classes: int, backbone: str, weights_backbone: object, output_stride: int,
                 atrous_rates: Sequence[int] | None, aux_loss: bool) -> None:
        super().__init__()
        if backbone not in RESNETS:
            raise ValueError(f"unknown DeepLab backbone {backbone!r}; valid: {', '.join(RESNETS)}")
        if output_stride not in ATROUS_RATES:
            raise ValueError(f"DeepLab output_stride must be 8 or 16; got {output_stride!r}")
        self.num_classes, self.output_stride, self.in_channels = num_classes, output_stride, 3
        self.backbone = ResNetBackbone(backbone, output_stride=output_stride, weights=weights_backbone)
        self.aspp = ASPP(self.backbone.channels["layer4"], atrous_rates or ATROUS_RATES[output_stride])
        self.aux_classifier = AuxHead(self.backbone.channels["layer3"], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; the aux head sees ``layer3``. Needs ``aux_loss=True``."""
        if self.aux_classifier is None:
            raise RuntimeError(f"this {type(self).__name__} has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features["layer3"])  # (N, K, H/16, W/16) (H/8 at output stride 8)
        return features["logits"], F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3(_DeepLab):
    """DeepLabV3 (Chen et al. 2017): atrous ResNet → ASPP → 3×3 conv → 1×1 class scores → bilinear ×s.

    Args:
        num_classes: K.
        backbone: ``"resnet50"`` (default), ``"resnet101"`` (the paper's), ``"resnet18"``/``"resnet34"`` (CPU).
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        output_stride: 16 (default, the paper's training setting) or 8 (torchvision's; 4× the compute).
        atrous_rates: ASPP rates; default (6, 12, 18) at stride 16, (12, 24, 36) at stride 8.
        aux_loss: add ``aux_classifier`` (torchvision's FCNHead on ``layer3``), used by ``forward_with_aux`` only.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> ``(N, K, H, W)`` float32 for any H, W (the stride-s
    scores are interpolated to the input size, as torchvision does). Training needs N ≥ 2.
    Differences from the paper: a 3×3 conv-BN-ReLU between ASPP and the classifier and Dropout(0.5) in ASPP
    (both torchvision's, so its weights load); no multi-grid in layer4; ResNet-18/34 offered for CPU work.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", weights_backbone: object = None,
                 output_stride: int = 16, atrous_rates: Sequence[int] | None = None, aux_loss: bool = False) -> None:
        super().__init__(num_classes, backbone, weights_backbone, output_stride, atrous_rates, aux_loss)
        self.classifier = nn.Sequential(ConvBNReLU(256, 256, 3), nn.Conv2d(256, num_classes, 1))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages, ``"aspp"``, ``"scores"`` (stride s) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "DeepLabV3")
        features = self.backbone(x)  # layer4: (N, C4, H/s, W/s)
        features["aspp"] = self.aspp(features["layer4"])  # (N, 256, H/s, W/s)
        features["scores"] = self.classifier(features["aspp"])  # (N, K, H/s, W/s)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features


class DeepLabV3Plus(_DeepLab):
    """DeepLabV3+ (Chen et al. 2018): DeepLabV3's encoder + a decoder fed with stride-4 features (``layer1``).

    Args: as ``DeepLabV3``. Shapes: ``(N, 3, H, W)`` float32 -> ``(N, K, H, W)`` float32 for any H, W.
    Differences from the paper: ResNet instead of the modified aligned Xception, no depthwise-separable
    convolutions, Dropout(0.5) in ASPP as torchvision's, bilinear with align_corners=False.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", weights_backbone: object = None,
                 output_stride: int = 16, atrous_rates: Sequence[int] | None = None, aux_loss: bool = False) -> None:
        super().__init__(num_classes, backbone, weights_backbone, output_stride, atrous_rates, aux_loss)
        self.decoder = DeepLabV3PlusDecoder(self.backbone.channels["layer1"])
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages, ``"aspp"``, ``"decoder"``, ``"scores"`` (stride 4) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "DeepLabV3Plus")
        features = self.backbone(x)  # layer1: (N, C1, H/4, W/4), layer4: (N, C4, H/s, W/s)
        features["aspp"] = self.aspp(features["layer4"])  # (N, 256, H/s, W/s)
        features["decoder"] = self.decoder(features["aspp"], features["layer1"])  # (N, 256, H/4, W/4)
        features["scores"] = self.classifier(features["decoder"])  # (N, K, H/4, W/4)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features


_TORCHVISION_PREFIXES = (  # torchvision deeplabv3_resnet50/101 key prefix -> ours
    ("backbone.", "backbone."),
    ("classifier.0.convs.", "aspp.branches."),
    ("classifier.0.project.", "aspp.project."),
    ("classifier.1.", "classifier.0.0."),  # 3×3 conv
    ("classifier.2.", "classifier.0.1."),  # its BatchNorm
    ("classifier.4.", "classifier.1."),  # 1×1 class scores
    ("aux_classifier.", "aux_classifier."),
)


def convert_torchvision_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision ``deeplabv3_resnet50/101`` state dict for ``DeepLabV3``.

    Usage: ``DeepLabV3(21, backbone="resnet50", output_stride=8, aux_loss=True).load_state_dict(
    convert_torchvision_state_dict(tv_model.state_dict()))`` (drop ``aux_loss`` when the dict has no
    ``aux_classifier.*``). Tensors are shared, not copied. The only renames: ``classifier.0.convs`` →
    ``aspp.branches``, ``classifier.0.project`` → ``aspp.project``, ``classifier.1/2/4`` → ``classifier.0.0/0.1/1``.
    torchvision's models use output stride 8; build ours with ``output_stride=8`` for identical outputs.

    Raises:
        ValueError: a key that is not part of a torchvision DeepLabV3 state dict.
    """
    converted = {}
    for key, value in state_dict.items():
        for old, new in _TORCHVISION_PREFIXES:
            if key.startswith(old):
                converted[new + key[len(old) :]] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: expected a torchvision deeplabv3_resnet50/101 state dict")
    return converted
