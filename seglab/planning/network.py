"""The U-Net a plan describes: nnU-Net's plain convolutional U-Net, built from a :class:`~seglab.planning.Plan`.

Isensee et al., Nature Methods 2021 (Online Methods, "Network architecture template"): a U-Net whose every
stage has two (conv 3x3 -> instance norm -> leaky ReLU) blocks; it downsamples with a *strided* first
convolution (not max-pooling), upsamples with transposed convolutions of the same stride, concatenates the
encoder's map of that resolution, and ends in a 1x1 convolution. Widths, strides and kernel sizes come
from the plan (``seglab.planning.topology``). Written from the paper and checked against
``dynamic_network_architectures``' ``PlainConvUNet`` (the network nnunetv2 trains): same parameters, same
logits (``tests/test_planning.py``).

Shapes: ``(N, C_in, H, W)`` float32 -> logits ``(N, K, H, W)``, with H and W multiples of ``plan.divisor``
(the patch size is one). Differences from nnunetv2: no deep-supervision heads (nnunetv2 trains with a loss
on every decoder stage); seglab's engine trains it with its own loss (cross-entropy by default, not Dice +
cross-entropy) and optimizer.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.planning.plan import Plan

__all__ = ["PlainUNet", "ConvNormAct"]


class ConvNormAct(nn.Sequential):
    """conv (bias, "same" padding, ``stride``) -> InstanceNorm2d (affine) -> LeakyReLU(0.01): nnU-Net's block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int] = (1, 1)) -> None:
        padding = tuple(k // 2 for k in kernel_size)
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
                         nn.InstanceNorm2d(out_channels, eps=1e-5, affine=True), nn.LeakyReLU(0.01, inplace=True))


class PlainUNet(nn.Module):
    """nnU-Net's 2-D U-Net for a plan (see the module docstring).

    Args:
        plan: a :class:`~seglab.planning.Plan` (``features_per_stage``, ``strides``, ``conv_kernel_sizes``,
            ``n_conv_per_stage``, ``in_channels``, ``num_classes``).
        in_channels, num_classes: override the plan's (e.g. 3 for gray images replicated to RGB).

    Modules: ``encoder[s]`` (stage s: ``n_conv_per_stage`` blocks, the first strided), ``up[d]`` and
    ``decoder[d]`` (d = 0 is the coarsest decoder stage), ``head`` (1x1 conv to K logits).

    Raises:
        ValueError: (in ``forward``) H or W not a multiple of ``plan.divisor`` (pad the input to it).
    """

    def __init__(self, plan: Plan, *, in_channels: int | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.divisor = plan.divisor
        widths, convs = plan.features_per_stage, plan.n_conv_per_stage
        channels = plan.in_channels if in_channels is None else in_channels
        self.encoder = nn.ModuleList()
        for width, stride, kernel in zip(widths, plan.strides, plan.conv_kernel_sizes):
            blocks = [ConvNormAct(channels, width, kernel, stride)]
            blocks += [ConvNormAct(width, width, kernel) for _ in range(convs - 1)]
            self.encoder.append(nn.Sequential(*blocks))
            channels = width
        self.up, self.decoder = nn.ModuleList(), nn.ModuleList()
        for s in reversed(range(len(widths) - 1)):  # from the bottleneck up: stage s receives stage s + 1
            stride = plan.strides[s + 1]
            self.up.append(nn.ConvTranspose2d(widths[s + 1], widths[s], stride, stride))
            kernel = plan.conv_kernel_sizes[s]
            blocks = [ConvNormAct(2 * widths[s], widths[s], kernel)]
            blocks += [ConvNormAct(widths[s], widths[s], kernel) for _ in range(convs - 1)]
            self.decoder.append(nn.Sequential(*blocks))
        self.head = nn.Conv2d(widths[0], plan.num_classes if num_classes is None else num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.divisor[0] or x.shape[-1] % self.divisor[1]:
            raise ValueError(f"PlainUNet: input {tuple(x.shape[-2:])} must be a multiple of {self.divisor} (H, W); "
                             "pad it (e.g. with seglab.transforms' pad_multiple) or crop to the plan's patch size")
        skips = []
        for stage in self.encoder:
            x = stage(x)  # (N, F_s, H / stride_s, W / stride_s)
            skips.append(x)
        x = skips.pop()  # the bottleneck
        for up, stage in zip(self.up, self.decoder):
            x = up(x)  # (N, F_s, size of skip s)
            x = stage(torch.cat([x, skips.pop()], dim=1))  # (N, F_s, ...) after mixing 2 F_s channels
        return self.head(x)  # (N, K, H, W)
