"""Context and refinement (notebook 10): ``show_aspp_taps``, ``show_pyramid_bins``, ``show_crf_iterations``.

- ASPP-L (DeepLab v2, Chen et al. 2018): four 3x3 atrous convolutions, rates 6, 12, 18, 24, summed; one
  output cell reads 9 taps per rate, spread ``rate`` cells apart;
- the pyramid pooling module (PSPNet, Zhao et al. 2017): ``AdaptiveAvgPool2d(b)`` bins of 1x1 to 6x6;
- mean-field inference of the fully connected CRF (Krähenbühl & Koltun 2011): the labels after each update.

Nothing here computes a receptive field or runs a CRF: pass what ``seglab.receptive_field`` and
``seglab.crf`` computed, and the pictures draw it (with the geometry worked out here, for comparison).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .core import _class_legend, _cmap, _figure, _image_axis, _to_numpy, as_mask, to_rgb
from .masks import colorize

__all__ = ["atrous_taps", "pyramid_bins", "show_aspp_taps", "show_pyramid_bins", "show_crf_iterations"]


def atrous_taps(pixel: tuple[int, int], rate: int, size: int, kernel_size: int = 3) -> list[tuple[int, int]]:
    """The cells a ``kernel_size`` x ``kernel_size`` convolution of dilation ``rate`` (padding
    ``rate * (kernel_size // 2)``, "same" size) reads for output ``pixel`` of a ``size`` x ``size`` map,
    taps in the zero padding left out. ``(row, col)`` pairs."""
    if rate < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"rate must be >= 1 and kernel_size odd and >= 1, got rate={rate}, kernel_size={kernel_size}")
    half, (y, x) = kernel_size // 2, pixel
    offsets = range(-half * rate, half * rate + 1, rate)
    return [(y + dy, x + dx) for dy in offsets for dx in offsets if 0 <= y + dy < size and 0 <= x + dx < size]


def pyramid_bins(size: int, bins: int) -> list[tuple[int, int]]:
    """``AdaptiveAvgPool2d(bins)``'s bins along one axis of length ``size``: ``[start, end)`` with
    ``start = floor(i * size / bins)`` and ``end = ceil((i + 1) * size / bins)`` (they overlap by a cell
    where ``bins`` does not divide ``size``)."""
    if size < 1 or bins < 1:
        raise ValueError(f"size and bins must be >= 1, got size={size}, bins={bins}")
    return [((i * size) // bins, -((-(i + 1) * size) // bins)) for i in range(bins)]


def show_aspp_taps(size: int, pixels: Sequence[tuple[int, int]], atrous_rates: Sequence[int] = (6, 12, 18, 24), *,
                   supports: Mapping[tuple[int, int], object] | None = None, title: str | None = None) -> Figure:
    """Where ASPP-L's atrous taps land: one panel per output ``pixel`` of a ``size`` x ``size`` feature map.

    Each rate's 3x3 taps are drawn in its own colour (the centre tap is shared by every rate). With
    ``supports`` (``{pixel: (size, size) bool}``, e.g. ``ReceptiveField(ASPPSum(...), size).support(pixel)``)
    the cells the head really reads are shaded grey underneath, and the panel says whether they are
    exactly the taps.

    Raises:
        ValueError: empty ``pixels``, a pixel outside the map, a support of another size.
    """
    if not pixels:
        raise ValueError("pixels is empty: pass the output cells to draw, e.g. [(32, 32), (4, 4)]")
    fig = _figure(3.3 * len(pixels) + 0.2, 3.9)
    axes = np.atleast_1d(fig.subplots(1, len(pixels)))
    cmap = _cmap("plasma")
    colours = [cmap(0.1 + 0.75 * i / max(len(atrous_rates) - 1, 1)) for i in range(len(atrous_rates))]
    for ax, pixel in zip(axes, pixels):
        if not (0 <= pixel[0] < size and 0 <= pixel[1] < size):
            raise ValueError(f"pixel {pixel} lies outside the {size}x{size} map")
        taps = {t for rate in atrous_rates for t in atrous_taps(pixel, rate, size)}
        background = np.ones((size, size))
        text = f"output {tuple(pixel)}: {len(taps)} cells"
        if supports is not None and pixel in supports:
            support = _to_numpy(supports[pixel]).astype(bool)
            if support.shape != (size, size):
                raise ValueError(f"supports[{pixel}] has shape {support.shape}, expected ({size}, {size})")
            background[support] = 0.75
            read = {tuple(int(v) for v in c) for c in np.argwhere(support)}
            text += "\n= the cells it reads" if read == taps else f"\nreads {len(read)} cells (taps {len(taps)})"
        ax.imshow(background, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for rate, colour in zip(atrous_rates, colours):
            ys, xs = zip(*atrous_taps(pixel, rate, size))
            ax.scatter(xs, ys, s=14, color=colour, marker="s", label=f"rate {rate}", zorder=3)
        ax.plot(pixel[1], pixel[0], "k+", markersize=10, zorder=4)
        ax.set_xlim(-0.5, size - 0.5), ax.set_ylim(size - 0.5, -0.5)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(text, fontsize=9)
    handles = [Patch(facecolor=c, label=f"rate {r}") for r, c in zip(atrous_rates, colours)]
    if supports is not None:
        handles.append(Patch(facecolor="0.75", label="read (receptive field)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(title or f"ASPP-L taps on a {size}x{size} feature map (3x3 kernels, rates {tuple(atrous_rates)})",
                 fontsize=10)
    return fig


def show_pyramid_bins(size: int, bins: Sequence[int] = (1, 2, 3, 6), *, title: str | None = None) -> Figure:
    """The pyramid pooling module's bins over a ``size`` x ``size`` feature map, one panel per bin count:
    every bin's rectangle (``pyramid_bins``), the top-left bin filled, its cell count in the title."""
    if not bins:
        raise ValueError("bins is empty: pass the PPM's bin counts, e.g. (1, 2, 3, 6)")
    fig = _figure(2.5 * len(bins) + 0.2, 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(bins)))
    for ax, b in zip(axes, bins):
        edges = pyramid_bins(size, b)
        ax.imshow(np.ones((size, size)), cmap="gray", vmin=0, vmax=1)
        for y0, y1 in edges:
            for x0, x1 in edges:
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1, ec="0.3"))
        (y0, y1), (x0, x1) = edges[0], edges[0]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, alpha=0.35, color="tab:blue", lw=0))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{b}x{b} bins: the first averages\n{(y1 - y0) * (x1 - x0)} cells ({y1 - y0}x{x1 - x0})", fontsize=9)
    fig.suptitle(title or f"PSPNet's pyramid pooling bins on a {size}x{size} feature map", fontsize=10)
    return fig


