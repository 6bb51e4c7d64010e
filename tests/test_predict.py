"""predict: full-size class-index palette PNGs, files/folders/globs, never overwriting, batched (issue 10, item 1)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from seglab.cli import main
from seglab.models import build_model
from seglab.predict import collect_inputs, index_png, plan_outputs, predict_batch, predict_files, predict_image

COLORS = [(0, 0, 0), (200, 10, 10)]


def red_vs_green() -> nn.Module:
    """A 1x1 convolution: class 1 where the (normalised) red channel beats the green one, else class 0.

    Per pixel and scale-free, so its prediction at any resolution is known without running it."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 1] = 1.0  # logit 0 = green
        conv.weight[1, 0] = 1.0  # logit 1 = red
    return conv.eval()


def halves(height: int, width: int) -> np.ndarray:
    """Left half pure red, right half pure green."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = 255
    image[:, width // 2:, 1] = 255
    return image


def save(path, array) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--base-channels", "4", "--crop-size", "32", "--batch-size", "4", "--epochs", "1",
                 "--max-train-batches", "1", "--max-val-batches", "1", "--out", str(out), "--no-progress",
                 "--device", "cpu", "--no-verbose"])
    assert code == 0
    return str(out / "last.pt")


@pytest.mark.parametrize("max_size", [None, 96, 8])
def test_extreme_aspect_ratio_keeps_full_size_and_content(max_size):
    # issue 10: a 2x700 image with max_size 96 had a valid height of round(0.27) = 0 rows: an all-black mask
    pred = predict_image(red_vs_green(), halves(2, 700), max_size=max_size)
    assert pred.shape == (2, 700) and pred.dtype == np.int64
    margin = 0 if max_size is None else 700 // max_size + 2  # resampling blurs a few pixels at the edge
    assert (pred[:, : 350 - margin] == 1).all() and (pred[:, 350 + margin:] == 0).all()
    tall = predict_image(red_vs_green(), halves(3, 700).transpose(1, 0, 2).copy(), max_size=max_size)  # (700, 3)
    assert tall.shape == (700, 3)
    assert (tall[: 350 - margin] == 1).all() and (tall[350 + margin:] == 0).all()


def test_batched_prediction_equals_one_at_a_time():
    torch.manual_seed(0)
    model = build_model("unet", 3, base_channels=4).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(40, 50, 3), (33, 17, 3), (40, 50, 3), (40, 50, 3), (33, 17, 3)]]
    batched = predict_batch(model, images, batch_size=3, max_size=32)
    for image, pred in zip(images, batched):
        assert pred.shape == image.shape[:2]
        np.testing.assert_array_equal(pred, predict_image(model, image, max_size=32))


def test_the_crf_sees_the_photo_itself_so_a_black_photo_works(tmp_path, checkpoint, capsys, monkeypatch):
    # found by tests/test_fuzz_cli.py: `predict --crf` on an all-black photo failed with "images look scaled to
    # [0, 1] (max 7.6e-06): multiply by 255": the CRF got the normalised input turned back into float colours
    import seglab.predict.arrays

    black = np.zeros((20, 30, 3), np.uint8)
    seen = []
    real = seglab.predict.arrays.infer_logits
    monkeypatch.setattr(seglab.predict.arrays, "infer_logits", lambda *a, **k: seen.append(k) or real(*a, **k))
    pred = predict_image(red_vs_green(), black, inference={"crf": True, "crf_max_size": 16})
    assert pred.shape == (20, 30) and (pred == 0).all()  # green beats red on black after normalisation
    (rgb,) = [k["crf_images"] for k in seen]
    assert rgb.dtype == torch.uint8 and torch.equal(rgb, torch.zeros(1, 3, 20, 30, dtype=torch.uint8))
    predict_image(red_vs_green(), black)  # without the CRF: no crf_images (infer_logits refuses them)
    assert "crf_images" not in seen[-1]
    monkeypatch.undo()
    assert main(["predict", checkpoint, save(tmp_path / "black.png", black), "--crf", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0  # fmt: skip
    assert Image.open(tmp_path / "o" / "black.png").size == (30, 20)


def test_palette_png_holds_the_class_indices_and_the_dataset_colours(tmp_path):
    pred = np.array([[0, 1, 2], [2, 1, 0]])
    index_png(pred, [(1, 2, 3), (4, 5, 6), (7, 8, 9)]).save(tmp_path / "m.png")
    back = Image.open(tmp_path / "m.png")
    assert back.mode == "P"
    np.testing.assert_array_equal(np.array(back), pred)
    assert back.getpalette()[:9] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert np.array(back.convert("RGB"))[0, 2].tolist() == [7, 8, 9]


def test_predict_files_writes_what_predict_image_gives(tmp_path):
    image = halves(37, 61)
    path = save(tmp_path / "in" / "a.png", image)
    plan = predict_files(red_vs_green(), [path], tmp_path / "out", COLORS, overlay=True, progress=False,
                         log=lambda _: None)
    written = Image.open(plan.masks[0])
    assert written.mode == "P" and written.size == (61, 37)
    np.testing.assert_array_equal(np.array(written), predict_image(red_vs_green(), image))
    overlay = Image.open(plan.overlays[0])
    assert plan.overlays[0].name == "a_overlay.png" and overlay.mode == "RGB" and overlay.size == (61, 37)
    # outputs get the umask's mode, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(plan.masks[0].stat().st_mode) == 0o666 & ~umask


def test_inputs_files_folders_and_globs(tmp_path):
    for name in ["a.png", "b.jpg", "c.txt", "sub/d.png"]:
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            save(tmp_path / name, halves(4, 4))
    assert [p.name for p in collect_inputs([tmp_path])] == ["a.png", "b.jpg"]  # folder: its images, not recursive
    assert [p.name for p in collect_inputs([str(tmp_path / "**" / "*.png")])] == ["a.png", "d.png"]
    assert [p.name for p in collect_inputs([tmp_path / "a.png", tmp_path, tmp_path / "a.png"])] == ["a.png", "b.jpg"]
    with pytest.raises(FileNotFoundError, match="no image, folder or glob"):
        collect_inputs([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="matches no image"):
        collect_inputs([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        collect_inputs([tmp_path / "empty"])


def test_cli_never_writes_over_an_input(tmp_path, checkpoint, capsys):
    # issue 10: `predict CKPT inplace/street.png --out inplace` replaced the photo with its mask
    photo = save(tmp_path / "inplace" / "street.png", halves(20, 30))
    before = open(photo, "rb").read()
    for extra in ([], ["--overwrite"]):
        assert main(["predict", checkpoint, photo, "--out", str(tmp_path / "inplace"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "would replace the input" in err and "Traceback" not in err
        assert open(photo, "rb").read() == before


def test_cli_same_stems_are_disambiguated_and_said(tmp_path, checkpoint, capsys):
    # issue 10: dup1/x.png and dup2/x.jpg silently wrote one x.png
    a = save(tmp_path / "dup1" / "x.png", halves(20, 30))
    b = save(tmp_path / "dup2" / "x.jpg", halves(24, 30))
    out = tmp_path / "out"
    assert main(["predict", checkpoint, a, b, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 inputs would all be written as x.png" in printed and "dup1/x.png" in printed
    assert Image.open(out / "dup1" / "x.png").size == (30, 20)
    assert Image.open(out / "dup2" / "x.png").size == (30, 24)
    # same stem in one folder: the suffix joins the name
    c = save(tmp_path / "same" / "y.png", halves(5, 6))
    d = save(tmp_path / "same" / "y.bmp", halves(7, 6))
    plan = plan_outputs(collect_inputs([c, d]), out)
    assert [p.name for p in plan.masks] == ["y_png.png", "y_bmp.png"] and plan.notes


def test_cli_existing_predictions_need_overwrite(tmp_path, checkpoint, capsys):
    folder = tmp_path / "val"
    for i in range(5):
        save(folder / f"{i}.png", halves(16, 16 + i))
    out = tmp_path / "pred"
    assert main(["predict", checkpoint, str(folder), "--out", str(out), "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert "wrote 5 class-index palette PNGs" in captured.out and "predict" in captured.err  # the tqdm bar
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in range(5)]
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["predict", checkpoint, str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == first  # nothing touched
    assert main(["predict", checkpoint, str(folder / "*.png"), "--out", str(out), "--overwrite", "--overlay"]) == 0
    assert len(list(out.glob("*_overlay.png"))) == 5


def test_cli_unreadable_images_give_one_line(tmp_path, checkpoint, capsys, monkeypatch):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["predict", checkpoint, str(text), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notes.png" in err and "Traceback" not in err and len(err.splitlines()) == 1
    big = save(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10^4 pixels > 2x the limit: DecompressionBombError
    assert main(["predict", checkpoint, big, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "big.png" in err and "too large" in err and "Traceback" not in err


@pytest.mark.parametrize(("height", "width", "h", "w"), [(700, 3, 96, 1), (50, 2, 30, 1), (3, 700, 1, 96), (40, 9, 7, 2),
                                                         (5, 1, 1, 1)])
def test_shrink_matches_pil_bilinear_also_one_pixel_wide(height, width, h, w):
    # torch's antialiased bilinear is wrong for 1-pixel-wide output (h > 1); predict works around it
    from seglab.inference.resize import shrink

    x = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(0))
    expected = np.asarray(Image.fromarray(x[0, 0].numpy(), "F").resize((w, h), Image.BILINEAR))
    np.testing.assert_allclose(shrink(x, (h, w))[0, 0].numpy(), expected, atol=1e-5)
