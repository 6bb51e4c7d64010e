"""``SkipExplorer``: what skip connections recover: several models' predictions of one image, their
accuracy near boundaries (trimap mIoU per band width) and their decoder feature maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np

from seglab import viz

from .display import FigureView
from .model_outputs import feature_maps, predict_classes

__all__ = ["SkipExplorer"]


class SkipExplorer(FigureView):
    """What skip connections recover: several models' predictions of one image, their accuracy near
    boundaries (trimap mIoU), and their decoder feature maps.

    Args:
        image: ``(3, H, W)`` normalised tensor or ``(H, W, 3)`` uint8 image.
        mask: ``(H, W)`` ground truth.
        models: ``{name: model or prediction}``, e.g. ``{"FCN-32s": fcn32, "FCN-16s": fcn16, "FCN-8s": fcn8}``
            or ``{"U-Net": unet, "U-Net without skips": unet_noskip}``. A model's prediction is computed
            once by ``seglab.inference.infer_logits`` (no gradients), its feature maps by
            ``forward_features`` (seglab models). A prediction is ``(H, W)`` indices or ``(K, H, W)`` logits.
        classes, colors: the dataset's class names and palette.
        stages: feature names to show (default: the ``decoder.*`` / ``fuse_*`` maps, else all).
        band_widths: band widths (px) of the trimap curve.
        device: where the models run.
        inference: keyword arguments of ``infer_logits`` for the models' predictions; None: one full-size pass.

    Controls: ``view`` (ToggleButtons: predictions, trimap curve, feature maps), ``band_width``
    (IntSlider, px), ``model`` (Dropdown, for feature maps), ``mode`` (mean |activation| or channels).
    """

    _VIEWS = ("predictions", "trimap curve", "feature maps")

    def __init__(self, image, mask, models: Mapping[str, object], classes: Sequence[str], colors, *,
                 ignore_index: int = 255, stages: Sequence[str] | None = None,
                 band_widths: Sequence[int] = (1, 2, 4, 8, 16, 32), device="cpu",
                 inference: Mapping | None = None) -> None:
        if not models:
            raise ValueError("models is empty: pass {name: model or prediction}")
        self.image_data, self.mask = image, viz.as_mask(mask)
        self.classes, self.colors, self.ignore_index = tuple(classes), colors, ignore_index
        self.band_widths = tuple(band_widths)
        self.preds: dict[str, np.ndarray] = {}
        self.features: dict[str, dict] = {}
        for name, m in models.items():
            if callable(m):
                m.eval()
                self.preds[name] = predict_classes(m, image, device=device, inference=inference)
                features = feature_maps(m, image, device=device)
                if features:
                    self.features[name] = self._pick(features, stages)
            else:
                self.preds[name] = viz.as_pred(m)
        self._trimap_curves: dict[str, list[float]] | None = None
        self.view = widgets.ToggleButtons(options=self._VIEWS if self.features else self._VIEWS[:2], description="show")
        self.band_width = widgets.IntSlider(4, min=1, max=max(self.band_widths), description="band (px)",
                                            continuous_update=False)
        self.model = widgets.Dropdown(options=list(self.features) or ["—"], description="model")
        self.mode = widgets.ToggleButtons(options=[("mean |activation|", "mean_abs"), ("channels", "channels")],
                                          description="maps")
        super().__init__([self.view, widgets.HBox([self.band_width, self.model]), self.mode])
        self._watch(self.view, self.band_width, self.model, self.mode)
        self.redraw()

    @staticmethod
    def _pick(features: dict, stages) -> dict:
        if stages is not None:
            missing = [s for s in stages if s not in features]
            if missing:
                raise ValueError(f"stages {missing} not among the model's features {list(features)}")
            return {s: features[s] for s in stages}
        chosen = {k: v for k, v in features.items() if k.startswith(("decoder", "fuse"))}
        return chosen or features

    def trimap_curves(self) -> dict[str, list[float]]:
        """``{name: trimap mIoU per band width}`` (computed once)."""
        if self._trimap_curves is None:
            self._trimap_curves = {
                name: [viz.image_trimap_iou(p, self.mask, len(self.classes), w, self.ignore_index)
                       for w in self.band_widths]
                for name, p in self.preds.items()
            }
        return self._trimap_curves

    def _draw(self):
        view = self.view.value
        self.band_width.layout.display = None if view == "predictions" else "none"
        self.model.layout.display = self.mode.layout.display = None if view == "feature maps" else "none"
        if view == "predictions":
            return viz.compare_predictions(self.image_data, self.mask, self.preds, self.classes, self.colors,
                                           band_width=self.band_width.value, ignore_index=self.ignore_index)
        if view == "trimap curve":
            return viz.plot_trimap_curves(self.band_widths, self.trimap_curves())
        h, w = self.mask.shape
        return viz.show_feature_maps(self.features[self.model.value], mode=self.mode.value, num_channels=3,
                                     input_size=(h, w), title=f"{self.model.value}: feature maps per stage")

    def _status(self) -> str:
        if self.view.value == "predictions":
            return f"trimap: pixels within {self.band_width.value} px of a ground-truth boundary"
        return ""
