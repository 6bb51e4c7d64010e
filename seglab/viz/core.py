"""Figure and array conventions shared by every ``seglab.viz`` module.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``, so no
figure is ever registered with a pyplot window manager (nothing leaks, nothing needs closing) and
everything renders with the Agg backend: in CI, on nbviewer and in a PDF export. In a notebook a
returned figure is shown by ``display(fig)`` (or as the cell's last value); ``figure_to_png``
gives PNG bytes for ``ipywidgets.Image``. Figures default to a low dpi (``DPI``) to keep
notebooks small.

Depends on numpy, matplotlib and ``seglab.imaging`` (the ImageNet statistics and ``to_image``, which
undoes them); torch tensors are accepted anywhere an array is (they are
moved to the CPU and converted).

Conventions: images ``(3, H, W)`` float32 normalised with ImageNet mean/std, or ``(H, W, 3)``
uint8 RGB; masks ``(H, W)`` int64 in ``[0, K)`` or ``ignore_index`` (255); predictions ``(H, W)``
class indices or ``(K, H, W)`` logits.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seglab.imaging import IMAGENET_MEAN, IMAGENET_STD, to_image

__all__ = ["DPI", "IGNORE_COLOR", "IMAGENET_MEAN", "IMAGENET_STD", "figure_to_png", "to_rgb", "as_mask", "as_pred"]

DPI = 72
"""Default figure resolution (dots per inch): low, so that notebooks with many figures stay small."""

IGNORE_COLOR = (255, 0, 255)
"""RGB of ignored pixels (``ignore_index``) in every picture: magenta, the colour farthest from every class
colour of the seglab palettes (VOC, CamVid, ISBI, synthetic) and from the error map's white and red: at
least 52 CIELAB ΔE units and 141 RGB units away (``tests/test_viz.py``). VOC's own cream (224, 224, 192),
the colour of the 255 border in VOC's mask files (``seglab.data.palettes.IGNORE_COLOR``, used to *read*
those files), was too close to CamVid's pole (192, 192, 128); a grey to CamVid's sky (128, 128, 128)."""


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


def as_mask(mask, name: str = "mask") -> np.ndarray:
    """One ground-truth mask as ``(H, W)`` int64 class indices, the layout every picture draws.

    Args:
        mask: ``(H, W)`` or ``(1, H, W)`` integer class indices (numpy array or torch tensor, any
            device), values in ``[0, K)`` or ``ignore_index`` (not checked here).
        name: the argument's name in error messages.

    Returns:
        ``(H, W)`` int64 numpy array (no copy when it already is one).

    Raises:
        ValueError: not 2-D (after dropping a leading 1) or not integers; the message names ``name``.
    """
    m = _to_numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"{name} must be (H, W) class indices, got shape {m.shape}: pick one image of the batch")
    if not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{name} has dtype {m.dtype}; pass integer class indices (e.g. mask.long())")
    return m.astype(np.int64, copy=False)


def as_pred(pred, name: str = "pred") -> np.ndarray:
    """One prediction as ``(H, W)`` int64 class indices: indices pass through :func:`as_mask`, logits
    or scores ``(K, H, W)`` with K > 1 are reduced with ``argmax`` over the class dimension.

    Args:
        pred: ``(H, W)`` class indices or ``(K, H, W)`` logits (numpy or torch).
        name: the argument's name in error messages.

    Returns:
        ``(H, W)`` int64 numpy array.

    Raises:
        ValueError: any other shape, or non-integer ``(H, W)`` values.
    """
    p = _to_numpy(pred)
    if p.ndim == 3 and p.shape[0] > 1:
        return p.argmax(0).astype(np.int64)
    return as_mask(p, name)


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
        if a.shape[0] == 1:  # one grey channel, normalised like the three (the statistics broadcast)
            a = np.repeat(a, 3, axis=0)
        if mean is None or std is None:  # floats already in [0, 1]
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return to_image(a, mean, std)  # (H, W, 3) uint8
    raise ValueError(
        f"cannot display an image of shape {a.shape} and dtype {a.dtype}: pass (H, W, 3) uint8 RGB "
        "or a (3, H, W) float tensor normalised with ImageNet mean/std (one image, not a batch)"
    )


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



def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]
