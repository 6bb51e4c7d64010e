"""Tests for seglab.widgets: each explorer builds without a display, a control change redraws it,
and the numbers it shows agree with seglab.viz / seglab.metrics / seglab.receptive_field.

Redraw times are recorded (``redraw_seconds``) but never asserted here: benchmarks/widgets.py
measures them.
"""

from __future__ import annotations

import json
from pathlib import Path

import ipywidgets
import numpy as np
import pytest
import torch
from torch import nn

from seglab import viz, widgets

CLASSES = ("background", "circle", "square", "triangle")
COLORS = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _change(widget, control, value):
    """Set a control, check the widget redrew without error, return the new PNG bytes."""
    before = bytes(widget.image.value)
    assert control.value != value, "test bug: the control already holds this value"
    control.value = value
    assert widget.error is None, widget.error
    assert bytes(widget.image.value).startswith(PNG_MAGIC)
    assert bytes(widget.image.value) != before, f"{control.description} = {value!r} did not change the picture"
    assert widget.redraw_seconds > 0
    return widget.image.value


@pytest.fixture(scope="module")
def shapes():
    from seglab.data.synthetic import SyntheticShapes

    ds = SyntheticShapes("val", num_images=4, image_size=64)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def unets():
    from seglab.models import build_model

    torch.manual_seed(0)
    with_skips = build_model("unet", 4, base_channels=4, depth=2).eval()
    without = build_model("unet", 4, base_channels=4, depth=2, skip_connections=False).eval()
    return with_skips, without


# ------------------------------------------------------------------------------------ dilation
def test_dilation_explorer_redraws_and_reports_holes():
    ex = widgets.DilationExplorer((1, 2, 3))
    assert isinstance(ex, ipywidgets.VBox) and bytes(ex.image.value).startswith(PNG_MAGIC)
    assert "RF 13×13 px, 0% holes" in ex.status.value
    _change(ex, ex.rates[0], 2)
    _change(ex, ex.rates[2], 2)
    assert ex.atrous_rates == (2, 2, 2)
    holes = (viz.dilation_coverage((2, 2, 2)) == 0).mean()
    assert f"{holes:.0%} holes" in ex.status.value and "gridding" in ex.status.value
    _change(ex, ex.num_layers, 1)
    assert ex.atrous_rates == (2,) and ex.rates[1].layout.display == "none"
    _change(ex, ex.show_reference, False)
    with pytest.raises(ValueError, match="1 to 5"):
        widgets.DilationExplorer(())


# --------------------------------------------------------------------------------- predictions
def test_prediction_browser_with_given_predictions(shapes):
    images = [im for im, _ in shapes]
    masks = [m for _, m in shapes]
    rng = np.random.default_rng(0)
    preds = [np.where(rng.random(m.shape) < 0.1 * i, 0, m) for i, m in enumerate(masks)]  # worse and worse
    browser = widgets.PredictionBrowser(images, masks, preds, classes=CLASSES, colors=COLORS)
    scores = [viz.image_scores(p, m, 4) for p, m in zip(preds, masks)]
    assert f"mIoU {scores[0]['mIoU']:.1%}" in browser.status.value
    _change(browser, browser.index, 2)
    assert browser.current == 2 and f"mIoU {scores[2]['mIoU']:.1%}" in browser.status.value
    browser.order.value = "worst mIoU first"
    assert browser.index.value == 0 and browser.current == int(np.argmin([s["mIoU"] for s in scores]))
    browser.order.value = "best mIoU first"
    assert browser.current == int(np.argmax([s["mIoU"] for s in scores]))
    with pytest.raises(ValueError, match="equal numbers"):
        widgets.PredictionBrowser(images, masks[:2], preds, classes=CLASSES, colors=COLORS)
    with pytest.raises(ValueError, match="preds .* or a model"):
        widgets.PredictionBrowser(images, masks, classes=CLASSES, colors=COLORS)


