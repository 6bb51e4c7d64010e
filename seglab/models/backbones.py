"""Classification backbones that return their stage features by name: ResNet-18/34/50/101 and VGG16.

Every backbone's ``forward(x)`` returns a ``dict[str, Tensor]`` of named stage features, and has
``channels`` and ``strides`` dicts with the same keys, so a model (or a receptive-field picture)
can pick the stride-4/8/16/32 maps it needs::

    backbone = ResNetBackbone("resnet18", output_stride=8)
    feats = backbone(x)                  # x: (N, 3, H, W)
    feats["layer4"].shape                # (N, 512, H/8, W/8): layer3/4 dilated instead of strided

Submodules keep torchvision's names (``conv1``, ``layer1``…, VGG ``features.<i>``), so torchvision's
ImageNet state dicts load with ``backbone.load_torchvision_state_dict(sd)`` (ResNet: ``fc.*`` dropped;
VGG16: ``classifier.0/3`` reshaped into the convolutions ``fc6``/``fc7``, ``classifier.6`` dropped).

Pretrained weights (``weights=``): ``None``; a torchvision weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``,
``"ResNet50_Weights.IMAGENET1K_V2"``) or enum member, downloaded into the torch hub cache; a path to a
local state dict file (loaded with ``torch.load(weights_only=True)``); or a state dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from seglab.files import without_load_advice

__all__ = [
    "BACKBONES",
    "RESNETS",
    "ResNetBackbone",
    "VGG16Backbone",
    "build_backbone",
    "dilate_resnet_stage",
    "fetch_torchvision_weights",
    "load_backbone_weights",
    "load_weights_file",
]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES = ("vgg16", *RESNETS)

WeightsLike = Any  # None | str | os.PathLike | torchvision WeightsEnum member | Mapping[str, Tensor]


def dilate_resnet_stage(stage: nn.Sequential, previous_dilation: int) -> int:
    """Turn a ResNet stage's stride 2 into dilation ("atrous algorithm"); return the stage's new dilation.

    The rule is torchvision's ``replace_stride_with_dilation`` (which refuses BasicBlock, i.e. ResNet-18/34),
    written for both block types: with ``d = 2 * previous_dilation``,

    - the strided 3×3 conv of block 0 gets stride 1 and dilation ``previous_dilation`` (its input has not
      been made denser), every 3×3 conv after it (rest of block 0, all later blocks) gets dilation ``d``;
    - the 1×1 ``downsample`` conv of block 0 gets stride 1; padding equals dilation for every 3×3 conv.

    ResNet-18/34 layer3 at output stride 8: ``layer3[0].conv1`` dilation 1, ``layer3[0].conv2`` and
    ``layer3[1].conv*`` dilation 2; layer4: ``layer4[0].conv1`` 2, the rest 4. The dense output then equals
    the strided network's output on the finer grid: ``dense[..., ::k, ::k] == strided`` (tested).
    """
    dilation = 2 * previous_dilation
    for index, block in enumerate(stage):
        after_stride = index > 0
        for name, conv in block.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if name.startswith("downsample"):
                conv.stride = (1, 1)
                continue
            rate = dilation if after_stride else previous_dilation
            if conv.stride != (1, 1):
                conv.stride = (1, 1)
                rate, after_stride = previous_dilation, True
            if conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (rate, rate), (rate, rate)
    return dilation


class ResNetBackbone(nn.Module):
    """ResNet (He, Zhang, Ren, Sun 2016) without ``avgpool``/``fc``; optionally dilated (Chen et al. 2017).

    Args:
        name: one of ``RESNETS``.
        output_stride: 32 (classification net), 16 (layer4 dilated) or 8 (layer3 and layer4 dilated).
        weights: pretrained weights, see the module docstring.

    ``forward(x)`` with ``x`` ``(N, 3, H, W)`` returns (ceil division for H, W not divisible):
        ``"stem"``   ``(N, 64, H/2, W/2)`` after conv1-bn1-relu, before the max pool
        ``"layer1"`` ``(N, C1, H/4, W/4)``, ``"layer2"`` ``(N, C2, H/8, W/8)``,
        ``"layer3"`` ``(N, C3, H/min(16, s), …)``, ``"layer4"`` ``(N, C4, H/s, W/s)``;
    C = (64, 128, 256, 512) for ResNet-18/34, (256, 512, 1024, 2048) for ResNet-50/101 (see ``self.channels``).
    Differences from the paper: none for output_stride=32; dilation replaces stride at 8/16 as in DeepLab.
    """

    def __init__(self, name: str = "resnet50", *, output_stride: int = 32, weights: WeightsLike = None) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet backbone {name!r}; valid: {', '.join(RESNETS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32; got {output_stride!r}")
        resnet = getattr(torchvision.models, name)(weights=None)
        self.name, self.output_stride = name, output_stride
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.dilations = {"layer3": 1, "layer4": 1}
        dilation = 1
        for stage in {32: (), 16: ("layer4",), 8: ("layer3", "layer4")}[output_stride]:
            dilation = dilate_resnet_stage(getattr(self, stage), dilation)
            self.dilations[stage] = dilation
        wide = 4 if name in ("resnet50", "resnet101") else 1  # Bottleneck expansion
        self.channels = {"stem": 64, "layer1": 64 * wide, "layer2": 128 * wide, "layer3": 256 * wide, "layer4": 512 * wide}
        self.strides = {"stem": 2, "layer1": 4, "layer2": 8, "layer3": min(16, output_stride), "layer4": output_stride}
        if weights is not None:
            self.load_torchvision_state_dict(load_backbone_weights(name, weights))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = features["stem"] = self.relu(self.bn1(self.conv1(x)))  # (N, 64, H/2, W/2)
        x = features["layer1"] = self.layer1(self.maxpool(x))  # (N, C1, H/4, W/4)
        x = features["layer2"] = self.layer2(x)  # (N, C2, H/8, W/8)
        x = features["layer3"] = self.layer3(x)  # (N, C3, H/16, W/16) or H/8 at output_stride 8
        features["layer4"] = self.layer4(x)  # (N, C4, H/s, W/s)
        return features

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a ``torchvision.models.<name>`` state dict (its ``fc.*`` classifier is dropped)."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        _load_strict(self, state_dict, f"torchvision.models.{self.name}")


VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Backbone(nn.Module):
    """VGG16 (Simonyan & Zisserman 2015) as FCN uses it (Long et al. 2015): fc6/fc7 become convolutions.

    ``features`` is torchvision's ``vgg16().features`` (same indices); ``fc6`` = Conv 7×7 512→4096 + ReLU +
    Dropout, ``fc7`` = Conv 1×1 4096→4096 + ReLU + Dropout (weights = torchvision's ``classifier.0/3`` reshaped).

    ``forward(x)`` with ``x`` ``(N, 3, H, W)`` returns ``"pool1"``…``"pool5"`` ``(N, C, H/2^i, W/2^i)`` with
    C = 64, 128, 256, 512, 512 (floor division) and ``"fc7"`` ``(N, 4096, H/32, W/32)``.
    Differences from the paper: fc6 uses "same" padding 3 instead of the paper's ``pad=100`` on conv1_1 with
    a valid 7×7 fc6; at a 224×224 input the centre of ``fc7`` equals torchvision's classifier output (tested).
    """

    def __init__(self, weights: WeightsLike = None, *, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Sequential(nn.Conv2d(512, 4096, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout(dropout))
        for module in self.features.modules():  # torchvision's VGG initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for fc in (self.fc6[0], self.fc7[0]):  # torchvision's init of the Linear layers they replace
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        self.name, self.output_stride = "vgg16", 32
        self.channels = {"pool1": 64, "pool2": 128, "pool3": 256, "pool4": 512, "pool5": 512, "fc7": 4096}
        self.strides = {"pool1": 2, "pool2": 4, "pool3": 8, "pool4": 16, "pool5": 32, "fc7": 32}
        if weights is not None:
            self.load_torchvision_state_dict(load_backbone_weights("vgg16", weights))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        pool = 0
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pool += 1
                features[f"pool{pool}"] = x  # (N, C, H/2^pool, W/2^pool)
        features["fc7"] = self.fc7(self.fc6(x))  # (N, 4096, H/32, W/32)
        return features

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a ``torchvision.models.vgg16`` state dict: fc6/fc7 "convolutionalised", classifier.6 dropped."""
        converted = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
        if "classifier.0.weight" in state_dict and "classifier.3.weight" in state_dict:
            converted["fc6.0.weight"] = state_dict["classifier.0.weight"].reshape(4096, 512, 7, 7)
            converted["fc6.0.bias"] = state_dict["classifier.0.bias"]
            converted["fc7.0.weight"] = state_dict["classifier.3.weight"].reshape(4096, 4096, 1, 1)
            converted["fc7.0.bias"] = state_dict["classifier.3.bias"]
        _load_strict(self, converted, "torchvision.models.vgg16")


def build_backbone(name: str, *, weights: WeightsLike = None, output_stride: int = 32) -> nn.Module:
    """Build a backbone by name (one of ``BACKBONES``); VGG16 supports only ``output_stride=32``."""
    if name == "vgg16":
        if output_stride != 32:
            raise ValueError(f"vgg16 has output_stride 32 only; got {output_stride}: use a ResNet for 8 or 16")
        return VGG16Backbone(weights)
    if name in RESNETS:
        return ResNetBackbone(name, output_stride=output_stride, weights=weights)
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


def load_backbone_weights(name: str, weights: WeightsLike) -> Mapping[str, torch.Tensor]:
    """Resolve ``weights`` for torchvision model ``name`` into a state dict (torchvision's key names).

    Accepts a state dict; a path to a file (``torch.load(path, weights_only=True)``; a ``{"state_dict": …}``
    or ``{"model": …}`` wrapper is unwrapped); a torchvision weights name or enum member, downloaded with
    ``torch.hub`` into ``<torch.hub.get_dir()>/checkpoints/``, or read from there when already present.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a name that is neither a file nor one of the model's torchvision weights.
        RuntimeError: the download failed (offline) or the file is not a weights-only state dict.
    """
    if isinstance(weights, Mapping):
        return weights
    if isinstance(weights, (str, os.PathLike)) and _looks_like_path(weights):
        return load_weights_file(Path(weights))
    enum_class = torchvision.models.get_model_weights(name)
    try:
        member = enum_class.verify(weights)
    except (KeyError, TypeError):
        valid = ", ".join(enum_class.__members__)
        raise ValueError(
            f"weights_backbone={weights!r} is neither an existing file nor a {enum_class.__name__} member "
            f"({valid}); pass e.g. 'IMAGENET1K_V1' or the path to a local state dict file"
        ) from None
    return fetch_torchvision_weights(member, name, argument="weights_backbone")


def fetch_torchvision_weights(member: Any, name: str, *, argument: str = "weights") -> Mapping[str, torch.Tensor]:
    """The state dict of torchvision weights ``member``: read from the torch hub cache, else downloaded there.

    The cache file is ``<torch.hub.get_dir()>/checkpoints/<file name of member.url>`` (``$TORCH_HOME/hub/...``);
    a download is checked against the hash in the file name, a cached file is read as it is.

    Raises:
        RuntimeError: the download failed (offline: the message says where to put the file), or the cached
            file cannot be read (the message names it and says to delete it).
    """
    filename = member.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    was_cached = cached.is_file()
    try:
        return member.get_state_dict(progress=True, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - URLError/socket errors are OSErrors; a bad file raises anything
        if was_cached:
            reason = without_load_advice(str(error))  # torch's own advice (weights_only=False) would be wrong here
            raise RuntimeError(
                f"the cached weights file {cached} is corrupt or not a weights-only state dict "
                f"({type(error).__name__}: {reason}). Delete it (rm '{cached}') and run again to download it "
                f"afresh, or copy a good {filename} there."
            ) from error
        if not isinstance(error, (OSError, RuntimeError)):
            raise
        raise RuntimeError(
            f"could not get the pretrained {name} weights {member} from {member.url} ({type(error).__name__}: "
            f"{error}). Downloading needs internet access. Offline, copy {filename} into {cached.parent}/ (the "
            f"torch hub cache; set TORCH_HOME to move it), or pass a local state dict file: "
            f"{argument}='/path/to/{filename}' (loaded with torch.load(weights_only=True))."
        ) from error


def _looks_like_path(weights: str | os.PathLike) -> bool:
    text = os.fspath(weights)
    return isinstance(weights, os.PathLike) or os.sep in text or "/" in text or text.endswith((".pth", ".pt")) or Path(text).exists()


def load_weights_file(path: Path, *, argument: str = "weights_backbone") -> Mapping[str, torch.Tensor]:
    """A state dict from a local file (``torch.load(weights_only=True)``; ``state_dict``/``model`` wrappers unwrapped).

    Raises:
        FileNotFoundError: no file at ``path``. RuntimeError: not a weights-only state dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{argument} file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling of untrusted objects is refused by weights_only=True
        raise RuntimeError(
            f"could not load {path} as a weights-only state dict ({type(error).__name__}: "
            f"{without_load_advice(str(error))}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise RuntimeError(f"{path} holds a {type(loaded).__name__}, not a state dict (a dict of tensors)")
    return loaded


def _load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], expected: str) -> None:
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"the weights do not fit {expected} (expected its state dict): {error}") from error
