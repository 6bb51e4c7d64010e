"""The training engine as taught: one ``TrainConfig``, ``prepare`` + ``train_steps``, ``fit``, ``evaluate``.

A package of small modules, each readable (and copyable) on its own, in the order of a run's life:

- ``config``:     ``TrainConfig``, every training field (= a CLI flag), validated in one place
- ``device``:     device, precision (autocast dtype), channels_last and worker choices
- ``loaders``:    train / validation loaders, augmentation seeded per sample
- ``build``:      the model, optimizer and per-iteration learning-rate schedule of a config
- ``loop``:       the loop body ``run_steps`` (one optimizer step per group of batches), ``train_one_epoch``,
                  ``evaluate`` (no host sync per step)
- ``state``:      ``prepare`` (everything a run trains with, built once) and ``train_steps`` (a budget of
                  optimizer steps, crossing epochs exactly as ``fit`` does): what the notebooks train with
- ``health``:     finiteness checks (never train on, save or load nan weights)
- ``checkpoint``: checkpoints, RNG state, ``load_model``
- ``history``:    ``history.json`` / ``history.csv`` / ``curves.png``
- ``resume``:     which fields a resumed run may change, and how the changes are applied
- ``run``:        ``fit``, the whole run with files and exact resume
- ``distributed``, ``sync_batchnorm``: ``torchrun`` / DDP: process group, sharding, exact distributed
                  evaluation, BatchNorm over the global batch

Recipe (Chen et al. 2017, DeepLabV3 section 4.1, also used by torchvision's segmentation references):
pixel-wise cross-entropy with ``ignore_index=255``, SGD with momentum 0.9 and the "poly" learning
rate ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration, random scale 0.5-2.0 / crop /
flip augmentation, and evaluation on the *whole* validation image with a confusion matrix
accumulated over the split. AdamW is offered (and is the default) because it trains small models
from scratch far more reliably on a CPU budget; pass ``optimizer="sgd", lr=0.01`` for the paper recipe.
"""

from seglab.engine.build import build_model_for, build_optimizer, build_scheduler
from seglab.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from seglab.engine.config import TrainConfig
from seglab.engine.device import (
    cpu_has_fast_bf16, default_num_workers, resolve_amp_dtype, resolve_channels_last, resolve_device,
)
from seglab.engine.history import load_history
from seglab.engine.loaders import build_loaders
from seglab.engine.loop import evaluate, forward_resized, train_one_epoch
from seglab.engine.run import Callback, fit
from seglab.engine.state import RunState, evaluate_state, prepare, train_steps

__all__ = [
    "TrainConfig",
    "prepare",
    "train_steps",
    "evaluate_state",
    "RunState",
    "fit",
    "train_one_epoch",
    "evaluate",
    "forward_resized",
    "resolve_device",
    "resolve_amp_dtype",
    "resolve_channels_last",
    "cpu_has_fast_bf16",
    "default_num_workers",
    "build_loaders",
    "build_model_for",
    "build_optimizer",
    "build_scheduler",
    "save_checkpoint",
    "load_checkpoint",
    "load_history",
    "load_model",
    "Callback",
]
