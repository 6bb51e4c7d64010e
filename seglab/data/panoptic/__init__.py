"""Panoptic data (Kirillov et al., CVPR 2019, "Panoptic Segmentation"): one target format, its conversions, and
datasets whose items carry instances.

- ``seglab.data.panoptic.format``: ``PanopticTarget(segments, labels)`` (segment ids ``(H, W)`` int64, 0 = void; a
  class per segment), its checks and conversions to semantic masks and instance lists;
- ``seglab.data.panoptic.datasets``: ``ISBI2012Panoptic`` (cells as instances), ``VOCPanoptic``
  (``SegmentationObject``), the ``PanopticDataset`` base;
- ``seglab.data.panoptic.synthetic``: ``SyntheticPanopticShapes`` (shapes as things, background as stuff).
"""

from . import datasets, format, synthetic
from .datasets import ISBI2012Panoptic, PanopticDataset, VOCPanoptic
from .format import (
    VOID, PanopticTarget, check_panoptic, compact_panoptic, panoptic_collate, panoptic_from_masks,
    panoptic_from_segments_info, panoptic_from_semantic, panoptic_to_instances, panoptic_to_semantic, voc_panoptic,
)
from .synthetic import SYNTHETIC_STUFFS, SYNTHETIC_THINGS, SyntheticPanopticShapes

__all__ = [*format.__all__, *datasets.__all__, *synthetic.__all__]
