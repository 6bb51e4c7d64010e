"""Resume rules (issue 16, items 10 and 13): what a resumed run may change, and that changes are applied.

Also: a checkpoint written by the main of 2026-12-02 (before prepare/train_steps) still loads and resumes.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.cli import main
from seglab.engine import TrainConfig, fit, load_checkpoint, load_history, load_model, prepare, train_steps
from seglab.engine.build import lr_factor
from seglab.engine.resume import APPLIED, FIXED, FREE, check_resume, resume

OLD_MAIN = Path(__file__).parent / "data" / "main_2026-12-02_last.pt"


def _tiny(tmp_path, **changes) -> TrainConfig:
    config = TrainConfig(
        model="unet", base_channels=4, dataset="synthetic", crop_size=32, batch_size=4, epochs=3,
        max_train_batches=3, max_val_batches=1, out=str(tmp_path / "run"), progress=False, verbose=False,
        device="cpu", num_workers=0,
    )
    return dataclasses.replace(config, **changes)


def _stop_after(epoch: int):
    def callback(record, history):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return callback


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A 3-epoch run stopped after epoch 1: (config, its last.pt dict)."""
    tmp = tmp_path_factory.mktemp("resume_rules")
    config = _tiny(tmp)
    with pytest.raises(KeyboardInterrupt):
        fit(config, callbacks=[_stop_after(1)])
    return config, load_checkpoint(Path(config.out) / "last.pt")


def test_every_field_has_exactly_one_rule():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert FIXED | APPLIED | FREE == names
    assert not (FIXED & APPLIED) and not (FIXED & FREE) and not (APPLIED & FREE)


# A valid other value for every field (each TrainConfig validates alone).
_OTHER = {
    "model": "fcn8s", "backbone": "resnet18", "weights_backbone": "DEFAULT", "output_stride": 8, "base_channels": 8,
    "num_classes": 5, "model_kwargs": {"depth": 3}, "dataset": "camvid", "dataset_kwargs": {"classes": ["a", "b"]},
    "train_split": "val",
    "val_split": "train", "crop_size": 48, "scale_min": 0.5, "scale_max": 2.0, "max_size": 100,
    "val_full_size": True, "pad_multiple": 16, "batch_size": 2, "accumulate_steps": 2, "max_train_batches": 2,
    "max_val_batches": 2, "optimizer": "sgd", "weight_decay": 0.0, "momentum": 0.5, "lr_schedule": "poly",
    "warmup_epochs": 0.5, "loss": "dice", "label_smoothing": 0.1, "class_weights": True, "ignore_index": 0,
    "sync_batchnorm": False, "seed": 1, "epochs": 5, "lr": 1e-3, "data_root": "/elsewhere", "val_batch_size": 2,
    "num_workers": 1, "device": "auto", "amp": "on", "channels_last": "on", "compile": True, "deterministic": True,
    "detect_anomaly": True, "dist_backend": "gloo", "dist_timeout": 60.0, "out": "/elsewhere/run", "resume": True,
    "log_every": 5, "progress": True, "verbose": True, "tensorboard": True, "overwrite": True,
}


@pytest.mark.parametrize("name", sorted(FIXED - {"num_classes"}))  # num_classes: the class-count test below
def test_a_fixed_field_is_refused_with_both_values(one_epoch, name):
    config, checkpoint = one_epoch
    changed = dataclasses.replace(config, **{name: _OTHER[name]})
    assert getattr(changed, name) != getattr(config, name)
    flag = "--classes" if name == "dataset_kwargs" else "--" + name.replace("_", "-")
    old = repr(getattr(config, name))
    new = "a,b" if name == "dataset_kwargs" else repr(_OTHER[name])
    with pytest.raises(ValueError) as error:
        check_resume(checkpoint, changed, path="run/last.pt", classes=["background", "circle", "square", "triangle"])
    message = str(error.value)
    assert message.startswith("cannot resume: run/last.pt") and "\n" not in message
    assert f"{flag} {old} but this run gives {new}" in message and "another --out" in message


@pytest.mark.parametrize("name", sorted(APPLIED | FREE - {"resume"}))
def test_a_free_or_applied_field_may_change_and_is_reported(one_epoch, name):
    config, checkpoint = one_epoch
    changed = dataclasses.replace(config, **{name: _OTHER[name]})
    changes = check_resume(checkpoint, changed, path="last.pt", classes=["background", "circle", "square", "triangle"])
    assert changes == {name: [getattr(config, name), _OTHER[name]]}


def test_class_count_world_size_and_fewer_epochs_are_refused(one_epoch):
    config, checkpoint = one_epoch
    with pytest.raises(ValueError, match=r"trained on 4 classes .* gives 3 \['a', 'b', 'c'\]: pass the run's classes "
                                         r"\(--classes / --num-classes\), or train into another --out"):
        check_resume(checkpoint, config, path="last.pt", classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="trained on 4 classes"):  # same count, other names
        check_resume(checkpoint, config, path="last.pt", classes=["background", "circle", "square", "star"])
    with pytest.raises(ValueError, match=r"trained on 4 classes .* this run gives 5: .*--num-classes"):
        check_resume(checkpoint, dataclasses.replace(config, num_classes=5), path="last.pt")
    assert check_resume(checkpoint, dataclasses.replace(config, num_classes=4), path="last.pt") == {
        "num_classes": [None, 4]}  # the same count, now explicit
    with pytest.raises(ValueError, match="trained by 1 process.*this run has 2.*--nproc_per_node=1"):
        check_resume(checkpoint, config, path="last.pt", world_size=2)
    with pytest.raises(ValueError, match="already holds 1 epochs but --epochs is 0|must be an integer >= 1"):
        check_resume(checkpoint, dataclasses.replace(config, epochs=0), path="last.pt")


