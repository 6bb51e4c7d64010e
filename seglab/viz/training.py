"""Training curves and scores: ``plot_history``, ``plot_iou_per_class``, ``plot_confusion_matrix``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .core import _cmap, _figure, _to_numpy

__all__ = ["LOG_LOSS_RATIO", "run_colors", "plot_history", "plot_iou_per_class", "plot_confusion_matrix"]


def _runs(histories) -> dict[str, list[dict]]:
    if isinstance(histories, Mapping):
        runs = {str(k): list(v) for k, v in histories.items()}
    else:
        runs = {"run": list(histories)}
    for name, h in runs.items():
        if not all(isinstance(r, Mapping) for r in h):
            raise ValueError(f"history of {name!r} must be a list of per-epoch dicts (seglab.engine.load_history)")
    return runs


def run_colors(names) -> dict[str, tuple[float, float, float]]:
    """One colour per run name, by the name's place among the *sorted* names (tab10, cycling after 10).

    The colour depends on the set of names, not on the order a caller lists them in, so the same run has
    the same colour in ``plot_history``, ``plot_iou_per_class`` and ``seglab.widgets.RunComparer`` (which
    passes the colours of every run it found, so that selecting fewer runs recolours none).
    """
    colours = _cmap("tab10").colors
    return {name: colours[k % len(colours)] for k, name in enumerate(sorted({str(n) for n in names}))}


def _label_offsets(ax, points, min_gap: float = 2.0) -> list[float]:
    """Vertical offsets (points, from 8 up) that keep labels drawn above ``points`` from overlapping.

    ``points``: ``(x, y, text)`` in data coordinates, each labelled ``text`` centred 8 points above
    (x, y). Labels whose horizontal extents meet are stacked, lowest point first, each at least
    ``min_gap`` points above the one below. Uses ``ax``'s current transform (call after the layout).
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    boxes = []  # (index, x0, x1, y, height) in points
    for i, (x, y, text) in enumerate(points):
        px, py = ax.transData.transform((x, y))
        t = ax.text(0, 0, text, fontsize=9)
        extent = t.get_window_extent(renderer)
        t.remove()
        half = extent.width * to_points / 2
        boxes.append((i, px * to_points - half, px * to_points + half, py * to_points, extent.height * to_points))
    offsets = [8.0] * len(points)
    placed: list[tuple[float, float, float, float]] = []  # (x0, x1, bottom, top) in points
    for i, x0, x1, y, height in sorted(boxes, key=lambda b: b[3]):
        bottom = y + 8.0
        for px0, px1, pbottom, ptop in sorted(placed, key=lambda p: p[2]):
            if x0 < px1 and px0 < x1 and bottom < ptop + min_gap and pbottom < bottom + height + min_gap:
                bottom = ptop + min_gap
        offsets[i] = bottom - y
        placed.append((x0, x1, bottom, bottom + height))
    return offsets


def _series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(history)], dtype=float)
    vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in history], dtype=float)
    return epochs, vals


LOG_LOSS_RATIO = 100.0
"""``plot_history(loss_scale="auto")`` draws the loss on a log axis when its largest positive value
is at least this many times its smallest (two orders of magnitude or more)."""


def _loss_scale(values: np.ndarray, loss_scale: str) -> str:
    """"linear" or "log" for the loss axis; ``values``: every loss value drawn (nan skipped)."""
    if loss_scale not in ("auto", "linear", "log"):
        raise ValueError(f"loss_scale must be 'auto', 'linear' or 'log', got {loss_scale!r}")
    if loss_scale != "auto":
        return loss_scale
    positive = values[np.isfinite(values) & (values > 0)]
    if len(positive) and positive.max() >= LOG_LOSS_RATIO * positive.min():
        return "log"
    return "linear"


