"""Bad input gets a clear error and loses nothing (issue 10, items 5-9), plus property-based fuzzing.

Other areas: tests/test_predict.py (item 1), tests/test_bad_input_engine.py (items 2, 3, temp files, umask),
tests/test_bad_input_archives.py (item 4, truncated downloads, random tar member sets).
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from seglab.cli import main
from seglab.data import BadImageError, ImageFolderDataset, build_dataset, check_dataset, read_image, read_mask
from seglab.data.camvid import CamVid
from seglab.data.isbi import ISBI2012
from seglab.data.voc import VOCSegmentation
from seglab.engine import TrainConfig, fit

CLASSES = ["background", "thing"]
TINY = ["--base-channels", "4", "--crop-size", "32", "--batch-size", "2", "--no-progress", "--device", "cpu",
        "--epochs", "1", "--max-train-batches", "1", "--max-val-batches", "1"]


def png_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, **kwargs).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_folder(root: Path, split: str, n: int = 3, size=(24, 32)) -> Path:
    """<root>/<split>/images/<i>.png and masks/<i>.png with classes 0/1."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        (root / split / "images" / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
        (root / split / "masks" / f"{i}.png").write_bytes(png_bytes((rng.random(size) > 0.5).astype(np.uint8)))
    return root


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- item 5: corrupt files name themselves, early ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["images", "masks"])
def test_truncated_png_error_names_the_file(tmp_path, which):
    # before: OSError: image file is truncated, with no file name
    root = make_folder(tmp_path, "train")
    bad = root / "train" / which / "1.png"
    truncate(bad)
    ds = ImageFolderDataset(root / "train" / "images", root / "train" / "masks", CLASSES)
    ds[0]
    with pytest.raises(BadImageError, match=rf"{bad}: cannot read this (image|mask) .*truncated.*re-export it"):
        ds[1]


