"""Tests for seglab.viz: colours are exact, counts match independent oracles, figures render.

Oracles: a hand-painted 2×3 mask; pixel counts in numpy for per-image scores;
a stack of real dilated ``torch.nn.functional.conv2d`` layers for the dilation coverage.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from seglab import viz

CLASSES = ("background", "circle", "square")
COLORS = ((0, 0, 0), (200, 0, 0), (0, 0, 200))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _texts(fig: Figure) -> str:
    """Every piece of text drawn in a figure (titles, labels, legends, annotations), joined."""
    fig.canvas.draw_idle()
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    mask = np.zeros((32, 40), np.int64)
    mask[4:20, 5:25] = 1
    mask[22:30, 28:38] = 2
    mask[0, :] = 255
    pred = mask.copy()
    pred[0, :] = 0
    pred[4:8, 5:25] = 2  # 80 wrong pixels
    return image, mask, pred


# ----------------------------------------------------------------------------- masks
def test_colorize_paints_each_class_and_ignore():
    mask = np.array([[0, 1, 2], [255, 1, 0]])
    out = viz.colorize(mask, COLORS, ignore_color=(1, 2, 3))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    expected = np.array([[COLORS[0], COLORS[1], COLORS[2]], [(1, 2, 3), COLORS[1], COLORS[0]]], np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(viz.colorize(torch.from_numpy(mask), COLORS, ignore_color=(1, 2, 3)), expected)
    np.testing.assert_array_equal(viz.colorize(mask, COLORS)[1, 0], viz.IGNORE_COLOR)


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.array([[0, 3]]), r"values \[3\] outside \[0, 3\)"),
        (np.array([[-1, 0]]), r"values \[-1\]"),
        (np.zeros((2, 2), np.float32), "integer class indices"),
        (np.zeros((2, 2, 2), np.int64), r"\(H, W\)"),
    ],
)
def test_colorize_rejects_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        viz.colorize(mask, COLORS)


def test_colorize_rejects_bad_palette():
    with pytest.raises(ValueError, match="0..255"):
        viz.colorize(np.zeros((2, 2), np.int64), [(0.5, 0.5, 0.5)])
    with pytest.raises(ValueError, match=r"\(R, G, B\)"):
        viz.colorize(np.zeros((2, 2), np.int64), [(1, 2)])


def test_to_rgb_undoes_imagenet_normalisation(sample):
    image = sample[0]
    mean, std = np.array(viz.IMAGENET_MEAN), np.array(viz.IMAGENET_STD)
    normalised = torch.from_numpy(((image / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32))
    back = viz.to_rgb(normalised)
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.abs(back.astype(int) - image).max() <= 1
    assert viz.to_rgb(image) is image
    np.testing.assert_array_equal(viz.to_rgb(image[..., 0]), np.repeat(image[..., :1], 3, axis=2))
    with pytest.raises(ValueError, match="one image, not a batch"):
        viz.to_rgb(normalised[None])


def test_overlay_blends_with_alpha_and_leaves_ignored_pixels(sample):
    image, mask, _ = sample
    np.testing.assert_array_equal(viz.overlay(image, mask, COLORS, alpha=0.0), image)
    full = viz.overlay(image, mask, COLORS, alpha=1.0)
    labelled = mask != 255
    np.testing.assert_array_equal(full[labelled], viz.colorize(mask, COLORS)[labelled])
    np.testing.assert_array_equal(full[~labelled], image[~labelled])
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(image, mask[:-1], COLORS)


def test_error_map_marks_wrong_red_and_ignored_in_the_ignore_colour(sample):
    _, mask, pred = sample
    out = viz.error_map(mask, pred)
    red = np.all(out == (214, 39, 40), axis=-1)
    ignored = np.all(out == viz.IGNORE_COLOR, axis=-1)
    white = np.all(out == 255, axis=-1)
    assert red.sum() == 80 == ((pred != mask) & (mask != 255)).sum()
    assert ignored.sum() == 40 and ignored[0].all()
    assert white.sum() == mask.size - 120
    logits = F.one_hot(torch.from_numpy(pred), 3).permute(2, 0, 1).float()  # (K, H, W)
    np.testing.assert_array_equal(viz.error_map(mask, logits), out)
    with pytest.raises(ValueError, match="F.interpolate"):
        viz.error_map(mask, pred[:, :-1])


def _scores_by_hand(pred: np.ndarray, mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> dict:
    """Per-image mIoU and pixel accuracy from pixel counts in numpy, one class at a time (no seglab.metrics)."""
    labelled = mask != ignore_index
    p, m = pred[labelled], mask[labelled]
    ious = []
    for c in range(num_classes):
        union = np.sum((p == c) | (m == c))
        if union:  # a class absent from both is left out of the mean
            ious.append(np.sum((p == c) & (m == c)) / union)
    return {"mIoU": float(np.mean(ious)) if ious else math.nan,
            "pixel_accuracy": float(np.mean(p == m)) if p.size else math.nan}


def test_image_scores_match_counts_by_hand():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.integers(0, 4, (20, 24))
        mask[rng.random(mask.shape) < 0.1] = 255
        pred = rng.integers(0, 4, (20, 24))
        pred[mask == 3] = 2  # class 3 never predicted
        expected = _scores_by_hand(pred, mask, 5)  # class 4 absent from both: left out of the mean
        got = viz.image_scores(pred, mask, 5)
        assert got["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)
        assert got["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
    logits = F.one_hot(torch.from_numpy(pred), 5).permute(2, 0, 1).float()  # (K, H, W) logits give the same
    assert viz.image_scores(logits, mask, 5) == viz.image_scores(pred, mask, 5)
    # hand-computed: labelled pixels (gt 0 -> 0), (gt 0 -> 1): IoU(0) = 1/2, IoU(1) = 0/1 -> mIoU 1/4; 1 of 2 right
    got = viz.image_scores(np.array([[0, 1, 1]]), np.array([[0, 0, 255]]), 2)
    assert got["mIoU"] == pytest.approx(0.25) and got["pixel_accuracy"] == pytest.approx(0.5)
    assert math.isnan(viz.image_scores(np.zeros((1, 2), int), np.full((1, 2), 255), 2)["mIoU"])


def test_show_mask_and_predictions_render_with_scores(sample):
    image, mask, pred = sample
    fig = viz.show_mask(image, mask, CLASSES, COLORS, title="one sample")
    assert isinstance(fig, Figure) and viz.figure_to_png(fig).startswith(PNG_MAGIC)
    texts = _texts(fig)
    assert "overlay (alpha = 0.5)" in texts and "circle" in texts and "one sample" in texts

    images = torch.stack([torch.zeros(3, 32, 40), torch.ones(3, 32, 40)])
    masks = np.stack([mask, mask])
    preds = np.stack([pred, mask])
    fig = viz.show_predictions(images, masks, preds, CLASSES, COLORS)
    scores = viz.image_scores(pred, mask, 3)
    texts = _texts(fig)
    assert f"mIoU {scores['mIoU']:.1%}" in texts and "mIoU 100.0%" in texts
    assert "wrong pixel" in texts and "ignore (255)" in texts
    assert len(fig.axes) == 8
    assert viz.figure_to_png(fig).startswith(PNG_MAGIC)
    fig = viz.show_predictions(images[1:], masks[1:], preds[1:], CLASSES, COLORS, indices=[7])
    assert len(fig.axes) == 4 and "#7\nmIoU 100.0%" in _texts(fig)
    with pytest.raises(ValueError, match="equal numbers"):
        viz.show_predictions(images, masks[:1], preds, CLASSES, COLORS)


def test_figures_display_in_jupyter_without_pyplot(sample):
    fig = viz.show_mask(*sample[:2], CLASSES, COLORS)
    assert fig._repr_png_().startswith(PNG_MAGIC)
    assert fig.dpi == viz.DPI


def test_no_pyplot_figure_is_left_open(sample):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.show_predictions([sample[0]], [sample[1]], [sample[2]], CLASSES, COLORS)
    viz.plot_history([{"epoch": 1, "train_loss": 1.0, "val_mIoU": 0.5}])
    assert plt.get_fignums() == before


# ---------------------------------------------------------------- datasets and palettes
def _legend_entries(fig: Figure) -> dict[str, tuple]:
    """{label: RGBA face colour} of every legend handle of a figure."""
    return {text.get_text(): tuple(handle.get_facecolor())
            for legend in fig.legends for text, handle in zip(legend.get_texts(), legend.legend_handles)}


def _rgba(rgb) -> tuple:
    return tuple(np.append(np.asarray(rgb) / 255.0, 1.0))


def test_show_mask_legend_has_ignore_entry_only_when_present(sample):
    image, mask, _ = sample
    entries = _legend_entries(viz.show_mask(image, mask, CLASSES, COLORS))
    assert list(entries) == ["background", "circle", "square", "ignore (255)"]
    np.testing.assert_allclose(entries["ignore (255)"], _rgba(viz.IGNORE_COLOR))
    labelled = np.where(mask == 255, 0, mask)
    assert list(_legend_entries(viz.show_mask(image, labelled, CLASSES, COLORS))) == ["background", "circle", "square"]
    custom = np.where(mask == 255, 7, mask)  # another ignore value: the entry follows ignore_index
    assert list(_legend_entries(viz.show_mask(image, custom, CLASSES, COLORS, ignore_index=7)))[-1] == "ignore (7)"


def test_plot_class_frequencies_bars_are_sorted_percentages():
    # hand-computed: 10 + 0 + 30 labelled pixels and 60 ignored = 100 pixels, so counts are percents
    fig = viz.plot_class_frequencies(np.array([10, 0, 30]), CLASSES, COLORS, num_ignored=60, title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    bars = ax.containers[0]
    np.testing.assert_allclose([b.get_width() for b in bars], [30, 10, 0, 60])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["square", "background", "circle", "ignore (255)"]
    expected = [COLORS[2], COLORS[0], COLORS[1], viz.IGNORE_COLOR]
    for bar, rgb in zip(bars, expected):
        np.testing.assert_allclose(bar.get_facecolor(), _rgba(rgb))
    texts = _texts(fig)
    assert all(s in texts for s in ("30.0%", "10.0%", "absent", "60.0%", "log scale"))
    assert ax.get_xscale() == "log" and ax.get_title() == "t"
    assert viz.figure_to_png(fig).startswith(PNG_MAGIC)

    fig = viz.plot_class_frequencies(torch.tensor([1, 2, 997]), CLASSES, COLORS, log_scale=False)
    ax = fig.axes[0]
    np.testing.assert_allclose([b.get_width() for b in ax.containers[0]], [99.7, 0.2, 0.1])
    assert len(ax.containers[0]) == 3 and ax.get_xscale() == "linear"
    texts = _texts(fig)
    assert "99.7%" in texts and "0.2%" in texts and "0.1%" in texts and "1,000 px" in texts and "ignore" not in texts


@pytest.mark.parametrize(
    "counts, num_ignored, match",
    [([1, 2], None, "one count per class"), ([1, -2, 3], None, "non-negative"),
     ([0, 0, 0], 0, "every count is zero"), ([1, 2, 3], -1, "non-negative")],
)
def test_plot_class_frequencies_rejects_bad_counts(counts, num_ignored, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_class_frequencies(counts, CLASSES, COLORS, num_ignored=num_ignored)


def test_show_palette_swatches_are_the_palette():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from seglab.data.palettes import VOC_CLASSES, VOC_COLORS

    fig = viz.show_palette(VOC_CLASSES, VOC_COLORS, columns=7)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    swatches = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(swatches) == 21
    for k, (swatch, rgb) in enumerate(zip(swatches, VOC_COLORS)):
        np.testing.assert_allclose(swatch.get_facecolor(), _rgba(rgb))
        assert swatch.get_xy() == pytest.approx((k % 7 + 0.1, k // 7 + 0.05))  # row-major, 7 per row
    texts = [t.get_text() for t in ax.texts]
    assert all(name in texts for name in VOC_CLASSES) and all(str(k) in texts for k in range(21))
    index_colour = {t.get_text(): t.get_color() for t in ax.texts}
    assert index_colour["0"] == "white" and index_colour["15"] == "black"  # black background, light person

    canvas = FigureCanvasAgg(fig)  # rendered: a point inside each swatch, away from its index, has its colour
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    for k, rgb in enumerate(VOC_COLORS):
        x, y = ax.transData.transform((k % 7 + 0.2, k // 7 + 0.15))
        np.testing.assert_array_equal(pixels[int(pixels.shape[0] - y), int(x), :3], rgb)

    assert len(viz.show_palette(CLASSES, COLORS).axes[0].patches) == 3
    with pytest.raises(ValueError, match="one colour per class"):
        viz.show_palette(CLASSES[:2], COLORS)
    with pytest.raises(ValueError, match="columns"):
        viz.show_palette(CLASSES, COLORS, columns=0)


def test_show_mask_resize_marks_invented_labels():
    classes, colors = ("a", "b", "c", "d"), ((0, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0))
    mask = np.array([[0, 0, 3, 3], [0, 0, 3, 3]])
    # hand-computed, half-pixel centres: output column x samples input x/2 - 0.25, so bilinear gives
    # 0 0 0 0.75 2.25 3 3 3 -> rounded 0 0 0 1 2 3 3 3: columns 3 and 4 hold labels 1 and 2, absent from the mask
    fig = viz.show_mask_resize(mask, colors, (2, 8), classes=classes)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    nearest = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(nearest, viz.colorize(np.repeat(mask, 2, axis=1), colors))
    bilinear = np.asarray(fig.axes[1].images[0].get_array())
    red = np.all(bilinear == (230, 30, 30), axis=-1)
    np.testing.assert_array_equal(np.nonzero(red.any(0))[0], [3, 4])
    assert red.sum() == 4
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), bilinear[:, 3:5])  # zoom on the seam
    texts = _texts(fig)
    assert "bilinear 2×8\n4 px (25.0%) invented" in texts and "zoom: rows 0–1\ncols 3–4" in texts
    assert list(_legend_entries(fig)) == ["a", "d", "invented value (bilinear)"]

    fig = viz.show_mask_resize(np.where(mask == 3, 1, mask), colors, 2.0, zoom=False)  # 0|1: nothing to invent
    assert len(fig.axes) == 2 and "bilinear 4×8\n0 px (0.0%) invented" in _texts(fig)


def test_show_mask_resize_on_a_mask_with_ignore(sample):
    _, mask, _ = sample
    fig = viz.show_mask_resize(torch.from_numpy(mask), COLORS, 0.5, classes=CLASSES, title="t")
    assert "nearest 16×20\nonly real labels" in _texts(fig)
    nearest = fig.axes[0].images[0].get_array().reshape(-1, 3)
    allowed = {tuple(c) for c in COLORS} | {viz.IGNORE_COLOR}
    assert {tuple(int(v) for v in c) for c in nearest} <= allowed
    assert np.all(np.asarray(fig.axes[1].images[0].get_array()) == (230, 30, 30), axis=-1).any()  # 0 next to 255
    assert "ignore (255)" in _legend_entries(fig)
    assert viz.figure_to_png(fig).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="at least 1 px"):
        viz.show_mask_resize(mask, COLORS, 0.01)
    with pytest.raises(ValueError, match="at most 255"):
        viz.show_mask_resize(np.array([[300, 0]]), [(0, 0, 0)] * 301, 2.0)
    with pytest.raises(ValueError, match="outside"):
        viz.show_mask_resize(np.array([[5, 0]]), COLORS, 2.0)


# ------------------------------------------------------------------- receptive field
def test_show_receptive_field_draws_box_support_and_erf(sample):
    image = sample[0]
    erf = np.zeros((32, 40))
    erf[10:20, 10:20] = 1.0
    support = erf > 0
    fig = viz.show_receptive_field(image, (15, 15), erf=erf, support=support, box=(-5, -5, 35, 35), title="t")
    rects = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == "--"]
    assert len(rects) == 2 and rects[0].get_width() == 41 and rects[0].get_xy() == (-5.5, -5.5)
    texts = _texts(fig)
    assert "analytic RF box 41×41 px" in texts and "theoretical RF (10×10 px, 100 px)" in texts
    assert len(fig.axes) == 3  # RF, ERF, colourbar
    assert viz.figure_to_png(fig).startswith(PNG_MAGIC)
    assert len(viz.show_receptive_field(image, (3, 3), box=(0, 0, 6, 6)).axes) == 1
    with pytest.raises(ValueError, match="differ in size"):
        viz.show_receptive_field(image, (3, 3), erf=erf[:-1])


# ----------------------------------------------------------------------------- dilation
def _coverage_by_convolution(rates, kernel_size=3):
    """Oracle: push a delta through real dilated all-ones convolutions (counts of paths)."""
    size = 1 + (kernel_size - 1) * sum(rates)
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[0, 0, size // 2, size // 2] = 1.0
    ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    for r in rates:
        x = F.conv2d(x, ones, dilation=r, padding=r * (kernel_size // 2))
    return x[0, 0].round().long().numpy()


@pytest.mark.parametrize("rates", [(1,), (2,), (2, 2, 2), (1, 2, 3), (1, 2, 5, 9), (6, 12)])
def test_dilation_coverage_matches_real_dilated_convolutions(rates):
    counts = viz.dilation_coverage(rates)
    np.testing.assert_array_equal(counts, _coverage_by_convolution(rates))
    assert counts.shape == (1 + 2 * sum(rates),) * 2
    assert counts.sum() == 9 ** len(rates)  # every path of the stack counted once
    row = viz.dilation_coverage(rates, ndim=1)
    np.testing.assert_array_equal(counts, np.outer(row, row))


def test_dilation_coverage_shows_gridding_and_hdc():
    gridding = viz.dilation_coverage((2, 2, 2))
    assert (gridding[1::2, :] == 0).all() and (gridding[:, 1::2] == 0).all()
    assert (gridding == 0).mean() == pytest.approx(1 - (7 / 13) ** 2)
    assert (viz.dilation_coverage((1, 2, 3)) > 0).all()
    np.testing.assert_array_equal(np.nonzero(viz.dilation_coverage((2, 3), ndim=1) == 0)[0], [1, 9])  # coprime, holes
    np.testing.assert_array_equal(viz.dilation_coverage((2,), kernel_size=5, ndim=1), [1, 0, 1, 0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match=">= 1"):
        viz.dilation_coverage((0, 1))
    with pytest.raises(ValueError, match="odd"):
        viz.dilation_coverage((1,), kernel_size=2)


def test_dilation_figures_render():
    fig = viz.show_dilated_kernels((1, 2, 4))
    assert "span 9×9 px" in _texts(fig)
    grid = fig.axes[2].images[0].get_array()
    assert grid.sum() == 9 and grid.shape == (11, 11)
    fig = viz.show_dilation_coverage()
    texts = _texts(fig)
    assert "gridding: rates (2, 2, 2)" in texts and "holes 71%" in texts and "holes 0%" in texts
    assert viz.figure_to_png(viz.show_dilation_coverage([3, 3])).startswith(PNG_MAGIC)


# ----------------------------------------------------------------------- skip connections
def test_compare_predictions_reports_miou_and_trimap(sample):
    from seglab.metrics import trimap_iou

    image, mask, pred = sample
    coarse = np.kron(mask[::8, ::8].clip(0, 2), np.ones((8, 8), np.int64))
    fig = viz.compare_predictions(image, mask, {"coarse": coarse, "fine": pred}, CLASSES, COLORS, band_width=2)
    texts = _texts(fig)
    for name, p in (("coarse", coarse), ("fine", pred)):
        miou = viz.image_scores(p, mask, 3)["mIoU"]
        trimap = trimap_iou(torch.from_numpy(p)[None], torch.from_numpy(mask)[None], 3, 2)
        assert f"{name}\nmIoU {miou:.1%}, trimap {trimap:.1%}" in texts
    assert "trimap band (width 2 px)" in texts
    assert viz.figure_to_png(fig).startswith(PNG_MAGIC)
    fig = viz.compare_predictions(image, mask, {"only": pred}, CLASSES, COLORS, show_errors=False)
    assert len(fig.axes) == 3 and "trimap" not in _texts(fig)
    with pytest.raises(ValueError, match="empty"):
        viz.compare_predictions(image, mask, {}, CLASSES, COLORS)


def test_show_feature_maps_modes():
    feats = {"enc": torch.randn(1, 8, 16, 16), "dec": np.random.rand(4, 32, 32).astype(np.float32)}
    fig = viz.show_feature_maps(feats, input_size=(64, 64))
    texts = _texts(fig)
    assert "8 ch, 16×16, 1/4" in texts and "4 ch, 32×32, 1/2" in texts
    panel = fig.axes[0].images[0].get_array()
    expected = feats["enc"][0].abs().mean(0).numpy()
    scaled = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(panel, scaled, rtol=1e-5, atol=1e-6)
    fig = viz.show_feature_maps(feats, mode="channels", num_channels=6)
    assert sum(bool(ax.images) for ax in fig.axes) == 6 + 4  # 'dec' has only 4 channels
    with pytest.raises(ValueError, match="mode"):
        viz.show_feature_maps(feats, mode="max")


def test_plot_trimap_curves():
    fig = viz.plot_trimap_curves([2, 4, 8], {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.3, 0.4]})
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[1].get_ydata(), [20, 30, 40])
    with pytest.raises(ValueError, match="3 band widths"):
        viz.plot_trimap_curves([2, 4, 8], {"a": [0.1]})


# ----------------------------------------------------------------------------- training
def _history(n=5, best=3):
    return [
        {"epoch": e, "train_loss": 1.0 / e, "lr": 0.01 / e, "val_loss": 1.2 / e if e != 2 else None,
         "val_mIoU": 0.5 + (0.1 if e == best else 0.01 * e), "val_iou_per_class": [0.5, 0.6, float("nan")],
         "val_pixel_accuracy": 0.9, "seconds": 1.0, "images_per_s": 10.0}
        for e in range(1, n + 1)
    ]


def test_plot_history_one_and_several_runs():
    fig = viz.plot_history(_history())
    texts = _texts(fig)
    assert "60.0%" in texts and "epoch" in texts and "mIoU (%)" in texts
    val_loss = fig.axes[0].get_lines()[1].get_ydata()
    assert np.isnan(val_loss[1]) and val_loss[0] == pytest.approx(1.2)
    miou = fig.axes[1].get_lines()[0].get_ydata()
    np.testing.assert_allclose(miou, [51, 52, 60, 54, 55])
    fig = viz.plot_history({"a": _history(), "b": _history(4, best=1)}, show_lr=True)
    texts = _texts(fig)
    assert len(fig.axes) == 3 and "a" in texts and "b" in texts and "learning rate" in texts
    with pytest.raises(ValueError, match="per-epoch dicts"):
        viz.plot_history([1, 2])


def test_plot_iou_per_class_writes_absent_and_miou():
    fig = viz.plot_iou_per_class([0.5, 0.6, float("nan")], CLASSES)
    texts = _texts(fig)
    assert "absent" in texts and "mIoU 55.0%" in texts and "IoU (%)" in texts
    widths = [p.get_width() for p in fig.axes[0].patches]
    np.testing.assert_allclose(widths, [50, 60, 0])
    fig = viz.plot_iou_per_class({"x": torch.tensor([0.1, 0.2, 0.3]), "y": [0.3, 0.2, 0.1]}, CLASSES)
    assert len(fig.axes[0].patches) == 6
    with pytest.raises(ValueError, match="3 class names"):
        viz.plot_iou_per_class([0.5], CLASSES)


def test_plot_confusion_matrix_rows_are_recall():
    cm = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = viz.plot_confusion_matrix(cm, CLASSES)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown[0], [80, 20, 0])
    np.testing.assert_allclose(shown[1], [25, 75, 0])
    assert np.isnan(np.ma.filled(shown, np.nan)[2]).all()  # no ground truth of class 2: blank row
    texts = _texts(fig)
    assert "predicted class" in texts and "ground-truth class" in texts and "75" in texts
    raw = viz.plot_confusion_matrix(cm, CLASSES, normalize=False)
    np.testing.assert_allclose(raw.axes[0].images[0].get_array(), cm.numpy())
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        viz.plot_confusion_matrix(np.eye(2), CLASSES)


# ------------------------------------------------------- figures a learner can read (issue 12, section 5)
def _srgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB colours 0..255: the standard sRGB -> XYZ -> L*a*b* formulas (CIE 15:2004)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _every_palette_colour() -> dict[str, np.ndarray]:
    """Every ``*_COLORS`` palette of ``seglab.data.palettes`` (new palettes are picked up), plus the
    error map's white (correct) and red (wrong), which are drawn next to the ignore colour too."""
    from seglab.data import palettes

    found = {name: np.asarray(getattr(palettes, name)) for name in dir(palettes) if name.endswith("_COLORS")}
    assert {"VOC_COLORS", "CAMVID_COLORS", "ISBI_COLORS", "SYNTHETIC_COLORS"} <= set(found)
    found["error map"] = np.array([(255, 255, 255), (214, 39, 40)])
    return found


