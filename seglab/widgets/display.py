"""How an explorer shows itself: controls, the PNG of a ``seglab.viz`` figure, a status line, and the
picture it leaves in the notebook for viewers without a kernel.

``FigureView`` is the base class of every explorer: an ``ipywidgets.VBox`` of the controls, an
``ipywidgets.Image`` (``.image``, PNG bytes of the current figure) and an ``ipywidgets.HTML`` status line
(``.status``). A subclass implements ``_draw() -> Figure`` (and ``_status() -> str``) and calls
``self._watch(*controls)`` so that moving a control redraws.

**Two outputs per display.** Displaying an explorer writes two outputs into the notebook:

1. the live view: ``application/vnd.jupyter.widget-view+json`` (the widget) and ``text/plain`` (the
   status line as text, instead of ``DilationExplorer(children=(HBox(...``);
2. the picture: ``image/png`` of the current figure beside a widget view whose ``model_id`` is ``""``.

Widget frontends render the highest-ranked mimetype, the widget view; for an empty ``model_id`` (the
ipywidgets convention for a closed widget) JupyterLab, Notebook 7 and classic Notebook hide the output,
so the live session shows the explorer once. Static renderers (``jupyter nbconvert --to html``,
nbviewer, GitHub) render a widget view only when the notebook's metadata holds that model's saved
widget state (nbconvert's ``WidgetsDataTypeFilter``); no state has the model ``""``, so they show the PNG.
One output cannot serve both: nbclient and ``jupyter nbconvert --execute`` save the widget state by
default (``store_widget_state=True``), and nbconvert then draws the live view's widget from that state
with JavaScript from a CDN, dropping any PNG beside it (nothing at all offline).

When a displayed explorer redraws (a later cell sets ``.value``, a training epoch ends, a slider moves),
both outputs are refreshed once at the end of the next executed cell (IPython's ``post_run_cell`` event,
``update_display``), so that an executed notebook stores the figure the explorer showed last.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
import weakref
from collections.abc import Sequence

import ipywidgets as widgets

from seglab import viz

__all__ = ["FigureView", "WIDGET_VIEW", "refresh_pictures"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
"""The mimetype of a widget view in a notebook output (ipywidgets' message spec)."""

_STALE: "weakref.WeakSet[FigureView]" = weakref.WeakSet()  # displayed explorers redrawn since their last refresh
_HOOKED: set[int] = set()  # ids of the IPython shells our post_run_cell hook is registered with


def refresh_pictures(*_args) -> None:
    """IPython ``post_run_cell`` hook: refresh the outputs of every displayed explorer redrawn since."""
    for view in list(_STALE):
        _STALE.discard(view)
        view._update_pictures()


def _hook_cell_end() -> None:
    """Register ``refresh_pictures`` to run after every cell (once per IPython shell; none outside IPython)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and id(shell) not in _HOOKED:
        shell.events.register("post_run_cell", refresh_pictures)
        _HOOKED.add(id(shell))


class FigureView(widgets.VBox):
    """Controls on top, the PNG of a ``viz`` figure below, then a status line (base class of the explorers).

    Attributes:
        image: ``ipywidgets.Image`` holding the PNG bytes of the current figure (``b""`` before the first).
        status: ``ipywidgets.HTML``, numbers about the figure or the last error (in red).
        error: ``"ExceptionType: message"`` of the last failed redraw, None after a good one.
        redraw_seconds: wall time of the last redraw (s).
    """

    def __init__(self, controls: Sequence[widgets.Widget]) -> None:
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.redraw_seconds = math.nan
        self.error: str | None = None
        self._pictures: list = []  # (live view, picture) IPython DisplayHandles, one pair per display
        super().__init__(children=[*controls, self.image, self.status])
        self.add_class("seglab-" + type(self).__name__)  # a CSS hook (also used by tests/test_browser.py)

    # ------------------------------------------------------------ the outputs left in the notebook
    def status_text(self) -> str:
        """``"<ClassName>: <status line as plain text>"`` (the ``text/plain`` of the live view)."""
        status = html.unescape(re.sub(r"<[^>]+>", " ", self.status.value or "")).strip()
        return f"{type(self).__name__}: {' '.join(status.split())}" if status else type(self).__name__

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live view: the widget view, and the status line as ``text/plain``."""
        data = widgets.VBox._repr_mimebundle_(self, **kwargs) or {}
        data["text/plain"] = self.status_text()
        return data

    def picture_bundle(self) -> dict:
        """The picture output: ``image/png`` of the current figure (when there is one, base64) beside a widget
        view of ``model_id ""``, which widget frontends hide and static renderers skip (module docstring)."""
        data: dict = {WIDGET_VIEW: {"model_id": "", "version_major": 2, "version_minor": 0}, "text/plain": ""}
        if self.image.value:
            data["image/png"] = base64.b64encode(bytes(self.image.value)).decode("ascii")
        return data

    def _ipython_display_(self) -> None:
        """Display the live view, then the picture, each with a display id so that both can be refreshed."""
        from IPython.display import display

        live = display(self._repr_mimebundle_(), raw=True, display_id=True)
        picture = display(self.picture_bundle(), raw=True, display_id=True)
        if live is not None and picture is not None:  # None outside IPython: nothing to refresh
            self._pictures.append((live, picture))
            _hook_cell_end()

    def _update_pictures(self) -> None:
        live, picture = self._repr_mimebundle_(), self.picture_bundle()
        for live_handle, picture_handle in self._pictures:
            live_handle.update(live, raw=True)
            picture_handle.update(picture, raw=True)

    # ------------------------------------------------------------------------- drawing
    def _draw(self):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _status(self) -> str:
        return ""

    def _watch(self, *controls: widgets.Widget) -> None:
        for control in controls:
            control.observe(self._on_change, names="value")

    def _on_change(self, change=None) -> None:
        try:
            self.redraw()
        except Exception as err:  # shown to the user: an observer's exception would only reach the log
            self.error = f"{type(err).__name__}: {err}"
            self.status.value = f"<span style='color:#b00020'>{html.escape(self.error)}</span>"
            self._mark_stale()

    def redraw(self) -> None:
        """Draw the figure for the current control values into ``self.image`` (raises on error)."""
        start = time.perf_counter()
        fig = self._draw()
        self.image.value = viz.figure_to_png(fig)
        self.error = None
        self.status.value = self._status()
        self.redraw_seconds = time.perf_counter() - start
        self._mark_stale()

    def _mark_stale(self) -> None:
        """The figure changed: refresh this explorer's outputs in the notebook after the current cell."""
        if self._pictures:
            _STALE.add(self)
