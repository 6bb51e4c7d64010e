"""Segmentation metrics: region scores from one confusion matrix, and boundary scores.

- ``seglab.metrics.confusion``: ``confusion_matrix``, ``ConfusionMatrix`` (streaming), ``iou_per_class``,
  ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``frequency_weighted_iou`` (needs only PyTorch:
  copy ``confusion.py`` into another project alone).
- ``seglab.metrics.boundary``: ``boundary_band``, ``trimap_iou`` (Kohli et al. 2009), ``boundary_f_score``
  (Csurka et al. 2013), ``boundary_iou`` (Cheng et al. 2021).

Every name is importable from ``seglab.metrics``. Metrics are fractions in [0, 1]; per-class tensors hold
``nan`` for classes that are undefined (absent from ground truth and prediction).

Private helpers: ``_checks`` validates every public function's arguments at the boundary (bad input: a one-line
``ValueError`` naming the argument, what it got and what it needs); ``_morphology`` holds the boundary scores'
dilations, whose cost does not grow with the distance.
"""

from seglab.metrics import boundary, confusion
from seglab.metrics.boundary import (
    BoundaryFScore, BoundaryIoU, boundary_band, boundary_f_score, boundary_iou, trimap_iou,
)
from seglab.metrics.confusion import (
    ConfusionMatrix, confusion_matrix, frequency_weighted_iou, iou_per_class, mean_class_accuracy, mean_iou,
    pixel_accuracy,
)

__all__ = [*confusion.__all__, *boundary.__all__]  # every public name of the two modules