def show_crf_iterations(image, marginals, classes: Sequence[str], colors, *, mask=None, ignore_index: int = 255,
                        title: str | None = None) -> Figure:
    """Mean-field inference step by step: the image (and ``mask``), then the labels after each update.

    Args:
        image: ``(3, H, W)`` normalised float or ``(H, W, 3)`` uint8.
        marginals: ``(T + 1, K, H, W)`` (or a list of ``(K, H, W)``): Q before the first update (the
            model's softmax) and after each of T updates.
        mask: ``(H, W)`` ground truth; when given every panel says how many pixels are wrong.

    Raises:
        ValueError: fewer than 1 marginal map, or maps of another size than the image.
    """
    q = np.stack([_to_numpy(m) for m in marginals]) if isinstance(marginals, (list, tuple)) else _to_numpy(marginals)
    if q.ndim != 4 or len(q) < 1:
        raise ValueError(f"marginals must be (T + 1, K, H, W), got shape {q.shape}")
    rgb = to_rgb(image)
    if rgb.shape[:2] != q.shape[-2:]:
        raise ValueError(f"marginals are {q.shape[-2:]} but the image is {rgb.shape[:2]}")
    labels = q.argmax(1)  # (T + 1, H, W)
    target = None if mask is None else as_mask(mask)
    panels = 1 + (target is not None) + len(labels)
    ncols = min(panels, 4)
    nrows = -(-panels // ncols)
    fig = _figure(2.6 * ncols, 2.6 * nrows * rgb.shape[0] / rgb.shape[1] + 0.45 * nrows + 0.6)
    axes = np.atleast_2d(fig.subplots(nrows, ncols)).ravel()
    _image_axis(axes[0], rgb, "image")
    start = 1
    if target is not None:
        _image_axis(axes[1], colorize(target, colors, ignore_index), "ground truth")
        start = 2
    labelled = None if target is None else target != ignore_index
    for t, lab in enumerate(labels):
        text = "the model (Q = softmax)" if t == 0 else f"after update {t}"
        if target is not None:
            text += f"\n{int(((lab != target) & labelled).sum())} pixels wrong"
        _image_axis(axes[start + t], colorize(lab, colors, ignore_index), text)
    for ax in axes[start + len(labels):]:
        ax.axis("off")
    _class_legend(fig, classes, colors, set(np.unique(labels).tolist()))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
