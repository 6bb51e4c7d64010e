"""Skip connections: ``compare_predictions``, ``show_feature_maps``, ``plot_trimap_curves``, and the
per-image boundary score they print (``image_trimap_iou``).

The trimap (boundary) IoU comes from ``seglab.metrics``, imported when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .core import as_mask, as_pred, _aspect, _check_same_size, _class_legend, _figure, _image_axis, _to_numpy, to_rgb
from .masks import _error_legend, _ignore_patch, image_scores, colorize, error_map

__all__ = ["compare_predictions", "show_feature_maps", "plot_trimap_curves", "image_trimap_iou"]


def image_trimap_iou(pred, mask, num_classes: int, band_width: int, ignore_index: int = 255) -> float:
    """Trimap mIoU of one image: the mIoU over the pixels within ``band_width`` px of a ground-truth
    boundary (Kohli et al. 2009; Chen et al. 2018 fig. 5), as ``seglab.metrics.trimap_iou`` computes it.

    Trailing whole rows and columns of ``ignore_index`` at the bottom and the right (the padding of
    ``eval_transform`` / ``pad_collate``) are cut off first, so that the padding's edge is not taken for a
    boundary; the band is the one ``compare_predictions`` draws.

    Args:
        pred: ``(H, W)`` class indices or ``(K, H, W)`` logits (numpy or torch).
        mask: ``(H, W)`` ground truth, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: K. band_width: half-width of the band around boundaries, in pixels (>= 1).
        ignore_index: ground-truth value that is never counted (its edges inside the image are boundaries).

    Returns:
        the band's mIoU, a fraction in [0, 1] (nan when the band holds no labelled pixel).

    Raises:
        ValueError: bad shapes or dtypes, sizes that differ, or a bad ``band_width`` (from ``seglab.metrics``).
    """
    import torch

    from seglab.metrics import trimap_iou

    p, m = as_pred(pred), as_mask(mask)
    _check_same_size(m, p)
    rows, cols = _unpadded(m, ignore_index)  # the padding strips are not boundaries
    preds, target = torch.from_numpy(p[rows, cols])[None], torch.from_numpy(m[rows, cols])[None]  # (1, h, w) each
    if target.numel() == 0:
        return float("nan")
    return float(trimap_iou(preds, target, num_classes, band_width, ignore_index))


def _unpadded(mask: np.ndarray, ignore_index: int) -> tuple[slice, slice]:
    """Rows and columns of ``mask`` without its padding: the trailing whole rows / columns of ``ignore_index``
    at the bottom and the right, where ``eval_transform`` and ``pad_collate`` pad (an ignore strip along the
    top or the left is annotation, and its edge a boundary, as ``seglab.metrics`` counts it)."""
    labelled = mask != ignore_index
    rows, cols = np.flatnonzero(labelled.any(1)), np.flatnonzero(labelled.any(0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(0, rows[-1] + 1), slice(0, cols[-1] + 1)


def _boundary_band(mask: np.ndarray, band_width: int, ignore_index: int) -> np.ndarray:
    """``(H, W)`` bool: the trimap band as drawn, the labelled pixels within ``band_width`` px of a
    boundary (``seglab.metrics.boundary_band``) of the unpadded image. Padding strips (bottom / right) are
    neither boundaries nor band; ignored pixels (255) are never band (no metric scores them), though a label's
    edge against an ignore region inside the image (VOC's object outlines) still is a boundary."""
    import torch

    from seglab.metrics import boundary_band

    band = np.zeros(mask.shape, dtype=bool)
    rows, cols = _unpadded(mask, ignore_index)
    inner = mask[rows, cols]
    if inner.size:
        band[rows, cols] = boundary_band(torch.from_numpy(np.ascontiguousarray(inner))[None], band_width,
                                         ignore_index)[0].numpy()
    return band & (mask != ignore_index)


def compare_predictions(image, mask, preds: Mapping[str, object], classes: Sequence[str], colors, *,
                        band_width: int | None = None, ignore_index: int = 255, show_errors: bool = True,
                        title: str | None = None) -> Figure:
    """Several models' predictions of one image side by side (e.g. FCN-32s / 16s / 8s, U-Net ± skips).

    Top row: image, ground truth, then each prediction titled with its mIoU on this image and,
    when ``band_width`` is given, its trimap mIoU: the mIoU over pixels within ``band_width`` px of
    a ground-truth boundary (Kohli et al. 2009; Chen et al. 2018 fig. 5), which is where skip
    connections help (Long et al. 2015; Ronneberger et al. 2015). Bottom row (``show_errors``):
    the trimap band over the image (labelled pixels only: the bottom / right padding strips and ignored
    pixels are not band), then each model's error map. Predictions are not painted
    where the ground truth is ``ignore_index`` (padding, object borders): no metric scores those
    pixels, so every panel draws them in ``IGNORE_COLOR``.

    Args:
        image: ``(3, H, W)`` normalised float or ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` ground truth.
        preds: ``{name: (H, W) class indices or (K, H, W) logits}``, shown in insertion order.
        band_width: trimap half-width in pixels (``seglab.metrics.trimap_iou``), or None.
    """
    if not preds:
        raise ValueError("preds is empty: pass {model name: prediction}")
    rgb, m = to_rgb(image), as_mask(mask)
    named = {name: as_pred(p, f"preds[{name!r}]") for name, p in preds.items()}
    for p in named.values():
        _check_same_size(m, p)
    ncols, nrows = 2 + len(named), 2 if show_errors else 1
    fig = _figure(2.6 * ncols, 2.45 * _aspect(m) * nrows + 0.45 * nrows + 1.1)
    axes = np.atleast_2d(fig.subplots(nrows, ncols))
    _image_axis(axes[0, 0], rgb, "image")
    _image_axis(axes[0, 1], colorize(m, colors, ignore_index), "ground truth")
    ignored = m == ignore_index
    present = set(np.unique(m[~ignored]).tolist())
    for j, (name, p) in enumerate(named.items(), start=2):
        text = f"{name}\nmIoU {image_scores(p, m, len(classes), ignore_index)['mIoU']:.1%}"
        if band_width is not None:
            text += f", trimap {image_trimap_iou(p, m, len(classes), band_width, ignore_index):.1%}"
        _image_axis(axes[0, j], colorize(p, colors, ignore_index, ignore_mask=ignored), text)
        if show_errors:
            _image_axis(axes[1, j], error_map(m, p, ignore_index))
        present |= set(np.unique(p[~ignored]).tolist())
    if show_errors:
        extra = _error_legend(bool(ignored.any()), ignore_index)
    else:
        extra = [_ignore_patch(ignore_index)] if ignored.any() else []
    if show_errors:
        if band_width is not None:
            band = _boundary_band(m, band_width, ignore_index)
            shown = (rgb * 0.35).astype(np.uint8)
            shown[band] = (255, 200, 0)
            _image_axis(axes[1, 0], shown, f"trimap band (width {band_width} px)")
            extra.append(Patch(facecolor=(1.0, 0.78, 0.0), label="trimap band"))
        else:
            axes[1, 0].axis("off")
        axes[1, 1].axis("off")
        axes[1, 1].text(0.5, 0.5, "errors →", ha="center", va="center", fontsize=11, transform=axes[1, 1].transAxes)
    _class_legend(fig, classes, colors, present, extra=extra)
    if title:
        fig.suptitle(title)
    return fig


def show_feature_maps(features: Mapping[str, object], *, mode: str = "mean_abs", num_channels: int = 4,
                      input_size: tuple[int, int] | None = None, title: str | None = None) -> Figure:
    """Feature maps per network stage (e.g. the decoder stages of a U-Net, with and without skips).

    Args:
        features: ``{stage name: (C, h, w) or (1, C, h, w) activations}`` in network order
            (a batch of more than one keeps only its first element).
        mode: ``"mean_abs"`` — one panel per stage with the mean over channels of ``|activation|``;
            ``"channels"`` — the first ``num_channels`` channels per stage, one row each.
        input_size: ``(H, W)`` of the network input, to print each stage's stride.

    Each panel is scaled to its own [min, max] (stages differ in magnitude); the shared colourbar
    reads 0 = panel minimum, 1 = panel maximum.
    """
    if mode not in ("mean_abs", "channels"):
        raise ValueError(f"mode must be 'mean_abs' or 'channels', got {mode!r}")
    if not features:
        raise ValueError("features is empty: pass {stage name: (C, h, w) activations}")
    maps = {}
    for name, f in features.items():
        a = _to_numpy(f).astype(np.float32)
        if a.ndim == 4:
            a = a[0]
        if a.ndim != 3:
            raise ValueError(f"features[{name!r}] must be (C, h, w) or (N, C, h, w), got shape {a.shape}")
        maps[name] = a
    nrows = 1 if mode == "mean_abs" else num_channels
    fig = _figure(2.4 * len(maps) + 0.8, 2.4 * nrows + 0.6)
    axes = np.atleast_2d(fig.subplots(nrows, len(maps), squeeze=False))
    im = None
    for j, (name, a) in enumerate(maps.items()):
        c, h, w = a.shape
        stride = f", 1/{input_size[0] // h}" if input_size and h else ""
        panels = [np.abs(a).mean(0)] if mode == "mean_abs" else [a[i] if i < c else None for i in range(nrows)]
        for i, panel in enumerate(panels):
            ax = axes[i, j]
            if panel is None:
                ax.axis("off")
                continue
            lo, hi = float(panel.min()), float(panel.max())
            im = ax.imshow((panel - lo) / (hi - lo) if hi > lo else np.zeros_like(panel), cmap="magma",
                           vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{name}\n{c} ch, {h}×{w}{stride}", fontsize=10)
            if j == 0 and mode == "channels":
                ax.set_ylabel(f"channel {i}")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="relative activation (per panel)")
    fig.suptitle(title or ("mean |activation| per stage" if mode == "mean_abs" else "first channels per stage"),
                 fontsize=11)
    return fig


def plot_trimap_curves(band_widths: Sequence[int], scores: Mapping[str, Sequence[float]], *,
                       title: str | None = None) -> Figure:
    """Trimap mIoU against band width, one line per model (Chen et al. 2018, fig. 5).

    Args:
        band_widths: band half-widths in pixels.
        scores: ``{model name: trimap mIoU per band width}`` as fractions in [0, 1].

    The legend sits below the axes, never over a curve.
    """
    fig = _figure(5.5, 3.8 + 0.22 * ((len(scores) + 1) // 2))
    ax = fig.subplots()
    for name, vals in scores.items():
        vals = np.asarray(vals, dtype=float)
        if len(vals) != len(band_widths):
            raise ValueError(f"scores[{name!r}] has {len(vals)} values for {len(band_widths)} band widths")
        ax.plot(band_widths, 100 * vals, "o-", label=name)
    ax.set_xlabel("trimap band width (px)")
    ax.set_ylabel("mIoU inside the band (%)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(2, max(1, len(scores))), frameon=False, fontsize=9)
    ax.set_title(title or "accuracy near object boundaries")
    return fig
