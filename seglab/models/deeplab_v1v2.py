"""DeepLab v1 (LargeFOV) and DeepLab v2 (ASPP): the first atrous segmentation networks.

- v1: Chen, Papandreou, Kokkinos, Murphy & Yuille, "Semantic Image Segmentation with Deep Convolutional Nets
  and Fully Connected CRFs", ICLR 2015.
- v2: Chen, Papandreou, Kokkinos, Murphy & Yuille, "DeepLab: Semantic Image Segmentation with Deep
  Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018.

VGG16 keeps stride 8 instead of 32: pool4 and pool5 get stride 1 and the convolutions after them are dilated
("atrous algorithm", conv5 rate 2, fc6 rate 12) so the kept weights see what they saw in the strided net.
v1 LargeFOV replaces VGG's 7×7×4096 fc6 by a 3×3×1024 conv at rate 12: the same field of view (Table 2 of
v1, Table 3 of v2), a sixth of the parameters. v2's atrous spatial pyramid pooling (ASPP-L, v2 Fig. 7) runs
four such heads at rates 6, 12, 18 and 24 in parallel and *sums* their class scores; on ResNet-101 each
branch is a single 3×3 conv straight to the K class scores::

    v1:  vgg16 (stride 8) ─ pool5 (512, H/8) ─ fc6 3×3 r=12 (1024) ─ fc7 1×1 (1024) ─ fc8 1×1 (K) ─ ×8 ─ logits
    v2:  backbone (stride 8) ─┬ branch r=6  ─┐
                              ├ branch r=12 ─┤ sum (K, H/8) ─ ×8 ─ logits
                              ├ branch r=18 ─┤
                              └ branch r=24 ─┘

The dense CRF that both papers run after the network is not part of these modules.
``model.forward_features(x)`` returns the backbone stages, ``"scores"`` (stride 8) and ``"logits"``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .backbones import RESNETS, ResNetBackbone, _load_strict, load_backbone_weights
from .blocks import check_images

__all__ = ["ASPPSum", "DeepLabV1", "DeepLabV2", "DeepLabVGG16", "LargeFOVHead"]

_POOLS = (4, 9, 16, 23, 30)  # indices of the five max pools in torchvision's vgg16().features
_CONV5 = (24, 26, 28)


class DeepLabVGG16(nn.Module):
    """VGG16 (Simonyan & Zisserman 2015) as DeepLab v1/v2 use it: output stride 8, no fc layers.

    ``features`` keeps torchvision's ``vgg16().features`` indices (so its ImageNet weights load) with
    DeepLab's Caffe pooling: pool1-3 are 3×3 stride 2 pad 1, pool4 and pool5 3×3 stride 1 pad 1 (all with
    Caffe's ceil rounding), and conv5_1-3 have dilation 2.
    ``forward(x)``: ``(N, 3, H, W)`` -> ``{"pool1": (N, 64, H/2, W/2), "pool2": (N, 128, H/4, W/4),
    "pool3": (N, 256, H/8, W/8), "pool4": (N, 512, H/8, W/8), "pool5": (N, 512, H/8, W/8)}``, each halving
    rounded as Caffe's pooling does, ``n -> n // 2 + 1`` (513 -> 257 -> 129 -> 65; 131 -> 66 -> 34 -> 18).
    """

    def __init__(self, weights: object = None) -> None:
        super().__init__()
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16().features
        for module in self.features.modules():  # torchvision's VGG initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for index in _POOLS:
            stride = 2 if index < 23 else 1
            self.features[index] = nn.MaxPool2d(3, stride=stride, padding=1, ceil_mode=True)
        for index in _CONV5:
            self.features[index].dilation, self.features[index].padding = (2, 2), (2, 2)
        self.name, self.output_stride = "vgg16", 8
        self.channels = {"pool1": 64, "pool2": 128, "pool3": 256, "pool4": 512, "pool5": 512}
        self.strides = {"pool1": 2, "pool2": 4, "pool3": 8, "pool4": 8, "pool5": 8}
        if weights is not None:
            self.load_torchvision_state_dict(load_backbone_weights("vgg16", weights))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, pool = {}, 0
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _POOLS:
                pool += 1
                features[f"pool{pool}"] = x  # (N, C, H/2^min(pool, 3), W/2^min(pool, 3))
        return features

    def load_torchvision_state_dict(self, state_dict) -> None:
        """Load a ``torchvision.models.vgg16`` state dict (its fc ``classifier.*`` is dropped)."""
        _load_strict(self, {k: v for k, v in state_dict.items() if k.startswith("features.")}, "torchvision.models.vgg16")


class LargeFOVHead(nn.Sequential):
    """VGG16's fc6-fc8 as DeepLab convolutions: ``(N, C, h, w) -> (N, K, h, w)``.

    ``fc6``: k×k conv at rate ``dilation`` (C → ``channels``) + ReLU + Dropout; ``fc7``: 1×1 (``channels`` →
    ``channels``) + ReLU + Dropout; ``fc8``: 1×1 → K. Defaults = DeepLab-LargeFOV (3×3, rate 12, 1024).
    """

    def __init__(self, in_channels: int, num_classes: int, *, kernel_size: int = 3, dilation: int = 12,
                 channels: int = 1024, dropout: float = 0.5) -> None:
        fc8 = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(fc8.weight, 0, 0.01)  # the papers' Gaussian init of the new classifier
        nn.init.zeros_(fc8.bias)
        super().__init__(OrderedDict([
            ("fc6", nn.Conv2d(in_channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                              dilation=dilation)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Conv2d(channels, channels, 1)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", fc8),
        ]))


class ASPPSum(nn.Module):
    """DeepLab v2's ASPP: parallel branches at rates ``atrous_rates`` whose class scores are summed.

    ``(N, C, h, w) -> (N, K, h, w)``. ``branch="vgg"``: each branch a ``LargeFOVHead`` at its rate (ASPP-L);
    ``branch="conv"``: each branch one 3×3 conv C → K (v2's ResNet-101 model).
    """

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (6, 12, 18, 24),
                 branch: str = "conv") -> None:
        super().__init__()
        if branch not in ("vgg", "conv"):
            raise ValueError(f"branch must be 'vgg' or 'conv'; got {branch!r}")
        self.atrous_rates = tuple(atrous_rates)
        if branch == "vgg":
            self.branches = nn.ModuleList(LargeFOVHead(in_channels, num_classes, dilation=r) for r in self.atrous_rates)
        else:
            self.branches = nn.ModuleList(
                nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in self.atrous_rates
            )
            for conv in self.branches:
                nn.init.normal_(conv.weight, 0, 0.01)
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)  # 4 × (N, K, h, w) -> (N, K, h, w)


def _check_output_stride(output_stride: int) -> None:
    if output_stride != 8:
        raise ValueError(f"DeepLab v1/v2 have output stride 8 only; got {output_stride!r}: drop output_stride "
                         "(DeepLabV3 also offers 16)")


class _DeepLabV1V2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages, ``"scores"`` (stride 8) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, type(self).__name__)
        features = self.backbone(x)  # last stage: (N, C, H/8, W/8)
        features["scores"] = self.head(features[self.feature_name])  # (N, K, H/8, W/8)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features


class DeepLabV1(_DeepLabV1V2):
    """DeepLab v1 (Chen et al. ICLR 2015): DeepLab-LargeFOV by default, the other fc6 choices of its Table 2 by args.

    Args:
        num_classes: K.
        weights_backbone: ImageNet weights for VGG16's conv layers (``features.*``; see ``seglab.models.backbones``).
        fc6_kernel_size, fc6_dilation, fc_channels: fc6's kernel, its rate ("input stride") and the width of
            fc6/fc7: LargeFOV (3, 12, 1024); Table 2's DeepLab-CRF-7x7 (7, 4, 4096), DeepLab-CRF (4, 4, 4096),
            DeepLab-CRF-4x4 (4, 8, 4096).
        dropout: of fc6 and fc7 (0.5, VGG's).
        output_stride: 8 only (accepted so that a config naming it gets a clear error otherwise).

    Shapes: ``(N, 3, H, W)`` float32 -> ``(N, K, H, W)`` float32 logits for any H, W (scores at about H/8,
    see ``DeepLabVGG16``, bilinearly interpolated to the input size). Parameters (K = 21): 20,505,429 for
    LargeFOV, the paper's 20.5M (tested with the other Table 2 rows: 134.3M, 65.1M).
    Differences from the paper: fc6/fc7 start from random weights (the paper subsamples VGG's fc6/fc7); no
    extra 3×3 average pool after pool5 (some of the authors' released prototxts have one, the paper does not);
    PyTorch's bilinear upsampling (``align_corners=False``) of the scores; no dense CRF here; meant to be
    trained against full-size labels after upsampling rather than labels subsampled by 8.
    """

    def __init__(self, num_classes: int, *, weights_backbone: object = None, fc6_kernel_size: int = 3,
                 fc6_dilation: int = 12, fc_channels: int = 1024, dropout: float = 0.5, output_stride: int = 8) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        self.num_classes, self.in_channels, self.output_stride, self.feature_name = num_classes, 3, 8, "pool5"
        self.backbone = DeepLabVGG16(weights_backbone)
        self.head = LargeFOVHead(512, num_classes, kernel_size=fc6_kernel_size, dilation=fc6_dilation,
                                 channels=fc_channels, dropout=dropout)


class DeepLabV2(_DeepLabV1V2):
    """DeepLab v2 (Chen et al. TPAMI 2018): an atrous backbone (stride 8) with ASPP (summed branches).

    Args:
        num_classes: K.
        backbone: ``"resnet101"`` (default, the paper's best; branches = one 3×3 conv 2048 → K each),
            ``"vgg16"`` (ASPP-L: each branch fc6 3×3 at its rate (1024) → fc7 (1024) → fc8 (K)), or
            ``"resnet18/34/50"`` for CPU work.
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        atrous_rates: branch rates, default ASPP-L's (6, 12, 18, 24).
        output_stride: 8 only.

    Shapes: ``(N, 3, H, W)`` float32 -> ``(N, K, H, W)`` float32 logits for any H, W (scores at stride 8).
    Parameters (K = 21): 37,877,652 with VGG16, 44,048,532 with ResNet-101 (the paper gives none; the tests
    recompute them from its description).
    Differences from the paper: torchvision's ResNet-101 (stride in the 3×3 conv, not the 1×1) and bilinear
    upsampling with ``align_corners=False``; no multi-scale input fusion (MSC), no MS-COCO pretraining, no CRF.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet101", weights_backbone: object = None,
                 atrous_rates: Sequence[int] = (6, 12, 18, 24), output_stride: int = 8) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        if backbone != "vgg16" and backbone not in RESNETS:
            raise ValueError(f"unknown DeepLab v2 backbone {backbone!r}; valid: vgg16, {', '.join(RESNETS)}")
        self.num_classes, self.in_channels, self.output_stride = num_classes, 3, 8
        if backbone == "vgg16":
            self.backbone, self.feature_name = DeepLabVGG16(weights_backbone), "pool5"
            self.head = ASPPSum(512, num_classes, atrous_rates, branch="vgg")
        else:
            self.backbone = ResNetBackbone(backbone, output_stride=8, weights=weights_backbone)
            self.feature_name = "layer4"
            self.head = ASPPSum(self.backbone.channels["layer4"], num_classes, atrous_rates, branch="conv")
