"""Deformable convolution: a convolution that learns where to look.

A k×k convolution reads a fixed grid of ``K = k²`` taps around each output pixel. A deformable one moves
every tap by an offset predicted from the input and sampled bilinearly, so the layer can read along an
object, at a distance, or at the scale of what it sees (Dai et al. 2017, DCNv1; Zhu et al. 2019, DCNv2:
plus a modulation weight per tap; Wang et al. 2023, InternImage's DCNv3: groups, a projection shared by
the taps, modulation softmax-normalised over the taps).

One idea per module; every public name is re-exported here:

- :mod:`.dcnv2`: ``DeformConv2d`` (DCNv2 / DCNv1 through ``torchvision.ops.deform_conv2d``), ``dcnv2_locations``;
- :mod:`.dcnv3`: ``dcnv3_sample`` (DCNv3's core in plain PyTorch, ``F.grid_sample``, channels last),
  ``to_torchvision_layout`` (with it the core equals ``deform_conv2d``), ``dcnv3_locations``, ``DCNv3``;
- :mod:`.stage`: ``DeformableBlock`` (InternImage's basic block), ``DeformableStage`` (a backbone stage on
  ``(N, C, H, W)`` maps) and ``DeformableSegNet`` (a tiny segmenter built from them);
- :mod:`.sampling`: ``freeze_sampling`` (a copy that samples where the model did for one image: what an
  exact receptive field of a deformable layer needs) and ``deformable_layers``.

Coordinates are ``(y, x)`` = (row, column) in input pixels, pixel centres at integers.
"""

from .dcnv2 import MODULATIONS, DeformConv2d, dcnv2_locations
from .dcnv3 import DCNv3, dcnv3_locations, dcnv3_sample, to_torchvision_layout
from .sampling import deformable_layers, freeze_sampling
from .stage import DeformableBlock, DeformableSegNet, DeformableStage

__all__ = [
    "MODULATIONS",
    "DeformConv2d",
    "dcnv2_locations",
    "DCNv3",
    "dcnv3_sample",
    "dcnv3_locations",
    "to_torchvision_layout",
    "DeformableBlock",
    "DeformableStage",
    "DeformableSegNet",
    "freeze_sampling",
    "deformable_layers",
]
