"""Segmentation models built from scratch: FCN-32s/16s/8s, U-Net, DeepLabV3 and DeepLabV3+, then PSPNet,
DeepLab v1 (LargeFOV) / v2 (ASPP), LR-ASPP (MobileNetV3), HRNetV2 and SegFormer.

``build_model(name, num_classes, ...)`` builds any of them by name (``list_models()``); every model maps
``(N, 3, H, W)`` float32 images to ``(N, K, H, W)`` float32 logits at the input resolution, for any H and W
(SegFormer: at least 29), without softmax. ``model.forward_features(x)`` returns a dict of named intermediate maps (backbone stages,
head outputs, ``"logits"``) for pictures of receptive fields and skip connections; models built with
``aux_loss=True`` (FCN, DeepLab, PSPNet) also have ``model.forward_with_aux(x) -> (logits, aux_logits)``.

Examples::

    build_model("unet", 4, base_channels=16)                       # small U-Net for a CPU
    build_model("deeplabv3plus", 21, backbone="resnet18", output_stride=16)
    build_model("fcn8s", 21, weights_backbone="IMAGENET1K_V1")      # the paper's VGG16 FCN-8s, pretrained
    build_model("deeplabv3", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")  # torchvision's whole model

Whole-model weights (``weights=``): torchvision's pretrained DeepLabV3 / FCN, see ``seglab.models.pretrained``.
"""

from __future__ import annotations

from torch import nn

from .backbones import BACKBONES, RESNETS, ResNetBackbone, VGG16Backbone, build_backbone, load_backbone_weights
from .deeplab import ASPP, DeepLabV3, DeepLabV3Plus
from .deeplab_v1v2 import DeepLabV1, DeepLabV2
from .fcn import FCN, DilatedFCN
from .hrnet import HRNet
from .lraspp import LRASPP
from .pretrained import PRETRAINED, build_pretrained, convert_torchvision_state_dict, list_pretrained
from .pspnet import PSPNet
from .segformer import MIT_CONFIGS, SegFormer
from .unet import UNet

__all__ = [
    "ASPP",
    "BACKBONES",
    "FCN",
    "HRNet",
    "LRASPP",
    "PSPNet",
    "SegFormer",
    "RESNETS",
    "DeepLabV3",
    "DeepLabV1",
    "DeepLabV2",
    "DeepLabV3Plus",
    "DilatedFCN",
    "PRETRAINED",
    "ResNetBackbone",
    "UNet",
    "VGG16Backbone",
    "build_backbone",
    "build_model",
    "convert_torchvision_state_dict",
    "list_models",
    "list_pretrained",
    "load_backbone_weights",
]

_DEFAULT_BACKBONES = {"fcn32s": "vgg16", "fcn16s": "vgg16", "fcn8s": "vgg16", "unet": None,
                      "deeplabv3": "resnet50", "deeplabv3plus": "resnet50", "fcn_dilated": "resnet50",
                      # beyond DeepLab (issue 9); HRNet's and SegFormer's "backbone" names the width / MiT size
                      "pspnet": "resnet50", "deeplabv1": "vgg16", "deeplabv2": "resnet101",
                      "lraspp": "mobilenet_v3_large", "hrnet": "hrnet_w18", "segformer": "mit_b0"}
_LANDMARKS = ("pspnet", "deeplabv1", "deeplabv2", "lraspp", "hrnet", "segformer")


def list_models() -> list[str]:
    """Names accepted by ``build_model``: fcn32s, fcn16s, fcn8s, unet, deeplabv3, deeplabv3plus, …, segformer."""
    return list(_DEFAULT_BACKBONES)


