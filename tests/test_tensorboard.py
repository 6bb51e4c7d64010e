"""TensorBoard logging (issue 21, item 4): ``train --tensorboard`` writes history.csv's numbers, the learning rate
and a grid of validation predictions per epoch, read back here with TensorBoard's own reader; a resumed run
purges what its killed part logged past ``last.pt``; only rank 0 writes; a missing package fails before training."""

import dataclasses
import importlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("tensorboard", reason="the [tensorboard] extra (in the test extra): pip install -e '.[test]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from seglab.cli import main  # noqa: E402
from seglab.engine import TrainConfig, fit, load_checkpoint, load_history, prepare  # noqa: E402
from seglab.engine.distributed import DistInfo  # noqa: E402
from seglab.engine.history import SCALAR_KEYS  # noqa: E402
from seglab.engine.tensorboard import SCALAR_TAGS, TensorBoardLogger, prediction_grid, require_tensorboard  # noqa: E402
from seglab.viz import colorize, to_rgb  # noqa: E402

CLASSES = ["background", "circle", "square", "triangle"]


def _tiny(out, **changes) -> TrainConfig:
    config = TrainConfig(
        model="unet", base_channels=4, dataset="synthetic", crop_size=32, batch_size=4, epochs=2,
        max_train_batches=2, max_val_batches=1, out=str(out), progress=False, verbose=False, device="cpu",
        num_workers=0, tensorboard=True,
    )
    return dataclasses.replace(config, **changes)


def _events(out) -> EventAccumulator:
    events = EventAccumulator(str(Path(out) / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


def _f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    out = tmp_path_factory.mktemp("tensorboard") / "run"
    config = _tiny(out)
    return config, fit(config)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A prepared run (nothing trained, nothing written)."""
    return prepare(_tiny(tmp_path_factory.mktemp("tensorboard_state") / "run"))


def test_every_history_column_has_a_tag():
    assert set(SCALAR_TAGS) == set(SCALAR_KEYS) - {"epoch"}
    assert len(set(SCALAR_TAGS.values())) == len(SCALAR_TAGS)


def test_scalars_equal_the_history_per_epoch(two_epochs):
    config, returned = two_epochs
    history = load_history(config.out)  # history.json
    assert [r["epoch"] for r in history] == [r["epoch"] for r in returned] == [1, 2]
    events = _events(config.out)
    for key, tag in SCALAR_TAGS.items():
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [(r["epoch"], _f32(r[key])) for r in history], tag
    for index, name in enumerate(CLASSES):
        expected = [(r["epoch"], _f32(r["val_iou_per_class"][index])) for r in history
                    if not math.isnan(r["val_iou_per_class"][index])]  # fmt: skip
        got = [(e.step, e.value) for e in events.Scalars(f"val_iou/{name}")] if expected else []
        assert got == expected, name
    assert list(Path(config.out, "tensorboard").iterdir())[0].name.startswith("events.out.tfevents.")


def test_one_grid_per_epoch_shows_image_truth_and_the_final_prediction(two_epochs):
    config, history = two_epochs
    grids = _events(config.out).Images("val/predictions")
    # 4 validation images of 64 x 64 px, one row each: image | truth | prediction, 2 px lines (make_grid)
    assert [(g.step, g.height, g.width) for g in grids] == [(1, 4 * 66 + 2, 3 * 66 + 2), (2, 4 * 66 + 2, 3 * 66 + 2)]
    picture = np.asarray(Image.open(io.BytesIO(grids[-1].encoded_image_string)).convert("RGB"))

    # the same picture from last.pt's weights (epoch 2) on the first validation batch
    state = prepare(dataclasses.replace(config, tensorboard=False))
    state.model.load_state_dict(load_checkpoint(Path(config.out) / "last.pt")["model"])
    images, masks = next(iter(state.val_loader))
    preds = [_predict(state, image) for image in images]
    expected = prediction_grid(images, masks, preds, state.colors).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(picture, expected)
    tile = picture[2:66, 2 + 66:66 + 66]  # row 1, column 2: the ground truth in the dataset's palette
    np.testing.assert_array_equal(tile, colorize(masks[0], state.colors))
    np.testing.assert_array_equal(picture[2:66, 2:66], to_rgb(images[0]))


def _predict(state, image: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` classes of one ``(C, H, W)`` image in the run's precision and memory format (as fit scores)."""
    layout = torch.channels_last if state.channels_last else torch.contiguous_format
    batch = image[None].contiguous(memory_format=layout)
    with torch.no_grad(), torch.autocast("cpu", dtype=state.amp_dtype, enabled=state.amp_dtype is not None):
        return state.model.eval()(batch)[0].float().argmax(0)


class _Stripes(torch.nn.Module):
    """Logits of 4 classes in vertical stripes: class ``4 * x // W`` at column x, whatever the image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        width = images.shape[-1]
        classes = (torch.arange(width) * 4 // width).expand(images.shape[0], images.shape[-2], width)
        return torch.nn.functional.one_hot(classes, 4).permute(0, 3, 1, 2).float()  # (N, 4, H, W)


def test_the_grid_shows_the_models_prediction(state, tmp_path):
    striped = dataclasses.replace(state, model=_Stripes(), config=dataclasses.replace(state.config, out=str(tmp_path)))
    with TensorBoardLogger(striped, num_images=2) as logger:
        logger({"epoch": 3}, [])
    (grid,) = _events(tmp_path).Images("val/predictions")
    picture = np.asarray(Image.open(io.BytesIO(grid.encoded_image_string)).convert("RGB"))
    assert (grid.step, picture.shape) == (3, (2 * 66 + 2, 3 * 66 + 2, 3))
    stripes = (torch.arange(64) * 4 // 64).expand(64, 64)
    for row, (image, mask) in enumerate(logger.samples):
        top = 2 + 66 * row
        np.testing.assert_array_equal(picture[top:top + 64, 134:198], colorize(stripes, state.colors,
                                                                               ignore_mask=mask == 255))  # fmt: skip
    assert len(set(map(tuple, picture[2, 134:198]))) == 4  # four colours: the prediction, not the ground truth


def test_resume_purges_the_epoch_logged_after_last_pt(tmp_path, monkeypatch):
    config = _tiny(tmp_path / "run")
    run = importlib.import_module("seglab.engine.run")
    real_save = run._save

    def killed_at_epoch_2(state, out, history, *args):  # the epoch is logged, then the run dies before last.pt
        if history[-1]["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(state, out, history, *args)

    monkeypatch.setattr(run, "_save", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(config)
    monkeypatch.setattr(run, "_save", real_save)
    killed = _events(config.out).Scalars("time/seconds_per_epoch")
    assert [e.step for e in killed] == [1, 2] and load_checkpoint(Path(config.out) / "last.pt")["epoch"] == 1

    history = fit(dataclasses.replace(config, resume=True))
    events = _events(config.out)
    assert len(list(Path(config.out, "tensorboard").glob("events.out.tfevents.*"))) == 2  # same folder, one per part
    seconds = [(e.step, e.value) for e in events.Scalars("time/seconds_per_epoch")]
    assert seconds == [(1, _f32(history[0]["seconds"])), (2, _f32(history[1]["seconds"]))]  # epoch 2 once: resumed
    assert seconds[1] != (2, killed[1].value)
    assert [e.step for e in events.Scalars("val/mIoU")] == [1, 2]
    assert [g.step for g in events.Images("val/predictions")] == [1, 2]


def test_turned_on_at_a_resume_writes_the_earlier_epochs_numbers(tmp_path):
    config = _tiny(tmp_path / "run", epochs=1, tensorboard=False)
    fit(config)
    assert not Path(config.out, "tensorboard").exists()
    history = fit(dataclasses.replace(config, epochs=2, resume=True, tensorboard=True))
    events = _events(config.out)
    assert [(e.step, e.value) for e in events.Scalars("val/mIoU")] == [(r["epoch"], _f32(r["val_mIoU"]))
                                                                       for r in history]  # fmt: skip
    assert [g.step for g in events.Images("val/predictions")] == [2]  # the grid: only epochs that ran with the flag


def _block_tensorboard(monkeypatch):
    """``import tensorboard`` fails as where the package is missing (``torch.utils.tensorboard`` re-imported)."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in [n for n in sys.modules if n.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)


def test_missing_package_fails_before_training_with_the_extra(tmp_path, monkeypatch, capsys):
    _block_tensorboard(monkeypatch)
    with pytest.raises(RuntimeError) as error:
        require_tensorboard()
    message = str(error.value)
    assert "\n" not in message and "--tensorboard" in message and 'pip install -e ".[tensorboard]"' in message
    with pytest.raises(RuntimeError, match=r"needs the tensorboard package"):
        fit(_tiny(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing made, nothing trained

    code = main(["train", "--tensorboard", "--base-channels", "4", "--crop-size", "32", "--epochs", "1", "--out",
                 str(tmp_path / "cli"), "--device", "cpu", "--no-progress"])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --tensorboard")
    assert '".[tensorboard]"' in lines[0] and not (tmp_path / "cli").exists()


def test_a_rank_other_than_0_writes_nothing(state):
    other = dataclasses.replace(state, dist=DistInfo(rank=1, world_size=2))
    record = {"epoch": 1, "train_loss": 1.0, "val_mIoU": 0.5, "val_iou_per_class": [0.5] * 4, "lr": 1e-3}
    with TensorBoardLogger(other) as logger:
        logger(record, [record])
    assert logger.writer is None and not Path(state.config.out, "tensorboard").exists()


def test_a_symlink_or_file_in_the_way_is_refused(state, tmp_path):
    out = Path(state.config.out)
    out.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "tensorboard").symlink_to(elsewhere)
    with pytest.raises(FileExistsError, match=r"tensorboard is a symbolic link; refusing .* remove the link"):
        TensorBoardLogger(state)
    assert list(elsewhere.iterdir()) == []
    (out / "tensorboard").unlink()
    (out / "tensorboard").write_text("mine")
    with pytest.raises(NotADirectoryError, match=r"tensorboard is a file .* another --out"):
        TensorBoardLogger(state)
    assert (out / "tensorboard").read_text() == "mine"
    (out / "tensorboard").unlink()


def test_class_names_become_tags(state, tmp_path):
    named = dataclasses.replace(state, classes=["potted plant", "tv/monitor", "a", "a"],
                                config=dataclasses.replace(state.config, out=str(tmp_path / "run")))  # fmt: skip
    (tmp_path / "run").mkdir()
    record = {"epoch": 1, "val_iou_per_class": [0.1, 0.2, float("nan"), 0.4]}
    with TensorBoardLogger(named, num_images=0) as logger:
        logger(record, [record])
    events = _events(tmp_path / "run")
    assert sorted(events.Tags()["scalars"]) == ["val_iou/a_3", "val_iou/potted_plant", "val_iou/tv_monitor"]
    assert events.Tags()["images"] == []  # num_images=0: no grid


def test_prediction_grid_pads_and_shrinks_tiles():
    colors = [[0, 0, 0], [255, 0, 0]]
    images = [torch.zeros(3, 40, 20), torch.zeros(1, 10, 30)]  # other sizes; one grey image
    masks = [torch.ones(40, 20, dtype=torch.long), torch.full((10, 30), 255)]
    preds = [torch.ones(40, 20, dtype=torch.long), torch.zeros(10, 30, dtype=torch.long)]
    grid = prediction_grid(images, masks, preds, colors, max_side=20)  # tiles: 20 x 10 and 7 x 20 px
    assert grid.dtype == torch.uint8 and tuple(grid.shape) == (3, 2 * 22 + 2, 3 * 22 + 2)
    assert grid[:, 2:22, 24:34].eq(torch.tensor([255, 0, 0]).view(3, 1, 1)).all()  # truth of image 1: class 1
    assert grid[:, 24:31, 46:66].eq(torch.tensor([255, 0, 255]).view(3, 1, 1)).all()  # ignored: magenta, no class
    with pytest.raises(ValueError, match="outside"):
        prediction_grid(images[:1], [torch.full((40, 20), 7)], preds[:1], colors)
