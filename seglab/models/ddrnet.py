"""DDRNet: Hong, Pan, Sun & Jia, "Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation
of Road Scenes", arXiv 2101.06085, 2021 (DDRNet-23-slim and DDRNet-23).

Real-time segmentation without dilation and without a decoder: after a shared ResNet trunk (stride 8), the
network splits into two branches that run side by side, a *high-resolution* branch that stays at stride 8 and
a *low-resolution* branch that keeps halving (16, 32, 64) like a classification net. Twice, a *bilateral
fusion* adds each branch into the other (high → low: strided 3×3 convs; low → high: a 1×1 conv, then bilinear
upsampling). At stride 64 the Deep Aggregation Pyramid Pooling Module (``DAPPM``) gathers context, which is
upsampled and added to the high-resolution branch before a small head::

    stem (2 × 3×3 s2, c, H/4) ─ layer1 (c, H/4) ─ layer2 (2c, H/8) ─┬─ layer3_high (2c, H/8) ─┐ fuse3 ┌─ …
                                                                   └─ layer3_low  (4c, H/16) ─┘       └─ …
      … layer4_high (2c, H/8)  ─┐ fuse4 ┌─ layer5_high (Bottleneck, 4c, H/8) ──────────────────(+)─ head ─ ×8 ─ logits
      … layer4_low  (8c, H/32) ─┘       └─ layer5_low (Bottleneck, 16c, H/64) ─ DAPPM (4c) ─ ×8 ─┘
    auxiliary head (training only): the high-resolution branch after fuse3 (2c, H/8)

DDRNet-23-slim: c = 32, DAPPM branches 128, head 64; DDRNet-23: c = 64, 128, 128 (the authors' code).
``model.forward_features(x)`` returns ``"stem"``, ``"layer1"``, ``"layer2"``, the two branches after each
stage (``"high3"``/``"low3"``: after fuse3, ``"high4"``/``"low4"``: after fuse4, ``"high5"``/``"low5"``),
``"dappm"``, ``"scores"`` (stride 8) and ``"logits"``. The authors' Cityscapes/ImageNet state dicts load with
``convert_official_ddrnet_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .blocks import check_images

__all__ = ["DAPPM", "DDRNET_CONFIGS", "BilateralFusion", "DDRNet", "SegmentHead", "convert_official_ddrnet_state_dict"]

#: variant -> (c: trunk width, DAPPM branch width, head width); the authors' segmentation configurations
DDRNET_CONFIGS = {"23-slim": (32, 128, 64), "23": (64, 128, 128)}


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """Pre-activation order (BN → ReLU → conv), used by DAPPM and the head."""
    return [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)]


class _Basic(BasicBlock):
    """torchvision's BasicBlock (same keys) whose final ReLU can be left out (``final_relu=False``)."""

    def __init__(self, *args: object, final_relu: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out) if self.final_relu else out


class _Bottleneck(Bottleneck):
    """torchvision's Bottleneck (same keys) with expansion 2 (DDRNet's) and the final ReLU optional."""

    expansion = 2

    def __init__(self, *args: object, final_relu: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out) if self.final_relu else out


