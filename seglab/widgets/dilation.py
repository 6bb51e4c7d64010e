"""``DilationExplorer``: the dilation rate of each layer of a stack of 3×3 convolutions, and the input
pixels that reach one output (``seglab.viz.show_dilation_coverage``): where the holes of gridding appear."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets

from seglab import viz

from .display import FigureView

__all__ = ["DilationExplorer"]


class DilationExplorer(FigureView):
    """Choose the dilation rate of each layer of a stack of 3×3 convolutions; see which input pixels
    reach the output (``viz.show_dilation_coverage``) and where the holes of gridding appear.

    Args:
        atrous_rates: initial rates, first layer first (1 to ``max_layers`` values).
        reference: a stack drawn next to yours for comparison (default: gridding ``(2, 2, 2)``);
            None hides it.
        max_rate, max_layers, kernel_size: ranges of the controls.

    Controls: ``num_layers`` (IntSlider), ``rates`` (list of IntSliders, one per layer; only the
    first ``num_layers`` count), ``show_reference`` (Checkbox).
    """

    def __init__(self, atrous_rates: Sequence[int] = (1, 2, 3), *, reference: Sequence[int] | None = (2, 2, 2),
                 max_rate: int = 8, max_layers: int = 5, kernel_size: int = 3) -> None:
        atrous_rates = list(atrous_rates)
        if not 1 <= len(atrous_rates) <= max_layers:
            raise ValueError(f"give 1 to {max_layers} atrous_rates, got {atrous_rates}")
        self.kernel_size, self.reference = kernel_size, reference
        self.num_layers = widgets.IntSlider(len(atrous_rates), min=1, max=max_layers, description="layers",
                                            continuous_update=False)
        self.rates = [
            widgets.IntSlider(atrous_rates[i] if i < len(atrous_rates) else 1, min=1, max=max_rate,
                              description=f"rate {i + 1}", continuous_update=False)
            for i in range(max_layers)
        ]
        self.show_reference = widgets.Checkbox(reference is not None,
                                               description=f"compare with rates {tuple(reference or ())}",
                                               disabled=reference is None, style={"description_width": "initial"})
        rates = widgets.HBox(self.rates, layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([widgets.HBox([self.num_layers, self.show_reference]), rates])
        self._watch(self.num_layers, self.show_reference, *self.rates)
        self.redraw()

    @property
    def atrous_rates(self) -> tuple[int, ...]:
        """The rates of the active layers."""
        return tuple(s.value for s in self.rates[: self.num_layers.value])

    def _draw(self):
        for i, slider in enumerate(self.rates):
            slider.layout.display = None if i < self.num_layers.value else "none"
        stacks = {"your stack": self.atrous_rates}
        if self.show_reference.value and self.reference is not None:
            stacks["reference"] = tuple(self.reference)
        return viz.show_dilation_coverage(stacks, self.kernel_size)

    def _status(self) -> str:
        counts = viz.dilation_coverage(self.atrous_rates, self.kernel_size)
        holes = float((counts == 0).mean())
        verdict = "no holes: every pixel of the RF reaches the output" if holes == 0 else \
            "gridding: some pixels inside the RF never reach the output"
        return f"rates {self.atrous_rates}: RF {counts.shape[0]}×{counts.shape[0]} px, {holes:.0%} holes ({verdict})"
