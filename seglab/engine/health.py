"""Nothing non-finite is trained on, saved or used: finiteness checks of weights and gradients.

A diverged run shows up as nan/inf weights; ``fit`` checks the model after every epoch before it
writes a checkpoint (:func:`check_finite_model`), ``load_model`` checks every tensor of a checkpoint
before a model is built from it (:func:`check_finite_state`), and a ``detect_anomaly`` run adds a
check of every gradient (:func:`check_finite_gradients`). Each check reads the device once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["nonfinite_tensors", "nonfinite_names", "check_finite_model", "check_finite_gradients",
           "check_finite_state"]


def nonfinite_names(named: Iterable[tuple[str, object]]) -> list[str]:
    """Names of the floating-point tensors among ``(name, value)`` pairs that hold nan or inf (one host sync)."""
    named = [(n, t) for n, t in named if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex())]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu()  # tensors of one device
    return [n for (n, _), ok in zip(named, finite.tolist()) if not ok]


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``model`` holding nan or inf (one host sync)."""
    return nonfinite_names(model.state_dict().items())


def check_finite_state(state_dict: Mapping[str, object], *, source: str | Path) -> None:
    """Refuse weights that hold nan/inf: they give all-zero masks and IoU 0 without any error.

    Args:
        state_dict: ``{name: tensor}``, e.g. a checkpoint's ``"model"``.
        source: the file it came from, named in the message.

    Raises:
        ValueError: one line naming ``source``, the number of bad tensors and the first of them.
    """
    bad = nonfinite_names(state_dict.items())
    if bad:
        raise ValueError(
            f"{source} holds nan/inf weights ({len(bad)} tensor(s), first: {bad[0]}): the run that wrote it diverged "
            "or the file was damaged, and its predictions would be meaningless. Use another checkpoint (e.g. an "
            "earlier best.pt) or train again with a lower --lr"
        )


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
