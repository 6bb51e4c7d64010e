"""Pictures for the seglab notebooks: every public function returns a ``matplotlib.figure.Figure``.

One module per topic; every public name is also importable from ``seglab.viz`` (``from seglab
import viz; viz.colorize(...)``):

- ``core``: ``DPI``, ``IGNORE_COLOR``, ``figure_to_png``, ``to_rgb``, ``as_mask``, ``as_pred`` (figure and
  array conventions; ``IMAGENET_MEAN`` / ``IMAGENET_STD`` re-exported from ``seglab.imaging``);
- ``masks``: ``colorize``, ``overlay``, ``error_map``, ``show_mask``, ``show_predictions``, ``image_scores``;
- ``datasets``: ``plot_class_frequencies``, ``show_palette``, ``show_mask_resize``;
- ``receptive_fields``: ``show_receptive_field``, ``rf_frame``;
- ``context``: ``atrous_taps``, ``pyramid_bins``, ``show_aspp_taps``, ``show_pyramid_bins``, ``show_crf_iterations``;
- ``deformable``: ``show_sampling_locations`` (a deformable layer's sampling points and exact RF);
- ``dilation``: ``dilation_coverage``, ``show_dilated_kernels``, ``show_dilation_coverage``;
- ``skips``: ``compare_predictions``, ``show_feature_maps``, ``plot_trimap_curves``, ``image_trimap_iou``;
- ``training``: ``plot_history`` (``LOG_LOSS_RATIO``), ``plot_iou_per_class``, ``plot_confusion_matrix``.

Figures are built without ``pyplot`` (nothing leaks, everything renders with Agg: CI, nbviewer,
PDF). Nothing here imports models or datasets: pass the arrays (images, masks, predictions,
receptive-field maps, histories) and the dataset's ``classes`` / ``colors``. The lazy imports are
``seglab.metrics`` (per-image scores, trimap IoU) and OpenCV for ``show_mask_resize``.

Conventions: images ``(3, H, W)`` float32 normalised with ImageNet mean/std, or ``(H, W, 3)``
uint8 RGB; masks ``(H, W)`` int64 in ``[0, K)`` or ``ignore_index`` (255); predictions ``(H, W)``
class indices or ``(K, H, W)`` logits. Metrics are fractions in [0, 1]; pictures print percent.
"""

from .core import DPI, IGNORE_COLOR, IMAGENET_MEAN, IMAGENET_STD, as_mask, as_pred, figure_to_png, to_rgb
from .context import atrous_taps, pyramid_bins, show_aspp_taps, show_crf_iterations, show_pyramid_bins
from .datasets import plot_class_frequencies, show_mask_resize, show_palette
from .deformable import show_sampling_locations
from .dilation import dilation_coverage, show_dilated_kernels, show_dilation_coverage
from .masks import colorize, error_map, image_scores, overlay, show_mask, show_predictions
from .receptive_fields import rf_frame, show_receptive_field
from .skips import compare_predictions, image_trimap_iou, plot_trimap_curves, show_feature_maps
from .training import LOG_LOSS_RATIO, plot_confusion_matrix, plot_history, plot_iou_per_class

__all__ = [
    "DPI",
    "IGNORE_COLOR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "figure_to_png",
    "to_rgb",
    "as_mask",
    "as_pred",
    "colorize",
    "overlay",
    "error_map",
    "show_mask",
    "show_predictions",
    "image_scores",
    "plot_class_frequencies",
    "show_palette",
    "show_mask_resize",
    "show_receptive_field",
    "rf_frame",
    "show_sampling_locations",
    "atrous_taps",
    "pyramid_bins",
    "show_aspp_taps",
    "show_pyramid_bins",
    "show_crf_iterations",
    "dilation_coverage",
    "show_dilated_kernels",
    "show_dilation_coverage",
    "compare_predictions",
    "show_feature_maps",
    "plot_trimap_curves",
    "image_trimap_iou",
    "LOG_LOSS_RATIO",
    "plot_history",
    "plot_iou_per_class",
    "plot_confusion_matrix",
]