def test_a_refused_resume_builds_and_writes_nothing(one_epoch, tmp_path):
    config, _ = one_epoch
    out = tmp_path / "run"
    shutil.copytree(config.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = dataclasses.replace(config, out=str(out), resume=True, dataset="camvid", data_root=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="--dataset 'synthetic' but this run gives 'camvid'"):  # not: camvid missing
        fit(other)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_changed_lr_is_applied_to_the_optimizer_and_the_schedule(one_epoch, tmp_path):
    config, _ = one_epoch
    out = tmp_path / "run"
    shutil.copytree(config.out, out)
    changed = dataclasses.replace(config, out=str(out), lr=1e-3, resume=True)
    state = prepare(changed)
    spe, total = state.steps_per_epoch, state.total_steps
    resume(state, out / "last.pt")
    assert state.step == spe and state.scheduler.base_lrs == [1e-3]
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor("cosine", spe, total, spe))
    train_steps(state, 1)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor("cosine", spe + 1, total, spe))

    history = fit(changed)  # the whole resumed run: config.json and the checkpoint say what ran
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["lr"] == pytest.approx(1e-3 * lr_factor("cosine", 2 * spe, total, spe))
    assert history[0]["lr"] == pytest.approx(5e-3 * lr_factor("cosine", spe, total, spe))  # epoch 1 kept its lr
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    saved = load_checkpoint(out / "last.pt")
    assert saved["config"]["lr"] == 1e-3 and saved["resumes"] == [{"epoch": 1, "changes": {
        "lr": [5e-3, 1e-3], "out": [config.out, str(out)]}}]


def test_more_epochs_stretch_the_schedule(one_epoch, tmp_path):
    config, _ = one_epoch
    out = tmp_path / "run"
    shutil.copytree(config.out, out)
    longer = dataclasses.replace(config, out=str(out), epochs=4, resume=True)
    state = prepare(longer)
    resume(state, out / "last.pt")
    spe = state.steps_per_epoch
    assert state.total_steps == 4 * spe
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * lr_factor("cosine", spe, 4 * spe, spe))
    assert [r["epoch"] for r in fit(longer)] == [1, 2, 3, 4]
    assert load_history(out)[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ends at the new last epoch


def _folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(4):
            image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            mask = np.zeros((24, 24), np.uint8)
            mask[4:16, 6:20] = 1
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def test_renamed_or_added_classes_of_a_folder_are_refused(tmp_path, capsys):
    # before: renamed --classes were accepted on resume and relabelled the earlier epochs in history.csv
    root = _folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--dataset", "folder", "--data-root", str(root), "--out", str(out), "--base-channels", "4",
            "--crop-size", "16", "--batch-size", "2", "--epochs", "2", "--max-val-batches", "1", "--no-progress",
            "--device", "cpu", "--num-workers", "0", "--pad-multiple", "16"]
    assert main(args + ["--classes", "ground,thing", "--epochs", "1"]) == 0
    before = (out / "history.csv").read_text()
    capsys.readouterr()
    for classes in ("ground,object", "ground,thing,other"):
        assert main(args + ["--classes", classes, "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot resume") and err.count("\n") == 1
        assert f"--classes ground,thing but this run gives {classes}" in err and "another --out" in err
    assert (out / "history.csv").read_text() == before
    assert main(args + ["--classes", "ground,thing", "--resume"]) == 0  # the same classes: continues
    assert [r["epoch"] for r in load_history(out)] == [1, 2]


def test_a_training_split_of_another_size_is_refused(tmp_path):
    # the schedule counts optimizer steps: more images per epoch would shift every later learning rate
    root = _folder_dataset(tmp_path / "data")
    config = _tiny(tmp_path, dataset="folder", data_root=str(root), dataset_kwargs={"classes": ["ground", "thing"]},
                   crop_size=16, batch_size=2, epochs=2, max_train_batches=None, pad_multiple=16)
    fit(dataclasses.replace(config, epochs=1))
    for i in (4, 5):  # 4 -> 6 training images: 2 -> 3 batches per epoch
        shutil.copy(root / "train" / "images" / "0.png", root / "train" / "images" / f"{i}.png")
        shutil.copy(root / "train" / "masks" / "0.png", root / "train" / "masks" / f"{i}.png")
    with pytest.raises(ValueError, match=r"stopped after 1 epochs = 2 optimizer steps, but this run has 3 steps per "
                                         r"epoch \(3\): the training split changed size"):
        fit(dataclasses.replace(config, resume=True))


def test_a_checkpoint_of_the_main_of_2026_12_02_loads_and_resumes(tmp_path):
    # written by `fit` of the main before this change (unet, base_channels 2, 3 epochs, stopped after 2)
    model, config, state = load_model(OLD_MAIN)
    assert state["epoch"] == 2 and config.base_channels == 2 and state["num_classes"] == 4
    assert "tta_scales" in state["config"]  # a field this version dropped: ignored on load
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(OLD_MAIN, out / "last.pt")
    resumed = fit(dataclasses.replace(config, out=str(out), resume=True, verbose=False, weights_backbone=None))
    straight = fit(dataclasses.replace(config, out=str(tmp_path / "straight"), verbose=False))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for got, want in zip(resumed, straight):  # the old run's epochs, then the new code's epoch 3, as one run
        for key in ("train_loss", "val_loss", "val_mIoU", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), (got["epoch"], key)
    weights = load_checkpoint(out / "last.pt")["model"]
    for name, value in load_checkpoint(tmp_path / "straight" / "last.pt")["model"].items():
        # the old run's epochs were computed on another CPU kind (AVX512 kernels round differently from AVX2
        # ones), so the weights agree to float32 rounding accumulated over an epoch, not to the last bit
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5)
