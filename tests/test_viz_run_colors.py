"""One colour per run in every training figure, and mIoU labels that never overlap (issue 18, notebook 08)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb

from seglab import viz
from seglab.viz.training import run_colors

RUNS = ("FCN-8s", "U-Net", "DeepLabV3", "DeepLabV3+")


def _history(final, n=4):
    """n epochs rising to `final` at the last one (its best)."""
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_mIoU": final * e / n,
             "val_iou_per_class": [final, final, final]} for e in range(1, n + 1)]


def _curve_colours(fig) -> dict[str, tuple]:
    """Run name -> colour of its validation mIoU curve (the legend's run handles name them)."""
    handles = {h.get_label(): to_rgb(h.get_color()) for h in fig.legends[0].legend_handles}
    curves = {to_rgb(line.get_color()) for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"}
    assert set(handles.values()) >= curves  # every curve has a named colour
    return {name: colour for name, colour in handles.items() if name in RUNS}


def test_run_colors_depend_on_the_set_of_names_not_their_order():
    forward, backward = run_colors(RUNS), run_colors(reversed(RUNS))
    assert forward == backward and len(set(forward.values())) == len(RUNS)
    assert forward["DeepLabV3"] == to_rgb("tab:blue")  # the first name in sorted order takes tab10's first colour


def test_plot_history_and_iou_bars_colour_a_run_the_same_in_any_order():
    histories = {name: _history(0.3 + 0.01 * k) for k, name in enumerate(RUNS)}
    a = _curve_colours(viz.plot_history(histories))
    b = _curve_colours(viz.plot_history(dict(reversed(histories.items()))))
    assert a == b == run_colors(RUNS)
    bars = viz.plot_iou_per_class({name: h[-1]["val_iou_per_class"] for name, h in histories.items()}, ["a", "b", "c"])
    patches = bars.axes[0].patches
    for k, name in enumerate(RUNS):  # barh draws 3 bars per run, run after run
        assert {to_rgb(p.get_facecolor()[:3]) for p in patches[3 * k:3 * k + 3]} == {run_colors(RUNS)[name]}


def test_run_comparer_colours_runs_like_plot_history(tmp_path):
    widgets = pytest.importorskip("seglab.widgets")
    for k, name in enumerate(RUNS):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(json.dumps(_history(0.3 + 0.01 * k)))
    comparer = widgets.RunComparer(tmp_path)
    comparer.runs.value = ("U-Net", "FCN-8s")  # a subset: each keeps the colour it has among all four
    fig = comparer._draw()
    assert _curve_colours(fig) == {name: run_colors(RUNS)[name] for name in ("U-Net", "FCN-8s")}


@pytest.mark.parametrize("finals", [(0.201, 0.203, 0.205, 0.207), (0.5, 0.5, 0.5, 0.5), (0.2, 0.6, 0.21, 0.59)])
def test_best_miou_labels_never_overlap(finals):
    histories = {name: _history(final) for name, final in zip(RUNS, finals)}
    fig = viz.plot_history(histories)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in fig.axes[1].texts if t.get_text().endswith("%")]
    assert sorted(t.get_text() for t in labels) == sorted(f"{100 * f:.1f}%" for f in finals)
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    for text in labels:  # each label stays above its own star, never below it
        star_y = fig.axes[1].transData.transform((4, float(text.get_text()[:-1])))[1]  # the axis is in percent
        assert text.get_window_extent(renderer).y0 > star_y
    assert np.isfinite([b.y1 for b in boxes]).all()
