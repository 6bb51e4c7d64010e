"""Export a segmentation model to ONNX and check onnxruntime against PyTorch.

``python -m seglab export CKPT --format onnx`` calls ``export_onnx``, which checks the graph with onnxruntime
(``onnx_max_abs_diff``) in a temp file and only then moves it into place: no unchecked ``.onnx`` is left.

The graph maps ``images`` ``(N, 3, H, W) float32`` (ImageNet-normalised) to ``logits`` ``(N, K, H, W)
float32``, the contract of every ``seglab.models`` model. ``N`` is dynamic; ``H`` and ``W`` are fixed at
export (``input_size``): pad or resize images to that size before the session, as ``seglab.predict``
does before the model.

Exporter: ``torch.onnx.export(..., dynamo=True)``, torch's default since 2.9 (``torch.export`` graph
capture, onnxscript translation), chosen over the TorchScript exporter (``dynamo=False``) because:

- it exports all 17 models of ``list_models()``; the TorchScript exporter fails on PSPNet whenever the
  pyramid-pooling bins (1, 2, 3, 6) do not divide the feature map (at 512×512: 64×64, so always), with
  "Unsupported: ONNX export of operator adaptive_avg_pool2d, output size that are not factor of input size";
- the TorchScript exporter is deprecated and warns that it will be removed.

Its price: it is slower (seconds to a minute per model on a 2-core CPU; HRNet is the slowest).
Only the batch axis is dynamic because dynamic ``H, W`` is not reliable with either exporter: FCN-16s/8s
bake their crop offsets and PSPNet its pooling windows for the traced size, so a graph exported with
symbolic ``H, W`` runs at another size and fails there (onnxruntime: "Attempting to broadcast an axis",
"GatherND ... invalid index"). The example input has batch 2 because ``torch.export`` specialises a
dimension of size 1 to a constant (SegFormer then fails to export with a dynamic batch).

An operator the exporter cannot convert raises ``UnsupportedOperatorError`` naming it, e.g.
``aten.kthvalue.default`` (``torch.kthvalue``, no ONNX translation in torch 2.14).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from seglab.files import atomic_path, check_target

__all__ = ["DEFAULT_OPSET", "CHECK_TOLERANCE", "MAX_INPUT_PIXELS", "UnsupportedOperatorError", "export_onnx",
           "onnx_max_abs_diff", "check_onnx_destination", "check_input_size", "require_export_packages"]

#: The opset of torch 2.14's ONNX function library (torchlib); a higher one costs a version conversion.
DEFAULT_OPSET = 18
_PROTOBUF_LIMIT = 2**31 - 1  # bytes: one ONNX file (no external data) must stay under 2 GB
#: ``export_onnx(check=True)``: largest allowed |onnxruntime - PyTorch| per unit of the largest |logit| (>= 1)
CHECK_TOLERANCE = 1e-3
_INSTALL_HINT = "pip install onnx onnxscript onnxruntime (or pip install -e '.[export]')"
#: The largest ``H * W`` of ``input_size`` (4096 x 4096): the export runs the model on a batch of 2 at that size
#: and checks the graph at it, so a larger size costs many GB and minutes before anything is written.
MAX_INPUT_PIXELS = 4096 * 4096


class UnsupportedOperatorError(RuntimeError):
    """The ONNX exporter has no conversion for an operator of the model; ``op`` names it (``aten.kthvalue.default``)."""

    def __init__(self, message: str, op: str) -> None:
        super().__init__(message)
        self.op = op


def check_input_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of ``input_size`` (``(H, W)`` or one int for both), checked before any work.

    Raises:
        ValueError: not one or two whole numbers >= 1, or ``H * W`` over ``MAX_INPUT_PIXELS`` (4096 x 4096).
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"input_size (--input-size) must be H, W (or one size for both) in pixels >= 1; got "
                         f"{input_size!r}")  # fmt: skip
    height, width = size
    if height * width > MAX_INPUT_PIXELS:
        raise ValueError(f"input_size (--input-size) {height} x {width} = {height * width:.3g} pixels is over the "
                         f"limit of {MAX_INPUT_PIXELS} (4096 x 4096): the graph's input size is fixed, and exporting "
                         "runs the model on it; export at the size you will feed the graph (e.g. 512 512)")  # fmt: skip
    return height, width


def check_onnx_destination(path: str | os.PathLike, *, overwrite: bool = False,
                           inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse a destination that would lose something; return it as a Path.

    The name must end in ``.onnx`` (so a checkpoint or an image is never replaced by mistake); the rest is
    ``seglab.files.check_target``: ``inputs`` (the checkpoint) never replaced, no symbolic link, no
    existing file without ``overwrite``, a writable folder.

    Raises:
        ValueError: the name does not end in ``.onnx``.
        IsADirectoryError / NotADirectoryError / PermissionError / FileExistsError: see ``check_target``.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() != ".onnx" and not path.is_dir():
        raise ValueError(f"--out {path}: the file name must end in .onnx (e.g. {path.with_suffix('.onnx')})")
    return check_target(path, overwrite=overwrite, inputs=inputs, what="--out")


def require_export_packages(check: bool = True) -> None:
    """Fail at once, before a long export, if a package it needs is missing: onnx and onnxscript (torch's
    exporter), and onnxruntime when the export is to be ``check``-ed.

    Raises:
        RuntimeError: naming the missing packages and the pip command that installs them.
    """
    import importlib.util

    names = ["onnx", "onnxscript"] + (["onnxruntime"] if check else [])
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"ONNX export needs the packages {', '.join(missing)}, which are not installed: "
                           f"{_INSTALL_HINT}")  # fmt: skip


def _check_graph(model: nn.Module, path: Path, height: int, width: int) -> float:
    """The max abs diff of onnxruntime and PyTorch on a seeded random ``(1, 3, H, W)`` input; raises if it is
    over ``CHECK_TOLERANCE`` times the largest |logit| (at least 1), or not finite."""
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    got, expected = _onnxruntime_logits(path, images), _torch_logits(model, images)
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else math.inf
    tolerance = CHECK_TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= tolerance:  # nan too
        raise RuntimeError(f"the exported graph does not reproduce the model: onnxruntime's logits {tuple(got.shape)} "
                           f"differ from PyTorch's {tuple(expected.shape)} by {diff:.2e} (tolerance {tolerance:.1e}) "
                           "on a random input, so no file was written; export with check=False to inspect it")
    return diff


@contextlib.contextmanager
def _quiet_exporter():
    """Drop log records up to WARNING and text on stderr while the exporter runs (when ``torch.export``
    fails it prints whole graphs there); its errors still raise (the CLI's --debug shows the traceback)."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(before)


def _unsupported_op(error: BaseException) -> str | None:
    """The operator named by the exporter's error chain (``aten.kthvalue.default``), or None."""
    patterns = (r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>",
                r"target=torch\.ops\.([\w.]+)\]?")
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        for pattern in patterns:
            match = re.search(pattern, text)
            if match:
                return ".".join(match.groups())
        error = error.__cause__ or error.__context__
    return None


def _summary(error: BaseException) -> str:
    """The first useful line of an exporter error (its 'Exception summary' when it has one)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("## Exception summary") and i + 1 < len(lines):
            return re.sub(r"^<class '[\w.]+'>: ", "", lines[i + 1])
    return lines[0] if lines else type(error).__name__


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: int | Sequence[int] = (512, 512),
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    check: bool = True,
    log: Callable[[str], object] | None = None,
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file at ``path``, checked with onnxruntime first; return the path.

    Args:
        model: ``(N, 3, H, W) float32`` -> ``(N, K, H, W) float32`` logits (any ``seglab.models`` model).
            Exported on the CPU in eval mode (BatchNorm running statistics, no dropout); its device and
            training flag are restored afterwards.
        path: the ``.onnx`` file to write (one file with the weights inside, no external data), through
            ``seglab.files.atomic_path``: the graph goes to a temp file in its folder, is checked there, and
            only then replaces ``path``; a failed export or check leaves nothing behind.
        input_size: ``(H, W)`` (or one int for both) in pixels, fixed in the graph; ``H * W`` at most
            ``MAX_INPUT_PIXELS`` (4096 x 4096).
        opset: the ai.onnx opset (default ``DEFAULT_OPSET``, 18).
        dynamic_batch: let ``N`` vary (input ``images`` and output ``logits`` axis 0 named ``"N"``).
        overwrite: replace an existing file at ``path``.
        inputs: files the caller read (its checkpoint): never replaced, even with ``overwrite``.
        check: run the graph in onnxruntime on a seeded random ``(1, 3, H, W)`` input and refuse it if its
            logits differ from PyTorch's by more than ``CHECK_TOLERANCE`` (relative to the largest logit, at
            least 1); ``log`` (e.g. ``print``) receives the measured max abs diff.

    Raises:
        ValueError / IsADirectoryError / NotADirectoryError / PermissionError / FileExistsError: see
            ``check_onnx_destination`` and ``check_input_size`` (checked before any work).
        FloatingPointError: the model holds nan/inf weights (never exported).
        UnsupportedOperatorError: an operator without ONNX conversion; the message names it.
        RuntimeError: another export failure (its summary), a model over 2 GB, a failed check, or onnx /
            onnxscript (/ onnxruntime with ``check``) missing (checked before the export).
        OSError naming the file: the disk is full.
    """
    from seglab.engine.checkpoint import nonfinite_tensors

    path = check_onnx_destination(path, overwrite=overwrite, inputs=inputs)
    height, width = check_input_size(input_size)
    require_export_packages(check)
    bad = nonfinite_tensors(model)
    if bad:
        raise FloatingPointError(f"the model holds nan/inf weights ({len(bad)} tensors, e.g. {bad[:3]}); "
                                 "refusing to export it: use a checkpoint of a run that did not diverge")
    was_training = model.training
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    model.cpu().eval()
    example = torch.randn(2 if dynamic_batch else 1, 3, height, width)  # batch 2: a size-1 dim becomes static
    try:
        with torch.no_grad():
            model(example)  # the model's own errors (e.g. a minimum input size) before the exporter's
        dynamic_shapes = ({0: torch.export.Dim("N", min=1, max=4096)},) if dynamic_batch else None
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")  # the exporter's progress warnings and logs; failures raise
            try:
                program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                            input_names=["images"], output_names=["logits"],
                                            dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
            except Exception as error:  # noqa: BLE001 -- the exporter raises many kinds; name the op if one
                op = _unsupported_op(error)
                name = type(model).__name__
                if op is not None:
                    raise UnsupportedOperatorError(
                        f"cannot export {name} to ONNX: the operator {op} cannot be converted by torch "
                        f"{torch.__version__.split('+')[0]}'s exporter (opset {opset}: {_summary(error)}); replace "
                        "it in the model with supported operations, or give torch.onnx.export a "
                        "custom_translation_table", op
                    ) from error
                raise RuntimeError(f"cannot export {name} to ONNX: {_summary(error)}") from error
    finally:
        model.to(device).train(was_training)
    proto = program.model_proto
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise RuntimeError(f"the ONNX model is {proto.ByteSize() / 2**30:.1f} GiB, over protobuf's 2 GB limit "
                           "for one file; export a smaller model")
    with atomic_path(path, overwrite=overwrite, inputs=inputs) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if check:
            diff = _check_graph(model, tmp, height, width)
            if log is not None:
                log(f"checked before writing: onnxruntime vs PyTorch on a random (1, 3, {height}, {width}) input, "
                    f"max abs diff {diff:.2e}")  # fmt: skip
    return path


def onnx_max_abs_diff(model: nn.Module, path: str | os.PathLike, images: torch.Tensor) -> float:
    """``max |onnxruntime(images) - model(images)|`` over all logits, both on the CPU in float32.

    Args:
        model: the PyTorch model (run on the CPU in eval mode under ``torch.no_grad``; its device and
            training flag are restored).
        path: an ONNX file written by ``export_onnx``.
        images: ``(N, 3, H, W) float32`` at the exported ``H, W``.

    Raises:
        RuntimeError: onnxruntime is missing, or the outputs differ in shape.
        FileNotFoundError: no file at ``path``.
    """
    got = _onnxruntime_logits(path, images)
    expected = _torch_logits(model, images)
    if got.shape != expected.shape:
        raise RuntimeError(f"onnxruntime returned {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
    return float((got - expected).abs().max())


def _onnxruntime_logits(path: str | os.PathLike, images: torch.Tensor) -> torch.Tensor:
    """``(N, K, H, W) float32`` logits of the ONNX file at ``path`` for ``images``, from onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError as error:
        raise RuntimeError(f"checking the ONNX file needs onnxruntime ({error}): {_INSTALL_HINT}") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}: export one first (seglab.export.export_onnx)")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = images.detach().cpu().float()
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    return torch.from_numpy(logits)


def _torch_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` on the CPU in eval mode, float32; the model's device and training flag are restored."""
    was_training = model.training
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            return model.cpu().eval()(images.detach().cpu().float()).float()
    finally:
        model.to(device).train(was_training)
