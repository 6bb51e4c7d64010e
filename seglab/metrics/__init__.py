"""Segmentation metrics: region scores from one confusion matrix, boundary scores, and panoptic / instance scores.

- ``seglab.metrics.confusion``: ``confusion_matrix``, ``ConfusionMatrix`` (streaming), ``iou_per_class``,
  ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``frequency_weighted_iou`` (needs only PyTorch:
  copy ``confusion.py`` into another project alone).
- ``seglab.metrics.boundary``: ``boundary_band``, ``trimap_iou`` (Kohli et al. 2009), ``boundary_f_score``
  (Csurka et al. 2013), ``boundary_iou`` (Cheng et al. 2021).
- ``seglab.metrics.panoptic``: ``panoptic_quality``, ``PanopticQuality`` (streaming), ``PanopticResult``: PQ = SQ x RQ
  with the things / stuff split, under COCO's rules (Kirillov et al. 2019).
- ``seglab.metrics.instance_ap``: ``instance_average_precision``, ``InstanceAP`` (streaming), ``mask_iou``: COCO mask
  AP, AP50, AP75 (101-point interpolation).

Every name is importable from ``seglab.metrics``. Metrics are fractions in [0, 1]; per-class tensors hold
``nan`` for classes that are undefined (absent from ground truth and prediction).

Private helpers: ``_checks`` validates every public function's arguments at the boundary (bad input: a one-line
``ValueError`` naming the argument, what it got and what it needs); ``_morphology`` holds the boundary scores'
dilations, whose cost does not grow with the distance.
"""

from seglab.metrics import boundary, confusion, instance_ap, panoptic
from seglab.metrics.boundary import (
    BoundaryFScore, BoundaryIoU, boundary_band, boundary_f_score, boundary_iou, trimap_iou,
)
from seglab.metrics.confusion import (
    ConfusionMatrix, confusion_matrix, frequency_weighted_iou, iou_per_class, mean_class_accuracy, mean_iou,
    pixel_accuracy,
)
from seglab.metrics.instance_ap import (
    COCO_IOU_THRESHOLDS, COCO_RECALL_THRESHOLDS, InstanceAP, InstanceAPResult, instance_average_precision, mask_iou,
)
from seglab.metrics.panoptic import PanopticQuality, PanopticResult, panoptic_quality

__all__ = [*confusion.__all__, *boundary.__all__, *panoptic.__all__, *instance_ap.__all__]  # every public name
