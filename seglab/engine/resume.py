"""Resuming a run from its ``last.pt``: which ``TrainConfig`` fields may change, and how changes are applied.

Every field is in exactly one group (``tests/test_resume_rules.py`` checks it, so a new field needs a decision):

- ``FIXED``: what the trained weights and the history's numbers mean (model, data, augmentation, batch,
  optimizer, loss, seed, what is scored). A resumed run must keep them: a change is refused with both
  values, since the run would silently become another one.
- ``APPLIED``: ``epochs`` and ``lr`` may change, and the change is applied, not only recorded. The
  schedule keeps its shape and its step count: with ``epochs`` changed, the warm-up + decay is
  stretched (or shortened) to the new number of epochs and continues from the step reached, so the
  learning rate jumps to the value of that step on the new curve (e.g. a cosine that had decayed to 0
  rises again); with ``lr`` changed, the whole curve is scaled to the new peak from the next step on.
  Earlier epochs keep the learning rates they ran with (``lr`` in ``history.json``). ``epochs`` below
  the epochs already done is refused.
- ``FREE``: where and how fast it runs, and bookkeeping (device, precision, workers, logging, folder).
  They change nothing but floating-point rounding (``amp``, ``channels_last``, ``compile``).

The world size (``torchrun --nproc_per_node``) must match as well, and so must the dataset's classes.
``config.json`` and the checkpoint's ``"config"`` then hold the config that ran last, and the
checkpoint's ``"resumes"`` lists every resume with the fields it changed (``[old, new]``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seglab.engine.checkpoint import load_checkpoint, set_rng_state
from seglab.engine.config import TrainConfig
from seglab.engine.health import check_finite_state

__all__ = ["FIXED", "APPLIED", "FREE", "check_resume", "resume"]

FIXED = frozenset({
    "model", "backbone", "weights_backbone", "output_stride", "base_channels", "num_classes",  # the network
    "model_kwargs",  # the network's other options (e.g. Mask2Former's num_queries)
    "dataset", "dataset_kwargs", "train_split", "val_split",  # the data (dataset_kwargs: a folder's --classes)
    "crop_size", "scale_min", "scale_max", "max_size", "val_full_size", "pad_multiple",  # what the model sees
    "batch_size", "accumulate_steps", "max_train_batches", "max_val_batches",  # steps per epoch, what is scored
    "optimizer", "weight_decay", "momentum", "lr_schedule", "warmup_epochs",  # the optimisation
    "loss", "label_smoothing", "class_weights", "ignore_index", "sync_batchnorm", "seed",
})
APPLIED = frozenset({"epochs", "lr"})
FREE = frozenset({
    "data_root", "val_batch_size", "num_workers", "device", "amp", "channels_last", "compile", "deterministic",
    "detect_anomaly", "dist_backend", "dist_timeout", "out", "resume", "log_every", "progress", "verbose",
    "tensorboard", "overwrite",
})
_FLAGS = {"dataset_kwargs": "--classes"}  # the CLI flag of a field, where it is not --<field-name>


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _show(name: str, value) -> str:
    """A value as its flag takes it: a folder's class names comma-separated, others as Python writes them."""
    if name == "dataset_kwargs" and isinstance(value, dict) and set(value) == {"classes"}:
        return ",".join(map(str, value["classes"]))
    return repr(value)


