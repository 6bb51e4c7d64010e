"""Pictures for the seglab notebooks: every public function returns a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``, so no
figure is ever registered with a pyplot window manager (nothing leaks, nothing needs closing) and
everything renders with the Agg backend: in CI, on nbviewer and in a PDF export. In a notebook a
returned figure is shown by ``display(fig)`` (or as the cell's last value); ``figure_to_png``
gives PNG bytes for ``ipywidgets.Image``. Figures default to a low dpi (``DPI``) to keep
notebooks small.

The module depends on numpy and matplotlib only; torch tensors are accepted anywhere an array
is (they are moved to the CPU and converted). Nothing here imports models or datasets: pass the
arrays (images, masks, predictions, receptive-field maps, histories) and the dataset's
``classes`` / ``colors``. The lazy imports are ``seglab.metrics`` for the trimap (boundary) IoU
and OpenCV (``cv2``, installed with albumentations) for ``show_mask_resize``.

Sections: masks (``colorize``, ``overlay``, ``error_map``, ``show_mask``, ``show_predictions``),
datasets (``plot_class_frequencies``, ``show_palette``, ``show_mask_resize``), receptive fields
(``show_receptive_field``), dilation (``dilation_coverage``, ``show_dilated_kernels``,
``show_dilation_coverage``), skip connections
(``compare_predictions``, ``show_feature_maps``, ``plot_trimap_curves``), training
(``plot_history``, ``plot_iou_per_class``, ``plot_confusion_matrix``).

Conventions: images ``(3, H, W)`` float32 normalised with ImageNet mean/std, or ``(H, W, 3)``
uint8 RGB; masks ``(H, W)`` int64 in ``[0, K)`` or ``ignore_index`` (255); predictions ``(H, W)``
class indices or ``(K, H, W)`` logits. Metrics are fractions in [0, 1]; pictures print percent.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

__all__ = [
    "DPI",
    "IGNORE_COLOR",
    "figure_to_png",
    "to_rgb",
    "colorize",
    "overlay",
    "error_map",
    "show_mask",
    "show_predictions",
    "plot_class_frequencies",
    "show_palette",
    "show_mask_resize",
    "show_receptive_field",
    "dilation_coverage",
    "show_dilated_kernels",
    "show_dilation_coverage",
    "compare_predictions",
    "show_feature_maps",
    "plot_trimap_curves",
    "plot_history",
    "plot_iou_per_class",
    "plot_confusion_matrix",
]

DPI = 72
"""Default figure resolution (dots per inch): low, so that notebooks with many figures stay small."""

IGNORE_COLOR = (224, 224, 192)
"""RGB of ignored pixels (``ignore_index``): PASCAL VOC's colour for its 255 'void' outline."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CORRECT, _WRONG, _IGNORED = (255, 255, 255), (214, 39, 40), (150, 150, 150)
_INVENTED = (230, 30, 30)  # bilinear mask values that are no label of the original


# --------------------------------------------------------------------------------------- helpers
def _to_numpy(x) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class _Figure(Figure):
    """A plain Figure that also displays itself in Jupyter without pyplot (``_repr_png_``).

    IPython only knows how to show ``Figure`` objects once pyplot's inline backend is active; a
    figure built without pyplot (under ``MPLBACKEND=Agg`` in CI, say) would print as text.
    """

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def _figure(width: float, height: float, dpi: float | None = None, layout: str | None = "constrained") -> Figure:
    """A new figure; ``layout=None`` for a fixed layout (set with ``subplots_adjust``: about 2× faster to
    render than constrained layout, which matters for the interactive widgets)."""
    return _Figure(figsize=(width, height), dpi=dpi or DPI, layout=layout)


