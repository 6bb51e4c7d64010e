"""Interactive explorers for the notebooks: thin ipywidgets wiring over ``seglab.viz``.

Every explorer is an ``ipywidgets.VBox`` subclass (``FigureView``): display it (last value of a cell, or
``display(widget)``) and move its controls. The controls are attributes (``explorer.band_width``,
``browser.index`` ...), so code and tests can set ``.value`` and read what was drawn. Each draws a
``seglab.viz`` figure as PNG bytes into ``explorer.image`` (an ``ipywidgets.Image``), which is faster and
sturdier than re-running ``plt.show`` inside an ``Output``, and works the same in JupyterLab, classic
Notebook and VS Code. ``explorer.status`` (HTML) shows numbers and errors; ``explorer.redraw_seconds`` is
the wall time of the last redraw.

Every explorer also leaves a picture behind: next to its live view it writes a static ``image/png`` of its
current figure, which ``jupyter nbconvert --to html``, nbviewer and GitHub show, whether or not the
notebook saved its widget state, and which widget frontends hide (``seglab.widgets.display``). After a
displayed explorer redraws, its outputs are refreshed at the end of the next executed cell, so that an
executed notebook stores the figure the explorer showed last.

Expensive work (model outputs, gradients, histories) is computed once and cached, so that moving a
control only redraws a figure (well under 0.5 s at 256×256 on a 2-core CPU; measured by
``benchmarks/widgets.py``). Predictions go through ``seglab.inference.infer_logits`` like ``evaluate``'s.

Modules, one idea each:

- ``display``: ``FigureView`` (controls, figure, status) and the outputs it leaves in the notebook;
- ``model_outputs``: ``model_input``, ``predict_classes`` (through ``infer_logits``), ``feature_maps``;
- ``dilation``: ``DilationExplorer``; ``receptive_field``: ``ReceptiveFieldExplorer``;
- ``predictions``: ``PredictionBrowser``; ``skips``: ``SkipExplorer``;
- ``training``: ``TrainingMonitor`` (a callback for ``seglab.engine.fit``) and ``RunComparer``.

Models, datasets and torch are only touched by the explorers that need them.
"""

from .dilation import DilationExplorer
from .display import FigureView
from .model_outputs import feature_maps, model_input, predict_classes
from .predictions import PredictionBrowser
from .receptive_field import ReceptiveFieldExplorer
from .skips import SkipExplorer
from .training import RunComparer, TrainingMonitor

__all__ = [
    "DilationExplorer",
    "PredictionBrowser",
    "SkipExplorer",
    "ReceptiveFieldExplorer",
    "TrainingMonitor",
    "RunComparer",
    "FigureView",
    "model_input",
    "predict_classes",
    "feature_maps",
]
