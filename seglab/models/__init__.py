"""Segmentation models built from scratch: FCN-32s/16s/8s, U-Net, DeepLabV3 and DeepLabV3+, then PSPNet,
DeepLab v1 (LargeFOV) / v2 (ASPP), LR-ASPP (MobileNetV3), HRNetV2 and SegFormer, then the real-time DDRNet-23-slim /
DDRNet-23 and FastFCN (JPU), and the universal Mask2Former (``seglab.models.mask2former``: its ``forward(x)`` gives log
semantic scores, ``forward(x, masks)`` its set-prediction loss). Promptable and open-vocabulary models, which do not map
an image to K class scores, are built by their own subpackages: ``seglab.models.sam``, ``seglab.models.clipseg``.

``build_model(name, num_classes, ...)`` builds any of them by name (``list_models()``) from one table,
``MODELS``: each row holds the builder, the default backbone, the backbones it accepts and the model
options (keyword arguments) it takes (``model_options(name)``). Every model maps ``(N, 3, H, W)`` float32
images to ``(N, K, H, W)`` float32 logits at the input resolution, for any H and W (SegFormer: at least
29), without softmax. ``model.forward_features(x)`` returns a dict of named intermediate maps (backbone
stages, head outputs, ``"logits"``) for pictures of receptive fields and skip connections; models built with
``aux_loss=True`` (FCN, DeepLab, PSPNet, DDRNet, FastFCN) also have ``model.forward_with_aux(x) -> (logits, aux_logits)``.

Examples::

    build_model("unet", 4, base_channels=16)                       # small U-Net for a CPU
    build_model("deeplabv3plus", 21, backbone="resnet18", output_stride=16)
    build_model("fcn8s", 21, weights_backbone="IMAGENET1K_V1")      # the paper's VGG16 FCN-8s, pretrained
    build_model("deeplabv3", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")  # torchvision's whole model

Whole-model weights (``weights=``): torchvision's pretrained DeepLabV3 / FCN, see ``seglab.models.pretrained``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .backbones import BACKBONES, RESNETS, ResNetBackbone, VGG16Backbone, build_backbone, load_backbone_weights
from .ddrnet import DDRNet
from .deeplab import ASPP, DeepLabV3, DeepLabV3Plus
from .deeplab_v1v2 import DeepLabV1, DeepLabV2
from .fastfcn import JPU, FastFCN
from .fcn import FCN, DilatedFCN
from .hrnet import HRNet
from .lraspp import LRASPP
from .mask2former import Mask2Former
from .pretrained import PRETRAINED, build_pretrained, convert_torchvision_state_dict, list_pretrained
from .pspnet import PSPNet
from .segformer import MIT_CONFIGS, SegFormer
from .unet import UNet

__all__ = [
    "ASPP",
    "BACKBONES",
    "DDRNet",
    "FCN",
    "FastFCN",
    "HRNet",
    "JPU",
    "LRASPP",
    "Mask2Former",
    "MODELS",
    "ModelSpec",
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
    "model_options",
]

#: ``builder(num_classes, backbone, weights_backbone, **options) -> nn.Module``
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model table.

    Attributes:
        builder: ``builder(num_classes, backbone, weights_backbone, **options) -> nn.Module``; ``backbone`` is
            already the default when none was given.
        default_backbone: the paper's backbone (None: U-Net's own encoder).
        backbones: the backbone names ``build_model`` accepts; None when the model class checks its
            ``backbone``/``encoder`` argument itself (its error lists the valid ones).
        options: the keyword arguments the model class takes besides ``num_classes``, ``backbone`` and
            ``weights_backbone`` (``tests/test_models.py`` checks them against the class signatures).
    """

    builder: Builder
    default_backbone: str | None
    backbones: tuple[str, ...] | None
    options: tuple[str, ...]


def _with_backbone(model_class: type[nn.Module], **fixed: object) -> Builder:
    """Builder of a class that takes ``backbone=`` and ``weights_backbone=`` (FCN, DeepLab, PSPNet)."""

    def build(num_classes: int, backbone: str, weights_backbone: object, **options: object) -> nn.Module:
        return model_class(num_classes, backbone=backbone, weights_backbone=weights_backbone, **fixed, **options)

    return build


def _fixed_backbone(model_class: type[nn.Module]) -> Builder:
    """Builder of a class with one backbone (DeepLab v1's VGG16, LR-ASPP's MobileNetV3): no ``backbone=``."""

    def build(num_classes: int, backbone: str, weights_backbone: object, **options: object) -> nn.Module:
        return model_class(num_classes, weights_backbone=weights_backbone, **options)

    return build


