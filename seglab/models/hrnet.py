"""HRNet (HRNetV2 for segmentation): Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu & Xiao,
"Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020.

Instead of going down to stride 32 and back up, HRNet keeps a stride-4 stream for the whole network and adds
a lower-resolution stream at the start of each stage (strides 8, 16, 32; widths w, 2w, 4w, 8w). Inside every
HR module each stream runs 4 residual blocks, then the streams *fuse*: each output stream is the sum of all
input streams brought to its resolution (strided 3×3 convs going down, 1×1 conv + upsampling going up).
HRNetV2's segmentation head upsamples the four streams to stride 4, concatenates them (15w channels) and
classifies every pixel with two 1×1 convs::

    stem (2 × 3×3 s2, 64, H/4) ─ layer1 (4 bottlenecks, 256) ─ stage2 (1 module,  2 streams)
        ─ stage3 (4 modules, 3 streams) ─ stage4 (3 modules, 4 streams: w H/4, 2w H/8, 4w H/16, 8w H/32)
        ─ upsample all to H/4, concat (15w) ─ 1×1 conv-BN-ReLU (15w) ─ 1×1 (K) ─ ×4 ─ logits (H)

``model.forward_features(x)`` returns ``"stem"`` (after the first conv, stride 2), ``"branch1"``…``"branch4"``
(the four final streams), ``"concat"``, ``"scores"`` and ``"logits"``. timm's ``hrnet_w18`` weights load with
``convert_timm_hrnet_state_dict``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .backbones import load_weights_file
from .blocks import check_images

__all__ = ["HRModule", "HRNet", "HRNetV2Head", "convert_timm_hrnet_state_dict"]

STAGE_MODULES = (1, 4, 3)  # HR modules in stages 2, 3, 4 (the paper's Fig. 2; the same for W18 … W48)
WIDTHS = (18, 32, 40, 48)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class HRModule(nn.Module):
    """One HR module: 4 BasicBlocks per stream, then the exchange unit (fusion) across all streams.

    ``forward(xs)``: a list of ``len(channels)`` maps ``(N, channels[i], H/2^(i+2), W/2^(i+2))`` -> same shapes.
    ``fuse_layers[i][j]`` brings stream j to stream i: Identity (i = j); 1×1 conv + BN, then upsampling (j > i);
    i - j strided 3×3 conv-BN(-ReLU) steps (j < i). Output i = ReLU(sum over j).
    """

    def __init__(self, channels: tuple[int, ...], num_blocks: int = 4, fusion_upsampling: str = "bilinear") -> None:
        super().__init__()
        self.fusion_upsampling = fusion_upsampling
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(c, c) for _ in range(num_blocks))) for c in channels)
        self.fuse_layers = nn.ModuleList()
        for i, c_out in enumerate(channels):
            row = nn.ModuleList()
            for j, c_in in enumerate(channels):
                if j > i:
                    row.append(_conv_bn(c_in, c_out, 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())
                else:  # i - j halvings; only the last one changes the width, and has no ReLU
                    steps = [_conv_bn(c_in, c_in, 3, 2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, _conv_bn(c_in, c_out, 3, 2, relu=False)))
            self.fuse_layers.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]  # stream i: (N, C_i, H_i, W_i)
        fused = []
        for i, row in enumerate(self.fuse_layers):
            total = 0  # summed in stream order j = 0, 1, … (as timm, so that float rounding is the same)
            for j, layer in enumerate(row):
                y = layer(xs[j])  # (N, C_i, H_j', W_j'): stream j at width C_i (and resolution of i if j < i)
                if j > i:  # up to stream i's resolution
                    y = F.interpolate(y, size=xs[i].shape[-2:], mode=self.fusion_upsampling,
                                      **({"align_corners": False} if self.fusion_upsampling == "bilinear" else {}))
                total = total + y
            fused.append(F.relu(total))  # (N, C_i, H_i, W_i)
        return fused


class HRNetV2Head(nn.Sequential):
    """HRNetV2's representation head: ``(N, 15w, H/4, W/4)`` concat -> 1×1 conv-BN-ReLU (15w) -> 1×1 (K)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, num_classes, 1))


