"""Dilated (atrous) convolution: ``dilation_coverage``, ``show_dilated_kernels``, ``show_dilation_coverage``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .core import _cmap, _figure

__all__ = ["dilation_coverage", "show_dilated_kernels", "show_dilation_coverage"]


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