def figure_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """Render ``fig`` with Agg and return the PNG bytes (for ``ipywidgets.Image`` or files).

    Args:
        fig: a Figure from this module (or any matplotlib Figure).
        dpi: resolution in dots per inch (default: the figure's own, ``DPI`` for ours).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


def _palette(colors) -> np.ndarray:
    palette = np.asarray(colors)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0:
        raise ValueError(
            f"colors must be a sequence of K (R, G, B) triples, got shape {palette.shape}: "
            "pass the dataset's .colors attribute"
        )
    if palette.min() < 0 or palette.max() > 255 or not np.array_equal(palette, np.round(palette)):
        raise ValueError("colors must hold 0..255 integer RGB values (e.g. (128, 0, 0)), not 0..1 floats")
    return palette.astype(np.uint8)


def _as_mask(mask, name: str = "mask") -> np.ndarray:
    m = _to_numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"{name} must be (H, W) class indices, got shape {m.shape}: pick one image of the batch")
    if not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{name} has dtype {m.dtype}; pass integer class indices (e.g. mask.long())")
    return m.astype(np.int64, copy=False)


def _as_pred(pred, name: str = "pred") -> np.ndarray:
    """(H, W) int64 from class indices (H, W) or logits (K, H, W) (argmax over dim 0)."""
    p = _to_numpy(pred)
    if p.ndim == 3 and p.shape[0] > 1:
        return p.argmax(0).astype(np.int64)
    return _as_mask(p, name)


def _check_same_size(mask: np.ndarray, pred: np.ndarray) -> None:
    if mask.shape != pred.shape:
        raise ValueError(
            f"mask {mask.shape} and prediction {pred.shape} differ in size: "
            "upsample logits to the mask size (F.interpolate) before plotting"
        )


def to_rgb(image, mean: Sequence[float] | None = IMAGENET_MEAN,
           std: Sequence[float] | None = IMAGENET_STD) -> np.ndarray:
    """Displayable ``(H, W, 3)`` uint8 RGB from any image layout used in seglab.

    Accepts ``(H, W, 3)`` or ``(H, W)`` uint8 (a dataset without transform) and ``(3, H, W)`` or
    ``(1, H, W)`` float tensors normalised with ``mean``/``std`` (the transform presets; ImageNet
    statistics by default, pass ``mean=None, std=None`` for floats already in [0, 1]).

    Raises:
        ValueError: for any other shape or dtype.
    """
    a = _to_numpy(image)
    if a.dtype == np.uint8:
        if a.ndim == 2:
            return np.repeat(a[..., None], 3, axis=2)
        if a.ndim == 3 and a.shape[2] == 3:
            return a
        if a.ndim == 3 and a.shape[0] == 3:
            return np.ascontiguousarray(a.transpose(1, 2, 0))
    elif np.issubdtype(a.dtype, np.floating) and a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.astype(np.float32)
        if mean is not None and std is not None:
            a = a * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
        if a.shape[0] == 1:
            a = np.repeat(a, 3, axis=0)
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    raise ValueError(
        f"cannot display an image of shape {a.shape} and dtype {a.dtype}: pass (H, W, 3) uint8 RGB "
        "or a (3, H, W) float tensor normalised with ImageNet mean/std (one image, not a batch)"
    )


def _image_scores(pred: np.ndarray, mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> dict:
    """Per-image ``{"mIoU", "pixel_accuracy"}`` from ``seglab.metrics`` (fractions; nan when no labelled pixel)."""
    import torch

    from seglab.metrics import confusion_matrix, mean_iou, pixel_accuracy

    cm = confusion_matrix(torch.from_numpy(pred)[None].long(), torch.from_numpy(mask)[None].long(), num_classes, ignore_index)
    return {"mIoU": float(mean_iou(cm)), "pixel_accuracy": float(pixel_accuracy(cm))}


def _trimap_iou(pred: np.ndarray, mask: np.ndarray, num_classes: int, band_width: int, ignore_index: int) -> float:
    import torch

    from seglab.metrics import trimap_iou

    return trimap_iou(
        torch.from_numpy(pred)[None], torch.from_numpy(mask)[None], num_classes, band_width, ignore_index
    )


def _boundary_band(mask: np.ndarray, band_width: int, ignore_index: int) -> np.ndarray:
    import torch

    from seglab.metrics import boundary_band

    return boundary_band(torch.from_numpy(mask)[None], band_width, ignore_index)[0].numpy()


def _class_legend(fig: Figure, classes: Sequence[str], colors, present=None, extra=()) -> None:
    """Legend of class colour patches (only classes in ``present`` when given) below the figure."""
    palette = _palette(colors)
    idx = range(len(classes)) if present is None else sorted(i for i in present if 0 <= i < len(classes))
    handles = [Patch(facecolor=palette[i] / 255.0, edgecolor="0.3", label=classes[i]) for i in idx]
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)


def _aspect(mask: np.ndarray) -> float:
    """height / width of an image, for figure sizes without empty bands."""
    return mask.shape[0] / max(mask.shape[1], 1)


def _image_axis(ax, image, title: str | None = None, **kwargs) -> None:
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


# ----------------------------------------------------------------------------------------- masks
def colorize(mask, colors, ignore_index: int = 255, ignore_color: Sequence[int] = IGNORE_COLOR) -> np.ndarray:
    """Paint a class-index mask with a dataset palette.

    Args:
        mask: ``(H, W)`` integer class indices in ``[0, K)`` or ``ignore_index`` (numpy or torch).
        colors: K RGB triples 0..255 (``dataset.colors``).
        ignore_index: value painted with ``ignore_color`` (255 for VOC/CamVid).
        ignore_color: RGB for ignored pixels (VOC's cream outline colour by default).

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: if the mask is not 2-D integer, or holds values outside ``[0, K) ∪ {ignore_index}``.
    """
    m = _as_mask(mask)
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
    return out


def overlay(image, mask, colors, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend the colourised mask over the image: ``(1 - alpha) * image + alpha * colour``.

    Ignored pixels show the bare image. Returns ``(H, W, 3)`` uint8; raises ValueError when the
    image and mask sizes differ.
    """
    rgb = to_rgb(image).astype(np.float32)
    m = _as_mask(mask)
    if rgb.shape[:2] != m.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {m.shape} differ in size")
    colour = colorize(m, colors, ignore_index).astype(np.float32)
    keep = (m != ignore_index)[..., None]
    blended = np.where(keep, (1.0 - alpha) * rgb + alpha * colour, rgb)
    return (blended + 0.5).astype(np.uint8)


def error_map(mask, pred, ignore_index: int = 255) -> np.ndarray:
    """``(H, W, 3)`` uint8: correct pixels white, wrong pixels red, ignored pixels grey.

    Args:
        mask: ``(H, W)`` ground truth; pred: ``(H, W)`` class indices or ``(K, H, W)`` logits.
    """
    m, p = _as_mask(mask), _as_pred(pred)
    _check_same_size(m, p)
    out = np.empty(m.shape + (3,), np.uint8)
    out[:] = _CORRECT
    out[p != m] = _WRONG
    out[m == ignore_index] = _IGNORED
    return out


def _ignore_patch(ignore_index: int = 255) -> Patch:
    """Legend swatch for ignored pixels, in the colour ``colorize`` paints them."""
    return Patch(facecolor=np.array(IGNORE_COLOR) / 255, edgecolor="0.3", label=f"ignore ({ignore_index})")


def _error_legend() -> list:
    return [
        Patch(facecolor=np.array(_WRONG) / 255, edgecolor="0.3", label="wrong pixel"),
        Patch(facecolor=np.array(_IGNORED) / 255, edgecolor="0.3", label="ignored (255)"),
    ]


def show_mask(image, mask, classes: Sequence[str], colors, *, ignore_index: int = 255, alpha: float = 0.5,
              title: str | None = None) -> Figure:
    """Image, colourised mask and overlay side by side, with a legend of the classes present.

    The legend lists the classes present in the mask and, only when the mask holds ignored pixels,
    an "ignore (255)" swatch in ``IGNORE_COLOR``.

    Args: see ``colorize`` / ``to_rgb``; ``classes`` are the K class names.
    """
    rgb, m = to_rgb(image), _as_mask(mask)
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

    Raises:
        ValueError: if the numbers of images, masks and predictions differ, or sizes disagree.
    """
    n = len(masks)
    if not (len(images) == n == len(preds)):
        raise ValueError(f"got {len(images)} images, {n} masks and {len(preds)} predictions: pass equal numbers")
    if n == 0:
        raise ValueError("nothing to show: images, masks and preds are empty")
    rows = min(n, max_images)
    fig = _figure(10.0, (2.2 * _aspect(_as_mask(masks[0], "masks[0]")) + 0.25) * rows + 1.0)
    axes = np.atleast_2d(fig.subplots(rows, 4))
    present: set[int] = set()
    for i in range(rows):
        m, p = _as_mask(masks[i], "masks[i]"), _as_pred(preds[i], "preds[i]")
        _check_same_size(m, p)
        scores = _image_scores(p, m, len(classes), ignore_index)
        heads = ("image", "ground truth", "prediction", "errors") if i == 0 else (None,) * 4
        _image_axis(axes[i, 0], to_rgb(images[i]), heads[0])
        _image_axis(axes[i, 1], colorize(m, colors, ignore_index), heads[1])
        _image_axis(axes[i, 2], colorize(p, colors, ignore_index), heads[2])
        _image_axis(axes[i, 3], error_map(m, p, ignore_index), heads[3])
        label = i if indices is None else indices[i]
        axes[i, 0].set_ylabel(f"#{label}\nmIoU {scores['mIoU']:.1%}\nacc {scores['pixel_accuracy']:.1%}", fontsize=9)
        present |= set(np.unique(m).tolist()) | set(np.unique(p).tolist())
    _class_legend(fig, classes, colors, present, extra=_error_legend())
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------ datasets and palettes
def _percent_label(p: float) -> str:
    """'45.2%' / '0.031%': one decimal from 1 %, two significant digits below."""
    return f"{p:.1f}%" if p >= 1 else f"{p:.2g}%"


def plot_class_frequencies(counts, classes: Sequence[str], colors, *, num_ignored: int | None = None,
                           log_scale: bool = True, title: str | None = None) -> Figure:
    """Share of pixels per class as horizontal bars in the class colours, most frequent on top.

    Args:
        counts: ``(K,)`` non-negative pixel counts per class (e.g. ``np.bincount`` of the labelled
            mask values, summed over images); numpy or torch, integer or float.
        classes, colors: the dataset's K names and RGB palette (0..255).
        num_ignored: number of ignored (255) pixels; when given, an "ignore (255)" bar in
            ``IGNORE_COLOR`` is drawn last and the ignored pixels count in the total.
        log_scale: logarithmic x axis (default), so that rare classes stay visible next to the
            "stuff" classes that cover most pixels.
        title: figure title (default: "share of pixels per class" and the pixel total).

    Bar lengths are percent of all pixels, ``100 * count / (sum(counts) + num_ignored)``, sorted
    in decreasing order (ties by class index); each bar is labelled with its percentage, and a
    class with no pixel is labelled "absent" (length 0).

    Raises:
        ValueError: if counts is not 1-D with one entry per class name and colour, is negative,
            or all counts (ignored pixels included) are zero.
    """
    c = _to_numpy(counts).astype(np.float64)
    palette = _palette(colors)
    k = len(classes)
    if c.ndim != 1 or len(c) != k or len(palette) != k:
        raise ValueError(
            f"got counts of shape {c.shape}, {k} class names and {len(palette)} colours: "
            "pass one count per class (np.bincount(mask[mask != 255], minlength=K))"
        )
    ignored = 0.0 if num_ignored is None else float(num_ignored)
    if (c < 0).any() or ignored < 0:
        raise ValueError("pixel counts must be non-negative")
    total = c.sum() + ignored
    if total <= 0:
        raise ValueError("every count is zero: count the pixels of at least one mask first")
    order = np.argsort(-c, kind="stable")
    names = [classes[i] for i in order]
    percent = 100.0 * c[order] / total
    colours = [palette[i] / 255.0 for i in order]
    if num_ignored is not None:
        names.append("ignore (255)")
        percent = np.append(percent, 100.0 * ignored / total)
        colours.append(np.array(IGNORE_COLOR) / 255.0)
    fig = _figure(6.5, 0.3 * len(names) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, percent, color=colours, edgecolor="0.3", linewidth=0.6)
    positive = percent[percent > 0]
    if log_scale:
        ax.set_xscale("log")
        low = 10.0 ** np.floor(np.log10(positive.min()) - 0.01)  # a power of 10 below the shortest bar
        ax.set_xlim(low, positive.max() * 3.5)  # room for the label right of the longest bar
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        at = lambda p: p * 1.12 if p > 0 else low * 1.12  # noqa: E731
    else:
        ax.set_xlim(0, positive.max() * 1.18)
        at = lambda p: p + positive.max() * 0.01  # noqa: E731
    for yy, p in zip(y, percent):
        ax.text(at(p), yy, _percent_label(p) if p > 0 else "absent", va="center", fontsize=8,
                color="black" if p > 0 else "0.4")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("share of pixels (%" + (", log scale)" if log_scale else ")"))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"share of pixels per class ({int(total):,} px)", fontsize=10)
    return fig


def show_palette(classes: Sequence[str], colors, *, columns: int = 7) -> Figure:
    """Swatch grid of a dataset palette: one square per class with its index and name.

    Args:
        classes, colors: the K class names and their RGB colours (0..255), e.g. ``VOC_CLASSES``
            and ``VOC_COLORS``; swatch ``k`` (row-major, ``columns`` per row) shows ``colors[k]``.
        columns: swatches per row.

    The index is written inside the swatch in black or white, whichever contrasts more with the
    colour (Rec. 601 luma); the name below it.

    Raises:
        ValueError: if there are not as many names as colours, or ``columns < 1``.
    """
    palette = _palette(colors)
    if len(classes) != len(palette):
        raise ValueError(f"{len(classes)} class names but {len(palette)} colours: pass one colour per class")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cols = min(columns, len(palette))
    rows = -(-len(palette) // cols)
    fig = _figure(1.3 * cols, 0.95 * rows + 0.15)
    ax = fig.subplots()
    for k, (name, rgb) in enumerate(zip(classes, palette)):
        r, c = divmod(k, cols)
        ax.add_patch(Rectangle((c + 0.1, r + 0.05), 0.8, 0.6, facecolor=rgb / 255.0, edgecolor="0.3", lw=0.8))
        luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        ax.text(c + 0.5, r + 0.35, str(k), ha="center", va="center", fontsize=9,
                color="black" if luma > 128 else "white")
        ax.text(c + 0.5, r + 0.85, name, ha="center", va="center", fontsize=8)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    return fig


def _densest_window(hits: np.ndarray, side: int) -> tuple[int, int]:
    """(top, left) of the ``side × side`` window holding most True pixels (first one on ties)."""
    integral = np.pad(hits.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def show_mask_resize(mask, colors, size, *, classes: Sequence[str] | None = None, ignore_index: int = 255,
                     zoom: bool = True, title: str | None = None) -> Figure:
    """A mask resized with nearest-neighbour and with bilinear interpolation, side by side.

    Panels: the nearest-neighbour resize (it copies input values, so it holds only labels of the
    original); the bilinear resize with every *invented* pixel -- one whose value is not a label
    (or the ignore value) of the original mask, such as the average of two classes or of a class
    and 255 -- in red over the faded labels; with ``zoom``, an enlarged square of the bilinear
    panel where invented pixels are densest (outlined in the bilinear panel), because the seams
    are one or two pixels wide. Masks are resized with OpenCV as albumentations does
    (``cv2.resize`` on uint8 with ``INTER_NEAREST`` / ``INTER_LINEAR``).

    A bilinear value that happens to be another label of the image (bus 6 and cat 8 averaging to
    car 7 when a car is present) is wrong too but is not flagged: the count is a lower bound.

    Args:
        mask: ``(H, W)`` integer class indices in ``[0, K)`` or ``ignore_index`` (at most 255).
        colors: K RGB triples 0..255 (``dataset.colors``).
        size: ``(height, width)`` of the output in pixels, or a positive scale factor ``f``
            (output ``int(H * f) × int(W * f)``).
        classes: the K class names; when given, the legend lists the classes of the original.
        ignore_index: value of ignored pixels (drawn in ``IGNORE_COLOR``).
        zoom: add the enlarged panel (side: a sixth of the shorter output side, at least 8 px).

    Raises:
        ValueError: for a mask ``colorize`` rejects, values above 255, or a size below 1×1.
    """
    import cv2

    m = _as_mask(mask)
    colorize(m, colors, ignore_index)  # checks the values against the palette
    if m.max(initial=0) > 255:
        raise ValueError(f"mask holds {int(m.max())}: cv2 resizes uint8 masks, so values must be at most 255")
    h0, w0 = m.shape
    if isinstance(size, (int, float, np.integer, np.floating)):
        h, w = int(h0 * size), int(w0 * size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"resized mask would be {h}×{w}: pass a size (height, width) or a scale of at least 1 px")
    as_u8 = m.astype(np.uint8)
    nearest = cv2.resize(as_u8, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    bilinear = cv2.resize(as_u8, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int64)
    labels = np.unique(m)
    invented = ~np.isin(bilinear, labels)
    faded = np.where(invented, labels[0], bilinear)  # any real label: painted over in red below
    shown = (0.35 * colorize(faded, colors, ignore_index) + 0.65 * 255 + 0.5).astype(np.uint8)
    shown[invented] = _INVENTED
    ncols = 3 if zoom else 2
    fig = _figure(3.1 * ncols, 3.1 * h / w + 1.3)
    axes = fig.subplots(1, ncols, width_ratios=[1, 1, h / w] if zoom else None)
    _image_axis(axes[0], colorize(nearest, colors, ignore_index), f"nearest {h}×{w}\nonly real labels")
    _image_axis(axes[1], shown, f"bilinear {h}×{w}\n{int(invented.sum())} px ({invented.mean():.1%}) invented")
    if zoom:
        side = min(max(8, min(h, w) // 6), h, w)
        top, left = _densest_window(invented, side)
        axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, ec="black", lw=1.2))
        _image_axis(axes[2], shown[top:top + side, left:left + side],
                    f"zoom: rows {top}–{top + side - 1}\ncols {left}–{left + side - 1}")
    extra = [_ignore_patch(ignore_index)] if (m == ignore_index).any() else []
    extra.append(Patch(facecolor=np.array(_INVENTED) / 255, edgecolor="0.3", label="invented value (bilinear)"))
    if classes is not None:
        _class_legend(fig, classes, colors, present=labels.tolist(), extra=extra)
    else:
        fig.legend(handles=extra, loc="outside lower center", ncol=len(extra), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------ receptive fields
def show_receptive_field(image, pixel: tuple[int, int], *, erf=None, support=None,
                         box: tuple[int, int, int, int] | None = None, title: str | None = None,
                         log_scale: bool = False) -> Figure:
    """Receptive field of one output pixel drawn over the input image.

    Left panel: the image, the chosen pixel (red cross), the theoretical RF -- the exact set of
    input pixels joined to the output by a path of the network (``seglab.receptive_field``) -- as
    a cyan outline, and optionally the analytic RF box of the layer recurrence (Araujo et al. 2019)
    dashed (it may extend past the image, into the padding). Right panel (when ``erf`` is given):
    the effective RF, ``|d y / d x|`` summed over channels and scaled to max 1 (Luo et al. 2016),
    as a heatmap: much smaller than the theoretical RF, roughly Gaussian.

    Args:
        image: ``(3, H, W)`` normalised float or ``(H, W, 3)`` uint8.
        pixel: ``(row, col)`` of the output position in input-pixel coordinates.
        erf: ``(H, W)`` float gradient magnitudes (non-negative), e.g. from ``seglab.receptive_field``.
        support: ``(H, W)`` bool, True inside the theoretical RF (``ReceptiveField.support``).
        box: ``(top, left, bottom, right)`` inclusive input-pixel bounds of the analytic RF
            (``LayerRF.box``); may lie partly outside the image.
        log_scale: show ``log10`` of the ERF (reveals its long, faint tail) instead of linear.

    Raises:
        ValueError: if maps and image differ in size.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    ncols = 2 if erf is not None else 1
    fig = _figure(4.2 * ncols + (0.8 if erf is not None else 0), 4.2 * h / w + 1.3)
    axes = np.atleast_1d(fig.subplots(1, ncols))
    handles = [Line2D([], [], color="red", marker="x", ls="none", markersize=9, mew=2,
                      label=f"output pixel {tuple(pixel)}")]

    def draw_rf(ax):
        if box is not None:
            top, left, bottom, right = box
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                   ec="yellow", lw=2, ls="--"))
        if support is not None:
            ax.contour(sup.astype(float), levels=[0.5], colors="cyan", linewidths=1.5)
        ax.plot(pixel[1], pixel[0], "x", color="red", markersize=9, mew=2)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)

    if support is not None:
        sup = np.asarray(_to_numpy(support), bool)
        if sup.shape != (h, w):
            raise ValueError(f"support {sup.shape} and image {(h, w)} differ in size")
        rows, cols = np.nonzero(sup.any(1))[0], np.nonzero(sup.any(0))[0]
        size = f"{rows[-1] - rows[0] + 1}×{cols[-1] - cols[0] + 1} px, " if len(rows) else ""
        handles.append(Line2D([], [], color="cyan", lw=1.5, label=f"theoretical RF ({size}{int(sup.sum())} px)"))
    if box is not None:
        size = f"{box[2] - box[0] + 1}×{box[3] - box[1] + 1}"
        handles.append(Line2D([], [], color="yellow", lw=2, ls="--", label=f"analytic RF box {size} px"))
    _image_axis(axes[0], rgb, "receptive field")
    draw_rf(axes[0])
    if erf is not None:
        e = np.abs(_to_numpy(erf).astype(np.float64))
        if e.shape != (h, w):
            raise ValueError(f"erf {e.shape} and image {(h, w)} differ in size")
        e = e / e.max() if e.max() > 0 else e
        label = "ERF |∂y/∂x|, max = 1 (zero: not drawn)"
        if log_scale:
            e = np.log10(np.maximum(e, 1e-6))
            label = "log10 ERF, max = 0 (zero: not drawn)"
        e = np.ma.masked_where(np.abs(_to_numpy(erf)) == 0, e)  # outside every path: show the image
        grey = rgb.mean(2, keepdims=True).repeat(3, 2).astype(np.uint8)
        _image_axis(axes[1], grey, "effective receptive field")
        im = axes[1].imshow(e, cmap="inferno", alpha=0.75, interpolation="nearest")
        draw_rf(axes[1])
        fig.colorbar(im, ax=axes[1], shrink=0.8, label=label)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# -------------------------------------------------------------------------------------- dilation
