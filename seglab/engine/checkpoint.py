"""Files of a run: atomic writes, checkpoints, RNG state, history (JSON, CSV, curves).

Checkpoints are plain dicts of tensors and Python values, loaded with ``torch.load(weights_only=True)``.
Every file is written atomically (temp file + ``os.replace``): a reader, or a run killed mid-write, sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import random
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from seglab.engine.build import build_model_for
from seglab.engine.config import TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "load_history", "load_model", "atomic_write_bytes",
           "write_history", "plot_curves", "rng_state", "set_rng_state", "run_folder_lock", "RunFolderLocked",
           "remove_stale_tmp", "check_finite_model", "check_finite_gradients", "nonfinite_tensors", "current_umask"]


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file in its folder + ``os.replace``, with mode ``0o666 & ~umask``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask()) if hasattr(os, "fchmod") else None  # mkstemp: 0600
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------------
# The run folder: one run at a time, no stale temp files, nothing non-finite saved
# ------------------------------------------------------------------------------------------------

LOCK_NAME = ".seglab.lock"
#: Temp files of atomic_write_bytes: "." + file name + "." + mkstemp's 8 random characters + ".tmp"
_TMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


class RunFolderLocked(RuntimeError):
    """Another live process is training into the same output folder."""


@contextlib.contextmanager
def run_folder_lock(out: str | Path, enabled: bool = True) -> Iterator[Path | None]:
    """Hold an exclusive lock on the run folder ``out`` (created if needed) while the block runs.

    The lock is ``fcntl.flock`` on ``out/.seglab.lock``, which holds the PID of its owner (on Windows,
    ``filelock``'s ``msvcrt.locking``, without the PID). The operating system drops
    it when the owner exits, however it exits (``kill -9`` included), so a lock file left by a dead
    process never blocks. It is released when the block ends, also on an exception, so calling
    ``fit`` twice in a row on one folder (a notebook) works. ``enabled=False`` (the ranks other than 0
    under torchrun) takes no lock and yields None.

    Raises:
        RunFolderLocked: another process (or another ``fit`` in this process) holds the lock; the
            message gives its PID.
        NotADirectoryError: ``out`` (or a parent) is a file.
    """
    if not enabled:
        yield None
        return
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"output folder {out}: {path} is a file, not a folder; pass another --out")
            break
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME

    def refuse(owner: str):
        return RunFolderLocked(
            f"{out} is in use by another training run (PID {owner or 'unknown'}, lock {path}): wait for it to finish, "
            "or pass another --out. (The lock goes away by itself when that process ends.)"
        )

    try:
        import fcntl
    except ImportError:  # Windows: filelock (msvcrt.locking), without the PID
        from filelock import FileLock, Timeout

        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise refuse("") from None
        try:
            yield path
        finally:
            lock.release()
        return

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse(os.pread(fd, 32, 0).decode(errors="replace").strip()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_tmp(out: str | Path, verbose: bool = False) -> list[Path]:
    """Delete the temp files (``.<name>.XXXXXXXX.tmp``) that a killed run left in ``out``; return them.

    Call it while holding ``run_folder_lock``: then no live writer owns such a file. Other files,
    hidden or not, are never touched. ``verbose``: print what was removed.
    """
    removed, size = [], 0
    out = Path(out)
    if out.is_dir():
        for path in sorted(out.iterdir()):
            if _TMP_PATTERN.match(path.name) and path.is_file() and not path.is_symlink():
                size += path.stat().st_size
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed and verbose:
        print(f"note: removed {len(removed)} temp files ({size / 1e6:.1f} MB) left in {out} by an interrupted run")
    return removed


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``model`` holding nan or inf (one host sync)."""
    named = [(n, t) for n, t in model.state_dict().items() if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu()
    return [n for (n, _), ok in zip(named, finite.tolist()) if not ok]


def check_finite_model(model: nn.Module, *, epoch: int, out: str | Path, lr: float) -> None:
    """Raise ``FloatingPointError`` if any weight of ``model`` is nan/inf: never save a diverged model.

    Call it after each epoch, before writing checkpoints. The message names the tensors, says what
    the folder still holds, and suggests a lower learning rate.
    """
    bad = nonfinite_tensors(model)
    if bad:
        kept = f"{Path(out) / 'last.pt'} still holds epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
        raise FloatingPointError(
            f"the model's weights became nan/inf during epoch {epoch} ({len(bad)} tensors, e.g. {bad[:3]}): training "
            f"diverged and nothing was saved for this epoch ({kept}). Lower the learning rate, e.g. --lr {lr / 10:g}, "
            "or turn off mixed precision (--amp off); --detect-anomaly finds the first bad gradient."
        )


def check_finite_gradients(model: nn.Module) -> list:
    """Hooks that raise ``FloatingPointError`` as soon as a parameter's gradient is nan/inf (a host sync per
    parameter and step: for debugging, ``TrainConfig.detect_anomaly``). Returns the handles (``.remove()``)."""

    def hook_for(name: str):
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
                raise FloatingPointError(f"the gradient of {name} became nan/inf: lower the learning rate (--lr)")
        return hook

    return [p.register_post_accumulate_grad_hook(hook_for(n)) for n, p in model.named_parameters() if p.requires_grad]


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (temp file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``torch.load(weights_only=True)``: tensors and plain Python values only).

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: the file is not a seglab checkpoint, is corrupted, or holds arbitrary objects
            (which are never unpickled: only load checkpoints from sources you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first (python -m seglab train --out {path.parent})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle/zip errors differ by torch version
        raise RuntimeError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {error}. It is corrupted, or it holds Python "
            "objects other than tensors and plain values, which are refused for safety (weights_only=True)."
        ) from error
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path} is not a seglab checkpoint (expected a dict with a 'model' state dict)")
    return state


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain values, for a ``weights_only`` checkpoint."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states saved by :func:`rng_state` (CUDA's only where CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_SCALAR_KEYS = ["epoch", "train_loss", "val_loss", "val_mIoU", "val_pixel_accuracy", "val_mean_class_accuracy",
                "val_fw_iou", "lr", "seconds", "images_per_s"]