def check_resume(checkpoint: dict, config: TrainConfig, *, path: str | Path, world_size: int = 1,
                 classes: list[str] | None = None) -> dict[str, list]:
    """Check that ``config`` may continue the run of ``checkpoint`` (a ``last.pt`` dict); return the changes.

    Args:
        classes: the class names of the dataset ``config`` builds (checked against the checkpoint's).

    Returns:
        ``{field: [old, new]}`` for the ``APPLIED`` and ``FREE`` fields that differ (``resume`` left out).

    Raises:
        ValueError: one line naming what differs and both values: a ``FIXED`` field, the class count or
            names (then: pass the run's ``--classes`` / ``--num-classes``, or another ``--out``), the world
            size, or ``epochs`` below the epochs done.
    """
    saved = TrainConfig.from_dict(checkpoint["config"])
    done = checkpoint["epoch"]
    if checkpoint.get("world_size", 1) != world_size:
        raise ValueError(
            f"cannot resume: {path} was trained by {checkpoint.get('world_size', 1)} process(es), this run has "
            f"{world_size}; exact resume needs the same world size: torchrun --nproc_per_node="
            f"{checkpoint.get('world_size', 1)} (or start a new --out folder)"
        )
    for f in dataclasses.fields(TrainConfig):
        old, new = getattr(saved, f.name), getattr(config, f.name)
        if f.name in FIXED and old != new and f.name != "num_classes":  # num_classes: as a class count below
            flag, old, new = _flag(f.name), _show(f.name, old), _show(f.name, new)
            raise ValueError(
                f"cannot resume: {path} was trained with {flag} {old} but this run gives {new}; {flag} cannot "
                f"change when resuming (the run would become another one): give {flag} {old} again, or train into "
                "another --out"
            )
    old_classes = list(checkpoint.get("classes", []))
    count = config.num_classes if config.num_classes is not None else (None if classes is None else len(classes))
    renamed = bool(classes) and bool(old_classes) and old_classes != list(classes)
    if (count is not None and count != checkpoint["num_classes"]) or renamed:
        raise ValueError(
            f"cannot resume: {path} was trained on {checkpoint['num_classes']} classes {old_classes} but this run "
            f"gives {count}{'' if classes is None else ' ' + str(list(classes))}: pass the run's classes (--classes / "
            "--num-classes), or train into another --out"
        )
    if config.epochs < done:
        raise ValueError(f"cannot resume: {path} already holds {done} epochs but --epochs is {config.epochs}: "
                         f"pass --epochs {done} or more")  # fmt: skip
    return {f.name: [getattr(saved, f.name), getattr(config, f.name)] for f in dataclasses.fields(TrainConfig)
            if f.name != "resume" and getattr(saved, f.name) != getattr(config, f.name)}


def resume(state, path: str | Path, checkpoint: dict | None = None) -> tuple[list[dict], float, list[dict]]:
    """Load ``path`` (a ``last.pt``) into ``state`` (a ``RunState`` from ``prepare``) after :func:`check_resume`.

    ``checkpoint``: the dict of ``path`` if it was loaded already (``fit`` checks it before ``prepare``).

    Restores the model, optimizer, schedule, gradient scaler and RNG states and sets ``state.step`` to the
    end of the saved epoch; then applies ``epochs`` and ``lr`` (module docstring): the schedule's base
    learning rate becomes ``config.lr`` and the current one is recomputed on the new curve (unchanged,
    to the bit, when neither changed).

    Returns:
        ``(history, best val mIoU, resumes)``: ``resumes`` is the checkpoint's list of earlier resumes
        plus this one (``{"epoch": epochs done, "changes": {field: [old, new]}}``) when it changed a field.

    Raises:
        ValueError: :func:`check_resume`'s refusals; nan/inf weights; a checkpoint whose schedule does not
            stand at ``epoch * steps_per_epoch`` steps (the training split or batches per epoch changed).
        FileNotFoundError / RuntimeError: no readable checkpoint at ``path`` (``load_checkpoint``).
    """
    if checkpoint is None:
        checkpoint = load_checkpoint(path, map_location=state.device)
    changes = check_resume(checkpoint, state.config, path=path, world_size=state.dist.world_size,
                           classes=state.classes)
    check_finite_state(checkpoint["model"], source=path)
    epoch, scheduler = checkpoint["epoch"], checkpoint["scheduler"]
    if scheduler.get("last_epoch") != epoch * state.steps_per_epoch:
        raise ValueError(
            f"cannot resume: {path} stopped after {epoch} epochs = {scheduler.get('last_epoch')} optimizer steps, but "
            f"this run has {state.steps_per_epoch} steps per epoch ({epoch * state.steps_per_epoch}): the training "
            "split changed size (images added or removed); restore it, or train into another --out"
        )
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(scheduler)
    if state.scaler is not None and checkpoint.get("scaler"):
        state.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    state.step, state._groups, state._rng = epoch * state.steps_per_epoch, None, None
    _apply_schedule(state.scheduler, state.config.lr)
    resumes = list(checkpoint.get("resumes", []))
    if changes:
        resumes.append({"epoch": epoch, "changes": changes})
    return list(checkpoint["history"]), checkpoint["best_mIoU"], resumes


def _apply_schedule(scheduler, lr: float) -> None:
    """Peak ``lr`` for every group, and the current learning rate recomputed from the schedule's own curve
    (a ``LambdaLR`` built from the new config: its length follows ``epochs``)."""
    groups = scheduler.optimizer.param_groups
    scheduler.base_lrs = [lr for _ in groups]
    for group, lr_lambda in zip(groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * lr_lambda(scheduler.last_epoch)  # as LambdaLR.get_lr computes it
    scheduler._last_lr = [group["lr"] for group in groups]