def test_fit_stops_at_start_up_on_a_bad_first_file(tmp_path, capsys):
    # before: the truncated file failed only after a whole training epoch
    root = make_folder(tmp_path / "data", "train", n=4)
    make_folder(tmp_path / "data", "val", n=2)
    truncate(root / "val" / "images" / "0.png")
    config = TrainConfig(dataset="folder", data_root=str(root), dataset_kwargs={"classes": CLASSES}, base_channels=4,
                         crop_size=16, batch_size=2, epochs=1, progress=False, verbose=False, device="cpu",
                         out=str(tmp_path / "run"))
    with pytest.raises(BadImageError, match=r"val/images/0\.png"):
        fit(config)
    assert not (tmp_path / "run" / "last.pt").exists()
    code = main(["train", *TINY, "--dataset", "folder", "--data-root", str(root), "--classes", "background,thing",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "val/images/0.png" in err and len(err.splitlines()) == 1


def test_check_data_command_lists_every_bad_pair(tmp_path, capsys):
    root = make_folder(tmp_path, "train", n=4)
    make_folder(tmp_path, "val", n=2)
    assert main(["check-data", "--dataset", "folder", "--data-root", str(root), "--classes", "a,b"]) == 0
    assert "folder/train: 4 pairs checked, all good" in capsys.readouterr().out
    truncate(root / "train" / "images" / "1.png")
    (root / "train" / "masks" / "3.png").write_bytes(png_bytes(np.full((24, 32), 7, np.uint8)))  # class 7 of 2
    assert main(["check-data", "--dataset", "folder", "--data-root", str(root), "--classes", "a,b"]) == 2
    captured = capsys.readouterr()
    assert "folder/train: 4 pairs checked, 2 bad" in captured.out
    assert "images/1.png" in captured.err and "masks/3.png" in captured.err and "error: 2 bad pairs" in captured.err
    ds = build_dataset("folder", "train", root=root, classes=CLASSES)
    assert len(check_dataset(ds)) == 2 and check_dataset(ds, limit=1) == []


# --- item 8: 16-bit images, lossy masks -------------------------------------------------------------------------


def test_16_bit_grayscale_is_scaled_not_saturated(tmp_path):
    # before: convert("RGB") clipped to 255: 99.6 % of the pixels of a typical 16-bit image became white
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "16bit.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    image = read_image(path)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], expected)
    assert (image == 255).mean() < 0.01
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(BadImageError, match="floating-point"):
        read_image(tmp_path / "float.tif")


def test_jpeg_masks_are_refused_and_why(tmp_path):
    # before: "2 images have no mask"
    root = make_folder(tmp_path, "train", n=2)
    for i in range(2):
        mask = root / "train" / "masks" / f"{i}.png"
        (root / "train" / "masks" / f"{i}.jpg").write_bytes(jpeg_bytes(np.array(Image.open(mask)) * 255))
        mask.unlink()
    with pytest.raises(ValueError, match=r"2 masks .* lossy JPEG.*\['0\.jpg', '1\.jpg'\].*class border.*PNG"):
        ImageFolderDataset(root / "train" / "images", root / "train" / "masks", CLASSES)


# --- item 9: the folder dataset from the CLI ----------------------------------------------------------------------


def test_folder_dataset_from_the_cli_with_classes(tmp_path, capsys):
    root = make_folder(tmp_path / "data", "train", n=4)
    make_folder(tmp_path / "data", "val", n=2)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--dataset", "folder", "--data-root", str(root), "--classes", "background, thing",
                 "--out", str(out)]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["classes"] == CLASSES and state["config"]["dataset_kwargs"] == {"classes": CLASSES}
    assert main(["evaluate", str(out / "last.pt"), "--max-batches", "1"]) == 0  # the classes travel in the checkpoint
    (tmp_path / "classes.txt").write_text("background\nthing\n\n")
    assert main(["train", *TINY, "--dataset", "folder", "--data-root", str(root), "--classes-file",
                 str(tmp_path / "classes.txt"), "--out", str(tmp_path / "run2")]) == 0
    capsys.readouterr()
    for extra, message in [([], "needs its class names: --classes"), (["--classes", "a,a"], "a name twice"),
                           (["--classes", "a,,b"], "non-empty names"),
                           (["--classes-file", str(tmp_path / "none.txt")], "not found")]:
        assert main(["train", *TINY, "--dataset", "folder", "--data-root", str(root), *extra,
                     "--out", str(tmp_path / "run3")]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", *TINY, "--classes", "a,b", "--out", str(tmp_path / "run4")]) == 2  # synthetic has its own
    assert "drop them" in capsys.readouterr().err


# --- items 6 and 7: one-line errors, exit code 2, --debug ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], r"TrainConfig\.epochs \(--epochs\) must be an integer >= 1, got 0"),
        (["--epochs", "-3"], r"--epochs\) must be an integer >= 1, got -3"),
        (["--max-train-batches", "0"], r"--max-train-batches\) must be an integer >= 1 \(or None\), got 0"),
        (["--max-val-batches", "0"], r"--max-val-batches\) must be an integer >= 1 \(or None\), got 0"),
        (["--lr", "nan"], r"--lr\) must be a finite number > 0"),
        (["--momentum", "1.5"], r"--momentum\) must be a finite number >= 0.0 and < 1.0"),
        (["--model", "resnet"], r"--model\) must be one of \["),
    ],
)
def test_nonsense_budgets_and_values_are_refused(tmp_path, capsys, args, message):
    # before: --epochs 0 / -3 exited 0 having trained nothing; --max-train-batches 0 recorded a train_loss of 0.0;
    # --max-val-batches 0 printed "best val mIoU nan at epoch 1" with no best.pt
    assert main(["train", *TINY, *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    import re

    assert err.startswith("error: ") and re.search(message, err) and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_and_json_that_is_a_folder_fail_before_the_work(tmp_path, capsys):
    # before: FileExistsError / IsADirectoryError tracebacks, the latter after the whole evaluation
    (tmp_path / "afile").write_text("mine")
    assert main(["train", *TINY, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "mine"
    assert main(["train", *TINY, "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    (tmp_path / "jdir").mkdir()
    assert main(["evaluate", str(out / "last.pt"), "--json", str(tmp_path / "jdir")]) == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err and "is a folder" in captured.err and "mIoU" not in captured.out  # no work done
    assert main(["evaluate", str(out / "last.pt"), "--max-batches", "1", "--json", str(tmp_path / "new" / "m.json")]) == 0
    assert (tmp_path / "new" / "m.json").is_file()
    # a checkpoint dict without its config: before, KeyError: 'config'
    state = torch.load(out / "last.pt", weights_only=True)
    state.pop("config")
    torch.save(state, tmp_path / "noconfig.pt")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "noconfig.pt")]) == 2
    assert "lacks ['config']" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="epochs"):
        main(["train", "--epochs", "0", "--debug", "--out", str(tmp_path / "r")])
    monkeypatch.setenv("SEGLAB_DEBUG", "1")
    with pytest.raises(ValueError, match="epochs"):
        main(["train", "--epochs", "0", "--out", str(tmp_path / "r")])


def test_python_dash_m_prints_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, SEGLAB_DEBUG="0")
    result = subprocess.run([sys.executable, "-m", "seglab", "train", "--epochs", "0", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr  # (SEGLAB_DEBUG=1 / --debug: test_debug_shows_the_traceback)


# --- fuzz: byte-level corruption of every dataset's files ----------------------------------------------------------

SIZE = (20, 28)


def _layouts(root: Path) -> dict:
    """One-pair datasets of each kind: name -> (build, image path, mask path)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, SIZE, dtype=np.uint8)
    layouts = {}

    folder = root / "folder"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "images" / "a.jpg").write_bytes(jpeg_bytes(image))
    (folder / "masks" / "a.png").write_bytes(png_bytes((gray > 128).astype(np.uint8)))
    layouts["folder"] = (lambda: ImageFolderDataset(folder / "images", folder / "masks", CLASSES),
                         folder / "images" / "a.jpg", folder / "masks" / "a.png")

    camvid = root / "camvid"
    (camvid / "train").mkdir(parents=True)
    (camvid / "trainannot").mkdir()
    (camvid / "train" / "a.png").write_bytes(png_bytes(image))
    (camvid / "trainannot" / "a.png").write_bytes(png_bytes((gray % 12).astype(np.uint8)))
    layouts["camvid"] = (lambda: CamVid("train", camvid), camvid / "train" / "a.png", camvid / "trainannot" / "a.png")

    isbi = root / "isbi"
    (isbi / "train" / "image").mkdir(parents=True)
    (isbi / "train" / "label").mkdir()
    (isbi / "train" / "image" / "0.png").write_bytes(png_bytes(gray))
    (isbi / "train" / "label" / "0.png").write_bytes(png_bytes(np.where(gray > 128, 255, 0).astype(np.uint8)))
    layouts["isbi2012"] = (lambda: ISBI2012("train", isbi), isbi / "train" / "image" / "0.png",
                           isbi / "train" / "label" / "0.png")

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(jpeg_bytes(image))
    mask = Image.fromarray((gray % 21).astype(np.uint8), mode="L").convert("P")
    mask.putpalette([v for i in range(256) for v in (i, i, i)])
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    (voc / "SegmentationClass" / "2007_000001.png").write_bytes(buffer.getvalue())
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    layouts["voc"] = (lambda: VOCSegmentation("train", root), voc / "JPEGImages" / "2007_000001.jpg",
                      voc / "SegmentationClass" / "2007_000001.png")
    return layouts


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    layouts = _layouts(tmp_path_factory.mktemp("fuzzdata"))
    originals = {name: (path_i.read_bytes(), path_m.read_bytes()) for name, (_, path_i, path_m) in layouts.items()}
    return layouts, originals


_EDIT = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0), st.just(b"")),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16)),
)


def _corrupt(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, where, payload in edits:
        at = min(int(where * len(data)), max(0, len(data) - 1))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            data[at:at + len(payload)] = bytes(b ^ p for b, p in zip(data[at:at + len(payload)], payload))
        else:
            data[at:at] = payload
    return bytes(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["folder", "camvid", "isbi2012", "voc"]), target=st.sampled_from(["image", "mask"]),
       edits=st.lists(_EDIT, min_size=1, max_size=3))
def test_corrupted_files_give_an_error_naming_the_file_or_a_correct_decode(layouts, name, target, edits):
    layouts, originals = layouts
    build, image_path, mask_path = layouts[name]
    original_image, original_mask = originals[name]
    image_path.write_bytes(original_image)
    mask_path.write_bytes(original_mask)
    path = image_path if target == "image" else mask_path
    path.write_bytes(_corrupt(path.read_bytes(), edits))
    dataset = build()
    try:
        image, mask = dataset[0]
    except ValueError as error:  # BadImageError, bad mask values, size mismatch: all name the file
        assert str(path) in str(error) or (str(mask_path) in str(error) and "size" in str(error)), str(error)
        event(f"{type(error).__name__} naming the file")
        return
    event("decoded")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.dtype == np.int64 and mask.shape == image.shape[:2]
    assert ((mask >= 0) & (mask < dataset.num_classes) | (mask == 255)).all()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_a_foreign_error(data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
        for read in (read_image, read_mask):
            try:
                read(path)
            except BadImageError as error:
                assert str(path) in str(error)


# --- fuzz: random TrainConfig values -------------------------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "x", "sgd", "poly", "auto"]),
                    st.just({}), st.just({"classes": ["a"]}), st.just([1]))
_NAMES = [f.name for f in fields(TrainConfig)]


def _oracle(name: str, value) -> bool:
    """Independent statement of the valid values of some fields (the issue's budgets and the optimiser)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name in ("epochs", "batch_size", "crop_size", "accumulate_steps", "log_every", "pad_multiple"):
        return is_int and value >= 1
    if name in ("max_train_batches", "max_val_batches", "val_batch_size", "max_size"):
        return value is None or (is_int and value >= 1)
    if name == "lr":
        return is_num and value > 0
    if name == "weight_decay":
        return is_num and value >= 0
    if name == "momentum":
        return is_num and 0 <= value < 1
    if name == "optimizer":
        return value in ("adamw", "sgd")
    if name in ("resume", "progress", "verbose", "deterministic", "compile", "detect_anomaly", "tensorboard", "overwrite"):
        return isinstance(value, bool)
    return None  # not stated here


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(_NAMES), _VALUES, min_size=1, max_size=3))
def test_random_config_values_are_valid_or_a_clear_error(changes):
    try:
        config = TrainConfig(**changes)
    except ValueError as error:
        event("refused")
        text = str(error)
        named = [name for name in changes if f"TrainConfig.{name}" in text]
        assert named, f"the error names none of the fields changed {sorted(changes)}: {text}"
        assert "must" in text and "\n" not in text
        assert any(_oracle(name, changes[name]) is not True for name in named), text  # refused only bad values
        return
    for name, value in changes.items():
        assert _oracle(name, value) is not False, f"accepted {name}={value!r}"
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert replace(config) == config
