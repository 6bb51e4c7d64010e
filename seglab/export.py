"""Export a segmentation model to ONNX and check onnxruntime against PyTorch.

``python -m seglab export CKPT --format onnx`` calls ``export_onnx`` then ``onnx_max_abs_diff``.

The graph maps ``images`` ``(N, 3, H, W) float32`` (ImageNet-normalised) to ``logits`` ``(N, K, H, W)
float32``, the contract of every ``seglab.models`` model. ``N`` is dynamic; ``H`` and ``W`` are fixed at
export (``input_size``): pad or resize images to that size before the session, as ``seglab.predict``
does before the model.

Exporter: ``torch.onnx.export(..., dynamo=True)``, torch's default since 2.9 (``torch.export`` graph
capture, onnxscript translation), chosen over the TorchScript exporter (``dynamo=False``) because:

- it exports all 13 models of ``list_models()``; the TorchScript exporter fails on PSPNet whenever the
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
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["DEFAULT_OPSET", "UnsupportedOperatorError", "export_onnx", "onnx_max_abs_diff", "check_onnx_destination"]

#: The opset of torch 2.14's ONNX function library (torchlib); a higher one costs a version conversion.
DEFAULT_OPSET = 18
_PROTOBUF_LIMIT = 2**31 - 1  # bytes: one ONNX file (no external data) must stay under 2 GB
_INSTALL_HINT = "pip install onnx onnxscript onnxruntime (or pip install -e '.[export]')"


class UnsupportedOperatorError(RuntimeError):
    """The ONNX exporter has no conversion for an operator of the model; ``op`` names it (``aten.kthvalue.default``)."""

    def __init__(self, message: str, op: str) -> None:
        super().__init__(message)
        self.op = op


def _parse_input_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"input_size must be H, W (or one size for both) in pixels >= 1; got {input_size!r}")
    return size  # type: ignore[return-value]


def check_onnx_destination(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a destination that would lose something; return it as a Path.

    Raises:
        ValueError: the name does not end in ``.onnx`` (so a checkpoint or an image is never replaced).
        IsADirectoryError: ``path`` is a folder. NotADirectoryError: a parent of it is a file.
        FileExistsError: ``path`` exists (or is a symlink) and ``overwrite`` is False; a symlink is refused
            always (``os.replace`` would replace the link, not the file it points to).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; give a file path such as {path / 'model.onnx'}")
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"--out {path}: the file name must end in .onnx (e.g. {path.with_suffix('.onnx')})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"--out {path}: {parent} is a file, not a folder; pass another path")
            break
    if path.is_symlink():
        raise FileExistsError(f"--out {path} is a symbolic link; refusing to replace it: give a plain file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it, "
                              "or choose another --out path")
    return path


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
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file at ``path``; return the path.

    Args:
        model: ``(N, 3, H, W) float32`` -> ``(N, K, H, W) float32`` logits (any ``seglab.models`` model).
            Exported on the CPU in eval mode (BatchNorm running statistics, no dropout); its device and
            training flag are restored afterwards.
        path: the ``.onnx`` file to write: atomically (temp file in its folder + ``os.replace``), one
            file with the weights inside (no external data).
        input_size: ``(H, W)`` (or one int for both) in pixels, fixed in the graph.
        opset: the ai.onnx opset (default ``DEFAULT_OPSET``, 18).
        dynamic_batch: let ``N`` vary (input ``images`` and output ``logits`` axis 0 named ``"N"``).
        overwrite: replace an existing file at ``path``.

    Raises:
        ValueError / IsADirectoryError / NotADirectoryError / FileExistsError: see ``check_onnx_destination``
            and ``input_size`` (checked before any work).
        FloatingPointError: the model holds nan/inf weights (never exported).
        UnsupportedOperatorError: an operator without ONNX conversion; the message names it.
        RuntimeError: another export failure (its summary), a model over 2 GB, or onnx/onnxscript missing.
    """
    from seglab.engine.checkpoint import atomic_write_bytes, nonfinite_tensors

    path = check_onnx_destination(path, overwrite=overwrite)
    height, width = _parse_input_size(input_size)
    try:
        import onnx  # noqa: F401  (torch.onnx needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"ONNX export needs the packages onnx and onnxscript ({error}): {_INSTALL_HINT}") from None
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
    atomic_write_bytes(path, proto.SerializeToString())
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
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})  # (N, K, H, W)
    was_training = model.training
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            expected = model.cpu().eval()(images).float()  # (N, K, H, W)
    finally:
        model.to(device).train(was_training)
    if tuple(logits.shape) != tuple(expected.shape):
        raise RuntimeError(f"onnxruntime returned {tuple(logits.shape)}, PyTorch {tuple(expected.shape)}")
    return float((torch.from_numpy(logits) - expected).abs().max())
