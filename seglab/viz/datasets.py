"""Datasets and palettes: ``plot_class_frequencies``, ``show_palette``, ``show_mask_resize``.

``show_mask_resize`` imports OpenCV (``cv2``, installed with albumentations) when called.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from .core import IGNORE_COLOR, as_mask, _class_legend, _figure, _image_axis, _palette, _to_numpy
from .masks import _ignore_patch, colorize

__all__ = ["plot_class_frequencies", "show_palette", "show_mask_resize"]

_INVENTED = (230, 30, 30)  # bilinear mask values that are no label of the original


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

    m = as_mask(mask)
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