class _Counting(nn.Module):
    """Wraps a model and counts its forward calls (to check caching)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def test_prediction_browser_runs_the_model_once_per_image(shapes, unets):
    from seglab.data.synthetic import SyntheticShapes
    from seglab.transforms import eval_transform

    model = _Counting(unets[0])
    ds = SyntheticShapes("val", num_images=3, image_size=64, transform=eval_transform())
    browser = widgets.PredictionBrowser.from_dataset(model, ds)
    assert model.calls == 1 and browser.classes == ds.classes
    _change(browser, browser.index, 1)
    image, mask = ds[1]
    with torch.no_grad():
        expected = unets[0](image[None])[0].argmax(0).numpy()
    np.testing.assert_array_equal(browser.prediction(1), expected)
    browser.index.value = 0
    browser.index.value = 1
    assert model.calls == 2  # images 0 and 1, each computed once


# ---------------------------------------------------------------------------- skip connections
def test_skip_explorer_views_and_trimap(shapes, unets):
    from seglab.metrics import trimap_iou

    image, mask = shapes[0]
    coarse = np.kron(mask[::8, ::8], np.ones((8, 8), np.int64))
    ex = widgets.SkipExplorer(image, mask, {"U-Net": unets[0], "no skips": unets[1], "coarse": coarse},
                              CLASSES, COLORS, band_widths=(1, 2, 4))
    assert set(ex.features) == {"U-Net", "no skips"}  # arrays have no feature maps
    assert list(ex.features["U-Net"]) == ["decoder.0", "decoder.1"]
    assert ex.features["U-Net"]["decoder.1"].shape == (4, 64, 64)
    _change(ex, ex.band_width, 2)
    curves = ex.trimap_curves()
    expected = trimap_iou(torch.from_numpy(coarse)[None], torch.from_numpy(mask)[None], 4, 2)
    assert curves["coarse"][1] == pytest.approx(expected)
    _change(ex, ex.view, "trimap curve")
    assert ex.band_width.layout.display == "none"
    _change(ex, ex.view, "feature maps")
    _change(ex, ex.mode, "channels")
    _change(ex, ex.model, "no skips")
    with pytest.raises(ValueError, match="not among"):
        widgets.SkipExplorer(image, mask, {"U-Net": unets[0]}, CLASSES, COLORS, stages=["nope"])


# ---------------------------------------------------------------------------- receptive field
def _two_layer_net():
    """3×3 conv then 3×3 conv with dilation 2: theoretical RF 7×7 with holes? no: 1 + 2 + 4 = 7, filled."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=2, dilation=2))


def test_receptive_field_explorer_matches_receptive_field_module(shapes):
    from seglab import receptive_field as rfm

    net, other = _two_layer_net(), _two_layer_net()
    nn.init.constant_(other[2].weight, 0.1)
    image = shapes[0][0]
    ex = widgets.ReceptiveFieldExplorer({"random": net, "constant": other}, image, pixel=(30, 30))
    assert [v for _, v in ex.layer.options] == ["0", "1", "2", ""]
    assert ex.layer.value == "" and "theoretical RF 7×7 px (49 px, 0 holes)" in ex.status.value
    _change(ex, ex.layer, "0")
    assert "theoretical RF 3×3 px" in ex.status.value
    _change(ex, ex.row, 10)
    x = widgets.model_input(image)
    expected = rfm.effective_receptive_field(net, x, (10, 30), layer="0")
    torch.testing.assert_close(ex.erf(), expected)
    _change(ex, ex.weights, "constant")
    _change(ex, ex.log_scale, True)
    cached = len(ex._erfs)
    ex.weights.value = "random"
    assert len(ex._erfs) == cached  # (random, "0", (10, 30)) was cached
    with pytest.raises(ValueError, match="not modules"):
        widgets.ReceptiveFieldExplorer(net, image, layers=["conv9"])


def test_receptive_field_explorer_on_a_unet_maps_pixels_to_layer_cells(shapes, unets):
    ex = widgets.ReceptiveFieldExplorer(unets[0], shapes[0][0], layers=["encoder.1", ""])
    _change(ex, ex.layer, "encoder.1")  # stride 2: input rows 40 and 41 fall in one cell
    ex.row.value = 40
    layer, pixel, centre, shape = ex._layer_pixel()
    assert (layer, pixel, shape[1:]) == ("encoder.1", (20, 16), (32, 32)) and centre == (40, 32)
    before = bytes(ex.image.value)
    ex.row.value = 41
    assert bytes(ex.image.value) == before  # same cell, same picture
    _change(ex, ex.row, 44)