def _unet(num_classes: int, backbone: str | None, weights_backbone: object, **options: object) -> nn.Module:
    return UNet(num_classes, encoder=backbone, weights_backbone=weights_backbone, **options)


def _hrnet(num_classes: int, backbone: str, weights_backbone: object, **options: object) -> nn.Module:
    return HRNet(num_classes, width=int(backbone[len("hrnet_w"):]), weights_backbone=weights_backbone, **options)


def _segformer(num_classes: int, backbone: str, weights_backbone: object, **options: object) -> nn.Module:
    if weights_backbone is not None:
        raise ValueError("segformer takes no weights_backbone: load a Hugging Face SegFormer state dict with "
                         "seglab.models.segformer.convert_hf_segformer_state_dict")
    return SegFormer(num_classes, variant=backbone[len("mit_"):], **options)


def _ddrnet(variant: str) -> Builder:
    """Builder of one DDRNet variant; the registry name fixes the variant (``ddrnet23_slim``, ``ddrnet23``)."""

    def build(num_classes: int, backbone: str, weights_backbone: object, **options: object) -> nn.Module:
        if weights_backbone is not None:
            raise ValueError("ddrnet takes no weights_backbone: load the authors' state dict with "
                             "seglab.models.ddrnet.convert_official_ddrnet_state_dict")
        return DDRNet(num_classes, variant=variant, **options)

    return build


_FCN_OPTIONS = ("upsampling", "aux_loss")
_DEEPLAB_OPTIONS = ("output_stride", "atrous_rates", "aux_loss")

#: The model table, in the order the notebooks meet the models: name -> ``ModelSpec``.
MODELS: dict[str, ModelSpec] = {
    "fcn32s": ModelSpec(_with_backbone(FCN, variant="32s"), "vgg16", None, _FCN_OPTIONS),
    "fcn16s": ModelSpec(_with_backbone(FCN, variant="16s"), "vgg16", None, _FCN_OPTIONS),
    "fcn8s": ModelSpec(_with_backbone(FCN, variant="8s"), "vgg16", None, _FCN_OPTIONS),
    "unet": ModelSpec(_unet, None, None, ("in_channels", "base_channels", "depth", "padding", "upsampling",
                                          "skip_connections", "batch_norm")),
    "deeplabv3": ModelSpec(_with_backbone(DeepLabV3), "resnet50", None, _DEEPLAB_OPTIONS),
    "deeplabv3plus": ModelSpec(_with_backbone(DeepLabV3Plus), "resnet50", None, _DEEPLAB_OPTIONS),
    "fcn_dilated": ModelSpec(_with_backbone(DilatedFCN), "resnet50", None, ("output_stride", "aux_loss")),
    # beyond DeepLab (issue 9); HRNet's and SegFormer's "backbone" names the width / the MiT size
    "pspnet": ModelSpec(_with_backbone(PSPNet), "resnet50", None, ("bins", "aux_loss")),
    "deeplabv1": ModelSpec(_fixed_backbone(DeepLabV1), "vgg16", ("vgg16",),
                           ("fc6_kernel_size", "fc6_dilation", "fc_channels", "dropout", "output_stride")),
    "deeplabv2": ModelSpec(_with_backbone(DeepLabV2), "resnet101", None, ("atrous_rates", "output_stride")),
    "lraspp": ModelSpec(_fixed_backbone(LRASPP), "mobilenet_v3_large", ("mobilenet_v3_large",), ("inter_channels",)),
    "hrnet": ModelSpec(_hrnet, "hrnet_w18", tuple(f"hrnet_w{w}" for w in (18, 32, 40, 48)), ("fusion_upsampling",)),
    "segformer": ModelSpec(_segformer, "mit_b0", tuple(f"mit_{v}" for v in MIT_CONFIGS), ("drop_path_rate",)),
    # real time (issue 22): two resolutions side by side; stride-8 features without dilating the backbone
    "ddrnet23_slim": ModelSpec(_ddrnet("23-slim"), "ddrnet23_slim", ("ddrnet23_slim",), ("aux_loss",)),
    "ddrnet23": ModelSpec(_ddrnet("23"), "ddrnet23", ("ddrnet23",), ("aux_loss",)),
    "fastfcn": ModelSpec(_with_backbone(FastFCN), "resnet50", None, ("jpu_width", "atrous_rates", "aux_loss")),
    # universal segmentation (issue 19): mask classification, masked attention, set prediction; ResNet-18 by default
    # (the laptop size; the paper's smallest backbone is ResNet-50)
    "mask2former": ModelSpec(_with_backbone(Mask2Former), "resnet18", None,
                             ("num_queries", "hidden_dim", "dec_layers", "enc_layers", "num_heads", "dim_feedforward",
                              "encoder_feedforward_dim", "num_points", "class_weight", "mask_weight", "dice_weight",
                              "no_object_weight", "ignore_index", "thing_classes")),
}


