"""FCN-32s, FCN-16s and FCN-8s: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015.

A classification network is made fully convolutional (VGG16's fc6/fc7 become convolutions), a 1×1
convolution scores every class at stride 32, and learnable transposed convolutions initialised to
bilinear interpolation bring the scores back to the input size. FCN-16s adds the scores of the
stride-16 stage (pool4), FCN-8s also those of the stride-8 stage (pool3) — the "skip" architecture::

    backbone ─ fc7 (H/32) ─ classifier ─ upscore2 ─(+)─ upscore_pool4 ─(+)─ upscore ×8 ─ logits (H)
              pool4 (H/16) ─ score_pool4 ─────────┘                   │
              pool3 (H/8) ── score_pool3 ─────────────────────────────┘

Intermediate maps for teaching: ``model.forward_features(x)`` returns the backbone's stage features
(``pool1``…``pool5``, ``fc7`` for VGG16; ``stem``, ``layer1``…``layer4`` for ResNets) and ``score_fr``,
``fuse_pool4``, ``fuse_pool3``, ``logits``. On ResNets the skips come from ``layer3`` (stride 16) and
``layer2`` (stride 8); the layer names ``score_pool4``/``score_pool3`` keep the paper's names.

``DilatedFCN`` is torchvision's ``fcn_resnet50/101`` instead (a dilated ResNet, one head, no skips), here so
that torchvision's pretrained FCN weights load into a seglab class (``seglab.models.pretrained``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, RESNETS, ResNetBackbone, build_backbone
from .blocks import AuxHead, check_images, pad_to_multiple

__all__ = ["FCN", "DilatedFCN", "BilinearUpsample", "bilinear_kernel"]

VARIANTS = {"32s": 32, "16s": 16, "8s": 8}  # variant -> stride of the finest fused scores
STAGES = {"vgg16": ("fc7", "pool4", "pool3")} | {name: ("layer4", "layer3", "layer2") for name in BACKBONES[1:]}


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """Weights ``(channels, channels, 2*factor, 2*factor)`` making ``BilinearUpsample`` bilinear per channel.

    The 1-D filter is ``1 - |i - (factor - 0.5)| / factor`` for ``i`` in ``[0, 2*factor)`` (Caffe's
    bilinear filler for an even factor); channel ``c`` only feeds output channel ``c``.
    """
    taps = 1 - (torch.arange(2 * factor, dtype=torch.float32) - (factor - 0.5)).abs() / factor
    kernel = taps[:, None] * taps[None, :]  # (2f, 2f)
    weight = torch.zeros(channels, channels, 2 * factor, 2 * factor)
    weight[range(channels), range(channels)] = kernel
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """Transposed convolution ("deconvolution") ×``factor`` initialised to bilinear interpolation.

    Kernel ``2*factor``, stride ``factor``, padding ``factor/2``, no bias: ``(N, C, h, w) -> (N, C, f*h, f*w)``.
    With this padding the output equals ``F.interpolate(x, scale_factor=factor, mode="bilinear",
    align_corners=False)`` away from the border (the border differs: zeros outside vs. edge clamping).
    ``learnable=False`` freezes the weights (the reference Caffe nets' ``lr_mult: 0``).
    Under autocast the upsampling runs in float32 and returns float32: on a CPU, a bf16 transposed convolution
    with FCN-32s' 64×64 kernel took 18× the float32 time (forward + backward, 8×11×4×5 scores, one thread, even
    on a CPU with native bf16; kernel 32: 4×), and the scores have only K channels, so float32 costs little.
    Differences from the paper: padding ``factor/2`` instead of the paper's crop offsets.
    """

    def __init__(self, channels: int, factor: int, *, learnable: bool = True) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"factor must be an even integer >= 2; got {factor}")
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        self.factor = factor
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor))
        self.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # float32 outside autocast (see the class docstring)
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _zero_conv1x1(in_channels: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(conv.weight)  # the paper zero-initialises the class scoring layers
    nn.init.zeros_(conv.bias)
    return conv


class FCN(nn.Module):
    """FCN-32s / 16s / 8s (Long, Shelhamer & Darrell 2015).

    Args:
        num_classes: K.
        variant: ``"32s"``, ``"16s"`` or ``"8s"`` (finest skip used: none, pool4, pool4 + pool3).
        backbone: ``"vgg16"`` (the paper's; fc6/fc7 as convolutions with dropout 0.5) or
            ``"resnet18"``/``"34"``/``"50"``/``"101"`` (torchvision, output stride 32).
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        upsampling: ``"learned"`` (transposed convs initialised to bilinear and trained, as in the paper)
            or ``"bilinear"`` (the same transposed convs frozen at bilinear).
        aux_loss: add ``aux_classifier`` on the stride-16 features, used only by ``forward_with_aux``.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32, any H, W.
    The input is zero-padded (bottom/right) to a multiple of 32 and the logits are cropped back, so every
    stride-s map is exactly ``ceil(H/32)*32/s`` high and the skips align without crop offsets.

    Differences from the paper: "same" padding + pad-to-32 + crop instead of ``pad=100`` on conv1_1 and the
    Caffe crop layers; upsampling padding ``f/2`` instead of crop offsets; trained end to end in one stage
    (the paper also trains FCN-16s/8s from the coarser net; the zero-initialised skip scores make the
    initial 16s/8s net behave like the coarser one); with ``upsampling="learned"`` the final ×s upsampling is
    learned too, whereas the paper fixes it at bilinear and learns only the ×2 ones (notebook 03 trains it
    the paper's way by hand; ``upsampling="bilinear"`` freezes all of them); ResNet backbones are not in the paper (AlexNet, VGG16,
    GoogLeNet are). No softmax inside.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        variant: str = "8s",
        backbone: str = "vgg16",
        weights_backbone: object = None,
        upsampling: str = "learned",
        aux_loss: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown FCN variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if backbone not in STAGES:
            raise ValueError(f"unknown FCN backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        if upsampling not in ("learned", "bilinear"):
            raise ValueError(f"upsampling must be 'learned' or 'bilinear'; got {upsampling!r}")
        learnable = upsampling == "learned"
        self.num_classes, self.variant, self.in_channels = num_classes, variant, 3
        self.backbone = build_backbone(backbone, weights=weights_backbone, output_stride=32)
        self.stage_names = STAGES[backbone]  # stride-32, stride-16, stride-8 feature names
        s32, s16, s8 = (self.backbone.channels[name] for name in self.stage_names)
        self.classifier = _zero_conv1x1(s32, num_classes)  # the paper's score_fr
        if variant in ("16s", "8s"):
            self.score_pool4 = _zero_conv1x1(s16, num_classes)
            self.upscore2 = BilinearUpsample(num_classes, 2, learnable=learnable)
        if variant == "8s":
            self.score_pool3 = _zero_conv1x1(s8, num_classes)
            self.upscore_pool4 = BilinearUpsample(num_classes, 2, learnable=learnable)
        self.upscore = BilinearUpsample(num_classes, VARIANTS[variant], learnable=learnable)
        self.aux_classifier = AuxHead(s16, num_classes) if aux_loss else None

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All named intermediate maps (padded resolution) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, f"FCN-{self.variant}")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 32)  # (N, 3, H32, W32), H32 = 32 * ceil(H / 32)
        features = self.backbone(x)
        s32, s16, s8 = self.stage_names
        scores = features["score_fr"] = self.classifier(features[s32])  # (N, K, H32/32, W32/32)
        if self.variant in ("16s", "8s"):
            scores = self.upscore2(scores) + self.score_pool4(features[s16])  # (N, K, H32/16, W32/16)
            features["fuse_pool4"] = scores
        if self.variant == "8s":
            scores = self.upscore_pool4(scores) + self.score_pool3(features[s8])  # (N, K, H32/8, W32/8)
            features["fuse_pool3"] = scores
        features["logits"] = self.upscore(scores)[..., :h, :w]  # (N, K, H32, W32) -> (N, K, H, W)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; needs ``aux_loss=True`` at construction."""
        if self.aux_classifier is None:
            raise RuntimeError("this FCN has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features[self.stage_names[1]])  # (N, K, H32/16, W32/16)
        aux = nn.functional.interpolate(aux, scale_factor=16, mode="bilinear", align_corners=False)  # (N, K, H32, W32)
        return features["logits"], aux[..., : x.shape[-2], : x.shape[-1]]


class DilatedFCN(nn.Module):
    """torchvision's FCN-ResNet (``torchvision.models.segmentation.fcn_resnet50/101``), same layers and keys.

    ``backbone`` (a ResNet with layer3 and layer4 dilated, output stride 8) → ``classifier`` (torchvision's
    ``FCNHead`` = ``AuxHead``: 3×3 conv C4 → C4/4, BN, ReLU, Dropout(0.1), 1×1 conv → K) → bilinear
    interpolation to the input size. Its state dict has torchvision's key names, so torchvision's weights
    load unchanged: ``build_model("fcn_dilated", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")``.

    Args:
        num_classes: K.
        backbone: ``"resnet50"`` (default) or ``"resnet101"`` (torchvision's); ``"resnet18/34"`` also build.
        weights_backbone: ImageNet weights for the backbone (see ``seglab.models.backbones``).
        output_stride: 8 (default, torchvision's) or 16.
        aux_loss: add ``aux_classifier`` (an FCN head on ``layer3``), used by ``forward_with_aux`` only.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32, any H, W.
    Differences from the paper (Long et al. 2015): this is not its FCN-8s (the ``FCN`` class above): no skip
    connections and no learned upsampling; the resolution comes from dilation (Chen et al. 2017) instead.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", weights_backbone: object = None,
                 output_stride: int = 8, aux_loss: bool = False) -> None:
        super().__init__()
        if backbone not in RESNETS:
            raise ValueError(f"unknown DilatedFCN backbone {backbone!r}; valid: {', '.join(RESNETS)}")
        if output_stride not in (8, 16):
            raise ValueError(f"DilatedFCN output_stride must be 8 or 16; got {output_stride!r}")
        self.num_classes, self.output_stride, self.in_channels = num_classes, output_stride, 3
        self.backbone = ResNetBackbone(backbone, output_stride=output_stride, weights=weights_backbone)
        self.classifier = AuxHead(self.backbone.channels["layer4"], num_classes)  # torchvision's FCNHead
        self.aux_classifier = AuxHead(self.backbone.channels["layer3"], num_classes) if aux_loss else None

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone stages, ``"scores"`` (stride s) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, 3, "DilatedFCN")
        features = self.backbone(x)  # layer4: (N, C4, H/s, W/s)
        features["scores"] = self.classifier(features["layer4"])  # (N, K, H/s, W/s)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; the aux head sees ``layer3``. Needs ``aux_loss=True``."""
        if self.aux_classifier is None:
            raise RuntimeError("this DilatedFCN has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features["layer3"])  # (N, K, H/8, W/8) (H/16 at output stride 16)
        return features["logits"], F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