# ---------------------------------------------------------------------------------- training
def _record(epoch, miou):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "lr": 1e-3 / epoch, "val_loss": 1.1 / epoch, "val_mIoU": miou,
            "val_iou_per_class": [miou, miou / 2, float("nan"), 0.1], "val_pixel_accuracy": 0.9, "seconds": 1.5,
            "images_per_s": 20.0}


def test_training_monitor_redraws_each_epoch():
    monitor = widgets.TrainingMonitor(classes=CLASSES)
    assert monitor.image.value == b"" and "waiting" in monitor.status.value
    history = []
    for epoch, miou in enumerate([0.2, 0.4, 0.3], start=1):
        history.append(_record(epoch, miou))
        before = bytes(monitor.image.value)
        monitor(history[-1], history)
        assert monitor.error is None and bytes(monitor.image.value) != before
    assert "epoch 3" in monitor.status.value and "val mIoU 30.0%" in monitor.status.value
    _change(monitor, monitor.show_lr, True)
    _change(monitor, monitor.view, "per-class IoU")


@pytest.mark.slow
def test_training_monitor_as_fit_callback(tmp_path):
    from seglab.engine import TrainConfig, fit

    monitor = widgets.TrainingMonitor()
    config = TrainConfig(model="unet", base_channels=4, epochs=2, batch_size=4, crop_size=32, max_train_batches=2,
                         max_val_batches=1, out=str(tmp_path / "run"), progress=False, verbose=False, device="cpu")
    history = fit(config, callbacks=[monitor])
    assert monitor.history == history and len(history) == 2
    assert monitor.error is None and bytes(monitor.image.value).startswith(PNG_MAGIC)
    assert f"val mIoU {history[-1]['val_mIoU']:.1%}" in monitor.status.value


def _write_run(folder: Path, records, classes=None):
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps(records))
    if classes:
        (folder / "history.csv").write_text(",".join(["epoch", "train_loss"] + [f"iou_{c}" for c in classes]) + "\n")


def test_run_comparer_lists_runs_and_redraws(tmp_path):
    _write_run(tmp_path / "fcn8s", [_record(1, 0.2), _record(2, 0.5)], classes=CLASSES)
    _write_run(tmp_path / "deeplab" / "os16", [_record(1, 0.3)])
    comparer = widgets.RunComparer(tmp_path)
    assert comparer.runs.options == ("deeplab/os16", "fcn8s")
    assert "fcn8s: 2 epochs, best val mIoU 50.0%" in comparer.status.value
    assert "deeplab/os16: 1 epoch, best val mIoU 30.0%" in comparer.status.value
    _change(comparer, comparer.runs, ("fcn8s",))
    _change(comparer, comparer.view, "per-class IoU")
    assert comparer._classes("fcn8s", 4) == list(CLASSES)
    assert comparer._classes("deeplab/os16", 4) == ["class 0", "class 1", "class 2", "class 3"]
    _change(comparer, comparer.runs, ("fcn8s", "deeplab/os16"))
    _write_run(tmp_path / "unet", [_record(1, 0.6)])
    comparer.rescan.click()
    assert "unet" in comparer.runs.options and set(comparer.runs.value) == {"deeplab/os16", "fcn8s"}
    comparer.runs.value = ()
    assert comparer.image.value == b"" and "no run selected" in comparer.status.value
    with pytest.raises(FileNotFoundError, match="no run folder"):
        widgets.RunComparer(tmp_path / "missing")


def test_errors_in_a_redraw_are_shown_not_lost(tmp_path):
    _write_run(tmp_path / "a", [{"epoch": 1, "train_loss": 1.0, "val_mIoU": 0.5}])
    comparer = widgets.RunComparer(tmp_path)
    comparer.view.value = "per-class IoU"
    assert comparer.error == "ValueError: the selected runs hold no 'val_iou_per_class'"
    assert comparer.status.value == ("<span style='color:#b00020'>ValueError: the selected runs hold no "
                                     "&#x27;val_iou_per_class&#x27;</span>")  # escaped, in red


