"""The training engine as taught: one ``TrainConfig``, ``fit``, ``train_one_epoch``, ``evaluate``.

A package of small modules, each readable (and copyable) on its own:

- ``config``:     ``TrainConfig`` (every field = a CLI flag), device, precision and worker choices
- ``loaders``:    train / validation loaders, augmentation seeded per sample
- ``build``:      the model, optimizer and per-iteration learning-rate schedule of a config
- ``loop``:       ``train_one_epoch`` and ``evaluate`` (no host sync per step)
- ``checkpoint``: atomic writes, checkpoints, history, ``load_model``
- ``run``:        ``fit``, the whole run, with exact resume
- ``distributed``: ``torchrun`` / DDP: process group, SyncBatchNorm, exact distributed evaluation

Recipe (Chen et al. 2017, DeepLabV3 section 4.1, also used by torchvision's segmentation references):
pixel-wise cross-entropy with ``ignore_index=255``, SGD with momentum 0.9 and the "poly" learning
rate ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration, random scale 0.5-2.0 / crop /
flip augmentation, and evaluation on the *whole* validation image with a confusion matrix
accumulated over the split. AdamW is offered (and is the default) because it trains small models
from scratch far more reliably on a CPU budget; pass ``optimizer="sgd", lr=0.01`` for the paper recipe.
"""

from seglab.engine.build import build_model_for, build_optimizer, build_scheduler
from seglab.engine.checkpoint import load_checkpoint, load_history, load_model, save_checkpoint
from seglab.engine.config import (
    TrainConfig, cpu_has_fast_bf16, default_num_workers, resolve_amp_dtype, resolve_channels_last, resolve_device,
)
from seglab.engine.run import Callback, fit
from seglab.engine.loaders import build_loaders
from seglab.engine.loop import evaluate, forward_resized, train_one_epoch

__all__ = [
    "TrainConfig",
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
