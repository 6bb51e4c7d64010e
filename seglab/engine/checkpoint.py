"""Files of a run: atomic writes, checkpoints, RNG state, history (JSON, CSV, curves).

Checkpoints are plain dicts of tensors and Python values, loaded with ``torch.load(weights_only=True)``.
Every file is written atomically (temp file + ``os.replace``): a reader, or a run killed mid-write, sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from seglab.engine.build import build_model_for
from seglab.engine.config import TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "load_history", "load_model", "atomic_write_bytes",
           "write_history", "plot_curves", "rng_state", "set_rng_state"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    config = TrainConfig.from_dict(state["config"])
    config = dataclasses.replace(config, weights_backbone=None)  # the checkpoint holds every weight
    model = build_model_for(config, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), config, state