def _check_rates(atrous_rates, kernel_size: int) -> tuple[int, ...]:
    rates = tuple(int(r) for r in atrous_rates)
    if not rates or min(rates) < 1:
        raise ValueError(f"atrous_rates must be a non-empty sequence of integers >= 1, got {atrous_rates}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    return rates


def dilation_coverage(atrous_rates: Sequence[int], kernel_size: int = 3, ndim: int = 2) -> np.ndarray:
    """How often each input pixel reaches the centre output of a stack of dilated convolutions.

    Layer ``i`` is a ``kernel_size``-wide convolution with dilation ``atrous_rates[i]``, stride 1
    (Yu & Koltun 2016). The count at an offset is the number of paths through the stack from that
    input pixel to the output pixel (the convolution of the layers' dilated all-ones kernels). A
    zero inside the span is a *hole*: that pixel never influences the output. Rates with a common
    factor > 1, e.g. ``(2, 2, 2)``, leave a regular pattern of holes ("gridding"); hybrid dilated
    convolution (HDC, Wang et al. 2018) picks rates such as ``(1, 2, 3)`` whose gaps the other
    layers fill, and leaves none (coprime rates alone are not enough: ``(2, 3)`` has holes).

    Args:
        atrous_rates: dilation of each layer, first layer first.
        kernel_size: odd kernel width (3 for the usual 3×3).
        ndim: 1 for a row profile, 2 for the square ``k×k`` kernels.

    Returns:
        int64 array of length / side ``1 + (kernel_size - 1) * sum(atrous_rates)`` (the RF size),
        the output pixel at its centre.
    """
    rates = _check_rates(atrous_rates, kernel_size)
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim}")
    counts = np.ones(1, np.int64)
    for r in rates:
        taps = np.zeros((kernel_size - 1) * r + 1, np.int64)
        taps[::r] = 1
        counts = np.convolve(counts, taps)
    return counts if ndim == 1 else np.outer(counts, counts)


