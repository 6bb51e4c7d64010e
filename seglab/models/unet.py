"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015.

A contracting path (``DoubleConv`` then ``Down`` = max pool 2×2 + DoubleConv, channels doubling) and an
expanding path (``Up`` = up-conv 2×2 halving the channels, concatenation with the skip from the same
level, DoubleConv), then a 1×1 convolution to K classes. Paper: ``base_channels=64``, ``depth=4``
(64→1024 channels), valid 3×3 convolutions (572×572 input tile → 388×388 output), no BatchNorm.

Intermediate maps for teaching: ``model.encoder[i]`` (i = 0 … depth; output at stride 2^i, i = depth is the
bottleneck) and ``model.decoder[j]`` (j = 0 … depth-1, coarse to fine) are the paper's boxes;
``model.forward_features(x)`` returns their outputs as ``"encoder.i"`` / ``"decoder.j"`` and ``"logits"``.
With ``encoder="resnet34"`` (etc.) ``model.encoder`` is a ``ResNetBackbone`` and its stage names
(``stem``, ``layer1``…``layer4``) appear instead of ``encoder.i``; the decoder then has five ``Up`` blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import RESNETS, ResNetBackbone
from .blocks import ConvBNReLU, check_images, pad_to_multiple

__all__ = ["UNet", "DoubleConv", "Down", "Up"]

RESNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # decoder widths with a ResNet encoder (stride 16 … 1)


class DoubleConv(nn.Sequential):
    """Two (3×3 conv → [BN] → ReLU): ``(N, C_in, H, W) -> (N, C_out, H', W')``, H' = H ("same") or H - 4 ("valid")."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: str = "same", batch_norm: bool = True) -> None:
        pad = 1 if padding == "same" else 0
        super().__init__(
            ConvBNReLU(in_channels, out_channels, 3, padding=pad, batch_norm=batch_norm),
            ConvBNReLU(out_channels, out_channels, 3, padding=pad, batch_norm=batch_norm),
        )


class Down(nn.Sequential):
    """Max pool 2×2 → DoubleConv: ``(N, C_in, H, W) -> (N, C_out, H/2, W/2)`` (minus 4 when "valid")."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: str = "same", batch_norm: bool = True) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, padding=padding, batch_norm=batch_norm))


