"""The run folder (issue 10, items 2 and 3, stale temp files, umask): one run at a time, nothing non-finite saved."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from seglab.cli import main
from seglab.engine import TrainConfig, fit
from seglab.engine.checkpoint import (
    RunFolderLocked, check_finite_gradients, check_finite_model, remove_stale_tmp, run_folder_lock,
)

TINY = TrainConfig(base_channels=4, crop_size=32, batch_size=4, epochs=1, max_train_batches=1, max_val_batches=1,
                   progress=False, verbose=False, device="cpu")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the run-folder lock and sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        from seglab.engine.checkpoint import run_folder_lock
        with run_folder_lock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_folder_is_refused_and_a_dead_owner_never_blocks(tmp_path, capsys):
    # before: two runs on one --out both exited 0, config.json from one, history and last.pt from the other
    out = tmp_path / "run"
    owner = hold_lock(out)
    try:
        with pytest.raises(RunFolderLocked, match=rf"in use by another training run \(PID {owner.pid}"):
            fit(replace(TINY, out=str(out)))
        assert not (out / "config.json").exists()  # refused before writing anything
        assert main(["train", "--out", str(out), "--epochs", "1", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"PID {owner.pid}" in err and "another --out" in err
    finally:
        owner.send_signal(signal.SIGKILL)  # dies holding the lock: the OS releases it
        owner.wait()
    assert (out / ".seglab.lock").exists()  # the lock file stays behind ...
    fit(replace(TINY, out=str(out)))  # ... and does not block
    assert (out / "last.pt").is_file()


def test_fit_twice_in_one_process_and_after_an_exception(tmp_path):
    out = str(tmp_path / "run")
    fit(replace(TINY, out=out))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):  # an earlier run is never replaced silently
        fit(replace(TINY, out=out))
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    fit(replace(TINY, out=out, overwrite=True))  # a notebook re-running its training cell, on purpose
    with pytest.raises(FileNotFoundError):
        fit(replace(TINY, out=out, dataset="camvid", data_root=str(tmp_path / "no_camvid"), overwrite=True))
    fit(replace(TINY, out=out, epochs=2, resume=True))  # the lock was released by the exception
    with run_folder_lock(out):  # the same process holding it elsewhere (e.g. a fit inside a callback)
        with pytest.raises(RunFolderLocked):
            fit(replace(TINY, out=out))
    with pytest.raises(NotADirectoryError, match="is a file"):
        with run_folder_lock(tmp_path / "run" / "last.pt"):
            pass


def test_a_run_never_replaces_its_own_backbone_weights(tmp_path):
    out = tmp_path / "run"
    fit(replace(TINY, out=str(out)))
    before = (out / "best.pt").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="best.pt"):
            fit(replace(TINY, out=str(out), weights_backbone=str(out / "best.pt"), overwrite=overwrite))
    assert (out / "best.pt").read_bytes() == before


def test_diverged_model_is_never_saved(tmp_path, capsys):
    # before: --lr 1e6 --optimizer sgd gave val_loss nan, a finite mIoU, best.pt written and exit 0
    out = tmp_path / "div"
    args = ["train", "--base-channels", "4", "--crop-size", "32", "--batch-size", "4", "--no-progress", "--device",
            "cpu", "--max-val-batches", "1", "--lr", "1e6", "--optimizer", "sgd", "--epochs", "1",
            "--max-train-batches", "3", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nan/inf" in err and "--lr" in err and "Traceback" not in err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_nan_in_a_buffer_stops_before_saving(tmp_path):
    # NaN batch-norm statistics leave the training loss finite (batch statistics) but every evaluation nan
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].running_var.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"nan/inf during epoch 2 .*1\.running_var.*still holds epoch 1.*--lr 0\.001"):
        check_finite_model(model, epoch=2, out=tmp_path, lr=0.01)
    check_finite_model(nn.Conv2d(3, 4, 3), epoch=1, out=tmp_path, lr=0.01)  # finite: no error


def test_gradient_check_names_the_parameter(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    handles = check_finite_gradients(model)
    with pytest.raises(FloatingPointError, match=r"gradient of 0\.(weight|bias) became nan/inf"):
        (model(torch.ones(1, 2)) * float("nan")).sum().backward()
    for handle in handles:
        handle.remove()
    assert TrainConfig(detect_anomaly=True).detect_anomaly
    fit(replace(TINY, out=str(tmp_path / "run"), detect_anomaly=True))  # a finite run: the checks pass
    assert not torch.is_anomaly_enabled()  # restored after fit


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path, capsys):
    # before: .<name>.<random>.tmp files (up to 23 MB each) left by a kill were never cleaned up
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".last.pt.abcd1234.tmp", out / ".history.json.x_9Zq0aB.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    keep = [out / ".hidden.tmp", out / "notes.tmp", out / ".last.pt.tmp", out / "mine.abcd1234.tmp"]
    for path in keep:
        path.write_text("user file")
    fit(replace(TINY, out=str(out), verbose=True))
    assert "removed 2 temp files" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert remove_stale_tmp(out) == []


def test_outputs_follow_the_umask(tmp_path):
    # before: every output was 0600 (mkstemp's mode), whatever the umask
    previous = os.umask(0o027)
    try:
        fit(replace(TINY, out=str(tmp_path / "run")))
    finally:
        os.umask(previous)
    for name in ["config.json", "last.pt", "best.pt", "history.json", "history.csv", "curves.png"]:
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o640, name


def test_a_checkpoint_with_nan_weights_is_refused_when_loaded(tmp_path, capsys):
    # before (issue 16, item 9): predict and evaluate ran it and wrote all-zero masks / IoU 0 with exit 0
    from PIL import Image

    from seglab.engine import load_checkpoint, load_model, save_checkpoint

    fit(replace(TINY, out=str(tmp_path / "run")))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    name = sorted(state["model"])[3]
    state["model"][name][...] = float("nan")
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, state)
    with pytest.raises(ValueError, match=rf"{bad} holds nan/inf weights \(1 tensor\(s\), first: {name}\).*--lr"):
        load_model(bad)
    load_model(tmp_path / "run" / "last.pt")  # a finite one loads
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 32), (120, 30, 200)).save(image)
    for args in (["evaluate", str(bad), "--max-batches", "1", "--device", "cpu"],
                 ["predict", str(bad), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad} holds nan/inf weights") and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


@pytest.mark.parametrize("device", ["meta", "xpu", "gpu", "cuda:x"])
def test_an_unsupported_device_is_refused_before_anything_is_written(tmp_path, capsys, device):
    # before (issue 16, item 13): --device meta failed with "unsupported scalarType" after config.json was written
    from seglab.engine import resolve_device

    choices = "auto, cpu, cuda, cuda:N or mps"
    with pytest.raises(ValueError, match=rf"--device '{device}' is not (supported|a device).*{choices}"):
        resolve_device(device)
    with pytest.raises(ValueError, match=rf"--device '{device}'"):
        TrainConfig(device=device)
    out = tmp_path / "run"
    assert main(["train", "--device", device, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --device '{device}'") and err.count("\n") == 1 and len(err) < 200
    assert not out.exists()  # nothing written, not even the folder


def test_a_missing_gpu_is_named(monkeypatch):
    from seglab.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available: use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"--device 'cuda:2': this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_predict_and_evaluate_refuse_an_unsupported_device_in_one_line(tmp_path, capsys):
    from PIL import Image

    fit(replace(TINY, out=str(tmp_path / "run")))
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 32), (120, 30, 200)).save(image)
    checkpoint = str(tmp_path / "run" / "last.pt")
    for args in (["predict", checkpoint, str(image), "--out", str(tmp_path / "pred"), "--device", "meta"],
                 ["evaluate", checkpoint, "--max-batches", "1", "--device", "meta"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --device 'meta' is not supported") and err.count("\n") == 1 and len(err) < 200
    assert not (tmp_path / "pred").exists()