# ------------------------------------------------------------------------ one inference path
def test_predictions_go_through_infer_logits(shapes, unets, monkeypatch):
    """Browser and skip explorer predict through seglab.inference.infer_logits, with its options: on an
    image whose size is no multiple of 32 that is the padded pass, not a bare ``model(x)``."""
    import seglab.inference
    from seglab.inference import infer_logits

    calls = []

    def counting(model, images, **kwargs):
        calls.append(kwargs)
        return infer_logits(model, images, **kwargs)

    monkeypatch.setattr(seglab.inference, "infer_logits", counting)
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 40, 52)).astype(np.float32))
    mask = np.zeros((40, 52), np.int64)
    model = unets[0]
    browser = widgets.PredictionBrowser([image], [mask], model=model, classes=CLASSES, colors=COLORS,
                                        inference={"flip": True})
    expected = infer_logits(model, image[None], flip=True)[0].argmax(0).numpy()
    np.testing.assert_array_equal(browser.prediction(0), expected)
    assert calls == [{"flip": True}]
    skips = widgets.SkipExplorer(image, mask, {"U-Net": model}, CLASSES, COLORS)
    np.testing.assert_array_equal(skips.preds["U-Net"], infer_logits(model, image[None])[0].argmax(0).numpy())
    assert calls[-1] == {} and list(skips.features["U-Net"]) == ["decoder.0", "decoder.1"]
    uint8 = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)  # normalised by seglab.imaging
    from seglab.imaging import to_tensor

    torch.testing.assert_close(widgets.model_input(uint8), to_tensor(uint8)[None])
    with pytest.raises(ValueError, match=r"one \(3, H, W\) normalised float tensor.*\(2, 3, 8, 8\)"):
        widgets.model_input(torch.zeros(2, 3, 8, 8))


