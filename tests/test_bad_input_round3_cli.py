"""Issue 16 (round 3 of bad input), the command line: every file goes through seglab.files (items 1, 3, 14),
flag values are checked by argparse types (item 11), out-of-memory gets one line (item 8), the inference
flags build seglab.inference.InferenceOptions before the model is loaded (item 5), and the smaller
messages of item 14 (torch's weights_only advice, export's packages, the same-stem note, animated GIFs)."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import seglab.engine
from seglab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The folder of a tiny real run (U-Net base 4, synthetic shapes, 2 steps): best.pt, last.pt, ..."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--base-channels", "4", "--crop-size", "32", "--batch-size", "4", "--epochs", "1",
                 "--max-train-batches", "2", "--max-val-batches", "1", "--out", str(out), "--no-progress",
                 "--device", "cpu", "--no-verbose"]) == 0  # fmt: skip
    return out


def one_error_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err, captured.out


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads a checkpoint: its checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(seglab.engine, "load_model", refuse)


def image(path, height=20, width=30, seed=0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------
# Item 1: evaluate --json
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_evaluate_json_never_replaces_the_checkpoint_it_evaluates(run, tmp_path, capsys, extra):
    # before: `evaluate best.pt --max-batches 1 --json best.pt` turned best.pt into JSON, exit 0
    ckpt = tmp_path / "best.pt"
    shutil.copy(run / "best.pt", ckpt)
    (tmp_path / "alias.pt").symlink_to(ckpt)
    before = ckpt.read_bytes()
    for evaluated in (ckpt, tmp_path / "alias.pt"):  # by its name, or through a link to it
        assert main(["evaluate", str(evaluated), "--max-batches", "1", "--json", str(ckpt), *extra]) == 2
        err, out = one_error_line(capsys)
        assert "--json" in err and "would replace the input" in err and "mIoU" not in out  # refused before the work
    assert ckpt.read_bytes() == before


def test_evaluate_json_through_a_symlink_is_refused(run, tmp_path, capsys):
    # before: metrics.json -> ../outside.txt, and outside.txt was replaced by the report
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "metrics.json").symlink_to(outside)
    for extra in ([], ["--overwrite"]):
        assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1", "--json", str(folder / "metrics.json"),
                     *extra]) == 2  # fmt: skip
        err, out = one_error_line(capsys)
        assert "symbolic link" in err and "mIoU" not in out
    assert outside.read_text() == "mine" and (folder / "metrics.json").is_symlink()


def test_evaluate_json_needs_overwrite_to_replace_a_report(run, tmp_path, capsys):
    report = tmp_path / "m.json"
    assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1", "--json", str(report)]) == 0
    assert f"wrote the metrics to {report}" in capsys.readouterr().out
    first = json.loads(report.read_text())
    assert set(first) >= {"mIoU", "iou_per_class", "confusion_matrix", "classes"}
    report.write_text("an older report")
    assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1", "--json", str(report)]) == 2
    err, out = one_error_line(capsys)
    assert "already exists; pass --overwrite" in err and "mIoU" not in out and report.read_text() == "an older report"
    assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1", "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text()) == first
    assert sorted(os.listdir(tmp_path)) == ["m.json"]  # no temp file left


def test_unwritable_destinations_fail_before_the_work(run, tmp_path, capsys, monkeypatch):
    # before: evaluate --json and export to a read-only folder failed only after the evaluation / export
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    assert main(["evaluate", str(run / "best.pt"), "--json", str(locked / "m.json")]) == 2
    err, out = one_error_line(capsys)
    assert "--json" in err and "not writable" in err and "mIoU" not in out
    monkeypatch.setattr(seglab.engine, "load_model", lambda *a, **k: pytest.fail("loaded before the check"))
    assert main(["export", str(run / "best.pt"), "--out", str(locked / "m.onnx")]) == 2
    assert "not writable" in one_error_line(capsys)[0]
    assert main(["predict", str(run / "best.pt"), image(tmp_path / "in" / "a.png"), "--out", str(locked)]) == 2
    assert "not writable" in one_error_line(capsys)[0]
    assert os.listdir(locked) == []


# ------------------------------------------------------------------------------------------------
# Item 3 and item 14: export
# ------------------------------------------------------------------------------------------------


def test_export_never_replaces_its_own_input(run, tmp_path, capsys, no_model_loading):
    # before: `export CK.onnx --overwrite` replaced the checkpoint CK.onnx with the graph
    ckpt = tmp_path / "CK.onnx"
    shutil.copy(run / "best.pt", ckpt)
    before = ckpt.read_bytes()
    for args in (["--out", str(ckpt), "--overwrite"], ["--overwrite"], ["--out", str(ckpt)]):  # no --out: CK.onnx
        assert main(["export", str(ckpt), *args]) == 2
        err, _ = one_error_line(capsys)
        assert "would replace the input" in err and "CK.onnx" in err
    assert ckpt.read_bytes() == before and os.listdir(tmp_path) == ["CK.onnx"]


def test_export_checks_its_packages_before_loading_and_exporting(run, tmp_path, capsys, monkeypatch, no_model_loading):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else real_find_spec(name, *a))  # fmt: skip
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    err, _ = one_error_line(capsys)
    assert "needs the packages onnxruntime" in err and "pip install" in err and os.listdir(tmp_path) == []


def test_an_export_that_fails_its_check_leaves_no_file(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the test extra holds onnxruntime: pip install -e '.[test]'")
    import seglab.export

    real = seglab.export._onnxruntime_logits
    monkeypatch.setattr(seglab.export, "_onnxruntime_logits", lambda *a: real(*a) + 0.01)  # a graph that is wrong
    with pytest.raises(RuntimeError, match="does not reproduce the model.*no file was written"):
        seglab.export.export_onnx(torch.nn.Conv2d(3, 2, 1), tmp_path / "m.onnx", input_size=8)
    assert os.listdir(tmp_path) == []  # neither m.onnx nor its temp file


# ------------------------------------------------------------------------------------------------
# Item 11: flag values
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["evaluate", "CKPT", "--max-batches", "0"], "argument --max-batches: needs a whole number >= 1, got '0'"),
    (["evaluate", "CKPT", "--max-batches", "-1"], "argument --max-batches: needs a whole number >= 1, got '-1'"),
    (["evaluate", "CKPT", "--batch-size", "0"], "argument --batch-size: needs a whole number >= 1, got '0'"),
    (["evaluate", "CKPT", "--window", "2.5"], "argument --window: needs a whole number >= 1, got '2.5'"),
    (["check-data", "--splits", ""], "argument --splits: needs comma-separated names such as train,val; got ''"),
    (["check-data", "--splits", "train,,val"], "argument --splits: needs comma-separated names"),
    (["predict", "CKPT", "IMG", "--overlay", "--alpha", "nan"], "argument --alpha: needs a finite number in [0, 1]"),
    (["predict", "CKPT", "IMG", "--overlay", "--alpha", "-3"], "argument --alpha: needs a finite number in [0, 1]"),
    (["predict", "CKPT", "IMG", "--alpha", "2"], "argument --alpha: needs a finite number in [0, 1], e.g. 0.5; got '2'"),
    (["predict", "CKPT", "IMG", "--batch-size", "0"], "argument --batch-size: needs a whole number >= 1"),
    (["predict", "CKPT", "IMG", "--max-size", "-5"], "argument --max-size: needs a whole number >= 1"),
    (["export", "CKPT", "--input-size", "0"], "argument --input-size: needs a whole number >= 1"),
])  # fmt: skip
def test_bad_flag_values_are_one_line_naming_the_flag(args, message, run, tmp_path, capsys, no_model_loading):
    # before: --max-batches 0 printed nan (exit 0), -1 gave islice's message, --batch-size 0 was the default,
    # --splits "" checked nothing (exit 0), --alpha nan / -3 wrote overlays
    args = [str(run / "best.pt") if a == "CKPT" else image(tmp_path / "a.png") if a == "IMG" else a for a in args]
    assert main([*args, "--out", str(tmp_path / "o")] if args[0] == "predict" else args) == 2
    err, out = one_error_line(capsys)
    assert message in err and f"python -m seglab {args[0]} --help" in err and out == ""
    assert not (tmp_path / "o").exists()


def test_export_refuses_a_huge_input_size_before_loading(run, tmp_path, capsys, no_model_loading):
    # found by tests/test_fuzz_cli.py: --input-size 253519 253519 loaded the model, then asked for 1542 GB
    for sizes in (["253519", "253519"], ["4097", "4096"], ["9223372036854775808"]):
        assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--input-size", *sizes]) == 2
        err, _ = one_error_line(capsys)
        assert "input_size (--input-size)" in err and "over the limit of 16777216 (4096 x 4096)" in err
    assert os.listdir(tmp_path) == []


def test_every_error_is_one_line(capsys):
    # a newline in a value (an unknown argument, a path) or in an exception's text never splits the error line
    from seglab.cli import _error_message

    assert main(["download", "voc", "--bogus\nflag"]) == 2
    err, _ = one_error_line(capsys)
    assert "unrecognized arguments: --bogus\\nflag" in err
    for error in (TypeError("first\nsecond"), FileExistsError(errno.EEXIST, "exists\nhere"), ValueError("a\n\nb"),
                  RuntimeError(""), KeyError("k\ney")):  # fmt: skip
        message = _error_message(error)
        assert "\n" not in message and message.strip() == message and message, (error, message)


def test_the_json_report_is_strict_json():
    # NaN scores (a class absent from the split) are null: json.dumps wrote NaN, which strict readers refuse
    from seglab.cli.commands import metrics_json

    result = {"mIoU": float("nan"), "iou_per_class": [0.5, float("nan")], "pixel_accuracy": np.float64(0.25),
              "confusion_matrix": torch.tensor([[1, 0], [0, 0]])}  # fmt: skip
    report = json.loads(metrics_json(result, ["a", "b"]), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report == {"mIoU": None, "iou_per_class": [0.5, None], "pixel_accuracy": 0.25,
                      "confusion_matrix": [[1, 0], [0, 0]], "classes": ["a", "b"]}  # fmt: skip


def test_download_from_file_is_a_flag(tmp_path, capsys):
    # the data layer's messages name --from-file; the CLI now has it (a wrong MD5: refused, the file untouched)
    mine = tmp_path / "my.tar"
    mine.write_bytes(b"not the VOC archive")
    assert main(["download", "voc", "--data-root", str(tmp_path / "data"), "--from-file", str(mine)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: from_file (--from-file): ") and "has MD5" in err
    assert mine.read_bytes() == b"not the VOC archive"


def test_the_python_api_refuses_the_same_values():
    from seglab.predict import overlay_image, predict_files

    rgb, pred = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int64)
    for alpha in (float("nan"), -3.0, 2.0):
        with pytest.raises(ValueError, match=r"alpha \(--alpha\) must be a finite number in \[0, 1\]"):
            overlay_image(rgb, pred, [(0, 0, 0)], alpha)
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) must be an integer >= 1, got 0"):
        predict_files(torch.nn.Conv2d(3, 2, 1), [], "unused", [(0, 0, 0)], batch_size=0)


# ------------------------------------------------------------------------------------------------
# Item 5: the inference flags build InferenceOptions, checked before the model is loaded
# ------------------------------------------------------------------------------------------------


def test_inference_flags_become_inference_options(run, tmp_path, capsys, monkeypatch):
    calls = []
    evaluate = seglab.engine.evaluate
    monkeypatch.setattr(seglab.engine, "evaluate", lambda *a, **k: calls.append(k["inference"]) or evaluate(*a, **k))
    assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1", "--crf", "--crf-max-size", "24"]) == 0
    assert calls == [{"crf": True, "crf_max_size": 24}]
    assert main(["evaluate", str(run / "best.pt"), "--max-batches", "1"]) == 0
    assert calls[-1] == {}
    capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--crf-max-size", "24"], "--crf-max-size 24 needs --crf"),
    (["--window-stride", "16"], "--window-stride"),
    (["--tta-scales", "1,x"], "--tta-scales"),
])  # fmt: skip
def test_bad_inference_flags_are_refused_before_loading(flags, message, run, tmp_path, capsys, no_model_loading):
    for command in (["evaluate", str(run / "best.pt")],
                    ["predict", str(run / "best.pt"), image(tmp_path / "a.png"), "--out", str(tmp_path / "o")]):
        assert main([*command, *flags]) == 2
        assert message in one_error_line(capsys)[0]


# ------------------------------------------------------------------------------------------------
# Item 8: out of memory
# ------------------------------------------------------------------------------------------------


def allocate_too_much(*args, **kwargs):
    torch.empty(2**62, dtype=torch.uint8)  # torch's real message: "DefaultCPUAllocator: can't allocate memory..."


def test_out_of_memory_says_what_ran_out_and_what_to_lower(run, tmp_path, capsys, monkeypatch):
    import seglab.predict

    monkeypatch.setattr(seglab.engine, "evaluate", allocate_too_much)
    assert main(["evaluate", str(run / "best.pt"), "--crf", "--tta-scales", "1,1.5"]) == 2
    err, _ = one_error_line(capsys)
    assert err.startswith("error: out of memory on the CPU (RAM) (one allocation of 4611686018.43 GB): try a smaller "
                          "--batch-size, --crf-max-size 500 (the CRF on a smaller image), fewer or smaller "
                          "--tta-scales or --window 512 (sliding windows)")  # fmt: skip
    monkeypatch.setattr(seglab.predict, "predict_files", allocate_too_much)
    assert main(["predict", str(run / "best.pt"), image(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "out of memory on the CPU (RAM)" in (err := one_error_line(capsys)[0])
    assert "a smaller --batch-size, a smaller --max-size or --window 512" in err


@pytest.mark.parametrize("error, command, expected", [
    (MemoryError(), "train", "out of memory on the CPU (RAM): try a smaller --batch-size, a smaller --crop-size "
                             "or a smaller --max-size"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                 "79.1 GiB of which 1.2 GiB is free."), "export",
     "out of memory on the GPU (one allocation of 2.00 GiB): try a smaller --input-size"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: not enough memory"), "download",
     "out of memory on the CPU (RAM): free memory, or use a machine with more"),
])  # fmt: skip
def test_out_of_memory_messages(error, command, expected):
    from seglab.cli import _error_message, build_parser

    args = build_parser().parse_args([command, *{"train": [], "export": ["x.pt"], "download": ["voc"]}[command]])
    assert _error_message(error, args) == expected


# ------------------------------------------------------------------------------------------------
# Item 14: the smaller messages
# ------------------------------------------------------------------------------------------------


class Payload:
    """Not a tensor nor a plain value: weights_only=True refuses to unpickle it."""


def test_a_refused_checkpoint_never_quotes_torchs_weights_only_false_advice(tmp_path, capsys):
    torch.save({"model": Payload(), "config": {}}, tmp_path / "evil.pt")
    for command in (["evaluate", str(tmp_path / "evil.pt")], ["export", str(tmp_path / "evil.pt")],
                    ["predict", str(tmp_path / "evil.pt"), image(tmp_path / "a.png"), "--out", str(tmp_path / "o")]):
        assert main(command) == 2
        err, _ = one_error_line(capsys)
        assert "evil.pt" in err and "Unsupported global" in err
        assert "False" not in err and "safe_globals" not in err and "trust" not in err


def test_a_full_disk_names_the_prediction(run, tmp_path, capsys, monkeypatch):
    def full_disk(self, fp, format=None, **params):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    photo = image(tmp_path / "a.png")
    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "o"
    assert main(["predict", str(run / "best.pt"), photo, "--out", str(out)]) == 2
    err, _ = one_error_line(capsys)
    assert f"No space left on device while writing {out / 'a.png'} (the disk is full)" in err
    assert os.listdir(out) == []  # no temp file left


def test_the_same_stem_note_is_only_the_right_line(run, tmp_path, capsys):
    # before: "writing same/y.png -> y.png, same/y.bmp -> y.png" (wrong), then the right line
    a = image(tmp_path / "same" / "y.png")
    b = image(tmp_path / "same" / "y.bmp", 24)
    assert main(["predict", str(run / "best.pt"), a, b, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: 2 inputs would all be written as y.png; writing {a} -> y_png.png, {b} -> y_bmp.png"]
    assert sorted(os.listdir(tmp_path / "o")) == ["y_bmp.png", "y_png.png"]


def test_an_animated_gif_is_predicted_from_its_first_frame_with_a_note(run, tmp_path, capsys):
    frames = [Image.fromarray(np.full((20, 30, 3), value, np.uint8)) for value in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(tmp_path / "still.gif")
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    out = tmp_path / "o"
    assert main(["predict", str(run / "best.pt"), str(tmp_path / "anim.gif"), str(tmp_path / "still.gif"),
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {tmp_path / 'anim.gif'} holds 2 frames (animated or multi-page); predicting its first "
                     "frame only"]  # fmt: skip
    assert Image.open(out / "anim.png").size == (30, 20)