def test_lab_conversion_matches_reference_values():
    # published CIELAB (D65) values of sRGB white, black, red, mid grey
    np.testing.assert_allclose(_srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(_srgb_to_lab([0, 0, 0]), [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(_srgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(_srgb_to_lab([128, 128, 128]), [53.59, 0, 0], atol=0.02)


def test_ignore_colour_is_far_from_every_class_colour_of_every_palette():
    ignore = np.asarray(viz.IGNORE_COLOR)
    for name, colours in _every_palette_colour().items():
        delta_e = np.linalg.norm(_srgb_to_lab(colours) - _srgb_to_lab(ignore), axis=-1)  # CIE76 ΔE
        rgb = np.linalg.norm(colours - ignore, axis=-1)
        assert delta_e.min() >= 50, f"{name}: colour {colours[delta_e.argmin()]} is only ΔE {delta_e.min():.1f} away"
        assert rgb.min() >= 140, f"{name}: colour {colours[rgb.argmin()]} is only {rgb.min():.0f} RGB units away"
    # the test catches the colours of the issue: CamVid sky vs the old grey, CamVid pole vs VOC's cream
    from seglab.data.palettes import CAMVID_COLORS

    old = {"grey": (150, 150, 150), "cream": (224, 224, 192)}
    near = {k: np.linalg.norm(_srgb_to_lab(CAMVID_COLORS) - _srgb_to_lab(v), axis=-1).min() for k, v in old.items()}
    assert near["grey"] < 10 and near["cream"] < 25


def test_colorize_paints_the_ground_truth_ignore_mask_over_a_prediction(sample):
    _, mask, pred = sample
    ignored = mask == 255
    out = viz.colorize(pred, COLORS, ignore_mask=ignored)
    assert np.all(out[ignored] == viz.IGNORE_COLOR)
    np.testing.assert_array_equal(out[~ignored], np.asarray(COLORS, np.uint8)[pred[~ignored]])
    np.testing.assert_array_equal(viz.colorize(pred, COLORS, ignore_mask=torch.from_numpy(ignored)), out)
    with pytest.raises(ValueError, match="ignore_mask"):
        viz.colorize(pred, COLORS, ignore_mask=ignored[:-1])


def _panel(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_predictions_are_never_painted_on_ignored_pixels(sample):
    image, mask, _ = sample
    perfect = np.where(mask == 255, 0, mask)  # a "perfect" map that predicts class 0 on the 255 strip
    ignored = mask == 255
    fig = viz.compare_predictions(image, mask, {"perfect": perfect, "logits": F.one_hot(torch.from_numpy(perfect), 3)
                                                .permute(2, 0, 1).float()}, CLASSES, COLORS, band_width=2)
    for ax in fig.axes[2:4]:  # the two prediction panels of the top row
        shown = _panel(ax)
        assert np.all(shown[ignored] == viz.IGNORE_COLOR), "a class colour was painted on ignored pixels"
        np.testing.assert_array_equal(shown[~ignored], np.asarray(COLORS, np.uint8)[perfect[~ignored]])
    assert "ignore (255)" in _texts(fig)
    fig = viz.compare_predictions(image, mask, {"perfect": perfect}, CLASSES, COLORS, show_errors=False)
    assert np.all(_panel(fig.axes[2])[ignored] == viz.IGNORE_COLOR) and "ignore (255)" in _texts(fig)
    fig = viz.show_predictions(image[None], mask[None], perfect[None], CLASSES, COLORS)
    assert np.all(_panel(fig.axes[2])[ignored] == viz.IGNORE_COLOR)
    assert np.all(_panel(fig.axes[3])[ignored] == viz.IGNORE_COLOR)  # error map: the same colour


def _legends(fig: Figure) -> list:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def _assert_no_legend_over_data(fig: Figure) -> None:
    """Every legend lies outside every axes that holds data (lines, bars, images)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout places the legends
    renderer = canvas.get_renderer()
    legends = _legends(fig)
    assert legends, "test bug: the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.lines or ax.patches or ax.images:
                assert not box.overlaps(ax.get_window_extent(renderer)), f"a legend covers the axes {ax.get_title()!r}"


def test_no_legend_over_data():
    curves = {"DeepLabV3": [0.2, 0.3, 0.4, 0.5], "DeepLabV3+": [0.3, 0.4, 0.5, 0.55],
              "perfect, stride 16": [0.5, 0.7, 0.9, 0.95], "perfect, stride 4": [0.9, 0.95, 0.99, 1.0]}
    _assert_no_legend_over_data(viz.plot_trimap_curves([1, 2, 4, 8], curves))
    _assert_no_legend_over_data(viz.plot_history(_history()))
    _assert_no_legend_over_data(viz.plot_history({"a": _history(), "b": _history(4, best=1)}, show_lr=True))
    fig = viz.plot_trimap_curves([1, 2, 4, 8], curves)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == set(curves)


def test_plot_history_uses_a_log_loss_axis_for_losses_spanning_orders_of_magnitude():
    history = _history()
    assert viz.plot_history(history).axes[0].get_yscale() == "linear"  # 1.2 .. 0.2: one order
    history[2]["val_loss"] = 265_000.0  # one diverged validation epoch (notebook 08)
    fig = viz.plot_history(history)
    assert fig.axes[0].get_yscale() == "log" and "(log scale)" in fig.axes[0].get_ylabel()
    lo, hi = fig.axes[0].get_ylim()
    assert lo < 0.2 and hi > 265_000  # every curve and the outlier stay in view
    assert viz.plot_history(history, loss_scale="linear").axes[0].get_yscale() == "linear"
    assert viz.plot_history(_history(), loss_scale="log").axes[0].get_yscale() == "log"
    edge = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": viz.LOG_LOSS_RATIO}]
    assert viz.plot_history(edge).axes[0].get_yscale() == "log"
    edge[1]["train_loss"] = viz.LOG_LOSS_RATIO * 0.99
    assert viz.plot_history(edge).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="loss_scale"):
        viz.plot_history(history, loss_scale="symlog")


def test_receptive_field_larger_than_the_image_does_not_fill_the_frame(sample):
    image = sample[0]  # 32×40
    box = (-40, -30, 71, 69)  # a 112×100 RF box around the image centre: far larger than the image
    fig = viz.show_receptive_field(image, (16, 20), support=np.ones((32, 40), bool), box=box)
    ax = fig.axes[0]
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    assert left < box[1] - 0.5 and right > box[3] + 0.5 and top < box[0] - 0.5 and bottom > box[2] + 0.5
    assert (box[3] - box[1] + 1) / (right - left) <= 1 / (1 + 2 * 0.1)  # a visible margin on each side
    assert (box[2] - box[0] + 1) / (bottom - top) <= 1 / (1 + 2 * 0.1)
    texts = _texts(fig)
    assert "outside the image" in texts and "fills the image" in texts
    assert viz.rf_frame((32, 40), box) == (top, left, bottom, right)
    # an RF inside the image keeps the image as the frame, without notes
    fig = viz.show_receptive_field(image, (16, 20), support=np.pad(np.ones((8, 8), bool), ((12, 12), (16, 16))),
                                   box=(12, 16, 19, 23))
    assert fig.axes[0].get_xlim() == (-0.5, 39.5) and fig.axes[0].get_ylim() == (31.5, -0.5)
    assert "outside the image" not in _texts(fig) and "fills the image" not in _texts(fig)
    assert viz.rf_frame((32, 40)) == (-0.5, -0.5, 31.5, 39.5)


def test_public_mask_helpers_and_per_image_trimap():
    """``as_mask`` / ``as_pred`` / ``image_trimap_iou``: what the widgets use, public and checked."""
    from seglab.metrics import trimap_iou

    mask = np.array([[0, 0, 1, 1]] * 4)
    assert viz.as_mask(torch.from_numpy(mask)[None]).dtype == np.int64
    logits = F.one_hot(torch.from_numpy(mask), 3).permute(2, 0, 1).float()  # (K, H, W)
    np.testing.assert_array_equal(viz.as_pred(logits), mask)
    with pytest.raises(ValueError, match="target has dtype float"):
        viz.as_mask(mask.astype(float), "target")
    with pytest.raises(ValueError, match=r"mask must be \(H, W\)"):
        viz.as_mask(np.zeros((2, 4, 4), np.int64))
    pred = np.zeros_like(mask)
    expected = trimap_iou(torch.from_numpy(pred)[None], torch.from_numpy(mask)[None], 3, 1)
    assert viz.image_trimap_iou(pred, mask, 3, 1) == pytest.approx(float(expected))
    assert viz.image_trimap_iou(logits, mask, 3, 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in size"):
        viz.image_trimap_iou(pred[:, :3], mask, 3, 1)
    with pytest.raises(ValueError, match="differ in size"):
        viz.image_scores(pred[:, :3], mask, 3)
