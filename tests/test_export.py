"""seglab.export and ``python -m seglab export``: every model exports to ONNX and onnxruntime (the oracle)
gives PyTorch's logits; bad input is refused with a message and loses nothing.

The per-model test prints each max abs diff (``pytest -s tests/test_export.py`` shows them).
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from _helpers import randomize_batch_norm

onnx = pytest.importorskip("onnx", reason="the test extra holds onnx: pip install -e '.[test]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the test extra holds onnxruntime: pip install -e '.[test]'")

from seglab.cli import main  # noqa: E402
from seglab.engine import load_model  # noqa: E402
from seglab.export import UnsupportedOperatorError, export_onnx, onnx_max_abs_diff  # noqa: E402
from seglab.models import build_model, list_models  # noqa: E402

SIZE = 64  # pixels: every model runs at 64×64 (SegFormer needs >= 29)
TOLERANCE = 1e-4  # float32 logits of random-weight models are O(1); observed diffs are 1e-8 .. 1e-5
#: small configurations (the export path does not depend on the width of a backbone)
CONFIGS = {"fcn32s": {"backbone": "resnet18"}, "fcn16s": {"backbone": "resnet18"}, "fcn8s": {"backbone": "resnet18"},
           "unet": {"base_channels": 8}, "deeplabv3": {"backbone": "resnet18"},
           "deeplabv3plus": {"backbone": "resnet18"}, "fcn_dilated": {"backbone": "resnet18"},
           "pspnet": {"backbone": "resnet18"}, "deeplabv1": {}, "deeplabv2": {"backbone": "resnet18"},
           "lraspp": {}, "hrnet": {}, "segformer": {}, "mask2former": {}}
SLOW = {"pspnet", "lraspp", "hrnet", "segformer", "mask2former"}  # 10-80 s each to export on a loaded 2-core CPU


# Exported and checked in their own test files (tests/test_models_ddrnet.py, tests/test_models_fastfcn.py), once.
EXPORTED_ELSEWHERE = {"ddrnet23_slim", "ddrnet23", "fastfcn"}


def test_configs_cover_every_model():
    assert sorted([*CONFIGS, *EXPORTED_ELSEWHERE]) == sorted(list_models())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_every_model_matches_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norm(build_model(name, 5, **CONFIGS[name])).eval()
    with torch.no_grad():  # FCN zero-initialises its score layers (the paper's recipe): constant logits hide bugs
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(SIZE, SIZE))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == ("images", "logits")
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["N", 3, SIZE, SIZE]  # the batch is free, H and W fixed
    generator = torch.Generator().manual_seed(1)
    diffs = [onnx_max_abs_diff(model, path, torch.randn(n, 3, SIZE, SIZE, generator=generator)) for n in (1, 3)]
    with torch.no_grad():
        spread = model(torch.randn(1, 3, SIZE, SIZE, generator=generator)).std()
    assert spread > 1e-3, "constant logits: the comparison would prove nothing"
    print(f"\n{name}: max abs diff onnxruntime vs PyTorch at {SIZE}x{SIZE}, batch 1 / 3: "
          f"{diffs[0]:.2e} / {diffs[1]:.2e}")
    assert max(diffs) < TOLERANCE


class KthValue(torch.nn.Module):
    """``torch.kthvalue`` has no ONNX translation in torch 2.14 (aten.kthvalue.default)."""

    def forward(self, x):
        return torch.kthvalue(x, 2, dim=1, keepdim=True).values


class DataDependentBranch(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_a_failed_export_names_the_cause_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(UnsupportedOperatorError, match=r"aten\.kthvalue") as info:
        export_onnx(KthValue(), tmp_path / "k.onnx", input_size=8)
    assert info.value.op == "aten.kthvalue.default"
    with pytest.raises(RuntimeError, match="cannot export DataDependentBranch to ONNX: .*data-dependent"):
        export_onnx(DataDependentBranch(), tmp_path / "d.onnx", input_size=8)
    assert os.listdir(tmp_path) == []  # no file, no temp file
    assert capsys.readouterr().err == ""  # the exporter's graph dumps are kept off the terminal


def test_never_overwrites_and_restores_the_model(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Dropout(0.5)).train()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(model, path, input_size=8)
    assert path.read_bytes() == b"mine"
    export_onnx(model, path, input_size=8, overwrite=True)
    assert model.training  # restored after the export in eval mode
    assert onnx_max_abs_diff(model, path, torch.randn(2, 3, 8, 8)) < TOLERANCE  # dropout off in both
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_bad_destinations_and_models_are_refused(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    (tmp_path / "file").write_text("x")
    (tmp_path / "target.onnx").write_text("keep")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "target.onnx")
    with pytest.raises(IsADirectoryError):
        export_onnx(model, tmp_path, input_size=8)
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "best.pt", input_size=8)
    with pytest.raises(NotADirectoryError):
        export_onnx(model, tmp_path / "file" / "m.onnx", input_size=8)
    with pytest.raises(FileExistsError, match="symbolic link"):
        export_onnx(model, tmp_path / "link.onnx", input_size=8, overwrite=True)
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(8, 0))
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="nan"):
        export_onnx(model, tmp_path / "m.onnx", input_size=8)
    assert (tmp_path / "target.onnx").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["file", "link.onnx", "target.onnx"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """best.pt of a tiny real run (U-Net base 4, synthetic shapes, 2 steps)."""
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--base-channels", "4", "--crop-size", "32", "--batch-size", "4", "--epochs", "1",
                 "--max-train-batches", "2", "--max-val-batches", "1", "--out", str(out), "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    return out / "best.pt"


def test_cli_exports_a_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--input-size", "48", "64"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "max abs diff" in printed
    assert float(re.search(r"max abs diff (\S+)", printed).group(1)) < TOLERANCE  # checked before writing
    model, _, state = load_model(checkpoint)
    assert onnx_max_abs_diff(model, out, torch.randn(2, 3, 48, 64)) < TOLERANCE  # the checkpoint's weights
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": torch.zeros(1, 3, 48, 64).numpy()})
    assert logits.shape == (1, state["num_classes"], 48, 64)

    torch.manual_seed(123)
    other = build_model("unet", state["num_classes"], base_channels=4).eval()
    assert onnx_max_abs_diff(other, out, torch.randn(1, 3, 48, 64)) > TOLERANCE  # the check can fail

    before = out.read_bytes()
    assert main(["export", str(checkpoint), "--out", str(out)]) == 2  # exists: refused
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before

    default = checkpoint.with_suffix(".onnx")  # no --out: next to the checkpoint
    assert main(["export", str(checkpoint), "--input-size", "32", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {default}" in printed and "images (N, 3, 32, 32)" in printed
    assert default.is_file() and checkpoint.is_file()
    default.unlink()


@pytest.mark.parametrize("args, message", [
    (["missing.pt"], "no checkpoint at"),
    (["CKPT", "--format", "tflite"], "--format 'tflite' is not supported"),
    (["CKPT", "--out", "TMP"], "is a folder"),
    (["CKPT", "--out", "TMP/model.pt"], "must end in .onnx"),
    (["CKPT", "--input-size", "32", "32", "32"], "--input-size takes H W"),
    (["CKPT", "--input-size", "0"], "argument --input-size: needs a whole number >= 1"),
])
def test_cli_bad_input_is_one_line(args, message, checkpoint, tmp_path, capsys):
    args = [str(checkpoint) if a == "CKPT" else a.replace("TMP", str(tmp_path)) for a in args]
    if args[0] == "missing.pt":
        args[0] = str(tmp_path / "missing.pt")
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("*.onnx")) and not checkpoint.with_suffix(".onnx").exists()
