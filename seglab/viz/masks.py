"""Masks and predictions: ``colorize``, ``overlay``, ``error_map``, ``show_mask``, ``show_predictions``, and
the per-image scores they print (``image_scores``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .core import (
    IGNORE_COLOR,
    as_mask,
    as_pred,
    _aspect,
    _check_same_size,
    _class_legend,
    _figure,
    _image_axis,
    _palette,
    _to_numpy,
    to_rgb,
)

__all__ = ["colorize", "overlay", "error_map", "show_mask", "show_predictions", "image_scores"]

_CORRECT, _WRONG = (255, 255, 255), (214, 39, 40)  # error map; ignored pixels in IGNORE_COLOR


def image_scores(pred, mask, num_classes: int, ignore_index: int = 255) -> dict:
    """The scores of one image, as the pictures print them: ``{"mIoU", "pixel_accuracy"}``.

    Computed by ``seglab.metrics`` (``confusion_matrix``, ``mean_iou``, ``pixel_accuracy``) on this
    image alone: classes absent from both the prediction and the ground truth are left out of the mean.

    Args:
        pred: ``(H, W)`` class indices or ``(K, H, W)`` logits (numpy or torch).
        mask: ``(H, W)`` ground truth, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: K. ignore_index: ground-truth value counted nowhere.

    Returns:
        ``{"mIoU": float, "pixel_accuracy": float}``, fractions in [0, 1]; nan when no pixel is labelled.

    Raises:
        ValueError: bad shapes or dtypes (see ``as_mask`` / ``as_pred``), or sizes that differ.
    """
    import torch

    from seglab.metrics import confusion_matrix, mean_iou, pixel_accuracy

    p, m = as_pred(pred), as_mask(mask)
    _check_same_size(m, p)
    cm = confusion_matrix(torch.from_numpy(p)[None], torch.from_numpy(m)[None], num_classes, ignore_index)
    return {"mIoU": float(mean_iou(cm)), "pixel_accuracy": float(pixel_accuracy(cm))}


def colorize(mask, colors, ignore_index: int = 255, ignore_color: Sequence[int] = IGNORE_COLOR, *,
             ignore_mask=None) -> np.ndarray:
    """Paint a class-index mask with a dataset palette.

    Args:
        mask: ``(H, W)`` integer class indices in ``[0, K)`` or ``ignore_index`` (numpy or torch).
        colors: K RGB triples 0..255 (``dataset.colors``).
        ignore_index: value painted with ``ignore_color`` (255 for VOC/CamVid).
        ignore_color: RGB for ignored pixels (``IGNORE_COLOR``, magenta, by default).
        ignore_mask: optional ``(H, W)`` bool, True where the *ground truth* is ignored (padding,
            VOC's object borders): those pixels are painted ``ignore_color`` whatever ``mask`` holds.
            Pass ``target == 255`` when colourising a prediction, so that no class colour is painted
            where there is no label to compare it with.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: if the mask is not 2-D integer, or holds values outside ``[0, K) ∪ {ignore_index}``.
    """
    m = as_mask(mask)
    palette = _palette(colors)
    valid = (m >= 0) & (m < len(palette))
    ignored = m == ignore_index
    bad = ~(valid | ignored)
    if bad.any():
        values = np.unique(m[bad])[:10].tolist()
        raise ValueError(
            f"mask holds values {values} outside [0, {len(palette)}) and ignore_index={ignore_index}: "
            "pass the palette of the dataset the mask comes from, or map unlabelled values to 255"
        )
    out = np.empty(m.shape + (3,), np.uint8)
    out[valid] = palette[m[valid]]
    out[ignored] = np.asarray(ignore_color, np.uint8)
    if ignore_mask is not None:
        keep_out = np.asarray(_to_numpy(ignore_mask), bool)
        if keep_out.shape != m.shape:
            raise ValueError(f"ignore_mask {keep_out.shape} and mask {m.shape} differ in size: "
                             "pass the ground truth's (target == 255) of the same image")
        out[keep_out] = np.asarray(ignore_color, np.uint8)
    return out


def overlay(image, mask, colors, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend the colourised mask over the image: ``(1 - alpha) * image + alpha * colour``.

    Ignored pixels show the bare image. Returns ``(H, W, 3)`` uint8; raises ValueError when the
    image and mask sizes differ.
    """
    rgb = to_rgb(image).astype(np.float32)
    m = as_mask(mask)
    if rgb.shape[:2] != m.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {m.shape} differ in size")
    colour = colorize(m, colors, ignore_index).astype(np.float32)
    keep = (m != ignore_index)[..., None]
    blended = np.where(keep, (1.0 - alpha) * rgb + alpha * colour, rgb)
    return (blended + 0.5).astype(np.uint8)


def error_map(mask, pred, ignore_index: int = 255) -> np.ndarray:
    """``(H, W, 3)`` uint8: correct pixels white, wrong pixels red, ignored pixels in ``IGNORE_COLOR``.

    Args:
        mask: ``(H, W)`` ground truth; pred: ``(H, W)`` class indices or ``(K, H, W)`` logits.
    """
    m, p = as_mask(mask), as_pred(pred)
    _check_same_size(m, p)
    out = np.empty(m.shape + (3,), np.uint8)
    out[:] = _CORRECT
    out[p != m] = _WRONG
    out[m == ignore_index] = IGNORE_COLOR
    return out


def _ignore_patch(ignore_index: int = 255) -> Patch:
    """Legend swatch for ignored pixels, in the colour ``colorize`` paints them."""
    return Patch(facecolor=np.array(IGNORE_COLOR) / 255, edgecolor="0.3", label=f"ignore ({ignore_index})")


def _error_legend(ignored: bool = False, ignore_index: int = 255) -> list:
    """Legend swatches of the error map: wrong pixels, and (when any) ignored ones."""
    return [Patch(facecolor=np.array(_WRONG) / 255, edgecolor="0.3", label="wrong pixel")] + (
        [_ignore_patch(ignore_index)] if ignored else [])


def show_mask(image, mask, classes: Sequence[str], colors, *, ignore_index: int = 255, alpha: float = 0.5,
              title: str | None = None) -> Figure:
    """Image, colourised mask and overlay side by side, with a legend of the classes present.

    The legend lists the classes present in the mask and, only when the mask holds ignored pixels,
    an "ignore (255)" swatch in ``IGNORE_COLOR``.

    Args: see ``colorize`` / ``to_rgb``; ``classes`` are the K class names.
    """
    rgb, m = to_rgb(image), as_mask(mask)
    fig = _figure(9.0, 3.0 * _aspect(m) + 0.9)
    axes = fig.subplots(1, 3)
    _image_axis(axes[0], rgb, "image")
    _image_axis(axes[1], colorize(m, colors, ignore_index), "ground truth")
    _image_axis(axes[2], overlay(rgb, m, colors, alpha, ignore_index), f"overlay (alpha = {alpha})")
    extra = [_ignore_patch(ignore_index)] if (m == ignore_index).any() else []
    _class_legend(fig, classes, colors, present=np.unique(m).tolist(), extra=extra)
    if title:
        fig.suptitle(title)
    return fig


def show_predictions(images, masks, preds, classes: Sequence[str], colors, *, ignore_index: int = 255,
                     max_images: int = 6, indices: Sequence[int] | None = None, title: str | None = None) -> Figure:
    """One row per image: image | ground truth | prediction | error map, with per-image scores.

    Args:
        images: ``(N, 3, H, W)`` normalised floats or a sequence of ``(H, W, 3)`` uint8 images.
        masks: ``(N, H, W)`` int64 ground truth (``ignore_index`` allowed).
        preds: ``(N, H, W)`` class indices or ``(N, K, H, W)`` logits.
        classes, colors: the dataset's K names and RGB palette.
        max_images: at most this many rows are drawn.
        indices: dataset index of each image, printed as the row label (default 0, 1, ...).

    Each row is labelled with the image's mIoU and pixel accuracy (classes absent from both the
    ground truth and the prediction are left out of that image's mean, as in ``seglab.metrics``).
    The prediction is not painted where the ground truth is ``ignore_index`` (padding, object
    borders): those pixels are scored by no metric and are drawn in ``IGNORE_COLOR`` in all panels.

    Raises:
        ValueError: if the numbers of images, masks and predictions differ, or sizes disagree.
    """
    n = len(masks)
    if not (len(images) == n == len(preds)):
        raise ValueError(f"got {len(images)} images, {n} masks and {len(preds)} predictions: pass equal numbers")
    if n == 0:
        raise ValueError("nothing to show: images, masks and preds are empty")
    rows = min(n, max_images)
    fig = _figure(10.0, (2.2 * _aspect(as_mask(masks[0], "masks[0]")) + 0.25) * rows + 1.0)
    axes = np.atleast_2d(fig.subplots(rows, 4))
    present: set[int] = set()
    any_ignored = False
    for i in range(rows):
        m, p = as_mask(masks[i], "masks[i]"), as_pred(preds[i], "preds[i]")
        _check_same_size(m, p)
        scores = image_scores(p, m, len(classes), ignore_index)
        heads = ("image", "ground truth", "prediction", "errors") if i == 0 else (None,) * 4
        _image_axis(axes[i, 0], to_rgb(images[i]), heads[0])
        _image_axis(axes[i, 1], colorize(m, colors, ignore_index), heads[1])
        ignored = m == ignore_index
        any_ignored |= bool(ignored.any())
        _image_axis(axes[i, 2], colorize(p, colors, ignore_index, ignore_mask=ignored), heads[2])
        _image_axis(axes[i, 3], error_map(m, p, ignore_index), heads[3])
        label = i if indices is None else indices[i]
        axes[i, 0].set_ylabel(f"#{label}\nmIoU {scores['mIoU']:.1%}\nacc {scores['pixel_accuracy']:.1%}", fontsize=9)
        present |= set(np.unique(m[~ignored]).tolist()) | set(np.unique(p[~ignored]).tolist())
    _class_legend(fig, classes, colors, present, extra=_error_legend(any_ignored, ignore_index))
    if title:
        fig.suptitle(title)
    return fig