def build_model(name: str, num_classes: int, *, backbone: str | None = None, weights_backbone: object = None,
                weights: object = None, **kwargs: object) -> nn.Module:
    """Build a segmentation model by name.

    Args:
        name: one of ``list_models()``.
        num_classes: K, the number of output channels (classes, background included).
        backbone: FCN: ``"vgg16"`` (default, the paper's) or ``"resnet18/34/50/101"``; DeepLab: ``"resnet50"``
            (default) or another ResNet; U-Net: None (default, the paper's encoder) or a ResNet name (``encoder=``);
            PSPNet: a ResNet (``"resnet50"``); DeepLab v1: ``"vgg16"``; v2: ``"resnet101"`` (default), another
            ResNet or ``"vgg16"``; LR-ASPP: ``"mobilenet_v3_large"``; HRNet: ``"hrnet_w18"`` (default), ``w32``,
            ``w40``, ``w48``; SegFormer: ``"mit_b0"`` (default) … ``"mit_b5"``.
        weights_backbone: ImageNet weights for the backbone: a torchvision weights name (``"IMAGENET1K_V1"``),
            a path to a local state dict file, or a state dict (see ``seglab.models.backbones``).
        weights: torchvision's whole-model weights (backbone and head), e.g. ``"COCO_WITH_VOC_LABELS_V1"``
            for deeplabv3 / fcn_dilated on resnet50 / resnet101 (``list_pretrained()``; needs num_classes=21;
            see ``seglab.models.pretrained``). Not together with ``weights_backbone``.
        **kwargs: passed to the model class (``FCN``: upsampling, aux_loss; ``UNet``: in_channels,
            base_channels, depth, padding, upsampling, skip_connections, batch_norm; ``DeepLabV3``/``Plus``:
            output_stride, atrous_rates, aux_loss).

    Returns:
        an ``nn.Module``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32.

    Raises:
        ValueError: unknown model or backbone name (the message lists the valid ones), bad num_classes,
            ``weights`` for a combination without them (the message lists the valid ones).
        RuntimeError: ``weights`` cannot be downloaded (offline) or the cached file is corrupt (named).
    """
    if name not in _DEFAULT_BACKBONES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (K, background included); got {num_classes!r}")
    backbone = backbone or _DEFAULT_BACKBONES[name]
    if weights is not None:
        if weights_backbone is not None:
            raise ValueError("pass weights= (the whole model) or weights_backbone= (the backbone only), not both")
        return build_pretrained(name, num_classes, backbone=backbone, weights=weights, **kwargs)
    if name in _LANDMARKS:
        return _build_landmark(name, num_classes, backbone, weights_backbone, **kwargs)
    if name == "fcn_dilated":
        return DilatedFCN(num_classes, backbone=backbone, weights_backbone=weights_backbone, **kwargs)
    if name.startswith("fcn"):
        return FCN(num_classes, variant=name[3:], backbone=backbone, weights_backbone=weights_backbone, **kwargs)
    if name == "unet":
        return UNet(num_classes, encoder=backbone, weights_backbone=weights_backbone, **kwargs)
    model_class = DeepLabV3 if name == "deeplabv3" else DeepLabV3Plus
    return model_class(num_classes, backbone=backbone, weights_backbone=weights_backbone, **kwargs)


def _build_landmark(name: str, num_classes: int, backbone: str, weights_backbone: object, **kwargs: object) -> nn.Module:
    """PSPNet, DeepLab v1/v2, LR-ASPP, HRNet and SegFormer (see their modules for the kwargs)."""
    if name == "pspnet":
        return PSPNet(num_classes, backbone=backbone, weights_backbone=weights_backbone, **kwargs)
    if name == "deeplabv2":
        return DeepLabV2(num_classes, backbone=backbone, weights_backbone=weights_backbone, **kwargs)
    valid = {"deeplabv1": ["vgg16"], "lraspp": ["mobilenet_v3_large"], "hrnet": [f"hrnet_w{w}" for w in (18, 32, 40, 48)],
             "segformer": [f"mit_{v}" for v in MIT_CONFIGS]}[name]
    if backbone not in valid:
        raise ValueError(f"unknown {name} backbone {backbone!r}; valid: {', '.join(valid)}")
    if name == "deeplabv1":
        return DeepLabV1(num_classes, weights_backbone=weights_backbone, **kwargs)
    if name == "lraspp":
        return LRASPP(num_classes, weights_backbone=weights_backbone, **kwargs)
    if name == "hrnet":
        return HRNet(num_classes, width=int(backbone[len("hrnet_w"):]), weights_backbone=weights_backbone, **kwargs)
    if weights_backbone is not None:
        raise ValueError("segformer takes no weights_backbone: load a Hugging Face SegFormer state dict with "
                         "seglab.models.segformer.convert_hf_segformer_state_dict")
    return SegFormer(num_classes, variant=backbone[len("mit_"):], **kwargs)
