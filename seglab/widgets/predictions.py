"""``PredictionBrowser``: images with their ground truth, prediction and error map, in dataset order or
sorted by per-image mIoU."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np

from seglab import viz

from .display import FigureView
from .model_outputs import predict_classes

__all__ = ["PredictionBrowser"]


class PredictionBrowser(FigureView):
    """Browse images with their ground truth, prediction and error map; per-image mIoU.

    Args:
        images: ``(N, 3, H, W)`` normalised tensor or a sequence of images (sizes may differ).
        masks: ``(N, H, W)`` or a sequence of ``(H, W)`` ground-truth masks.
        preds: predictions (``(H, W)`` indices or ``(K, H, W)`` logits per image), or None to
            compute them with ``model`` when an image is first shown (then cached).
        model: a segmentation model returning ``(N, K, H, W)`` logits (put in eval mode).
        classes, colors: the dataset's class names and palette.
        device: where the model runs.
        inference: keyword arguments of ``seglab.inference.infer_logits`` for the model's predictions (e.g.
            ``InferenceOptions(flip=True).as_kwargs()``); None: one full-size pass (``predict_classes``).

    Controls: ``index`` (IntSlider over images), ``order`` (Dropdown: dataset order, worst first,
    best first by per-image mIoU; sorting scores every image once).
    """

    _ORDERS = ("dataset order", "worst mIoU first", "best mIoU first")

    def __init__(self, images, masks, preds=None, *, model=None, classes: Sequence[str], colors,
                 ignore_index: int = 255, device="cpu", inference: Mapping | None = None) -> None:
        if len(images) != len(masks) or (preds is not None and len(preds) != len(masks)):
            raise ValueError(f"got {len(images)} images, {len(masks)} masks and "
                             f"{'no' if preds is None else len(preds)} predictions: pass equal numbers")
        if preds is None and model is None:
            raise ValueError("pass preds (one per image) or a model to compute them")
        if len(masks) == 0:
            raise ValueError("no images to browse")
        self.images, self.masks, self.classes, self.colors = images, masks, tuple(classes), colors
        self.ignore_index, self.model, self.device, self.inference = ignore_index, model, device, inference
        if model is not None:
            model.eval()
        self._preds = {} if preds is None else {i: viz.as_pred(p) for i, p in enumerate(preds)}
        self._scores: dict[int, dict] = {}
        self._order = list(range(len(masks)))
        self.index = widgets.IntSlider(0, min=0, max=len(masks) - 1, description="image", continuous_update=False)
        self.order = widgets.Dropdown(options=self._ORDERS, value=self._ORDERS[0], description="order")
        super().__init__([widgets.HBox([self.index, self.order])])
        self._watch(self.index)
        self.order.observe(self._on_order, names="value")
        self.redraw()

    @classmethod
    def from_dataset(cls, model, dataset, indices: Sequence[int] | None = None, **kwargs) -> "PredictionBrowser":
        """Browse ``dataset[i]`` for ``i`` in ``indices`` (default the first 16); classes/colors from the dataset."""
        indices = list(range(min(16, len(dataset)))) if indices is None else list(indices)
        items = [dataset[i] for i in indices]
        kwargs.setdefault("ignore_index", getattr(dataset, "ignore_index", 255))
        return cls([im for im, _ in items], [m for _, m in items], model=model, classes=dataset.classes,
                   colors=dataset.colors, **kwargs)

    def prediction(self, i: int) -> np.ndarray:
        """``(H, W)`` int64 prediction of image ``i`` (computed with the model once through
        ``seglab.inference.infer_logits``, then cached)."""
        if i not in self._preds:
            self._preds[i] = predict_classes(self.model, self.images[i], device=self.device, inference=self.inference)
        return self._preds[i]

    def scores(self, i: int) -> dict:
        """``{"mIoU", "pixel_accuracy"}`` of image ``i`` (fractions)."""
        if i not in self._scores:
            self._scores[i] = viz.image_scores(self.prediction(i), viz.as_mask(self.masks[i]), len(self.classes),
                                                self.ignore_index)
        return self._scores[i]

    @property
    def current(self) -> int:
        """Dataset index of the image on screen (the slider walks ``order``)."""
        return self._order[self.index.value]

    def _on_order(self, change=None) -> None:
        n = len(self.masks)
        if self.order.value == self._ORDERS[0]:
            self._order = list(range(n))
        else:
            miou = [self.scores(i)["mIoU"] for i in range(n)]
            key = [(-1 if math.isnan(v) else v) for v in miou]
            self._order = sorted(range(n), key=lambda i: key[i], reverse=self.order.value == self._ORDERS[2])
        if self.index.value == 0:
            self._on_change()
        else:
            self.index.value = 0  # triggers the redraw

    def _draw(self):
        i = self.current
        return viz.show_predictions([self.images[i]], [self.masks[i]], [self.prediction(i)], self.classes, self.colors,
                                    ignore_index=self.ignore_index, indices=[i])

    def _status(self) -> str:
        i, s = self.current, self.scores(self.current)
        return f"image {i} ({self.index.value + 1} of {len(self.masks)}): mIoU {s['mIoU']:.1%}, " \
               f"pixel accuracy {s['pixel_accuracy']:.1%}"