def list_models() -> list[str]:
    """Names accepted by ``build_model``: fcn32s, fcn16s, fcn8s, unet, deeplabv3, deeplabv3plus, …, segformer,
    ddrnet23_slim, ddrnet23, fastfcn, mask2former."""
    return list(MODELS)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return MODELS[name]


def model_options(name: str) -> tuple[str, ...]:
    """The keyword arguments model ``name`` takes besides ``num_classes``, ``backbone``, ``weights_backbone``
    and ``weights`` (e.g. ``model_options("deeplabv3") == ("output_stride", "atrous_rates", "aux_loss")``).

    Raises:
        ValueError: unknown model (the message lists the valid ones).
    """
    return _spec(name).options


def build_model(name: str, num_classes: int, *, backbone: str | None = None, weights_backbone: object = None,
                weights: object = None, **kwargs: object) -> nn.Module:
    """Build a segmentation model by name (a row of ``MODELS``).

    Args:
        name: one of ``list_models()``.
        num_classes: K, the number of output channels (classes, background included).
        backbone: FCN: ``"vgg16"`` (default, the paper's) or ``"resnet18/34/50/101"``; DeepLab: ``"resnet50"``
            (default) or another ResNet; U-Net: None (default, the paper's encoder) or a ResNet name (``encoder=``);
            PSPNet: a ResNet (``"resnet50"``); DeepLab v1: ``"vgg16"``; v2: ``"resnet101"`` (default), another
            ResNet or ``"vgg16"``; LR-ASPP: ``"mobilenet_v3_large"``; HRNet: ``"hrnet_w18"`` (default), ``w32``,
            ``w40``, ``w48``; SegFormer: ``"mit_b0"`` (default) … ``"mit_b5"``; DDRNet: its own (``"ddrnet23_slim"`` /
            ``"ddrnet23"``, the default); FastFCN: a ResNet (``"resnet50"``); Mask2Former: a ResNet (``"resnet18"``).
        weights_backbone: ImageNet weights for the backbone: a torchvision weights name (``"IMAGENET1K_V1"``),
            a path to a local state dict file, or a state dict (see ``seglab.models.backbones``).
        weights: torchvision's whole-model weights (backbone and head), e.g. ``"COCO_WITH_VOC_LABELS_V1"``
            for deeplabv3 / fcn_dilated on resnet50 / resnet101 (``list_pretrained()``; needs num_classes=21;
            see ``seglab.models.pretrained``). Not together with ``weights_backbone``.
        **kwargs: the model's options, passed to its class (``model_options(name)``; ``FCN``: upsampling,
            aux_loss; ``UNet``: in_channels, base_channels, depth, padding, upsampling, skip_connections,
            batch_norm; ``DeepLabV3``/``Plus``: output_stride, atrous_rates, aux_loss; see ``MODELS``).

    Returns:
        an ``nn.Module``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32.

    Raises:
        ValueError: unknown model or backbone name (the message lists the valid ones), bad num_classes, an
            option the model does not take (the message lists the ones it takes), ``weights`` for a
            combination without them (the message lists the valid ones).
        RuntimeError: ``weights`` cannot be downloaded (offline) or the cached file is corrupt (named).
    """
    spec = _spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (K, background included); got {num_classes!r}")
    backbone = backbone or spec.default_backbone
    if weights is not None:  # the weights fix the architecture: build_pretrained names the options they leave free
        if weights_backbone is not None:
            raise ValueError("pass weights= (the whole model) or weights_backbone= (the backbone only), not both")
        return build_pretrained(name, num_classes, backbone=backbone, weights=weights, **kwargs)
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        raise ValueError(f"model {name!r} takes no option {', '.join(unknown)}; its options: "
                         f"{', '.join(spec.options)} (and backbone, weights_backbone, weights)")
    if spec.backbones is not None and backbone not in spec.backbones:
        raise ValueError(f"unknown {name} backbone {backbone!r}; valid: {', '.join(spec.backbones)}")
    return spec.builder(num_classes, backbone, weights_backbone, **kwargs)
