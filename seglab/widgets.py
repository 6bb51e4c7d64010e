"""Interactive explorers for the notebooks: thin ipywidgets wiring over ``seglab.viz``.

Every explorer is an ``ipywidgets.VBox`` subclass: display it (last value of a cell, or
``display(widget)``) and move its controls. The controls are attributes (``explorer.band_width``,
``browser.index`` ...), so code and tests can set ``.value`` and read what was drawn. Each draws a
``seglab.viz`` figure as PNG bytes into ``explorer.image`` (an ``ipywidgets.Image``), which is
faster and sturdier than re-running ``plt.show`` inside an ``Output``, and works the same in
JupyterLab, classic Notebook and VS Code. ``explorer.status`` (HTML) shows numbers and errors;
``explorer.redraw_seconds`` is the wall time of the last redraw.

Every explorer also leaves a picture behind: its display carries, next to the live widget view, a
static ``image/png`` of its current figure (and its status as ``text/plain``). JupyterLab and
Notebook show the live widget; nbviewer, GitHub, ``jupyter nbconvert --to html`` and any viewer
without the widget state show the PNG instead of ``DilationExplorer(children=(HBox(...``. When a
displayed explorer redraws (a later cell sets ``.value``, a training epoch ends, a slider moves),
its picture in the notebook is refreshed once at the end of the next executed cell
(``update_display``), so that an executed notebook stores the figure the explorer showed last.

Expensive work (model outputs, gradients, histories) is computed once and cached, so that moving a
control only redraws a figure (well under 0.5 s at 256×256 on a 2-core CPU; measured by
``benchmarks/widgets.py``).

Explorers: ``DilationExplorer``, ``PredictionBrowser``, ``SkipExplorer``,
``ReceptiveFieldExplorer``, ``TrainingMonitor`` (a callback for ``seglab.engine.fit``) and
``RunComparer``. Models, datasets and torch are only touched by the explorers that need them.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import numpy as np

from seglab import viz
from seglab.viz.core import _as_mask, _as_pred
from seglab.viz.masks import _image_scores
from seglab.viz.skips import _trimap_iou

__all__ = [
    "DilationExplorer",
    "PredictionBrowser",
    "SkipExplorer",
    "ReceptiveFieldExplorer",
    "TrainingMonitor",
    "RunComparer",
]

_WIDE = {"description_width": "initial"}

_STALE: "weakref.WeakSet[_FigureView]" = weakref.WeakSet()  # displayed explorers redrawn since their last update
_HOOKED: set[int] = set()  # ids of the IPython shells our post_run_cell hook is registered with


def _refresh_pictures(*_args) -> None:
    """IPython ``post_run_cell`` hook: refresh the static picture of every explorer redrawn since."""
    for view in list(_STALE):
        _STALE.discard(view)
        view._update_pictures()


def _hook_cell_end() -> None:
    """Register ``_refresh_pictures`` to run after every cell (once per IPython shell; none outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return
    shell = get_ipython()
    if shell is not None and id(shell) not in _HOOKED:
        shell.events.register("post_run_cell", _refresh_pictures)
        _HOOKED.add(id(shell))


class _FigureView(widgets.VBox):
    """Controls on top, the PNG of a ``viz`` figure below, then a status line.

    Subclasses implement ``_draw() -> Figure`` (and optionally ``_status() -> str``) and call
    ``self.redraw`` from control observers (``_watch``).
    """

    def __init__(self, controls: Sequence[widgets.Widget]) -> None:
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.redraw_seconds = math.nan
        self.error: str | None = None
        self._pictures: list = []  # IPython DisplayHandles of this explorer's displays
        super().__init__(children=[*controls, self.image, self.status])
        self.add_class("seglab-" + type(self).__name__)  # a CSS hook (also used by tests/test_browser.py)

    # ------------------------------------------------------------ the picture left in the notebook
    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The widget view, plus ``image/png`` of the current figure and the status as ``text/plain``.

        Frontends with the widget manager render the live view; static renderers (nbviewer,
        GitHub, nbconvert without widget state) fall back to the PNG.
        """
        data = widgets.VBox._repr_mimebundle_(self, **kwargs) or {}
        status = html.unescape(re.sub(r"<[^>]+>", " ", self.status.value or "")).strip()
        data["text/plain"] = f"{type(self).__name__}: {' '.join(status.split())}" if status else type(self).__name__
        if self.image.value:
            data["image/png"] = base64.b64encode(bytes(self.image.value)).decode("ascii")
        return data

    def _ipython_display_(self) -> None:
        """Display as ``_repr_mimebundle_`` with a display id, so that the picture can be refreshed."""
        from IPython.display import display

        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        if handle is not None:
            self._pictures.append(handle)
            _hook_cell_end()

    def _update_pictures(self) -> None:
        bundle = self._repr_mimebundle_()
        for handle in self._pictures:
            handle.update(bundle, raw=True)

    def _draw(self):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _status(self) -> str:
        return ""

    def _watch(self, *controls: widgets.Widget) -> None:
        for control in controls:
            control.observe(self._on_change, names="value")

    def _on_change(self, change=None) -> None:
        try:
            self.redraw()
        except Exception as err:  # shown to the user: an observer's exception would only reach the log
            self.error = f"{type(err).__name__}: {err}"
            self.status.value = f"<span style='color:#b00020'>{html.escape(self.error)}</span>"
            self._mark_stale()

    def redraw(self) -> None:
        """Draw the figure for the current control values into ``self.image`` (raises on error)."""
        start = time.perf_counter()
        fig = self._draw()
        self.image.value = viz.figure_to_png(fig)
        self.error = None
        self.status.value = self._status()
        self.redraw_seconds = time.perf_counter() - start
        self._mark_stale()

    def _mark_stale(self) -> None:
        """The figure changed: refresh this explorer's pictures in the notebook after the current cell."""
        if self._pictures:
            _STALE.add(self)


# ------------------------------------------------------------------------------------- dilation
class DilationExplorer(_FigureView):
    """Choose the dilation rate of each layer of a stack of 3×3 convolutions; see which input pixels
    reach the output (``viz.show_dilation_coverage``) and where the holes of gridding appear.

    Args:
        atrous_rates: initial rates, first layer first (1 to ``max_layers`` values).
        reference: a stack drawn next to yours for comparison (default: gridding ``(2, 2, 2)``);
            None hides it.
        max_rate, max_layers, kernel_size: ranges of the controls.

    Controls: ``num_layers`` (IntSlider), ``rates`` (list of IntSliders, one per layer; only the
    first ``num_layers`` count), ``show_reference`` (Checkbox).
    """

    def __init__(self, atrous_rates: Sequence[int] = (1, 2, 3), *, reference: Sequence[int] | None = (2, 2, 2),
                 max_rate: int = 8, max_layers: int = 5, kernel_size: int = 3) -> None:
        atrous_rates = list(atrous_rates)
        if not 1 <= len(atrous_rates) <= max_layers:
            raise ValueError(f"give 1 to {max_layers} atrous_rates, got {atrous_rates}")
        self.kernel_size, self.reference = kernel_size, reference
        self.num_layers = widgets.IntSlider(len(atrous_rates), min=1, max=max_layers, description="layers",
                                            continuous_update=False)
        self.rates = [
            widgets.IntSlider(atrous_rates[i] if i < len(atrous_rates) else 1, min=1, max=max_rate,
                              description=f"rate {i + 1}", continuous_update=False)
            for i in range(max_layers)
        ]
        self.show_reference = widgets.Checkbox(reference is not None,
                                               description=f"compare with rates {tuple(reference or ())}",
                                               disabled=reference is None, style=_WIDE)
        rates = widgets.HBox(self.rates, layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([widgets.HBox([self.num_layers, self.show_reference]), rates])
        self._watch(self.num_layers, self.show_reference, *self.rates)
        self.redraw()

    @property
    def atrous_rates(self) -> tuple[int, ...]:
        """The rates of the active layers."""
        return tuple(s.value for s in self.rates[: self.num_layers.value])

    def _draw(self):
        for i, slider in enumerate(self.rates):
            slider.layout.display = None if i < self.num_layers.value else "none"
        stacks = {"your stack": self.atrous_rates}
        if self.show_reference.value and self.reference is not None:
            stacks["reference"] = tuple(self.reference)
        return viz.show_dilation_coverage(stacks, self.kernel_size)

    def _status(self) -> str:
        counts = viz.dilation_coverage(self.atrous_rates, self.kernel_size)
        holes = float((counts == 0).mean())
        verdict = "no holes: every pixel of the RF reaches the output" if holes == 0 else \
            "gridding: some pixels inside the RF never reach the output"
        return f"rates {self.atrous_rates}: RF {counts.shape[0]}×{counts.shape[0]} px, {holes:.0%} holes ({verdict})"


# ----------------------------------------------------------------------------------- predictions
def _as_batch(image):
    """``(1, 3, H, W)`` float32 tensor: normalised tensors pass, uint8 HWC images are normalised."""
    import torch

    if isinstance(image, torch.Tensor) and image.is_floating_point():
        return image[None] if image.dim() == 3 else image
    rgb = viz.to_rgb(image).astype(np.float32) / 255.0
    rgb = (rgb - np.array(viz.IMAGENET_MEAN, np.float32)) / np.array(viz.IMAGENET_STD, np.float32)
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None]


def _predict(model, image, device) -> dict:
    """``{"pred": (H, W) int64, "features": {name: (C, h, w)}}`` of one image, without gradients."""
    import torch

    x = _as_batch(image).to(device)
    with torch.no_grad():
        if hasattr(model, "forward_features"):
            feats = model.forward_features(x)
            logits = feats.pop("logits")
        else:
            feats, logits = {}, model(x)
    if logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"model returned logits of size {tuple(logits.shape[-2:])} for an input of "
                         f"{tuple(x.shape[-2:])}: "
                         "models must return (N, K, H, W) logits at input resolution")
    return {"pred": logits[0].argmax(0).cpu().numpy(), "features": {k: v[0].cpu() for k, v in feats.items()}}