def _stage(block: type[_Basic | _Bottleneck], in_channels: int, planes: int, blocks: int,
           stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks (the first with ``stride``); the stage's output is taken *before* the last ReLU,
    because it is also summed into the other branch: every consumer applies the ReLU itself (the authors' rule)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))
    layers = [block(in_channels, planes, stride, downsample, final_relu=blocks > 1)]
    layers += [block(out_channels, planes, final_relu=i < blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers)


class BilateralFusion(nn.Module):
    """Bilateral fusion (the paper's Fig. 3): each branch receives the other, brought to its resolution.

    ``forward(high, low)`` with ``high`` ``(N, C_h, h, w)`` and ``low`` ``(N, C_l, h/2^k, w/2^k)`` returns
    ``(high + up(compression(relu(low))), low + down(relu(high)))``, same shapes: ``down`` is ``k`` strided 3×3
    conv-BN steps (ReLU between them), ``compression`` a 1×1 conv-BN to ``C_h``, ``up`` bilinear. Both sums use
    the branches as they were before the fusion.
    """

    def __init__(self, high_channels: int, low_channels: int, steps: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for step in range(steps - 1):  # the last step alone reaches C_l; the ones before it go to C_l / 2
            in_channels = high_channels if step == 0 else low_channels // 2
            layers += [*_conv_bn(in_channels, low_channels // 2, 3, 2), nn.ReLU(inplace=True)]
        layers += _conv_bn(high_channels if steps == 1 else low_channels // 2, low_channels, 3, 2)
        self.down = nn.Sequential(*layers)
        self.compression = nn.Sequential(*_conv_bn(low_channels, high_channels, 1))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_to_high = _upsample(self.compression(F.relu(low)), high.shape[-2:])  # (N, C_h, h, w)
        high_to_low = self.down(F.relu(high))  # (N, C_l, h/2^k, w/2^k)
        return high + low_to_high, low + high_to_low


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module (the paper's Fig. 5): ``(N, C_in, h, w) -> (N, C_out, h, w)``.

    Five scales: ``scales[0]`` the map itself, ``scales[1..3]`` average pools (kernel 5, 9, 17; stride 2, 4, 8),
    ``scales[4]`` a global average; each → BN → ReLU → 1×1 conv to ``C_b`` and bilinear back to ``(h, w)``.
    Hierarchically, ``y_0 = scale_0``, ``y_i = process_i(scale_i + y_(i-1))`` (``process`` = BN → ReLU → 3×3
    conv), then ``compression`` (BN → ReLU → 1×1, ``5 C_b -> C_out``) of ``cat(y_0 … y_4)`` plus ``shortcut``
    (BN → ReLU → 1×1 of the input). Training needs N ≥ 2 (BatchNorm over the 1×1 global branch).
    """

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int) -> None:
        super().__init__()
        pools: list[nn.Module] = [nn.Identity()]
        pools += [nn.AvgPool2d(2 * stride + 1, stride, stride) for stride in (2, 4, 8)]  # kernel 5, 9, 17
        pools.append(nn.AdaptiveAvgPool2d(1))
        self.scales = nn.ModuleList(nn.Sequential(pool, *_bn_relu_conv(in_channels, branch_channels, 1))
                                    for pool in pools)
        self.process = nn.ModuleList(nn.Sequential(*_bn_relu_conv(branch_channels, branch_channels, 3))
                                     for _ in range(4))
        self.compression = nn.Sequential(*_bn_relu_conv(5 * branch_channels, out_channels, 1))
        self.shortcut = nn.Sequential(*_bn_relu_conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise ValueError("DDRNet's DAPPM has BatchNorm over a global-average (1×1) branch, so training needs a "
                             f"batch of at least 2 images; got {x.shape[0]}: use batch_size >= 2, or model.eval() to "
                             "predict")
        size = x.shape[-2:]
        ys = [self.scales[0](x)]  # (N, C_b, h, w)
        for scale, process in zip(self.scales[1:], self.process):
            ys.append(process(_upsample(scale(x), size) + ys[-1]))  # (N, C_b, h, w)
        return self.compression(torch.cat(ys, dim=1)) + self.shortcut(x)  # (N, 5 C_b, h, w) -> (N, C_out, h, w)


class SegmentHead(nn.Sequential):
    """``BN → ReLU → 3×3 conv (C_in → C_mid) → BN → ReLU → 1×1 conv (→ K, with bias)``.

    Shape: ``(N, C_in, h, w) -> (N, K, h, w)``; the authors' ``segmenthead`` (final and auxiliary heads).
    """

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        layers = _bn_relu_conv(in_channels, mid_channels, 3)
        super().__init__(*layers, nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(mid_channels, num_classes, 1))


class DDRNet(nn.Module):
    """DDRNet-23-slim / DDRNet-23 (Hong et al. 2021) for semantic segmentation.

    Args:
        num_classes: K.
        variant: ``"23-slim"`` (default; 5.7 M parameters in the paper) or ``"23"`` (20.1 M); see ``DDRNET_CONFIGS``.
        aux_loss: add ``aux_classifier`` (a ``SegmentHead`` on the high-resolution branch after the first
            fusion, the paper's "deep supervision"), used by ``forward_with_aux`` only.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32, any H, W (the stride-8
    scores are interpolated to the input size). The high-resolution branch is ``ceil(H/8)`` high, the
    low-resolution one ``ceil(H/16)``, ``ceil(H/32)``, ``ceil(H/64)`` after stages 3, 4, 5. Training needs N ≥ 2.
    Parameters at K = 19: 5,695,987 (23-slim) and 20,148,947 (23), as the authors' code builds them; forward FLOPs
    at 1024×2048: 36.3 G and 143.1 G multiply-adds (what the paper's Cityscapes table calls GFLOPs).

    Differences from the paper: none in the layers (they follow the authors' released code, which the paper's
    Table and figures describe; the stem convs keep the code's biases). Upsampling inside the network goes to the
    high-resolution branch's size instead of ``H // 8``, so H and W need not be multiples of 8 (the authors' code
    needs them; at multiples of 8 the two are the same). The logits are upsampled to the input size here, as the
    authors' evaluation does outside the model.
    """

    def __init__(self, num_classes: int, *, variant: str = "23-slim", aux_loss: bool = False) -> None:
        super().__init__()
        if variant not in DDRNET_CONFIGS:
            raise ValueError(f"unknown DDRNet variant {variant!r}; valid: {', '.join(DDRNET_CONFIGS)}")
        c, dappm_channels, head_channels = DDRNET_CONFIGS[variant]
        self.num_classes, self.variant, self.in_channels, self.output_stride = num_classes, variant, 3, 8
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        )
        self.layer1 = _stage(_Basic, c, c, 2)
        self.layer2 = _stage(_Basic, c, 2 * c, 2, stride=2)
        self.layer3_low = _stage(_Basic, 2 * c, 4 * c, 2, stride=2)
        self.layer3_high = _stage(_Basic, 2 * c, 2 * c, 2)
        self.fuse3 = BilateralFusion(2 * c, 4 * c, steps=1)
        self.layer4_low = _stage(_Basic, 4 * c, 8 * c, 2, stride=2)
        self.layer4_high = _stage(_Basic, 2 * c, 2 * c, 2)
        self.fuse4 = BilateralFusion(2 * c, 8 * c, steps=2)
        self.layer5_low = _stage(_Bottleneck, 8 * c, 8 * c, 1, stride=2)  # (16c, H/64)
        self.layer5_high = _stage(_Bottleneck, 2 * c, 2 * c, 1)  # (4c, H/8)
        self.dappm = DAPPM(16 * c, dappm_channels, 4 * c)
        self.classifier = SegmentHead(4 * c, head_channels, num_classes)
        self.aux_classifier = SegmentHead(2 * c, head_channels, num_classes) if aux_loss else None
        for module in self.modules():  # the authors' initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trunk, both branches after each stage, ``"dappm"``, ``"scores"`` (stride 8) and ``"logits"``."""
        check_images(x, 3, f"DDRNet-{self.variant}")
        if self.training and x.shape[0] < 2:  # the 1/64 branch is often 1×1: BatchNorm needs 2 values per channel
            raise ValueError(f"training DDRNet needs a batch of at least 2 images (BatchNorm over its stride-64 and "
                             f"global-pooling maps); got {x.shape[0]}: use batch_size >= 2, or model.eval() to predict")
        f: dict[str, torch.Tensor] = {}
        f["stem"] = self.stem(x)  # (N, c, H/4, W/4)
        f["layer1"] = self.layer1(f["stem"])  # (N, c, H/4, W/4)
        f["layer2"] = self.layer2(F.relu(f["layer1"]))  # (N, 2c, H/8, W/8)
        trunk = F.relu(f["layer2"])
        high, low = self.fuse3(self.layer3_high(trunk), self.layer3_low(trunk))  # (N, 2c, H/8), (N, 4c, H/16)
        f["high3"], f["low3"] = high, low
        high, low = self.fuse4(self.layer4_high(F.relu(high)), self.layer4_low(F.relu(low)))  # (2c, H/8), (8c, H/32)
        f["high4"], f["low4"] = high, low
        f["high5"] = self.layer5_high(F.relu(high))  # (N, 4c, H/8, W/8)
        f["low5"] = self.layer5_low(F.relu(low))  # (N, 16c, H/64, W/64)
        f["dappm"] = self.dappm(f["low5"])  # (N, 4c, H/64, W/64)
        f["scores"] = self.classifier(f["high5"] + _upsample(f["dappm"], f["high5"].shape[-2:]))  # (N, K, H/8, W/8)
        f["logits"] = _upsample(f["scores"], x.shape[-2:])  # (N, K, H, W)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(N, K, H, W)``; the aux head sees ``"high3"``. Needs ``aux_loss=True``.
        The paper weights the auxiliary loss by 0.4."""
        if self.aux_classifier is None:
            raise RuntimeError("this DDRNet has no auxiliary head: build it with aux_loss=True")
        features = self.forward_features(x)
        aux = self.aux_classifier(features["high3"])  # (N, K, H/8, W/8)
        return features["logits"], _upsample(aux, x.shape[-2:])


_OFFICIAL_PREFIXES = (  # the authors' key prefix -> ours (segmentation/DDRNet_23*.py)
    ("conv1.", "stem."), ("layer3_.", "layer3_high."), ("layer4_.", "layer4_high."), ("layer5_.", "layer5_high."),
    ("layer3.", "layer3_low."), ("layer4.", "layer4_low."), ("layer5.", "layer5_low."),
    ("layer1.", "layer1."), ("layer2.", "layer2."),
    ("compression3.", "fuse3.compression."), ("down3.", "fuse3.down."),
    ("compression4.", "fuse4.compression."), ("down4.", "fuse4.down."),
    ("spp.scale", "dappm.scales."), ("spp.compression.", "dappm.compression."), ("spp.shortcut.", "dappm.shortcut."),
    ("final_layer.", "classifier."), ("seghead_extra.", "aux_classifier."),
)
_OFFICIAL_HEAD = {"bn1": "0", "conv1": "2", "bn2": "3", "conv2": "5"}  # segmenthead attribute -> SegmentHead index


def convert_official_ddrnet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a state dict of the authors' ``DualResNet`` (``segmentation/DDRNet_23*.py``) for ``DDRNet``.

    A ``model.`` or ``module.`` prefix (training wrappers) is dropped; ``num_batches_tracked`` entries are kept.
    Tensors are shared, not copied. Usage: ``DDRNet(19, variant="23-slim").load_state_dict(
    convert_official_ddrnet_state_dict(torch.load(path, weights_only=True)))`` (``aux_loss=True`` when the dict
    has ``seghead_extra.*``).

    Raises:
        ValueError: a key that is not part of the authors' DualResNet.
    """
    converted = {}
    for key, value in state_dict.items():
        name = key
        for wrapper in ("module.", "model."):
            name = name[len(wrapper):] if name.startswith(wrapper) else name
        new = _convert_key(name)
        if new is None:
            raise ValueError(f"unexpected key {key!r}: expected a state dict of the authors' DDRNet (DualResNet)")
        converted[new] = value
    return converted


def _convert_key(name: str) -> str | None:
    try:
        return _rename(name)
    except (ValueError, KeyError):  # a key of the right prefix but the wrong shape ("spp.process", "final_layer.x")
        return None


def _rename(name: str) -> str | None:
    if name.startswith("spp.process"):  # spp.process{i}.{j}.* -> dappm.process.{i-1}.{j}.*
        index, rest = name[len("spp.process"):].split(".", 1)
        return f"dappm.process.{int(index) - 1}.{rest}"
    for old, new in _OFFICIAL_PREFIXES:
        if not name.startswith(old):
            continue
        rest = name[len(old):]
        if old == "spp.scale":  # spp.scale{i}.{j}.*: scale0 has no pooling layer, ours has an Identity at 0
            index, layer, tail = rest.split(".", 2)
            return f"{new}{index}.{int(layer) + (1 if index == '0' else 0)}.{tail}"
        if old in ("final_layer.", "seghead_extra."):
            attribute, tail = rest.split(".", 1)
            return f"{new}{_OFFICIAL_HEAD[attribute]}.{tail}"
        return new + rest
    return None
