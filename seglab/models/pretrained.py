"""torchvision's pretrained segmentation models, loaded into seglab's own classes.

torchvision publishes whole-model weights (backbone *and* head) for five of the architectures seglab builds.
``build_model(name, 21, backbone=..., weights=...)`` loads them::

    build_model("deeplabv3", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")

==========================  ==================================  ==============================
seglab (model, backbone)    torchvision builder / weights enum  seglab class it loads into
==========================  ==================================  ==============================
deeplabv3, resnet50         deeplabv3_resnet50                  ``DeepLabV3`` (output stride 8)
deeplabv3, resnet101        deeplabv3_resnet101                 ``DeepLabV3`` (output stride 8)
fcn_dilated, resnet50       fcn_resnet50                        ``DilatedFCN`` (output stride 8)
fcn_dilated, resnet101      fcn_resnet101                       ``DilatedFCN`` (output stride 8)
lraspp, mobilenet_v3_large  lraspp_mobilenet_v3_large           ``LRASPP``
==========================  ==================================  ==============================

Weights names are torchvision's enum members: ``"COCO_WITH_VOC_LABELS_V1"`` (= ``"DEFAULT"``), also written
``"DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"``. They were trained on the COCO train2017 images that
contain the 20 VOC categories, with VOC's 21 labels (background + 20), so they need ``num_classes=21``.
torchvision's published figures (``meta["_metrics"]`` of each enum member, see ``published_metrics``) are
measured on COCO val2017 with VOC labels, **not on VOC val**: deeplabv3_resnet50 mIoU 66.4 (pixel accuracy
92.4), deeplabv3_resnet101 67.4, fcn_resnet50 60.5, fcn_resnet101 63.7, lraspp_mobilenet_v3_large 57.9.
seglab has not measured any of them on VOC val.

The files come from torch hub's cache, ``$TORCH_HOME/hub/checkpoints/<file name of the URL>`` (e.g.
``deeplabv3_resnet50_coco-cd0a2569.pth``), downloaded there on first use. The state dicts are renamed for
seglab's classes by ``convert_torchvision_state_dict``; the loaded model then gives the same logits as
torchvision's model with the same weights (tested on random weights saved under torchvision's file names).
torchvision evaluates them after resizing the shorter image side to 520 px; seglab's evaluation keeps the
image size unless ``max_size`` is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from .backbones import fetch_torchvision_weights, load_weights_file
from .deeplab import DeepLabV3
from .deeplab import convert_torchvision_state_dict as _convert_deeplab
from .fcn import DilatedFCN
from .lraspp import LRASPP, convert_torchvision_lraspp_state_dict

__all__ = [
    "PRETRAINED",
    "build_pretrained",
    "convert_torchvision_state_dict",
    "list_pretrained",
    "published_metrics",
    "resolve_weights",
]

#: (seglab model name, backbone) -> torchvision builder name, whose weights enum lists the weights.
PRETRAINED: dict[tuple[str, str], str] = {
    ("deeplabv3", "resnet50"): "deeplabv3_resnet50",
    ("deeplabv3", "resnet101"): "deeplabv3_resnet101",
    ("fcn_dilated", "resnet50"): "fcn_resnet50",
    ("fcn_dilated", "resnet101"): "fcn_resnet101",
    ("lraspp", "mobilenet_v3_large"): "lraspp_mobilenet_v3_large",
}
# seglab model -> (its class, the options the weights leave free with their defaults = torchvision's settings)
_SPECS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "deeplabv3": (DeepLabV3, {"output_stride": 8, "aux_loss": True}),
    "fcn_dilated": (DilatedFCN, {"output_stride": 8, "aux_loss": True}),
    "lraspp": (LRASPP, {}),
}


# torchvision fcn_resnet50/101 keys: the ResNet stages and the two FCNHeads' five layers (conv, BN, ReLU, Dropout, conv)
_FCN_KEY = re.compile(r"^(backbone\.(conv1|bn1|layer[1-4])\.|(aux_)?classifier\.[0-4]\.[a-z_]+$)")


def _is_path(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and ("/" in weights or os.sep in weights or weights.endswith((".pth", ".pt")))


def list_pretrained() -> dict[tuple[str, str], list[str]]:
    """``{(model, backbone): [weights names]}`` for every combination with torchvision weights."""
    return {key: list(torchvision.models.get_model_weights(builder).__members__) for key, builder in PRETRAINED.items()}


def _valid_text() -> str:
    return "; ".join(f"model={m!r} backbone={b!r}: {', '.join(names)}" for (m, b), names in list_pretrained().items())


def resolve_weights(model: str, backbone: str, weights: Any) -> Any:
    """The torchvision weights enum member named by ``weights`` for ``(model, backbone)``.

    ``weights``: ``"COCO_WITH_VOC_LABELS_V1"``, ``"DEFAULT"``, ``"<Enum>.<member>"`` or an enum member.

    Raises:
        ValueError: no torchvision weights for ``(model, backbone)``, or no such weights name; the message
            lists every valid combination (and points ImageNet names to ``weights_backbone``).
    """
    builder = PRETRAINED.get((model, backbone))
    if builder is None:
        hint = (" (torchvision's FCN weights are for its dilated FCN: use model 'fcn_dilated')"
                if model.startswith("fcn") and backbone in ("resnet50", "resnet101") else "")
        raise ValueError(
            f"no pretrained whole-model weights for model={model!r} backbone={backbone!r}{hint}. "
            f"Valid: {_valid_text()}. For ImageNet backbone weights only, use weights_backbone='IMAGENET1K_V1'."
        )
    enum_class = torchvision.models.get_model_weights(builder)
    try:
        return enum_class.verify(weights)
    except (KeyError, TypeError, ValueError):
        hint = " (ImageNet backbone weights: pass them as weights_backbone=)" if "IMAGENET" in str(weights) else ""
        raise ValueError(
            f"weights={weights!r} is not a {enum_class.__name__} member{hint}; for model={model!r} "
            f"backbone={backbone!r} use one of {', '.join(enum_class.__members__)}. Valid: {_valid_text()}."
        ) from None


def published_metrics(model: str, backbone: str, weights: Any = "DEFAULT") -> dict[str, dict[str, float]]:
    """torchvision's published figures for these weights, e.g. ``{"COCO-val2017-VOC-labels": {"miou": 66.4, ...}}``.

    Read from torchvision's enum (``meta["_metrics"]``), not measured by seglab.
    """
    return dict(resolve_weights(model, backbone, weights).meta["_metrics"])


def convert_torchvision_state_dict(state_dict: Mapping[str, torch.Tensor], model: str = "deeplabv3") -> dict[str, torch.Tensor]:
    """Rename a torchvision segmentation state dict's keys for seglab's class of ``model``.

    ``model="deeplabv3"``: torchvision's ``deeplabv3_resnet50/101`` -> ``DeepLabV3`` (ASPP and classifier keys
    renamed, see ``seglab.models.deeplab.convert_torchvision_state_dict``). ``model="fcn_dilated"``:
    ``fcn_resnet50/101`` -> ``DilatedFCN``, whose keys already are torchvision's (checked, not renamed).
    ``model="lraspp"``: ``lraspp_mobilenet_v3_large`` -> ``LRASPP`` (``seglab.models.lraspp``).
    Tensors are shared, not copied.

    Raises:
        ValueError: an unknown ``model``, or a key that does not belong to that torchvision model.
    """
    if model == "deeplabv3":
        return _convert_deeplab(state_dict)
    if model == "fcn_dilated":
        for key in state_dict:
            if not _FCN_KEY.match(key):
                raise ValueError(f"unexpected key {key!r}: expected a torchvision fcn_resnet50/101 state dict")
        return dict(state_dict)
    if model == "lraspp":
        return convert_torchvision_lraspp_state_dict(state_dict)
    raise ValueError(f"no torchvision state dict converter for model {model!r}; valid: {', '.join(_SPECS)}")


def build_pretrained(model: str, num_classes: int, *, backbone: str, weights: Any, **kwargs: Any) -> nn.Module:
    """``model`` on ``backbone`` with torchvision's whole-model ``weights`` loaded (``strict=True``).

    Args:
        model, backbone: a key of ``PRETRAINED``.
        num_classes: must be 21 (the weights' VOC labels).
        weights: a weights name or enum member (``resolve_weights``), a path to a file holding a torchvision
            state dict of that model, or such a state dict.
        kwargs: DeepLabV3 and DilatedFCN: ``output_stride`` (default 8, torchvision's), ``aux_loss`` (default
            True: the weights include the auxiliary head; False drops it). LR-ASPP: none. Other model options
            raise (the weights fix the architecture).

    Returns:
        the seglab model in training mode (call ``.eval()`` to predict), on the CPU.

    Raises:
        ValueError: no such weights (the valid ones are listed), ``num_classes`` other than 21, other options,
            a file or state dict of another model (named).
        RuntimeError: the file cannot be downloaded (offline) or is corrupt (named, with "delete it"), or
            its tensors do not fit the model.
    """
    resolve_weights(model, backbone, "DEFAULT")  # raises, listing the valid ones, for a combination without weights
    model_class, free = _SPECS[model]
    unknown = sorted(set(kwargs) - set(free))
    if unknown:
        raise ValueError(f"{unknown} cannot be set with weights={weights!r}: the weights fix the architecture")
    if isinstance(weights, Mapping):
        state_dict, source = weights, "the given state dict"
    elif _is_path(weights):
        state_dict, source = load_weights_file(Path(weights), argument="weights"), str(weights)
    else:
        member = resolve_weights(model, backbone, weights)
        categories = member.meta["categories"]
        if num_classes != len(categories):
            raise ValueError(
                f"weights={weights!r} predict {len(categories)} classes (VOC's: {', '.join(categories[:3])}, ...), "
                f"not num_classes={num_classes}: use num_classes={len(categories)}, or weights_backbone= for an "
                "ImageNet backbone with a new head"
            )
        state_dict, source = fetch_torchvision_weights(member, PRETRAINED[(model, backbone)]), member.url
    options = {**free, **{k: v for k, v in kwargs.items() if v is not None}}
    if model_class is LRASPP:
        net = LRASPP(num_classes, **options)
    else:
        net = model_class(num_classes, backbone=backbone, **options)
    try:
        converted = convert_torchvision_state_dict(state_dict, model)
    except ValueError as error:
        raise ValueError(f"the weights from {source} are not torchvision's {PRETRAINED[(model, backbone)]}: {error}") from None
    if not options.get("aux_loss", False):
        converted = {k: v for k, v in converted.items() if not k.startswith("aux_classifier.")}
    mismatch = _mismatch(net.state_dict(), converted)
    if mismatch:
        raise RuntimeError(
            f"the weights from {source} do not fit {model} on {backbone} with {num_classes} classes "
            f"(expected torchvision's {PRETRAINED[(model, backbone)]} state dict): {mismatch}"
        )
    net.load_state_dict(converted, strict=True)
    return net


def _mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """A one-line summary of the keys and shapes that differ ("" when ``given`` fits ``expected``)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and tuple(given[k].shape) != tuple(v.shape)]
    parts = [f"{len(items)} {what} (e.g. {', '.join(items[:2])})"
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches, file vs model", shapes)) if items]
    return "; ".join(parts)
