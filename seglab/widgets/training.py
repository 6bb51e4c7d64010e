"""Training runs: ``TrainingMonitor`` (live curves, a callback of ``seglab.engine.fit``) and ``RunComparer``
(the runs saved in a folder, side by side)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets

from seglab import viz
from seglab.viz.training import run_colors

from .display import FigureView

__all__ = ["TrainingMonitor", "RunComparer"]


class TrainingMonitor(FigureView):
    """Live curves while ``seglab.engine.fit`` runs: pass the monitor as a callback.

    Example::

        monitor = TrainingMonitor(classes=dataset.classes)
        display(monitor)
        history = fit(config, callbacks=[monitor])   # the curves redraw after every epoch

    Called as ``monitor(epoch_record, history)``; keeps the history (``monitor.history``).

    Controls: ``view`` (ToggleButtons: curves, per-class IoU of the latest epoch), ``show_lr``
    (Checkbox: add the learning-rate panel).
    """

    def __init__(self, *, classes: Sequence[str] | None = None, title: str | None = None) -> None:
        self.classes, self.title = classes, title
        self.history: list[dict] = []
        self.view = widgets.ToggleButtons(options=["curves", "per-class IoU"], description="show")
        self.show_lr = widgets.Checkbox(False, description="learning rate")
        super().__init__([widgets.HBox([self.view, self.show_lr])])
        self._watch(self.view, self.show_lr)
        self.status.value = "waiting for the first epoch …"

    def __call__(self, epoch_record: dict, history: list[dict]) -> None:
        self.history = list(history)
        self._on_change()

    def redraw(self) -> None:
        if self.history:
            super().redraw()

    def _draw(self):
        self.show_lr.layout.display = None if self.view.value == "curves" else "none"
        if self.view.value == "curves":
            return viz.plot_history(self.history, show_lr=self.show_lr.value, title=self.title)
        last = self.history[-1]
        iou = last.get("val_iou_per_class")
        if not iou:
            raise ValueError("the epoch records hold no 'val_iou_per_class'")
        classes = self.classes or [f"class {i}" for i in range(len(iou))]
        return viz.plot_iou_per_class(iou, classes, title=f"IoU per class, epoch {last.get('epoch')}")

    def _status(self) -> str:
        r = self.history[-1]
        parts = [f"epoch {r.get('epoch')}"]
        for key, fmt in (("train_loss", "train loss {:.4f}"), ("val_loss", "val loss {:.4f}"),
                         ("val_mIoU", "val mIoU {:.1%}"),
                         ("seconds", "{:.1f} s"), ("images_per_s", "{:.1f} img/s")):
            if r.get(key) is not None:
                parts.append(fmt.format(r[key]))
        return " · ".join(parts)


class RunComparer(FigureView):
    """Compare training runs saved in a folder: every subfolder holding ``history.json`` is a run.

    Args:
        folder: the parent folder (e.g. ``runs/``); subfolders are searched recursively.
        classes: class names for the per-class view (default: read from the run's
            ``history.csv`` header ``iou_<name>``, else ``class i``).

    Controls: ``runs`` (SelectMultiple of run names, relative paths), ``view`` (curves /
    per-class IoU at each run's best epoch), ``show_lr`` (Checkbox), ``rescan`` (Button).

    Raises:
        FileNotFoundError: if ``folder`` does not exist.
    """

    def __init__(self, folder, *, classes: Sequence[str] | None = None, max_selected: int = 4) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no run folder at {self.folder}: pass the folder holding your runs' subfolders "
                                    "(each written by seglab.engine.fit with out=<folder>/<run>)")
        self.classes = classes
        self._cache: dict[str, tuple[float, list[dict]]] = {}
        self.runs = widgets.SelectMultiple(options=[], description="runs", rows=5, layout=widgets.Layout(width="45%"))
        self.view = widgets.ToggleButtons(options=["curves", "per-class IoU"], description="show")
        self.show_lr = widgets.Checkbox(False, description="learning rate")
        self.rescan = widgets.Button(description="rescan folder", icon="refresh")
        super().__init__([widgets.HBox([self.runs, widgets.VBox([self.view, self.show_lr, self.rescan])])])
        self.rescan.on_click(lambda _: self.scan())
        self.scan(max_selected)
        self._watch(self.runs, self.view, self.show_lr)
        self._on_change()

    def scan(self, max_selected: int = 4) -> list[str]:
        """Find the runs (``**/history.json``) again; keeps the selection where possible."""
        names = sorted(str(p.parent.relative_to(self.folder)) for p in self.folder.rglob("history.json"))
        keep = [n for n in self.runs.value if n in names] or names[:max_selected]
        self.runs.options = names
        self.runs.value = tuple(keep)
        return names

    def history(self, name: str) -> list[dict]:
        """The history of run ``name`` (re-read when the file changed)."""
        path = self.folder / name / "history.json"
        mtime = path.stat().st_mtime
        if name not in self._cache or self._cache[name][0] != mtime:
            self._cache[name] = (mtime, json.loads(path.read_text()))
        return self._cache[name][1]

    def _classes(self, name: str, k: int) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        csv = self.folder / name / "history.csv"
        if csv.is_file():
            header = csv.read_text().splitlines()[0].split(",")
            names = [h[4:] for h in header if h.startswith("iou_")]
            if len(names) == k:
                return names
        return [f"class {i}" for i in range(k)]

    def redraw(self) -> None:
        if not self.runs.value:
            self.image.value = b""
            self.status.value = f"no run selected ({len(self.runs.options)} found in {html.escape(str(self.folder))})"
            self._mark_stale()
            return
        super().redraw()

    def _draw(self):
        selected = {name: self.history(name) for name in self.runs.value}
        self.show_lr.layout.display = None if self.view.value == "curves" else "none"
        colors = run_colors(self.runs.options)  # by every run found: a run keeps its colour in any selection
        if self.view.value == "curves":
            return viz.plot_history(selected, show_lr=self.show_lr.value, colors=colors)
        best = {}
        for name, h in selected.items():
            scored = [r for r in h if r.get("val_mIoU") is not None and r.get("val_iou_per_class")]
            if scored:
                best[name] = max(scored, key=lambda r: r["val_mIoU"])["val_iou_per_class"]
        if not best:
            raise ValueError("the selected runs hold no 'val_iou_per_class'")
        k = len(next(iter(best.values())))
        if any(len(v) != k for v in best.values()):
            raise ValueError("the selected runs have different numbers of classes: compare runs of one dataset")
        return viz.plot_iou_per_class(best, self._classes(next(iter(best)), k), title="IoU per class at the best epoch",
                                      colors=colors)

    def _status(self) -> str:
        parts = []
        for name in self.runs.value:
            h = self.history(name)
            vals = [r["val_mIoU"] for r in h if r.get("val_mIoU") is not None]
            parts.append(f"{html.escape(name)}: {len(h)} epoch{'' if len(h) == 1 else 's'}, best val mIoU "
                         + (f"{max(vals):.1%}" if vals else "n/a"))
        return "<br>".join(parts)