def test_a_model_with_logits_below_input_size_is_named():
    class Strided(nn.Module):
        def forward(self, x):  # logits at 1/8 of the input, as a head without its upsampling
            return torch.zeros(x.shape[0], 4, x.shape[-2] // 8, x.shape[-1] // 8)

    with pytest.raises(ValueError, match=r"logits .*\(1, 4, 8, 8\)"):  # infer_logits's check
        widgets.predict_classes(Strided(), torch.zeros(3, 64, 64))


def test_widgets_use_no_private_name_of_another_module():
    """Every name the widgets take from seglab.viz (or any other seglab module) is public."""
    import ast

    folder = Path(widgets.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seglab"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "viz":
                assert not node.attr.startswith("_"), f"{path.name} uses viz.{node.attr}"
    assert set(widgets.__all__) >= {"DilationExplorer", "PredictionBrowser", "SkipExplorer",
                                    "ReceptiveFieldExplorer", "TrainingMonitor", "RunComparer"}


# ------------------------------------------------------------------ the picture left in the notebook
def test_every_explorer_leaves_a_live_view_and_a_picture(shapes):
    import base64

    image, mask = shapes[0]
    ex = widgets.DilationExplorer((1, 2, 3))
    live, picture = ex._repr_mimebundle_(), ex.picture_bundle()
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.model_id  # for JupyterLab / Notebook
    assert "image/png" not in live  # the picture is the second output: one PNG per explorer, whatever the viewer
    assert live["text/plain"].startswith("DilationExplorer: rates (1, 2, 3): RF 13×13 px")
    assert "children=" not in live["text/plain"]
    assert picture["application/vnd.jupyter.widget-view+json"]["model_id"] == ""  # hidden live, skipped by nbconvert
    assert base64.b64decode(picture["image/png"]) == bytes(ex.image.value)  # for nbconvert / nbviewer / GitHub
    after = _change(ex, ex.rates[0], 2)
    assert base64.b64decode(ex.picture_bundle()["image/png"]) == bytes(after)
    assert "rates (2, 2, 3)" in ex._repr_mimebundle_()["text/plain"]
    skips = widgets.SkipExplorer(image, mask, {"gt": mask}, CLASSES, COLORS)
    assert base64.b64decode(skips.picture_bundle()["image/png"]) == bytes(skips.image.value)
    monitor = widgets.TrainingMonitor()
    assert "image/png" not in monitor.picture_bundle()  # nothing drawn yet: no picture, the status says why
    assert monitor._repr_mimebundle_()["text/plain"] == "TrainingMonitor: waiting for the first epoch …"


EXECUTED_CELLS = [
    """\
import json, pathlib, tempfile
import numpy as np
import torch
from IPython.display import display
from seglab import widgets
from seglab.models import build_model

torch.manual_seed(0)
unet = build_model("unet", 3, base_channels=4, depth=2).eval()
image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
mask = np.random.default_rng(1).integers(0, 3, (32, 32))
classes, colors = ("a", "b", "c"), ((0, 0, 0), (200, 0, 0), (0, 0, 200))""",
    "dilation = widgets.DilationExplorer((1, 2, 3))\ndilation",
    "dilation.rates[0].value = 2  # a later cell changes the explorer: its picture above follows",
    "widgets.ReceptiveFieldExplorer(unet, image, layers=['encoder.1', ''])",
    "widgets.SkipExplorer(image, mask, {'U-Net': unet, 'gt': mask}, classes, colors)",
    "widgets.PredictionBrowser([image, image], [mask, mask], model=unet, classes=classes, colors=colors)",
    """\
monitor = widgets.TrainingMonitor()
display(monitor)
history = []
for epoch in (1, 2, 3):  # stands in for seglab.engine.fit(config, callbacks=[monitor])
    history.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_mIoU": 0.2 * epoch})
    monitor(history[-1], history)
print("trained")""",
    """\
runs = pathlib.Path(tempfile.mkdtemp())
(runs / "a").mkdir()
(runs / "a" / "history.json").write_text(json.dumps(history))
widgets.RunComparer(runs)""",
    "dilation.rates[1].value  # an unrelated cell: nothing to refresh",
]


@pytest.mark.slow
def test_executed_and_exported_notebook_shows_each_explorer_as_a_png(tmp_path):
    """Run a notebook with nbclient (as CI, nbval and ``jupyter nbconvert --execute`` do: the widget state is
    saved by default), then export it to HTML with and without that state (nbviewer, GitHub): each of the six
    explorers leaves exactly one PNG, of the figure it showed last, and every PNG output becomes an <img>."""
    import base64
    import copy
    import re

    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in EXECUTED_CELLS]
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.widgets  # nbclient's default

    def outputs(cell):
        return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]

    pngs = [o for cell in nb.cells for o in outputs(cell) if "image/png" in o.data]
    assert len(pngs) == 6  # one per explorer
    for png in pngs:
        assert base64.b64decode(png.data["image/png"]).startswith(PNG_MAGIC)
        assert png.data["application/vnd.jupyter.widget-view+json"]["model_id"] == ""
    (live, picture) = outputs(nb.cells[1])
    assert outputs(nb.cells[2]) == [] and outputs(nb.cells[-1])[0].data["text/plain"] == "2"
    assert live.data["application/vnd.jupyter.widget-view+json"]["model_id"]
    # the picture is the explorer's last one, not its first: the later cell's change and the last epoch
    assert "rates (2, 2, 3)" in live.data["text/plain"], live.data["text/plain"]
    expected = widgets.DilationExplorer((2, 2, 3))
    assert base64.b64decode(picture.data["image/png"]) == bytes(expected.image.value)
    assert outputs(nb.cells[6])[0].data["text/plain"].startswith("TrainingMonitor: epoch 3")

    for keep_state in (True, False):  # as exported from the executed file, and as nbviewer / GitHub get it
        exported = copy.deepcopy(nb)
        if not keep_state:
            exported.metadata.pop("widgets")
        html_text, _ = HTMLExporter().from_notebook_node(exported)
        images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html_text)
        assert len(images) == len(pngs), f"{len(images)} <img> for {len(pngs)} PNG outputs (state kept: {keep_state})"
        assert [img[:200] for img in images] == [png.data["image/png"][:200] for png in pngs]
        assert "children=(" not in html_text
