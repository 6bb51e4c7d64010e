"""Engine: overfits one batch, resume == uninterrupted, safe and atomic checkpoints, clear errors."""

import dataclasses
import importlib
import json
import os

import pytest
import torch

from seglab import engine
from seglab.engine import TrainConfig, evaluate, fit, load_checkpoint, load_history, save_checkpoint, train_one_epoch
from seglab.losses import cross_entropy
from seglab.models import build_model


def _tiny(tmp_path, **changes) -> TrainConfig:
    config = TrainConfig(
        model="unet", base_channels=4, dataset="synthetic", crop_size=32, batch_size=4, epochs=2,
        max_train_batches=3, max_val_batches=2, out=str(tmp_path / "run"), progress=False, verbose=False,
        deterministic=True, device="cpu",
    )
    return dataclasses.replace(config, **changes)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model("unet", 3, base_channels=8)
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[:, 8:24, 8:16] = 1
    masks[:, 8:24, 16:24] = 2
    masks[0, :2] = 255
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = train_one_epoch(model, [(images, masks)], cross_entropy, optimizer)["train_loss"]
    for _ in range(60):
        last = train_one_epoch(model, [(images, masks)], cross_entropy, optimizer)["train_loss"]
    assert last < 0.1 * first
    result = evaluate(model, [(images, masks)], 3)
    assert result["mIoU"] > 0.95
    assert result["confusion_matrix"].sum() == (masks != 255).sum()


def _strip_time(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "elapsed", "images_per_s")} for r in history]


def test_resume_after_interrupt_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = fit(_tiny(tmp_path, out=str(tmp_path / "straight")))
    weights = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]

    # Interrupt during epoch 2 (its evaluation), as Ctrl-C would.
    calls = {"n": 0}
    run = importlib.import_module("seglab.engine.run")  # the module whose evaluate_state fit calls
    real_evaluate = run.evaluate_state

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    config = _tiny(tmp_path, out=str(tmp_path / "resumed"))
    monkeypatch.setattr(run, "evaluate_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(config)
    monkeypatch.setattr(run, "evaluate_state", real_evaluate)
    assert [r["epoch"] for r in load_history(tmp_path / "resumed")] == [1]
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1

    resumed = fit(dataclasses.replace(config, resume=True))
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert _strip_time(resumed) == _strip_time(straight)
    resumed_weights = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key, value in weights.items():
        assert torch.equal(value, resumed_weights[key]), key


def test_outputs_written(tmp_path):
    config = _tiny(tmp_path, epochs=1)
    history = fit(config)
    out = tmp_path / "run"
    for name in ["history.json", "history.csv", "curves.png", "last.pt", "best.pt", "config.json"]:
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp")), "temporary files left behind"
    record = history[0]
    assert set(record) >= {"epoch", "train_loss", "lr", "val_loss", "val_mIoU", "val_iou_per_class",
                           "val_pixel_accuracy", "seconds", "images_per_s"}
    assert 0.0 <= record["val_mIoU"] <= 1.0
    assert json.loads((out / "config.json").read_text())["model"] == "unet"
    header = (out / "history.csv").read_text().splitlines()[0]
    assert "val_mIoU" in header and "iou_circle" in header
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    model, loaded_config, state = engine.load_model(out / "best.pt")
    assert loaded_config == config and state["classes"][0] == "background"


def test_callbacks_receive_each_epoch(tmp_path):
    seen = []
    fit(_tiny(tmp_path), callbacks=[lambda record, history: seen.append((record["epoch"], len(history)))])
    assert seen == [(1, 1), (2, 2)]


def test_untrusted_and_corrupted_checkpoints_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Payload()}, evil)
    with pytest.raises(RuntimeError, match="weights_only"):
        load_checkpoint(evil)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupted"):
        load_checkpoint(broken)
    with pytest.raises(FileNotFoundError, match="train first"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_save_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_refuses_another_model(tmp_path):
    fit(_tiny(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="cannot resume.*--base-channels 4 but this run gives 8"):
        fit(_tiny(tmp_path, epochs=2, base_channels=8, resume=True))


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"num_classes": 7}, ValueError, "has 4 classes"),
        ({"model": "maskformer"}, ValueError, "fcn8s"),
        ({"dataset": "mapillary"}, ValueError, "camvid"),
        ({"optimizer": "lion"}, ValueError, "adamw"),
        ({"batch_size": 100000}, ValueError, "batch-size"),
    ],
)
def test_bad_config_errors(tmp_path, changes, error, match):
    with pytest.raises(error, match=match):
        fit(_tiny(tmp_path, **changes))


def test_missing_dataset_folder_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        fit(_tiny(tmp_path, dataset="camvid", data_root=str(tmp_path / "nowhere")))