def write_history(out: Path, history: list[dict], classes: list[str]) -> None:
    atomic_write_bytes(out / "history.json", json.dumps(history, indent=1).encode())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(_SCALAR_KEYS + [f"iou_{c}" for c in classes])
    for record in history:
        writer.writerow([record.get(k) for k in _SCALAR_KEYS] + list(record.get("val_iou_per_class", [])))
    atomic_write_bytes(out / "history.csv", text.getvalue().encode())


def plot_curves(out: Path, history: list[dict], title: str) -> None:
    from seglab.viz import plot_history

    fig = plot_history(history, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    atomic_write_bytes(out / "curves.png", buffer.getvalue())


def load_history(path: str | Path) -> list[dict]:
    """Read ``history.json`` (give the file or the run folder). Raises FileNotFoundError with the path."""
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}: point at a run folder written by seglab.engine.fit")
    return json.loads(path.read_text())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint written by ``fit`` and load its weights.

    Returns ``(model in eval mode, its TrainConfig, the checkpoint dict)``.
    """
    state = load_checkpoint(path, map_location)
    missing = [key for key in ("config", "num_classes", "model") if key not in state]
    if missing or not isinstance(state["config"], dict):
        raise RuntimeError(
            f"{path} lacks {missing or ['a config dict']}, so the model cannot be rebuilt: it was not written by "
            "seglab's fit. Use a last.pt / best.pt from `python -m seglab train`."
        )
    config = TrainConfig.from_dict(state["config"])
    config = dataclasses.replace(config, weights_backbone=None)  # the checkpoint holds every weight
    model = build_model_for(config, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), config, state
