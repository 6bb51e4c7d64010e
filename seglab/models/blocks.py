"""Small building blocks that more than one seglab model uses.

- ``ConvBNReLU``: convolution → BatchNorm → ReLU (U-Net's DoubleConv, DeepLab's ASPP and decoder).
- ``AuxHead``: the auxiliary classifier torchvision trains FCN/DeepLab with (FCN and DeepLab).
- ``pad_to_multiple`` and ``check_images``: input handling shared by FCN, U-Net and DeepLab.

Everything else lives in the file of the one model that uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AuxHead", "ConvBNReLU", "check_images", "pad_to_multiple"]


class ConvBNReLU(nn.Sequential):
    """``Conv2d(k×k, dilation) → BatchNorm2d → ReLU``; without BatchNorm the convolution gets a bias.

    Shape: ``(N, in_channels, H, W) -> (N, out_channels, H', W')``; with the default ``padding=None``
    ("same": ``dilation * (k - 1) // 2``) ``H' = H``; with ``padding=0`` ("valid") ``H' = H - dilation * (k - 1)``.
    Submodule indices ``0`` (conv), ``1`` (bn), ``2`` (relu) match torchvision's ASPP branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        padding: int | None = None,
        batch_norm: bool = True,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=not batch_norm)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class AuxHead(nn.Sequential):
    """Auxiliary classifier on a stride-16 feature map, as torchvision's ``FCNHead`` (same layout and keys).

    ``Conv3×3(C → C/4) → BN → ReLU → Dropout(0.1) → Conv1×1(C/4 → K)``;
    shape ``(N, C, h, w) -> (N, K, h, w)``. Used only by ``model.forward_with_aux``, never by ``forward``.
    Not in the FCN/DeepLab papers: it is the extra loss torchvision's training recipe adds (PSPNet-style).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, num_classes, 1),
        )


def check_images(x: torch.Tensor, in_channels: int, model_name: str) -> None:
    """Raise a clear error unless ``x`` is a float ``(N, in_channels, H, W)`` batch."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name} expects a torch.Tensor of shape (N, {in_channels}, H, W); got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{model_name} expects images of shape (N, {in_channels}, H, W); got {tuple(x.shape)}"
            + (": add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else "")
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{model_name} expects float images normalised with the ImageNet mean/std; got dtype {x.dtype}: "
            "use seglab.transforms.eval_transform() or x.float()"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``(N, C, H, W)`` on the bottom and right to ``(N, C, ceil(H/m)*m, ceil(W/m)*m)``.

    With normalised images, zero is the ImageNet mean colour. Callers crop their logits back with
    ``logits[..., :H, :W]``, so pixel ``(i, j)`` of the output stays aligned with pixel ``(i, j)`` of the input.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))