def plot_history(histories, *, show_lr: bool = False, loss_scale: str = "auto", title: str | None = None,
                 colors: Mapping[str, object] | None = None) -> Figure:
    """Loss and mIoU curves of one or several training runs.

    Args:
        histories: one history (list of per-epoch dicts with keys ``"epoch"``, ``"train_loss"``,
            ``"val_loss"``, ``"val_mIoU"``, ``"lr"``, ... as written by ``seglab.engine.fit``) or
            ``{run name: history}``. Missing / None values are skipped.
        show_lr: add a third panel with the learning rate (log scale).
        loss_scale: ``"auto"`` (default): a log loss axis when the loss values span two orders of
            magnitude or more (``LOG_LOSS_RATIO``: one diverged epoch, say a validation loss of
            265,000 next to losses near 1, would flatten every other curve on a linear axis), else
            linear; or ``"linear"`` / ``"log"``.
        colors: ``{run name: matplotlib colour}``; default ``run_colors`` of the run names (the same run
            gets the same colour in every seglab figure of the same runs).

    Left: train (solid) and validation (dashed) loss; right: validation mIoU in percent (and
    ``"train_mIoU"`` dotted, when recorded), the best epoch of each run marked with a star and labelled
    with its mIoU (labels that would overlap are stacked). The
    legend (line styles, and run colours when there are several runs) sits below the panels,
    never over a curve.

    Raises:
        ValueError: for a history that is not a list of dicts, or an unknown ``loss_scale``.
    """
    runs = _runs(histories)
    ncols = 3 if show_lr else 2
    fig = _figure(4.6 * ncols, 4.3 + (0.25 if len(runs) > 1 else 0))
    axes = fig.subplots(1, ncols)
    colours = {**run_colors(runs), **(colors or {})}
    losses, train_miou, best_labels = [], False, []
    for name, h in runs.items():
        col = colours[name]
        for key, ls in (("train_loss", "-"), ("val_loss", "--")):
            e, v = _series(h, key)
            if np.isfinite(v).any():
                axes[0].plot(e, v, ls, color=col, marker="." if len(e) < 30 else None)
                losses.append(v)
        e, v = _series(h, "val_mIoU")
        if np.isfinite(v).any():
            axes[1].plot(e, 100 * v, "--", color=col, marker="." if len(e) < 30 else None)
            b = int(np.nanargmax(v))
            axes[1].plot(e[b], 100 * v[b], "*", color=col, ms=13, mec="black", mew=0.5)
            best_labels.append((e[b], 100 * v[b], f"{100 * v[b]:.1f}%", col))
        e, v = _series(h, "train_mIoU")
        if np.isfinite(v).any():
            axes[1].plot(e, 100 * v, ":", color=col)
            train_miou = True
        if show_lr:
            e, v = _series(h, "lr")
            axes[2].plot(e, v, "-", color=col)
    scale = _loss_scale(np.concatenate(losses) if losses else np.array([]), loss_scale)
    ylabel = "cross-entropy per pixel" + (" (log scale)" if scale == "log" else "")
    axes[0].set(title="loss", xlabel="epoch", ylabel=ylabel, yscale=scale)
    axes[1].set(title="mean IoU (validation)", xlabel="epoch", ylabel="mIoU (%)")
    axes[1].margins(x=0.06, y=0.12)
    handles = [Line2D([], [], color="0.3", ls="-", label="train loss"),
               Line2D([], [], color="0.3", ls="--", label="validation")]
    if train_miou:
        handles.append(Line2D([], [], color="0.3", ls=":", label="train mIoU"))
    handles.append(Line2D([], [], color="0.3", marker="*", ls="none", ms=11, label="best epoch"))
    if len(runs) > 1:
        handles += [Line2D([], [], color=colours[name], lw=3, label=name) for name in runs]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4 if len(runs) > 1 else 6),
               frameon=False, fontsize=9)
    if show_lr:
        axes[2].set(title="learning rate", xlabel="epoch", ylabel="lr", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    if best_labels:  # after the layout, so that the labels' sizes in points are final
        if not hasattr(fig.canvas, "get_renderer"):
            FigureCanvasAgg(fig)  # a canvas that measures text (seglab's figures render with Agg anyway)
        fig.draw_without_rendering()
        offsets = _label_offsets(axes[1], [(x, y, text) for x, y, text, _ in best_labels])
        for (x, y, text, col), dy in zip(best_labels, offsets):
            axes[1].annotate(text, (x, y), textcoords="offset points", xytext=(0, dy), ha="center", va="bottom",
                             fontsize=9, color=col, annotation_clip=False)
    return fig


def plot_iou_per_class(iou_per_class, classes: Sequence[str], *, title: str | None = None,
                       colors: Mapping[str, object] | None = None) -> Figure:
    """Horizontal bars of IoU per class (percent); ``nan`` (class absent) is written as "absent".

    Args:
        iou_per_class: K fractions (``ConfusionMatrix.compute()["iou_per_class"]`` or a history's
            ``"val_iou_per_class"``), or ``{run name: K fractions}`` for grouped bars.
        classes: the K class names.

    A dashed vertical line marks each run's mIoU (mean over non-nan classes). ``colors``: ``{run name:
    matplotlib colour}``, default ``run_colors`` of the run names (as ``plot_history``).
    """
    runs = dict(iou_per_class) if isinstance(iou_per_class, Mapping) else {"": iou_per_class}
    k = len(classes)
    fig = _figure(6.5, 0.32 * k * max(1, len(runs) * 0.7) + 1.4)
    ax = fig.subplots()
    height = 0.8 / len(runs)
    colours = {**run_colors(runs), **(colors or {})}
    for r, (name, vals) in enumerate(runs.items()):
        vals = np.asarray(_to_numpy(vals), dtype=float)
        if vals.shape != (k,):
            raise ValueError(f"IoU values {vals.shape} do not match {k} class names")
        y = np.arange(k) - 0.4 + height * (r + 0.5)
        miou = np.nanmean(vals) if np.isfinite(vals).any() else float("nan")
        ax.barh(y, 100 * np.nan_to_num(vals), height=height, color=colours[name],
                label=f"{name + ': ' if name else ''}mIoU {100 * miou:.1f}%")
        ax.axvline(100 * miou, color=colours[name], ls="--", lw=1)
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
