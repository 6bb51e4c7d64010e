"""Segmentation models built from scratch: FCN-32s/16s/8s, U-Net, DeepLabV3 and DeepLabV3+.

``build_model(name, num_classes, ...)`` builds any of them by name (``list_models()``); every model maps
``(N, 3, H, W)`` float32 images to ``(N, K, H, W)`` float32 logits at the input resolution, for any H and W,
without softmax. ``model.forward_features(x)`` returns a dict of named intermediate maps (backbone stages,
head outputs, ``"logits"``) for pictures of receptive fields and skip connections; models built with
``aux_loss=True`` (FCN, DeepLab) also have ``model.forward_with_aux(x) -> (logits, aux_logits)``.

Examples::

    build_model("unet", 4, base_channels=16)                       # small U-Net for a CPU
    build_model("deeplabv3plus", 21, backbone="resnet18", output_stride=16)
    build_model("fcn8s", 21, weights_backbone="IMAGENET1K_V1")      # the paper's VGG16 FCN-8s, pretrained
"""

from __future__ import annotations

from torch import nn

from .backbones import BACKBONES, RESNETS, ResNetBackbone, VGG16Backbone, build_backbone, load_backbone_weights
from .deeplab import ASPP, DeepLabV3, DeepLabV3Plus, convert_torchvision_state_dict
from .fcn import FCN
from .unet import UNet

__all__ = [
    "ASPP",
    "BACKBONES",
    "FCN",
    "RESNETS",
    "DeepLabV3",
    "DeepLabV3Plus",
    "ResNetBackbone",
    "UNet",
    "VGG16Backbone",
    "build_backbone",
    "build_model",
    "convert_torchvision_state_dict",
    "list_models",
    "load_backbone_weights",
]

_DEFAULT_BACKBONES = {"fcn32s": "vgg16", "fcn16s": "vgg16", "fcn8s": "vgg16", "unet": None,
                      "deeplabv3": "resnet50", "deeplabv3plus": "resnet50"}


def list_models() -> list[str]:
    """Names accepted by ``build_model``: fcn32s, fcn16s, fcn8s, unet, deeplabv3, deeplabv3plus."""
    return list(_DEFAULT_BACKBONES)


def build_model(name: str, num_classes: int, *, backbone: str | None = None, weights_backbone: object = None,
                **kwargs: object) -> nn.Module:
    """Build a segmentation model by name.

    Args:
        name: one of ``list_models()``.
        num_classes: K, the number of output channels (classes, background included).
        backbone: FCN: ``"vgg16"`` (default, the paper's) or ``"resnet18/34/50/101"``; DeepLab: ``"resnet50"``
            (default) or another ResNet; U-Net: None (default, the paper's encoder) or a ResNet name (``encoder=``).
        weights_backbone: ImageNet weights for the backbone: a torchvision weights name (``"IMAGENET1K_V1"``),
            a path to a local state dict file, or a state dict (see ``seglab.models.backbones``).
        **kwargs: passed to the model class (``FCN``: upsampling, aux_loss; ``UNet``: in_channels,
            base_channels, depth, padding, upsampling, skip_connections, batch_norm; ``DeepLabV3``/``Plus``:
            output_stride, atrous_rates, aux_loss).

    Returns:
        an ``nn.Module``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32.

    Raises:
        ValueError: unknown model or backbone name (the message lists the valid ones), bad num_classes.
    """
    if name not in _DEFAULT_BACKBONES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (K, background included); got {num_classes!r}")
    backbone = backbone or _DEFAULT_BACKBONES[name]
    if name.startswith("fcn"):
        return FCN(num_classes, variant=name[3:], backbone=backbone, weights_backbone=weights_backbone, **kwargs)
    if name == "unet":
        return UNet(num_classes, encoder=backbone, weights_backbone=weights_backbone, **kwargs)
    model_class = DeepLabV3 if name == "deeplabv3" else DeepLabV3Plus
    return model_class(num_classes, backbone=backbone, weights_backbone=weights_backbone, **kwargs)
