"""Interactive (click) segmentation: simulated clicks, SAM trained on them, a no-learning baseline, NoC metrics.

- :mod:`.clicks`: SAM's training clicks (``sample_first_points``, ``sample_boxes``, ``sample_error_points``) and the
  deterministic evaluation clicker ``next_click`` (largest error region, its innermost pixel);
- :mod:`.training`: ``sam_click_loss`` (one simulated interaction, SAM's focal 20 : dice 1 + IoU MSE), the loop
  ``train_sam_clicks``, ``ClickTrainingConfig``, ``nano_sam_64``;
- :mod:`.metrics`: ``mask_iou``, ``number_of_clicks`` (NoC@t), ``summarize_clicks`` (IoU@k, NoC, NoF);
- :mod:`.baseline`: ``FloodFillSegmenter`` (colour flood fill, no learning), ``choose_tolerance``;
- :mod:`.evaluate`: ``click_curves`` (any segmenter), ``sam_click_curves`` (SAM, batched);
- :mod:`.data`: ``synthetic_objects``, ``isbi_objects`` (one object per ``(image, mask)`` pair).

``benchmarks/sam_clicks.py`` trains nano-SAM on a CPU and compares it with the flood fill.
"""

from .baseline import FloodFillSegmenter, choose_tolerance
from .clicks import next_click, sample_boxes, sample_error_points, sample_first_points
from .data import isbi_objects, synthetic_objects
from .evaluate import click_curves, sam_click_curves
from .metrics import mask_iou, number_of_clicks, summarize_clicks
from .training import ClickTrainingConfig, nano_sam_64, normalize_images, sam_click_loss, train_sam_clicks

__all__ = [
    "next_click",
    "sample_first_points",
    "sample_boxes",
    "sample_error_points",
    "ClickTrainingConfig",
    "nano_sam_64",
    "normalize_images",
    "sam_click_loss",
    "train_sam_clicks",
    "mask_iou",
    "number_of_clicks",
    "summarize_clicks",
    "FloodFillSegmenter",
    "choose_tolerance",
    "click_curves",
    "sam_click_curves",
    "synthetic_objects",
    "isbi_objects",
]
