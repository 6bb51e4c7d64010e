"""Receptive fields: ``show_receptive_field`` (theoretical RF outline and effective RF heatmap)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .core import _figure, _image_axis, _to_numpy, to_rgb

__all__ = ["show_receptive_field", "rf_frame"]

FRAME_MARGIN = 0.15
"""Margin around an RF box that extends past the image, as a fraction of the box side."""


def rf_frame(image_size: tuple[int, int], box: tuple[int, int, int, int] | None = None,
             margin: float = FRAME_MARGIN) -> tuple[float, float, float, float]:
    """Drawing frame ``(top, left, bottom, right)`` (pixel-edge coordinates) of an RF picture.

    The image itself (``-0.5 .. H - 0.5``) when there is no ``box`` or the box lies inside the
    image; otherwise the union of the image and the box, the box side plus ``margin`` of it on each
    side: a receptive field larger than the image never fills the frame, its edges stay visible.
    """
    h, w = image_size
    top, left, bottom, right = -0.5, -0.5, h - 0.5, w - 0.5
    if box is None:
        return top, left, bottom, right
    bt, bl, bb, br = box
    if bt >= 0 and bl >= 0 and bb <= h - 1 and br <= w - 1:
        return top, left, bottom, right
    mh, mw = margin * (bb - bt + 1), margin * (br - bl + 1)
    return (min(top, bt - 0.5 - mh), min(left, bl - 0.5 - mw), max(bottom, bb + 0.5 + mh), max(right, br + 0.5 + mw))


def show_receptive_field(image, pixel: tuple[int, int], *, erf=None, support=None,
                         box: tuple[int, int, int, int] | None = None, title: str | None = None,
                         log_scale: bool = False) -> Figure:
    """Receptive field of one output pixel drawn over the input image.

    Left panel: the image, the chosen pixel (red cross), the theoretical RF -- the exact set of
    input pixels joined to the output by a path of the network (``seglab.receptive_field``) -- as
    a cyan outline, and optionally the analytic RF box of the layer recurrence (Araujo et al. 2019)
    dashed (it may extend past the image, into the padding: then the frame grows to show the whole box
    with a margin, the area outside the image hatched grey, see ``rf_frame``, so that an RF larger than
    the image never fills the picture). Right panel (when ``erf`` is given):
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

    When the theoretical RF reaches all four image borders, the legend says so: the RF is at least as
    large as the image and fills the picture; draw it on a larger image to see its extent.

    Raises:
        ValueError: if maps and image differ in size.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    ncols = 2 if erf is not None else 1
    f_top, f_left, f_bottom, f_right = rf_frame((h, w), box)
    aspect = (f_bottom - f_top) / (f_right - f_left)
    fig = _figure(4.2 * ncols + (0.8 if erf is not None else 0), 4.2 * aspect + 1.3)
    axes = np.atleast_1d(fig.subplots(1, ncols))
    handles = [Line2D([], [], color="red", marker="x", ls="none", markersize=9, mew=2,
                      label=f"output pixel {tuple(pixel)}")]

    def draw_rf(ax):
        if (f_top, f_left, f_bottom, f_right) != (-0.5, -0.5, h - 0.5, w - 0.5):  # outside the image: padding
            ax.add_patch(Rectangle((f_left, f_top), f_right - f_left, f_bottom - f_top, facecolor="0.93",
                                   edgecolor="0.7", hatch="//", lw=0, zorder=-1))
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="black", lw=1))
        if box is not None:
            top, left, bottom, right = box
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                   ec="yellow", lw=2, ls="--"))
        if support is not None:  # padded by one pixel, so that an RF reaching the image border is outlined there
            padded = np.pad(sup, 1).astype(float)
            ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors="cyan",
                       linewidths=1.5)
        ax.plot(pixel[1], pixel[0], "x", color="red", markersize=9, mew=2)
        ax.set_xlim(f_left, f_right)
        ax.set_ylim(f_bottom, f_top)

    if support is not None:
        sup = np.asarray(_to_numpy(support), bool)
        if sup.shape != (h, w):
            raise ValueError(f"support {sup.shape} and image {(h, w)} differ in size")
        rows, cols = np.nonzero(sup.any(1))[0], np.nonzero(sup.any(0))[0]
        size = f"{rows[-1] - rows[0] + 1}×{cols[-1] - cols[0] + 1} px, " if len(rows) else ""
        fills = len(rows) and rows[0] == 0 and cols[0] == 0 and rows[-1] == h - 1 and cols[-1] == w - 1
        note = "; fills the image" if fills else ""
        handles.append(Line2D([], [], color="cyan", lw=1.5,
                              label=f"theoretical RF ({size}{int(sup.sum())} px{note})"))
    if box is not None:
        size = f"{box[2] - box[0] + 1}×{box[3] - box[1] + 1}"
        handles.append(Line2D([], [], color="yellow", lw=2, ls="--", label=f"analytic RF box {size} px"))
    if (f_top, f_left, f_bottom, f_right) != (-0.5, -0.5, h - 0.5, w - 0.5):
        handles.append(Patch(facecolor="0.93", edgecolor="0.7", hatch="//", label="outside the image"))
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
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * ncols - 1), frameon=False,
               fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
