"""``ReceptiveFieldExplorer``: the receptive field of one output pixel at a chosen layer, theoretical
(exact support) and effective (gradient magnitude), for untrained and trained weights."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets

from seglab import viz

from .display import FigureView
from .model_outputs import model_input

__all__ = ["ReceptiveFieldExplorer"]


class ReceptiveFieldExplorer(FigureView):
    """Receptive field of one output pixel at a chosen layer: theoretical RF (exact support) and
    effective RF (gradient magnitude) over the image, for untrained and trained weights.

    Uses ``seglab.receptive_field``: ``ReceptiveField`` for the theoretical RF (it depends on the
    architecture only, so it is computed once, from the first model) and
    ``effective_receptive_field`` for the ERF of the selected weights (Luo et al. 2016); both are
    cached per (weights, layer, output pixel).

    Args:
        models: a model, or ``{label: model}`` of one architecture with different weights, e.g.
            ``{"untrained": build_model("unet", 4), "trained": trained_unet}``.
        image: ``(3, H, W)`` normalised tensor or ``(H, W, 3)`` uint8 (normalised with ImageNet
            statistics before it is fed to the models).
        layers: module names (as in ``model.named_modules()``) to choose from; ``""`` is the model
            output. Default: the seglab feature stages (``forward_features`` names that are
            modules) or the top-level children, then the output.
        pixel: initial ``(row, col)`` in input pixels (default: the centre).

    Controls: ``layer`` (Dropdown), ``row`` / ``col`` (IntSliders, input pixels; the output pixel
    is the layer cell holding that input pixel), ``weights`` (ToggleButtons), ``log_scale``
    (Checkbox: log10 ERF, shows its faint tail).
    """

    def __init__(self, models, image, *, layers: Sequence[str] | None = None,
                 pixel: tuple[int, int] | None = None, log_scale: bool = False) -> None:
        from torch import nn

        from seglab import receptive_field as rfm

        self._rfm = rfm
        self.models = {"model": models} if isinstance(models, nn.Module) else dict(models)
        if not self.models:
            raise ValueError("models is empty: pass a model or {label: model}")
        self.image_data = image
        self._x = model_input(image)  # (1, 3, H, W)
        h, w = self._x.shape[-2:]
        first = next(iter(self.models.values()))
        names = dict(first.named_modules())
        layers = list(layers) if layers is not None else self._default_layers(first, names)
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of the model; "
                             "see [n for n, _ in model.named_modules()]")
        self._support_rf = rfm.ReceptiveField(first, (h, w))
        self._erfs: dict = {}
        self._supports: dict = {}
        options = [(name or "output (logits)", name) for name in layers]
        self.layer = widgets.Dropdown(options=options, value=options[-1][1], description="layer")
        y, x = pixel if pixel is not None else (h // 2, w // 2)
        self.row = widgets.IntSlider(y, min=0, max=h - 1, description="row (px)", continuous_update=False)
        self.col = widgets.IntSlider(x, min=0, max=w - 1, description="col (px)", continuous_update=False)
        self.weights = widgets.ToggleButtons(options=list(self.models), description="weights")
        self.log_scale = widgets.Checkbox(log_scale, description="log-scale ERF")
        super().__init__([widgets.HBox([self.layer, self.weights]), widgets.HBox([self.row, self.col, self.log_scale])])
        self._watch(self.layer, self.row, self.col, self.weights, self.log_scale)
        self.redraw()

    @staticmethod
    def _default_layers(model, names: dict) -> list[str]:
        import torch

        chosen: list[str] = []
        if hasattr(model, "forward_features"):
            was_training = model.training
            model.eval()
            with torch.no_grad():
                keys = list(model.forward_features(torch.zeros(1, 3, 64, 64)))
            model.train(was_training)
            for key in keys:
                for name in (key, f"backbone.{key}", f"encoder.{key}"):
                    if name in names and name not in chosen:
                        chosen.append(name)
                        break
        if not chosen:
            chosen = [name for name, _ in model.named_children()]
        return chosen + [""]

    def _layer_pixel(self) -> tuple[str | None, tuple[int, int], tuple[int, int], tuple[int, int, int]]:
        """(layer, pixel in the layer map, its centre in input pixels, layer map shape (C, h, w))."""
        layer = self.layer.value or None
        c, lh, lw = self._support_rf.output_shape(layer)
        h, w = self._x.shape[-2:]
        yl, xl = min(lh - 1, self.row.value * lh // h), min(lw - 1, self.col.value * lw // w)
        centre = (int(round((yl + 0.5) * h / lh - 0.5)), int(round((xl + 0.5) * w / lw - 0.5)))
        return layer, (yl, xl), centre, (c, lh, lw)

    def erf(self) -> "torch.Tensor":  # noqa: F821
        """``(H, W)`` ERF of the current weights, layer and pixel (cached)."""
        layer, pix, _, _ = self._layer_pixel()
        key = (self.weights.value, layer, pix)
        if key not in self._erfs:
            self._erfs[key] = self._rfm.effective_receptive_field(self.models[self.weights.value], self._x, pix,
                                                                  layer=layer)
        return self._erfs[key]

    def _draw(self):
        layer, pix, centre, (_, lh, lw) = self._layer_pixel()
        if (layer, pix) not in self._supports:  # depends on the architecture only, not the weights
            self._supports[(layer, pix)] = self._support_rf.support(pix, layer=layer)
        support = self._supports[(layer, pix)]
        self._last = {"support": support, "erf": self.erf(), "centre": centre, "pixel": pix, "map": (lh, lw)}
        name = self.layer.value or "output"
        title = f"{self.weights.value} weights · {name} · pixel {pix} of its {lh}×{lw} map"
        return viz.show_receptive_field(self.image_data, centre, erf=self._last["erf"], support=support,
                                        log_scale=self.log_scale.value, title=title)

    def _status(self) -> str:
        rfm, last = self._rfm, self._last
        th, tw = rfm.support_size(last["support"])
        radius = rfm.erf_radius(last["erf"], 0.95) if float(last["erf"].sum()) > 0 else float("nan")
        pixels, holes = int(last["support"].sum()), rfm.support_holes(last["support"])
        return (f"theoretical RF {th}×{tw} px ({pixels} px, {holes} holes); "
                f"95% of the ERF lies within {radius:.1f} px of its centre")