class HRNet(nn.Module):
    """HRNetV2-W<width> for semantic segmentation (Wang et al. 2020).

    Args:
        num_classes: K.
        width: w, the stride-4 stream's width (18, default; 32, 40, 48): streams have w, 2w, 4w, 8w channels.
        fusion_upsampling: ``"bilinear"`` (default: the paper's and its segmentation code's) or ``"nearest"``
            (its ImageNet code's and timm's: use it to reproduce timm's features exactly).
        weights_backbone: timm ``hrnet_w<width>`` weights: a state dict or a path to a file (converted with
            ``convert_timm_hrnet_state_dict``); the classification head's keys are dropped.

    Shapes: ``forward(x)``: ``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 for any H, W (stream i
    has ``ceil`` size ``H / 2^(i+2)``; upsampling goes to the exact size of the stream it joins).
    Parameters (K = 19, Cityscapes): 9,641,119 for W18; 65,859,379 for W48 (the paper's Cityscapes table: 65.9M).
    Differences from the paper: bilinear interpolation with ``align_corners=False`` (the authors' code aligns
    corners); torchvision's BasicBlock/Bottleneck (the same layers as the paper's).
    """

    def __init__(self, num_classes: int, *, width: int = 18, fusion_upsampling: str = "bilinear",
                 weights_backbone: object = None) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"HRNet width must be one of {WIDTHS}; got {width!r}")
        if fusion_upsampling not in ("bilinear", "nearest"):
            raise ValueError(f"fusion_upsampling must be 'bilinear' or 'nearest'; got {fusion_upsampling!r}")
        self.num_classes, self.in_channels, self.width, self.output_stride = num_classes, 3, width, 4
        self.stem = nn.Sequential(*_conv_bn(3, 64, 3, 2), *_conv_bn(64, 64, 3, 2))  # (N, 64, H/4, W/4)
        downsample = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=downsample), *(Bottleneck(256, 64) for _ in range(3)))
        self.channels = tuple(width * 2**i for i in range(4))  # (w, 2w, 4w, 8w)
        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        previous = (256,)
        for stage, num_modules in enumerate(STAGE_MODULES):
            current = self.channels[: stage + 2]
            transition = nn.ModuleList(  # existing streams: adapt the width if needed; new stream: 3×3 stride 2
                (nn.Identity() if previous[i] == c else _conv_bn(previous[i], c, 3)) if i < len(previous)
                else nn.Sequential(_conv_bn(previous[-1], c, 3, 2))
                for i, c in enumerate(current)
            )
            self.transitions.append(transition)
            self.stages.append(nn.Sequential(*(HRModule(current, 4, fusion_upsampling) for _ in range(num_modules))))
            previous = current
        self.head = HRNetV2Head(sum(self.channels), num_classes)
        if weights_backbone is not None:
            self.load_timm_state_dict(weights_backbone)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"stem"``, ``"branch1"``…``"branch4"``, ``"concat"``, ``"scores"`` (stride 4), ``"logits"`` (N, K, H, W)."""
        check_images(x, 3, "HRNet")
        features = {}
        y = features["stem"] = self.stem[:3](x)  # (N, 64, H/2, W/2)
        streams = [self.layer1(self.stem[3:](y))]  # [(N, 256, H/4, W/4)]
        for transition, stage in zip(self.transitions, self.stages):
            streams = [t(streams[i] if i < len(streams) else streams[-1]) for i, t in enumerate(transition)]
            for module in stage:
                streams = module(streams)  # stream i: (N, 2^i w, H/2^(i+2), W/2^(i+2))
        for i, stream in enumerate(streams):
            features[f"branch{i + 1}"] = stream
        size = streams[0].shape[-2:]
        up = [streams[0]] + [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in streams[1:]]
        features["concat"] = torch.cat(up, dim=1)  # (N, 15w, H/4, W/4)
        features["scores"] = self.head(features["concat"])  # (N, K, H/4, W/4)
        features["logits"] = F.interpolate(features["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    def load_timm_state_dict(self, weights: object) -> None:
        """Load timm ``hrnet_w<width>`` weights (state dict or file) into everything but ``head``.

        Raises:
            ValueError: a weights name (torchvision-style names do not exist for HRNet); FileNotFoundError: no
            such file; RuntimeError: tensors that do not fit.
        """
        if not isinstance(weights, Mapping):
            if isinstance(weights, str) and not Path(weights).exists() and "/" not in weights:
                raise ValueError(
                    f"HRNet weights_backbone={weights!r}: HRNet has no torchvision weights names; pass a timm "
                    f"hrnet_w{self.width} state dict or the path of one saved with torch.save(model.state_dict(), path)")
            weights = load_weights_file(Path(weights))
        expected = f"the weights do not fit timm's hrnet_w{self.width}"
        try:
            missing, unexpected = self.load_state_dict(convert_timm_hrnet_state_dict(weights), strict=False)
        except RuntimeError as error:  # a tensor of the wrong shape
            raise RuntimeError(f"{expected}: {error}") from error
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise RuntimeError(f"{expected}: missing {missing[:5]}…, unexpected {unexpected[:5]}")


_TIMM_RENAMES = (  # timm HighResolutionNet key prefix (regex) -> ours
    (r"conv1\.", "stem.0."), (r"bn1\.", "stem.1."), (r"conv2\.", "stem.3."), (r"bn2\.", "stem.4."),
    (r"layer1\.", "layer1."),
    (r"transition(\d)\.", lambda m: f"transitions.{int(m[1]) - 1}."),
    (r"stage(\d)\.", lambda m: f"stages.{int(m[1]) - 2}."),
)
_TIMM_CLASSIFICATION_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def convert_timm_hrnet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a timm ``hrnet_w18/32/40/48`` state dict (``features_only`` or not) for ``HRNet``.

    Renames only prefixes: ``conv1/bn1/conv2/bn2`` → ``stem.0/1/3/4``, ``transition<k>`` → ``transitions.<k-1>``,
    ``stage<k>`` → ``stages.<k-2>`` (inside, ``branches``/``fuse_layers`` keep timm's names and indices);
    timm's ImageNet head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``) is dropped.
    Tensors are shared, not copied.

    Raises:
        ValueError: a key that is not part of a timm HRNet state dict.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith(_TIMM_CLASSIFICATION_HEAD):
            continue
        for pattern, new in _TIMM_RENAMES:
            renamed, count = re.subn("^" + pattern, new, key)
            if count:
                converted[renamed] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: expected a timm hrnet_w18/32/40/48 state dict")
    return converted
