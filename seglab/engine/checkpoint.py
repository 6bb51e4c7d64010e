"""Checkpoints of a run (save, safe load, ``load_model``) and the RNG state they carry.

Checkpoints are plain dicts of tensors and Python values, loaded with ``torch.load(weights_only=True)``.
Every file is written atomically (``seglab.files.atomic_write_bytes``: temp file + ``os.replace``): a
reader, or a run killed mid-write, sees the old file or the new one, never half of one.

The other files of a run have their own modules, and their names stay importable from here:
history and curves in :mod:`seglab.engine.history`, finiteness checks in :mod:`seglab.engine.health`,
atomic writes and the run-folder lock in :mod:`seglab.files`.
"""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from seglab.engine.build import build_model_for
from seglab.engine.config import TrainConfig
from seglab.engine.health import (  # re-exported: their home before seglab.engine.health
    check_finite_gradients, check_finite_model, check_finite_state, nonfinite_tensors,
)
from seglab.engine.history import load_history, plot_curves, write_history  # re-exported, as above
from seglab.files import without_load_advice
from seglab.files import (  # moved to seglab.files; importable from here as before
    LOCK_NAME, RunFolderLocked, atomic_write_bytes, current_umask, remove_stale_tmp, run_folder_lock,
)

# Its own public names. The re-exported ones above stay importable from here (their home before the split)
# but are not part of this module's interface.
__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "rng_state", "set_rng_state"]


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
            (which are never unpickled: only load checkpoints from sources you trust). The message leaves
            out torch's advice to retry with ``weights_only=False``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint: give a file such as {path / 'best.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first (python -m seglab train --out {path.parent})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle/zip errors differ by torch version
        raise RuntimeError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {without_load_advice(str(error))}. It is "
            "corrupted, or it holds Python "
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


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint written by ``fit`` and load its weights.

    Every tensor of the weights is checked once: a checkpoint holding nan/inf is refused here, so
    ``evaluate`` / ``predict`` / ``export`` never turn it into all-zero masks and an exit code of 0.
    Checkpoints of older versions load (``TrainConfig.from_dict`` ignores the fields they dropped).

    Returns:
        ``(model in eval mode, its TrainConfig, the checkpoint dict)``.

    Raises:
        FileNotFoundError / RuntimeError: see :func:`load_checkpoint`; RuntimeError also when the file
            lacks what rebuilding the model needs.
        ValueError: the weights hold nan/inf (the message names the file and the first bad tensor).
    """
    state = load_checkpoint(path, map_location)
    missing = [key for key in ("config", "num_classes", "model") if key not in state]
    if missing or not isinstance(state["config"], dict):
        raise RuntimeError(
            f"{path} lacks {missing or ['a config dict']}, so the model cannot be rebuilt: it was not written by "
            "seglab's fit. Use a last.pt / best.pt from `python -m seglab train`."
        )
    check_finite_state(state["model"], source=path)
    config = TrainConfig.from_dict(state["config"])
    config = dataclasses.replace(config, weights_backbone=None)  # the checkpoint holds every weight
    model = build_model_for(config, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), config, state