def show_dilated_kernels(atrous_rates: Sequence[int] = (1, 2, 3), kernel_size: int = 3) -> Figure:
    """Sampling grid of one dilated ``k×k`` kernel per rate, drawn on the same pixel grid.

    A rate-``r`` kernel reads ``k×k`` pixels spaced ``r`` apart: it spans ``(k-1)r + 1`` pixels
    with the same ``k²`` weights (Yu & Koltun 2016; Chen et al. 2017 call it atrous convolution).
    """
    rates = _check_rates(atrous_rates, kernel_size)
    side = (kernel_size - 1) * max(rates) + 3  # one free pixel each side
    fig = _figure(2.7 * len(rates), 3.1)
    axes = np.atleast_1d(fig.subplots(1, len(rates)))
    for ax, r in zip(axes, rates):
        grid = np.zeros((side, side))
        c, half = side // 2, (kernel_size // 2) * r
        grid[c - half:c + half + 1:r, c - half:c + half + 1:r] = 1.0
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, side, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, side, 1), minor=True)
        ax.grid(which="minor", color="0.75", lw=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.plot(c, c, "o", color="red", ms=5)
        span = (kernel_size - 1) * r + 1
        ax.set_title(f"rate {r}: {kernel_size}×{kernel_size} taps\nspan {span}×{span} px", fontsize=10)
    fig.suptitle("dilated (atrous) kernels: blue = pixels read, red dot = output position", fontsize=10)
    return fig


def show_dilation_coverage(stacks: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
                           kernel_size: int = 3) -> Figure:
    """Coverage of stacked dilated convolutions, one panel per stack; holes drawn in red.

    Args:
        stacks: ``{label: atrous_rates}`` or one sequence of rates. Default: gridding ``(2, 2, 2)``
            against HDC ``(1, 2, 3)`` (Wang et al. 2018), both 3 layers with similar RF size.
        kernel_size: odd kernel width.

    Each panel shows ``dilation_coverage`` (number of paths from each input pixel to the centre
    output) with a shared colour scale; titles give the RF size and the fraction of holes.
    """
    if stacks is None:
        stacks = {"gridding": (2, 2, 2), "HDC": (1, 2, 3)}
    elif not isinstance(stacks, Mapping):
        stacks = {"": tuple(stacks)}
    maps = {label: dilation_coverage(r, kernel_size) for label, r in stacks.items()}
    side = max(m.shape[0] for m in maps.values())
    width, height, side_in = 4.2 * len(maps), 4.1, 2.7  # inches; a fixed layout renders ~2× faster
    fig = _figure(width, height, layout=None)
    axes = [fig.add_axes(((4.2 * i + 0.75) / width, 0.8 / height, side_in / width, side_in / height))
            for i in range(len(maps))]
    cmap = _cmap("viridis").with_extremes(bad="#d62728")
    for i, (ax, (label, counts)) in enumerate(zip(axes, maps.items())):
        shown = counts.astype(float)
        shown[shown == 0] = np.nan  # holes inside the RF span
        extent = (-0.5 - counts.shape[0] // 2, counts.shape[0] // 2 + 0.5) * 2
        im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=counts.max(), interpolation="nearest",
                       extent=(extent[0], extent[1], extent[1], extent[0]))
        ax.set_xlim(-0.5 - side // 2, side // 2 + 0.5)
        ax.set_ylim(side // 2 + 0.5, -0.5 - side // 2)
        holes = float((counts == 0).mean())
        rates = tuple(int(r) for r in stacks[label])
        head = f"{label}: rates {rates}" if label else f"rates {rates}"
        ax.set_title(f"{head}\nRF {counts.shape[0]}×{counts.shape[0]} px, holes {holes:.0%}", fontsize=10)
        ax.set_xlabel("input offset (px)")
        ax.set_ylabel("input offset (px)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        cax = fig.add_axes(((4.2 * i + 0.75 + side_in + 0.12) / width, 0.8 / height, 0.14 / width, side_in / height))
        bar = fig.colorbar(im, cax=cax, label="paths to the output pixel")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    fig.legend(handles=[Patch(facecolor="#d62728", label="hole: input pixel never read")],
               loc="lower center", bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=9)
    return fig


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


# ------------------------------------------------------------------------------ skip connections
def compare_predictions(image, mask, preds: Mapping[str, object], classes: Sequence[str], colors, *,
                        band_width: int | None = None, ignore_index: int = 255, show_errors: bool = True,
                        title: str | None = None) -> Figure:
    """Several models' predictions of one image side by side (e.g. FCN-32s / 16s / 8s, U-Net ± skips).

    Top row: image, ground truth, then each prediction titled with its mIoU on this image and,
    when ``band_width`` is given, its trimap mIoU: the mIoU over pixels within ``band_width`` px of
    a ground-truth boundary (Kohli et al. 2009; Chen et al. 2018 fig. 5), which is where skip
    connections help (Long et al. 2015; Ronneberger et al. 2015). Bottom row (``show_errors``):
    the trimap band over the image, then each model's error map.

    Args:
        image: ``(3, H, W)`` normalised float or ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` ground truth.
        preds: ``{name: (H, W) class indices or (K, H, W) logits}``, shown in insertion order.
        band_width: trimap half-width in pixels (``seglab.metrics.trimap_iou``), or None.
    """
    if not preds:
        raise ValueError("preds is empty: pass {model name: prediction}")
    rgb, m = to_rgb(image), _as_mask(mask)
    named = {name: _as_pred(p, f"preds[{name!r}]") for name, p in preds.items()}
    for p in named.values():
        _check_same_size(m, p)
    ncols, nrows = 2 + len(named), 2 if show_errors else 1
    fig = _figure(2.6 * ncols, 2.45 * _aspect(m) * nrows + 0.45 * nrows + 1.1)
    axes = np.atleast_2d(fig.subplots(nrows, ncols))
    _image_axis(axes[0, 0], rgb, "image")
    _image_axis(axes[0, 1], colorize(m, colors, ignore_index), "ground truth")
    present = set(np.unique(m).tolist())
    for j, (name, p) in enumerate(named.items(), start=2):
        text = f"{name}\nmIoU {_image_scores(p, m, len(classes), ignore_index)['mIoU']:.1%}"
        if band_width is not None:
            text += f", trimap {_trimap_iou(p, m, len(classes), band_width, ignore_index):.1%}"
        _image_axis(axes[0, j], colorize(p, colors, ignore_index), text)
        if show_errors:
            _image_axis(axes[1, j], error_map(m, p, ignore_index))
        present |= set(np.unique(p).tolist())
    extra = _error_legend() if show_errors else []
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
    """
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    for name, vals in scores.items():
        vals = np.asarray(vals, dtype=float)
        if len(vals) != len(band_widths):
            raise ValueError(f"scores[{name!r}] has {len(vals)} values for {len(band_widths)} band widths")
        ax.plot(band_widths, 100 * vals, "o-", label=name)
    ax.set_xlabel("trimap band width (px)")
    ax.set_ylabel("mIoU inside the band (%)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title or "accuracy near object boundaries")
    return fig


# -------------------------------------------------------------------------------------- training
def _runs(histories) -> dict[str, list[dict]]:
    if isinstance(histories, Mapping):
        runs = {str(k): list(v) for k, v in histories.items()}
    else:
        runs = {"run": list(histories)}
    for name, h in runs.items():
        if not all(isinstance(r, Mapping) for r in h):
            raise ValueError(f"history of {name!r} must be a list of per-epoch dicts (seglab.engine.load_history)")
    return runs


def _series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(history)], dtype=float)
    vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in history], dtype=float)
    return epochs, vals


def plot_history(histories, *, show_lr: bool = False, title: str | None = None) -> Figure:
    """Loss and mIoU curves of one or several training runs.

    Args:
        histories: one history (list of per-epoch dicts with keys ``"epoch"``, ``"train_loss"``,
            ``"val_loss"``, ``"val_mIoU"``, ``"lr"``, ... as written by ``seglab.engine.fit``) or
            ``{run name: history}``. Missing / None values are skipped.
        show_lr: add a third panel with the learning rate (log scale).

    Left: train (solid) and validation (dashed) loss; right: validation mIoU in percent (and
    ``"train_mIoU"`` dotted, when recorded), the best epoch of each run marked with a star.
    """
    runs = _runs(histories)
    ncols = 3 if show_lr else 2
    fig = _figure(4.6 * ncols, 3.9)
    axes = fig.subplots(1, ncols)
    colours = _cmap("tab10").colors
    for k, (name, h) in enumerate(runs.items()):
        col = colours[k % 10]
        label = name if len(runs) > 1 else None
        for key, ls in (("train_loss", "-"), ("val_loss", "--")):
            e, v = _series(h, key)
            if np.isfinite(v).any():
                axes[0].plot(e, v, ls, color=col, marker="." if len(e) < 30 else None)
        e, v = _series(h, "val_mIoU")
        if np.isfinite(v).any():
            axes[1].plot(e, 100 * v, "--", color=col, marker="." if len(e) < 30 else None, label=label)
            b = int(np.nanargmax(v))
            axes[1].plot(e[b], 100 * v[b], "*", color=col, ms=13, mec="black", mew=0.5)
            axes[1].annotate(f"{100 * v[b]:.1f}%", (e[b], 100 * v[b]), textcoords="offset points",
                             xytext=(0, 8), ha="center", fontsize=9, color=col)
        e, v = _series(h, "train_mIoU")
        if np.isfinite(v).any():
            axes[1].plot(e, 100 * v, ":", color=col)
        if show_lr:
            e, v = _series(h, "lr")
            axes[2].plot(e, v, "-", color=col, label=label)
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy per pixel")
    axes[1].set(title="mean IoU (validation)", xlabel="epoch", ylabel="mIoU (%)")
    axes[1].margins(x=0.06, y=0.12)
    style = [Line2D([], [], color="0.3", ls="-", label="train"),
             Line2D([], [], color="0.3", ls="--", label="validation"),
             Line2D([], [], color="0.3", marker="*", ls="none", ms=11, label="best epoch")]
    axes[0].legend(handles=style[:2], frameon=False, fontsize=9)
    if len(runs) > 1:
        axes[1].legend(frameon=False, fontsize=9, title="run")
    else:
        axes[1].legend(handles=style[1:], frameon=False, fontsize=9)
    if show_lr:
        axes[2].set(title="learning rate", xlabel="epoch", ylabel="lr", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def plot_iou_per_class(iou_per_class, classes: Sequence[str], *, title: str | None = None) -> Figure:
    """Horizontal bars of IoU per class (percent); ``nan`` (class absent) is written as "absent".

    Args:
        iou_per_class: K fractions (``ConfusionMatrix.compute()["iou_per_class"]`` or a history's
            ``"val_iou_per_class"``), or ``{run name: K fractions}`` for grouped bars.
        classes: the K class names.

    A dashed vertical line marks each run's mIoU (mean over non-nan classes).
    """
    runs = dict(iou_per_class) if isinstance(iou_per_class, Mapping) else {"": iou_per_class}
    k = len(classes)
    fig = _figure(6.5, 0.32 * k * max(1, len(runs) * 0.7) + 1.4)
    ax = fig.subplots()
    height = 0.8 / len(runs)
    colours = _cmap("tab10").colors
    for r, (name, vals) in enumerate(runs.items()):
        vals = np.asarray(_to_numpy(vals), dtype=float)
        if vals.shape != (k,):
            raise ValueError(f"IoU values {vals.shape} do not match {k} class names")
        y = np.arange(k) - 0.4 + height * (r + 0.5)
        miou = np.nanmean(vals) if np.isfinite(vals).any() else float("nan")
        ax.barh(y, 100 * np.nan_to_num(vals), height=height, color=colours[r % 10],
                label=f"{name + ': ' if name else ''}mIoU {100 * miou:.1f}%")
        ax.axvline(100 * miou, color=colours[r % 10], ls="--", lw=1)
        for yy, v in zip(y, vals):
            ax.text(1 if np.isnan(v) else 100 * v + 1, yy, "absent" if np.isnan(v) else f"{100 * v:.0f}",
                    va="center", fontsize=8, color="0.4" if np.isnan(v) else "black")
    ax.set_yticks(np.arange(k), classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(len(runs), 3), frameon=False, fontsize=9)
    ax.set_title(title or "IoU per class")
    return fig


def plot_confusion_matrix(confusion_matrix, classes: Sequence[str], *, normalize: bool = True,
                          annotate: bool | None = None, title: str | None = None) -> Figure:
    """Confusion matrix as a heatmap; with ``normalize`` each row sums to 1 (the diagonal is recall).

    Args:
        confusion_matrix: ``(K, K)`` counts, rows = ground truth, columns = prediction
            (``seglab.metrics.confusion_matrix``).
        classes: the K class names.
        normalize: divide each row by its total (rows without ground-truth pixels stay blank).
        annotate: print each cell's value (default: when K <= 12).
    """
    cm = _to_numpy(confusion_matrix).astype(np.float64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} class names: expected ({k}, {k})")
    if normalize:
        totals = cm.sum(1, keepdims=True)
        shown = np.divide(cm, totals, out=np.full_like(cm, np.nan), where=totals > 0)
    else:
        shown = cm
    side = max(4.5, 0.45 * k + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(100 * shown if normalize else shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of ground-truth pixels (row)" if normalize else "pixels")
    if annotate is None:
        annotate = k <= 12
    if annotate:
        top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
        for i in range(k):
            for j in range(k):
                v = shown[i, j]
                if np.isfinite(v):
                    text = f"{100 * v:.0f}" if normalize else f"{int(v)}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="white" if v > 0.6 * top else "black")
    ax.set_xticks(np.arange(k), classes, rotation=45, ha="right")
    ax.set_yticks(np.arange(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    default = "confusion matrix, rows normalised (diagonal = recall)" if normalize else "confusion matrix"
    ax.set_title(title or default, fontsize=10)
    return fig
