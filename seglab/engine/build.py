"""The model, optimizer and learning-rate schedule of a ``TrainConfig``."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from seglab.engine.config import TrainConfig

__all__ = ["build_model_for", "build_optimizer", "build_scheduler", "lr_factor"]


def build_model_for(config: TrainConfig, num_classes: int) -> nn.Module:
    """``seglab.models.build_model`` with the model options of ``config`` that are set, and ``model_kwargs``."""
    from seglab.models import build_model

    if config.output_stride is not None and not config.model.startswith("deeplab"):
        raise ValueError(f"output_stride applies to DeepLab models only, not {config.model!r}: drop --output-stride")
    kwargs = {
        "backbone": config.backbone,
        "weights_backbone": config.weights_backbone,
        "output_stride": config.output_stride,
        "base_channels": config.base_channels if config.model == "unet" else None,  # a default, not an error
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    clash = sorted(set(kwargs) & set(config.model_kwargs))
    if clash:
        raise ValueError(f"model_kwargs repeats {clash}, which have their own fields: set "
                         f"--{clash[0].replace('_', '-')} instead")
    return build_model(config.model, num_classes, **kwargs, **config.model_kwargs)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum (the DeepLab recipe), over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: ['adamw', 'sgd']")


def lr_factor(schedule: str, iteration: int, total_iters: int, warmup_iters: int = 0) -> float:
    """Multiplier of the peak lr at ``iteration`` (0-based) of ``total_iters``.

    Linear warm-up from 1/100 over ``warmup_iters``, then ``"poly"`` ``(1 - t) ** 0.9`` (Chen et al. 2017),
    ``"cosine"`` ``(1 + cos(pi t)) / 2`` (Loshchilov & Hutter 2017) or ``"constant"``, with ``t`` the
    fraction of the post-warm-up iterations done.
    """
    if iteration < warmup_iters:
        return 0.01 + 0.99 * iteration / warmup_iters
    t = min(1.0, (iteration - warmup_iters) / max(1, total_iters - warmup_iters))
    if schedule == "poly":
        return max(0.0, 1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: ['poly', 'cosine', 'constant']")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_iters: int, steps_per_epoch: int):
    """A per-iteration ``LambdaLR`` following :func:`lr_factor` (warm-up ``warmup_epochs * steps_per_epoch``)."""
    lr_factor(config.lr_schedule, 0, 1)  # unknown schedule: fail now, not at the first step
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(config.lr_schedule, it, total_iters, warmup)
    )