class Up(nn.Module):
    """Up-conv ×2 (C_in → C_in/2) → centre-crop the skip and concatenate → DoubleConv(→ C_out).

    ``upsampling="transpose"``: ConvTranspose 2×2 stride 2 (the paper's "up-conv 2×2");
    ``"bilinear"``: bilinear ×2 then a 1×1 conv halving the channels (a departure, no checkerboard pattern).
    ``forward(x, skip)``: ``(N, C_in, h, w)``, ``(N, C_skip, H_s, W_s)`` or None -> ``(N, C_out, 2h', 2w')``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        upsampling: str = "transpose",
        padding: str = "same",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(in_channels, in_channels // 2, 1)
            )
        self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels, padding=padding, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)  # (N, C_in/2, 2h, 2w)
        if skip is not None:
            top, left = (skip.shape[-2] - x.shape[-2]) // 2, (skip.shape[-1] - x.shape[-1]) // 2
            skip = skip[..., top : top + x.shape[-2], left : left + x.shape[-1]]  # centre crop ("valid" only)
            x = torch.cat([skip, x], dim=1)  # (N, C_skip + C_in/2, 2h, 2w)
        return self.conv(x)  # (N, C_out, 2h, 2w), minus 4 when "valid"


class UNet(nn.Module):
    """U-Net (Ronneberger, Fischer & Brox 2015).

    Args:
        num_classes: K.
        in_channels: image channels (the paper: 1; seglab's images: 3).
        base_channels: channels of the first level, doubled per level (paper 64; default 64; 8-16 for CPU).
        depth: number of poolings (paper 4; default 4).
        padding: ``"same"`` (default) or ``"valid"`` (the paper's unpadded convolutions and skip cropping).
        upsampling: ``"transpose"`` (paper's up-conv 2×2) or ``"bilinear"`` (bilinear + 1×1 conv).
        skip_connections: False removes the concatenations (the ablation: an encoder-decoder without skips).
        batch_norm: BatchNorm after every conv (default True; the paper has none).
        encoder: None (the paper's encoder) or a ResNet name (``"resnet18"`` … ``"resnet101"``) from torchvision;
            then base_channels/depth must stay None, padding must be "same", in_channels must be 3.
        weights_backbone: ImageNet weights for the ResNet encoder (see ``seglab.models.backbones``).

    Shapes: ``forward(x)``: ``(N, C_in, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 for any H, W.
    ``"same"``: the input is zero-padded (bottom/right) to a multiple of 2^depth (32 with a ResNet encoder)
    and the logits cropped back. ``"valid"``: the paper's overlap-tile strategy — the input is mirrored by
    ``margin = 2 * (3 * 2^depth - 2)`` pixels on each side (92 at depth 4) and to a valid tile size, the
    network returns the centre ``output_size(tile)``, which covers the input exactly. ``forward_tile(x)`` runs
    the bare network (paper Fig. 1: 572×572 → 388×388); ``output_size`` and ``input_size_for`` give the sizes.

    Differences from the paper: "same" padding and BatchNorm by default (``padding="valid", batch_norm=False``
    is the paper's); 3-channel input; optional bilinear upsampling and ResNet encoder; no dropout at the
    bottleneck (the paper's "drop-out layers at the end of the contracting path").
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        base_channels: int | None = None,
        depth: int | None = None,
        padding: str = "same",
        upsampling: str = "transpose",
        skip_connections: bool = True,
        batch_norm: bool = True,
        encoder: str | None = None,
        weights_backbone: object = None,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'; got {padding!r}")
        if upsampling not in ("transpose", "bilinear"):
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear'; got {upsampling!r}")
        self.num_classes, self.in_channels, self.padding = num_classes, in_channels, padding
        self.skip_connections = skip_connections
        options = {"upsampling": upsampling, "padding": padding, "batch_norm": batch_norm}
        if encoder is None:
            if weights_backbone is not None:
                raise ValueError("weights_backbone needs a pretrained encoder: pass encoder='resnet34' (or another ResNet)")
            base, self.depth = base_channels or 64, depth or 4
            channels = [base * 2**level for level in range(self.depth + 1)]  # 64, 128, … 1024
            self.encoder = nn.ModuleList([DoubleConv(in_channels, base, padding=padding, batch_norm=batch_norm)])
            self.encoder.extend(Down(c_in, c_out, padding=padding, batch_norm=batch_norm) for c_in, c_out in zip(channels, channels[1:]))
            skips = [c if skip_connections else 0 for c in channels[:-1]]
            self.decoder = nn.ModuleList(
                Up(channels[level + 1], skips[level], channels[level], **options) for level in reversed(range(self.depth))
            )
            self.multiple, head_channels = 2**self.depth, base
        else:
            if encoder not in RESNETS:
                raise ValueError(f"unknown U-Net encoder {encoder!r}; valid: {', '.join(RESNETS)} (or None)")
            if base_channels is not None or depth is not None or padding != "same" or in_channels != 3:
                raise ValueError("a ResNet encoder fixes the widths and depth: leave base_channels/depth unset, "
                                 "use padding='same' and in_channels=3")
            self.encoder = ResNetBackbone(encoder, weights=weights_backbone)
            self.stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")
            enc = [self.encoder.channels[name] for name in self.stage_names]
            skips = [c if skip_connections else 0 for c in enc[:-1]][::-1] + [0]  # stride 16, 8, 4, 2, none
            widths = (enc[-1], *RESNET_DECODER_CHANNELS)
            self.decoder = nn.ModuleList(Up(widths[i], skips[i], widths[i + 1], **options) for i in range(5))
            self.depth, self.multiple, head_channels = 5, 32, RESNET_DECODER_CHANNELS[-1]
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward_tile(self, x: torch.Tensor) -> torch.Tensor:
        """The bare network: ``(N, C_in, h, w) -> (N, K, output_size(h), output_size(w))``, no padding.

        "valid": h, w must be valid tile sizes (see ``output_size``); "same": multiples of ``self.multiple``.
        """
        return self._run(x)["logits"]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All named intermediate maps (padded / mirrored resolution) and ``"logits"`` ``(N, K, H, W)``."""
        check_images(x, self.in_channels, "UNet")
        h, w = x.shape[-2:]
        if self.padding == "same":
            x = pad_to_multiple(x, self.multiple)  # (N, C_in, ceil(H/m)*m, ceil(W/m)*m)
        else:
            tile_h, tile_w = self.input_size_for((h, w))
            m = self.margin
            x = _mirror_pad(x, m, tile_w - w - m, m, tile_h - h - m)  # (N, C_in, tile_h, tile_w)
        features = self._run(x)
        features["logits"] = features["logits"][..., :h, :w]  # (N, K, H, W)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` float32 -> logits ``(N, K, H, W)`` float32 (no softmax)."""
        return self.forward_features(x)["logits"]

    @property
    def margin(self) -> int:
        """Context lost on each side in "valid" mode: ``2 * (3 * 2^depth - 2)`` (92 at depth 4); 0 for "same"."""
        return 2 * (3 * 2**self.depth - 2) if self.padding == "valid" else 0

    def output_size(self, input_size: int | tuple[int, int]) -> int | tuple[int, int]:
        """Output size of ``forward_tile`` for an input tile size (int or ``(h, w)``); raises ValueError if invalid."""
        if not isinstance(input_size, int):
            return tuple(self.output_size(n) for n in input_size)  # type: ignore[return-value]
        if self.padding == "same":
            if input_size % self.multiple:
                raise ValueError(f"forward_tile needs sizes divisible by {self.multiple}; got {input_size} (forward pads for you)")
            return input_size
        size = self._valid_output(input_size)
        if size is None:
            low = next((n for n in range(input_size - 1, 0, -1) if self._valid_output(n)), None)
            high = next(n for n in range(input_size + 1, input_size + 4 * self.margin + 2**self.depth) if self._valid_output(n))
            raise ValueError(f"{input_size} is not a valid U-Net tile size with padding='valid' (a 2×2 max pool would get an "
                             f"odd size, or the output would be empty); nearest valid sizes: {low}, {high}")
        return size

    def input_size_for(self, output_size: int | tuple[int, int]) -> int | tuple[int, int]:
        """Smallest valid tile whose ``output_size`` is at least ``output_size`` (int or ``(h, w)``)."""
        if not isinstance(output_size, int):
            return tuple(self.input_size_for(n) for n in output_size)  # type: ignore[return-value]
        if self.padding == "same":
            return -(-output_size // self.multiple) * self.multiple
        size = output_size + 2 * self.margin
        while self._valid_output(size) is None:
            size += 1
        return size

    def _valid_output(self, size: int) -> int | None:
        """Output size of a tile in "valid" mode, or None when the tile size is not valid."""
        for _ in range(self.depth):
            size -= 4  # two unpadded 3×3 convs
            if size <= 0 or size % 2:
                return None
            size //= 2  # max pool 2×2
        size -= 4  # bottleneck convs
        if size <= 0:
            return None
        for _ in range(self.depth):
            size = 2 * size - 4  # up-conv ×2, two unpadded 3×3 convs
        return size if size > 0 else None

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] = {}
        if isinstance(self.encoder, ResNetBackbone):
            features.update(self.encoder(x))  # stem (H/2) … layer4 (N, C4, H/32, W/32)
            skips = [features[name] for name in self.stage_names[:-1]]
            x = features["layer4"]
        else:
            skips = []
            for level, block in enumerate(self.encoder):
                x = features[f"encoder.{level}"] = block(x)  # (N, base*2^level, H/2^level, W/2^level)
                skips.append(x)
            skips.pop()  # the bottleneck output is not a skip
        for index, up in enumerate(self.decoder):
            skip = skips[-1 - index] if self.skip_connections and index < len(skips) else None
            x = features[f"decoder.{index}"] = up(x, skip)  # (N, C, 2h, 2w): one level finer
        features["logits"] = self.classifier(x)  # (N, K, H, W)
        return features


def _mirror_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Reflect-pad ``(N, C, H, W)``, repeating the reflection when a pad exceeds the image (paper Fig. 2)."""
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"padding='valid' mirrors the input and needs it at least 2×2; got {tuple(x.shape[-2:])}")
    while left or right or top or bottom:
        h, w = x.shape[-2:]
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x
