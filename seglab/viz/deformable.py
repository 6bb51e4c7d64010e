"""Deformable convolution: ``show_sampling_locations`` (where each layer reads, and its exact receptive field)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .core import _figure, _image_axis, _to_numpy, to_rgb

__all__ = ["show_sampling_locations"]


def show_sampling_locations(image, pixel: tuple[int, int], locations: Mapping[str, object], *, grid=None,
                            supports: Mapping[str, object] | None = None, weights: Mapping[str, object] | None = None,
                            target: tuple[int, int] | None = None, title: str | None = None) -> Figure:
    """Where the taps of one output pixel read the image, one panel per layer, with each layer's exact RF.

    Every panel shows the image (grey), the output pixel (red cross), the regular k×k grid of a plain
    convolution (white squares), the layer's sampling points (filled dots, area proportional to ``weights``:
    e.g. DCNv2's masks times the size of the tap's weights), an arrow from each grid tap to where the layer
    moved it, and the exact receptive field (cyan outline: the pixels the output reads, bilinear
    neighbours included, from ``seglab.receptive_field`` on a ``freeze_sampling`` copy).

    Args:
        image: ``(3, H, W)`` normalised float or ``(H, W, 3)`` uint8.
        pixel: ``(y, x)`` of the output pixel, input pixels.
        locations: panel title -> ``(K, 2)`` sampling positions ``(y, x)`` in input pixels (pixel centres at
            integers), e.g. ``DeformConv2d.sampling_locations(x)[0, 0, :, y, x]``.
        grid: ``(K, 2)`` taps of the regular grid, in the same order (None: not drawn, no arrows).
        supports: panel title -> ``(H, W)`` bool exact RF.
        weights: panel title -> ``(K,)`` non-negative weights of the taps (marker area; None = equal).
        target: ``(y, x)`` of a pixel to mark (yellow star), e.g. where the label of ``pixel`` comes from.

    Raises:
        ValueError: no panel, positions not ``(K, 2)``, weights not ``(K,)``, or an RF of another size than the image.
    """
    if not locations:
        raise ValueError("locations must name at least one panel: {title: (K, 2) positions}")
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    grey = rgb.mean(2, keepdims=True).repeat(3, 2).astype(np.uint8)
    grid = None if grid is None else np.asarray(_to_numpy(grid), float).reshape(-1, 2)
    fig = _figure(4.0 * len(locations), 4.0 + 0.9)
    axes = np.atleast_1d(fig.subplots(1, len(locations)))
    for ax, (name, points) in zip(axes, locations.items()):
        points = np.asarray(_to_numpy(points), float)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"locations[{name!r}] must be (K, 2) positions (y, x), got shape {points.shape}")
        _image_axis(ax, grey, name)
        support = None if supports is None else supports.get(name)
        if support is not None:
            support = np.asarray(_to_numpy(support), bool)
            if support.shape != (h, w):
                raise ValueError(f"supports[{name!r}] {support.shape} and image {(h, w)} differ in size")
            ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(support, 1).astype(float), levels=[0.5],
                       colors="cyan", linewidths=1.5)
            ax.text(0.02, 0.02, f"RF: {int(support.sum())} px", transform=ax.transAxes, color="cyan", fontsize=9,
                    va="bottom", bbox=dict(facecolor="black", alpha=0.5, lw=0))
        weight = np.ones(len(points)) if weights is None or weights.get(name) is None else \
            np.asarray(_to_numpy(weights[name]), float).reshape(-1)
        if weight.shape != (len(points),):
            raise ValueError(f"weights[{name!r}] must have one value per tap ({len(points)}), got {weight.shape}")
        if grid is not None:
            ax.scatter(grid[:, 1], grid[:, 0], s=40, marker="s", facecolors="none", edgecolors="white", lw=1.2)
            for (gy, gx), (py, px) in zip(grid, points):
                if abs(py - gy) + abs(px - gx) > 0.25:
                    ax.annotate("", xy=(px, py), xytext=(gx, gy),
                                arrowprops=dict(arrowstyle="->", color="orange", lw=1.0, alpha=0.8))
        sizes = 15 + 85 * weight / weight.max() if weight.max() > 0 else np.full(len(points), 15.0)
        ax.scatter(points[:, 1], points[:, 0], s=sizes, color="orange", edgecolors="black", lw=0.6, zorder=3)
        if target is not None:
            ax.plot(target[1], target[0], "*", color="yellow", markersize=13, mec="black", zorder=4)
        ax.plot(pixel[1], pixel[0], "x", color="red", markersize=9, mew=2, zorder=4)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    handles = [Line2D([], [], color="red", marker="x", ls="none", markersize=9, mew=2,
                      label=f"output pixel {tuple(pixel)}"),
               Line2D([], [], color="orange", marker="o", ls="none", mec="black",
                      label="sampling points (area: weight)")]
    if grid is not None:
        handles.append(Line2D([], [], color="white", marker="s", ls="none", mfc="none", mec="0.3",
                              label="regular grid (plain conv)"))
    if supports:
        handles.append(Line2D([], [], color="cyan", lw=1.5, label="exact receptive field"))
    if target is not None:
        handles.append(Line2D([], [], color="yellow", marker="*", ls="none", mec="black", markersize=11,
                              label=f"pixel the label comes from {tuple(target)}"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