class PredictionBrowser(_FigureView):
    """Browse images with their ground truth, prediction and error map; per-image mIoU.

    Args:
        images: ``(N, 3, H, W)`` normalised tensor or a sequence of images (sizes may differ).
        masks: ``(N, H, W)`` or a sequence of ``(H, W)`` ground-truth masks.
        preds: predictions (``(H, W)`` indices or ``(K, H, W)`` logits per image), or None to
            compute them with ``model`` when an image is first shown (then cached).
        model: a segmentation model returning ``(N, K, H, W)`` logits (put in eval mode).
        classes, colors: the dataset's class names and palette.
        device: where the model runs.

    Controls: ``index`` (IntSlider over images), ``order`` (Dropdown: dataset order, worst first,
    best first by per-image mIoU; sorting scores every image once).
    """

    _ORDERS = ("dataset order", "worst mIoU first", "best mIoU first")

    def __init__(self, images, masks, preds=None, *, model=None, classes: Sequence[str], colors,
                 ignore_index: int = 255, device="cpu") -> None:
        if len(images) != len(masks) or (preds is not None and len(preds) != len(masks)):
            raise ValueError(f"got {len(images)} images, {len(masks)} masks and "
                             f"{'no' if preds is None else len(preds)} predictions: pass equal numbers")
        if preds is None and model is None:
            raise ValueError("pass preds (one per image) or a model to compute them")
        if len(masks) == 0:
            raise ValueError("no images to browse")
        self.images, self.masks, self.classes, self.colors = images, masks, tuple(classes), colors
        self.ignore_index, self.model, self.device = ignore_index, model, device
        if model is not None:
            model.eval()
        self._preds = {} if preds is None else {i: _as_pred(p) for i, p in enumerate(preds)}
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
        """``(H, W)`` int64 prediction of image ``i`` (computed with the model once, then cached)."""
        if i not in self._preds:
            self._preds[i] = _predict(self.model, self.images[i], self.device)["pred"]
        return self._preds[i]

    def scores(self, i: int) -> dict:
        """``{"mIoU", "pixel_accuracy"}`` of image ``i`` (fractions)."""
        if i not in self._scores:
            self._scores[i] = _image_scores(self.prediction(i), _as_mask(self.masks[i]), len(self.classes),
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


# ------------------------------------------------------------------------------ skip connections
class SkipExplorer(_FigureView):
    """What skip connections recover: several models' predictions of one image, their accuracy near
    boundaries (trimap mIoU), and their decoder feature maps.

    Args:
        image: ``(3, H, W)`` normalised tensor or ``(H, W, 3)`` uint8 image.
        mask: ``(H, W)`` ground truth.
        models: ``{name: model or prediction}``, e.g. ``{"FCN-32s": fcn32, "FCN-16s": fcn16, "FCN-8s": fcn8}``
            or ``{"U-Net": unet, "U-Net without skips": unet_noskip}``. A model is run once (no
            gradients); ``forward_features`` (seglab models) also gives its feature maps. A
            prediction is ``(H, W)`` indices or ``(K, H, W)`` logits.
        classes, colors: the dataset's class names and palette.
        stages: feature names to show (default: the ``decoder.*`` / ``fuse_*`` maps, else all).
        band_widths: band widths (px) of the trimap curve.

    Controls: ``view`` (ToggleButtons: predictions, trimap curve, feature maps), ``band_width``
    (IntSlider, px), ``model`` (Dropdown, for feature maps), ``mode`` (mean |activation| or channels).
    """

    _VIEWS = ("predictions", "trimap curve", "feature maps")

    def __init__(self, image, mask, models: Mapping[str, object], classes: Sequence[str], colors, *,
                 ignore_index: int = 255, stages: Sequence[str] | None = None,
                 band_widths: Sequence[int] = (1, 2, 4, 8, 16, 32), device="cpu") -> None:
        if not models:
            raise ValueError("models is empty: pass {name: model or prediction}")
        self.image_data, self.mask = image, _as_mask(mask)
        self.classes, self.colors, self.ignore_index = tuple(classes), colors, ignore_index
        self.band_widths = tuple(band_widths)
        self.preds: dict[str, np.ndarray] = {}
        self.features: dict[str, dict] = {}
        for name, m in models.items():
            if callable(m):
                m.eval()
                out = _predict(m, image, device)
                self.preds[name] = out["pred"]
                if out["features"]:
                    self.features[name] = self._pick(out["features"], stages)
            else:
                self.preds[name] = _as_pred(m)
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
                name: [_trimap_iou(p, self.mask, len(self.classes), w, self.ignore_index) for w in self.band_widths]
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


# ------------------------------------------------------------------------------ receptive field
class ReceptiveFieldExplorer(_FigureView):
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
        self._x = _as_batch(image)  # (1, 3, H, W)
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


# -------------------------------------------------------------------------------------- training
class TrainingMonitor(_FigureView):
    """Live curves while ``seglab.engine.fit`` runs: pass the monitor as a callback.

    Example::

        monitor = TrainingMonitor(classes=dataset.classes)
        display(monitor)
        history = fit(config, callbacks=[monitor])   # the curves redraw after every epoch

    Called as ``monitor(epoch_record, history)``; keeps the history (``monitor.history``).

    Controls: ``view`` (ToggleButtons: curves, per-class IoU of the latest epoch), ``show_lr``
    (Checkbox: add the learning-rate panel).
    """

    def __init__(self, *, classes: Sequence[str] | None = None, title: str | None = None) -> None:
        self.classes, self.title = classes, title
        self.history: list[dict] = []
        self.view = widgets.ToggleButtons(options=["curves", "per-class IoU"], description="show")
        self.show_lr = widgets.Checkbox(False, description="learning rate")
        super().__init__([widgets.HBox([self.view, self.show_lr])])
        self._watch(self.view, self.show_lr)
        self.status.value = "waiting for the first epoch …"

    def __call__(self, epoch_record: dict, history: list[dict]) -> None:
        self.history = list(history)
        self._on_change()

    def redraw(self) -> None:
        if self.history:
            super().redraw()

    def _draw(self):
        self.show_lr.layout.display = None if self.view.value == "curves" else "none"
        if self.view.value == "curves":
            return viz.plot_history(self.history, show_lr=self.show_lr.value, title=self.title)
        last = self.history[-1]
        iou = last.get("val_iou_per_class")
        if not iou:
            raise ValueError("the epoch records hold no 'val_iou_per_class'")
        classes = self.classes or [f"class {i}" for i in range(len(iou))]
        return viz.plot_iou_per_class(iou, classes, title=f"IoU per class, epoch {last.get('epoch')}")

    def _status(self) -> str:
        r = self.history[-1]
        parts = [f"epoch {r.get('epoch')}"]
        for key, fmt in (("train_loss", "train loss {:.4f}"), ("val_loss", "val loss {:.4f}"),
                         ("val_mIoU", "val mIoU {:.1%}"),
                         ("seconds", "{:.1f} s"), ("images_per_s", "{:.1f} img/s")):
            if r.get(key) is not None:
                parts.append(fmt.format(r[key]))
        return " · ".join(parts)


class RunComparer(_FigureView):
    """Compare training runs saved in a folder: every subfolder holding ``history.json`` is a run.

    Args:
        folder: the parent folder (e.g. ``runs/``); subfolders are searched recursively.
        classes: class names for the per-class view (default: read from the run's
            ``history.csv`` header ``iou_<name>``, else ``class i``).

    Controls: ``runs`` (SelectMultiple of run names, relative paths), ``view`` (curves /
    per-class IoU at each run's best epoch), ``show_lr`` (Checkbox), ``rescan`` (Button).

    Raises:
        FileNotFoundError: if ``folder`` does not exist.
    """

    def __init__(self, folder, *, classes: Sequence[str] | None = None, max_selected: int = 4) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no run folder at {self.folder}: pass the folder holding your runs' subfolders "
                                    "(each written by seglab.engine.fit with out=<folder>/<run>)")
        self.classes = classes
        self._cache: dict[str, tuple[float, list[dict]]] = {}
        self.runs = widgets.SelectMultiple(options=[], description="runs", rows=5, layout=widgets.Layout(width="45%"))
        self.view = widgets.ToggleButtons(options=["curves", "per-class IoU"], description="show")
        self.show_lr = widgets.Checkbox(False, description="learning rate")
        self.rescan = widgets.Button(description="rescan folder", icon="refresh")
        super().__init__([widgets.HBox([self.runs, widgets.VBox([self.view, self.show_lr, self.rescan])])])
        self.rescan.on_click(lambda _: self.scan())
        self.scan(max_selected)
        self._watch(self.runs, self.view, self.show_lr)
        self._on_change()

    def scan(self, max_selected: int = 4) -> list[str]:
        """Find the runs (``**/history.json``) again; keeps the selection where possible."""
        names = sorted(str(p.parent.relative_to(self.folder)) for p in self.folder.rglob("history.json"))
        keep = [n for n in self.runs.value if n in names] or names[:max_selected]
        self.runs.options = names
        self.runs.value = tuple(keep)
        return names

    def history(self, name: str) -> list[dict]:
        """The history of run ``name`` (re-read when the file changed)."""
        path = self.folder / name / "history.json"
        mtime = path.stat().st_mtime
        if name not in self._cache or self._cache[name][0] != mtime:
            self._cache[name] = (mtime, json.loads(path.read_text()))
        return self._cache[name][1]

    def _classes(self, name: str, k: int) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        csv = self.folder / name / "history.csv"
        if csv.is_file():
            header = csv.read_text().splitlines()[0].split(",")
            names = [h[4:] for h in header if h.startswith("iou_")]
            if len(names) == k:
                return names
        return [f"class {i}" for i in range(k)]

    def redraw(self) -> None:
        if not self.runs.value:
            self.image.value = b""
            self.status.value = f"no run selected ({len(self.runs.options)} found in {html.escape(str(self.folder))})"
            self._mark_stale()
            return
        super().redraw()

    def _draw(self):
        selected = {name: self.history(name) for name in self.runs.value}
        self.show_lr.layout.display = None if self.view.value == "curves" else "none"
        if self.view.value == "curves":
            return viz.plot_history(selected, show_lr=self.show_lr.value)
        best = {}
        for name, h in selected.items():
            scored = [r for r in h if r.get("val_mIoU") is not None and r.get("val_iou_per_class")]
            if scored:
                best[name] = max(scored, key=lambda r: r["val_mIoU"])["val_iou_per_class"]
        if not best:
            raise ValueError("the selected runs hold no 'val_iou_per_class'")
        k = len(next(iter(best.values())))
        if any(len(v) != k for v in best.values()):
            raise ValueError("the selected runs have different numbers of classes: compare runs of one dataset")
        return viz.plot_iou_per_class(best, self._classes(next(iter(best)), k), title="IoU per class at the best epoch")

    def _status(self) -> str:
        parts = []
        for name in self.runs.value:
            h = self.history(name)
            vals = [r["val_mIoU"] for r in h if r.get("val_mIoU") is not None]
            parts.append(f"{html.escape(name)}: {len(h)} epoch{'' if len(h) == 1 else 's'}, best val mIoU "
                         + (f"{max(vals):.1%}" if vals else "n/a"))
        return "<br>".join(parts)
