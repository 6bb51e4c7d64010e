"""CLI: flags map one-to-one onto TrainConfig; train, evaluate, predict run end to end; clear errors."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.cli import build_parser, config_from_args, main
from seglab.engine import TrainConfig


def test_every_config_field_is_a_flag_with_the_same_default():
    args = build_parser().parse_args(["train"])
    assert config_from_args(args) == TrainConfig()
    args = build_parser().parse_args(
        ["train", "--model", "fcn8s", "--batch-size", "3", "--lr", "0.5", "--amp", "off", "--max-size", "100", "--resume"]
    )
    config = config_from_args(args)
    assert (config.model, config.batch_size, config.lr, config.amp, config.max_size, config.resume) == (
        "fcn8s", 3, 0.5, "off", 100, True)
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    # dataset_kwargs (a dict) comes from --classes / --classes-file
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"dataset_kwargs"} <= flags
    assert {"classes", "classes_file"} <= flags


def test_train_evaluate_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--base-channels", "4", "--crop-size", "32", "--batch-size", "4", "--epochs", "1",
                 "--max-train-batches", "2", "--max-val-batches", "1", "--out", str(out), "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "val_mIoU" in printed and "best val mIoU" in printed
    assert main(["evaluate", str(out / "best.pt"), "--max-batches", "1", "--json", str(tmp_path / "m.json")]) == 0
    assert "mIoU" in capsys.readouterr().out and (tmp_path / "m.json").is_file()
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(out / "best.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    pred = Image.open(tmp_path / "pred" / "photo.png")
    assert pred.size == (70, 50) and pred.mode == "P"  # class indices, palette = the dataset's colours
    state = torch.load(out / "best.pt", weights_only=True)
    assert np.array(pred).max() < state["num_classes"]
    assert pred.getpalette()[:3 * state["num_classes"]] == [v for c in state["colors"] for v in c]


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["seglab", "seglab.cli"])
def test_python_dash_m_entry_point(module):
    result = subprocess.run([sys.executable, "-m", module, "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--max-train-batches" in result.stdout


def test_the_cli_package_keeps_its_names():
    # seglab/cli.py became the package seglab/cli/: the console script seglab.cli:main and the names tests use
    import seglab.cli
    from seglab.cli import _error_message
    from seglab.cli.entry import main as entry_main
    from seglab.cli.errors import error_message

    assert seglab.cli.__all__ == ["main", "build_parser", "config_from_args"]
    assert seglab.cli.main is entry_main and _error_message is error_message
    assert set(build_parser().parse_args(["download", "voc"]).__dict__) >= {"command", "dataset", "data_root",
                                                                           "from_file"}  # fmt: skip
