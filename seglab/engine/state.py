"""Everything a run trains with, built once (``prepare``), and the step-budgeted loop (``train_steps``).

``fit`` is ``prepare`` + resume + epochs of ``train_steps``; a notebook calls the same two functions with
a budget of optimizer steps instead of epochs, so it trains with exactly the recipe ``fit`` uses::

    state = prepare(TrainConfig(model="unet", epochs=3, progress=False))
    result = train_steps(state, 50)          # 50 optimizer steps: result["losses"] has 50 floats
    result = train_steps(state, 50)          # continues where the first call stopped
    scores = evaluate_state(state)           # mIoU of the whole validation split

Every epoch (also when a budget crosses into it) reseeds the shuffling and each sample's augmentation
from ``epoch_seed(seed, epoch)`` and dropout from the same seed (plus the rank), as ``fit`` does, so
``prepare`` + ``train_steps`` for ``k`` epochs' worth of steps equals ``k`` epochs of ``fit``, step by step.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from seglab.engine.build import build_model_for, build_optimizer, build_scheduler
from seglab.engine.config import TrainConfig
from seglab.engine.device import resolve_amp_dtype, resolve_channels_last, resolve_device
from seglab.engine.distributed import (
    DistInfo, check_batch_for_batchnorm, convert_sync_batchnorm, evaluate_distributed, has_batchnorm,
)
from seglab.engine.health import check_finite_gradients
from seglab.engine.loaders import base_dataset, build_loaders
from seglab.engine.loop import evaluate, run_steps, step_groups

__all__ = ["RunState", "prepare", "train_steps", "evaluate_state", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based) of a run seeded ``seed``: shuffling, augmentation, dropout."""
    return seed * 100_003 + epoch


@dataclasses.dataclass(eq=False)
class RunState:
    """A run ready to train: what ``prepare`` built, and where the training stands.

    ``model`` is the bare module (its ``state_dict`` is what checkpoints hold); ``train_model`` is what
    the loop calls: ``model`` itself, in ``DistributedDataParallel`` under torchrun, compiled with
    ``config.compile``. ``amp_dtype`` (``None`` = fp32) and ``channels_last`` are the precision and memory
    format chosen by ``config.amp`` / ``config.channels_last`` for ``device``. ``step`` counts optimizer
    steps since the start of the run (epoch ``step // steps_per_epoch + 1`` is the one in progress);
    ``total_steps`` is the length of the learning-rate schedule.
    """

    config: TrainConfig
    dist: DistInfo
    device: torch.device
    train_loader: object
    val_loader: object
    num_classes: int
    classes: list[str]
    colors: list[list[int]]
    model: nn.Module
    train_model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    channels_last: bool
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    _groups: Iterator | None = dataclasses.field(default=None, repr=False)  # step groups left in this epoch
    _rng: tuple | None = dataclasses.field(default=None, repr=False)  # torch RNG where the last call stopped

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.step // self.steps_per_epoch

    def __repr__(self) -> str:  # one line: where the run stands, not every module's repr
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return (f"RunState({self.config.model} on {self.config.dataset}, {self.device}, {precision}"
                f"{', channels_last' if self.channels_last else ''}, step {self.step}/{self.total_steps}, "
                f"{self.steps_per_epoch} steps per epoch, world size {self.dist.world_size})")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare(config: TrainConfig, *, model: nn.Module | None = None, train_loader=None, val_loader=None,
            total_steps: int | None = None, dist_info: DistInfo | None = None) -> RunState:
    """Build everything ``config`` trains with, once, as ``fit`` does: loaders, model, loss, optimizer, schedule.

    In order: seed everything from ``config.seed``; the train / validation loaders (``build_loaders``;
    under torchrun each rank's shards) and a check of their first items; the model (``build_model_for``,
    or ``model`` as given, e.g. a notebook's ablation), on the device, SyncBatchNorm under DDP,
    channels_last where chosen; the loss (``config.loss``, class weights, ``ignore_index``); the optimizer;
    the per-step warm-up + decay schedule over ``total_steps`` optimizer steps (default: ``epochs *
    steps_per_epoch``); a gradient scaler for fp16; ``DistributedDataParallel`` / ``torch.compile``.

    Args:
        config: the run. With ``resume=True`` the backbone weights are not fetched (the checkpoint holds them).
        model: train this module instead of building ``config.model`` (the model fields are then labels).
        train_loader, val_loader: use these (yielding ``(images (N, 3, H, W), masks (N, H, W))``); a
            ``train_loader.sampler`` with ``set_epoch`` is reseeded every epoch.
        total_steps: length of the learning-rate schedule, in optimizer steps.
        dist_info: the process group of ``distributed_session`` (``fit`` passes it); default: one process
            on ``resolve_device(config.device)``.

    Raises:
        ValueError / FileNotFoundError: bad dataset, model or options (messages say how to fix them),
            an epoch without a single batch, ``total_steps`` < 1.
    """
    dist = dist_info or DistInfo(device=resolve_device(config.device))
    device, world = dist.device, dist.world_size
    if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                    or total_steps < 1):
        raise ValueError(f"total_steps must be an integer >= 1 (optimizer steps), got {total_steps!r}")
    _seed_everything(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
    if train_loader is None or val_loader is None:
        from seglab.data import check_first_items

        built = build_loaders(config, device, rank=dist.rank, world_size=world)  # datasets built once
        check_first_items(base_dataset(built[0].dataset), base_dataset(built[1].dataset))  # bad files: now
        train_loader = built[0] if train_loader is None else train_loader
        val_loader = built[1] if val_loader is None else val_loader
    dataset = base_dataset(train_loader.dataset)
    num_classes = config.num_classes or getattr(dataset, "num_classes", None)
    if num_classes is None:
        raise ValueError("the train loader's dataset has no num_classes: set TrainConfig.num_classes (--num-classes)")
    classes = [str(c) for c in getattr(dataset, "classes", range(num_classes))]
    colors = [list(c) for c in getattr(dataset, "colors", [])]

    if model is None:
        model = build_model_for(dataclasses.replace(config, weights_backbone=None) if config.resume else config,
                                num_classes)
    model = model.to(device)
    check_batch_for_batchnorm(model, config.batch_size, world, config.sync_batchnorm)
    if dist.enabled and config.sync_batchnorm and has_batchnorm(model):
        model = convert_sync_batchnorm(model, device)  # statistics over the global batch; same state dict
    if config.detect_anomaly:
        check_finite_gradients(model)  # every gradient, every step (slow: debugging)
    channels_last = resolve_channels_last(config.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    criterion = _criterion(config, dataset, device)
    optimizer = build_optimizer(config, model)
    batches_per_epoch = min(len(train_loader), config.max_train_batches or len(train_loader))
    if batches_per_epoch < 1:
        raise ValueError(f"the training split gives no batch of {config.batch_size} per process ({world} process(es)):"
                         " lower --batch-size (or train on fewer processes)")  # fmt: skip
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate_steps)
    total = total_steps if total_steps is not None else config.epochs * steps_per_epoch
    scheduler = build_scheduler(config, optimizer, total, steps_per_epoch)
    amp_dtype = resolve_amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    train_model = model
    if dist.enabled:  # gradients averaged over the ranks during backward
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)  # same parameters, compiled forward
    if config.verbose and dist.is_main and (dist.enabled or config.accumulate_steps > 1):
        print(f"global batch {config.batch_size * world * config.accumulate_steps} = batch {config.batch_size} per "
              f"process x {world} process(es) x {config.accumulate_steps} accumulated"
              + (f" ({dist.backend}, SyncBatchNorm {'on' if config.sync_batchnorm and has_batchnorm(model) else 'off'})"
                 if dist.enabled else ""), flush=True)  # fmt: skip
    return RunState(config, dist, device, train_loader, val_loader, num_classes, classes, colors, model, train_model,
                    criterion, optimizer, scheduler, scaler, amp_dtype, channels_last, batches_per_epoch,
                    steps_per_epoch, total)


def _criterion(config: TrainConfig, dataset, device: torch.device) -> nn.Module:
    from seglab.losses import build_loss

    weight = None
    if config.class_weights:
        weight = getattr(dataset, "class_weights", None)
        if weight is None:
            raise ValueError(f"dataset {config.dataset!r} defines no class_weights: drop --class-weights")
        weight = torch.as_tensor(weight, dtype=torch.float32)
    return build_loss(config.loss, weight=weight, ignore_index=config.ignore_index,
                      label_smoothing=config.label_smoothing).to(device)


def _start_epoch(state: RunState) -> Iterator:
    """Reseed and open the epoch that step ``state.step`` belongs to; return its step groups."""
    epoch, offset = divmod(state.step, state.steps_per_epoch)
    if offset:
        raise ValueError(f"RunState.step = {state.step} is inside epoch {epoch + 1} ({state.steps_per_epoch} steps "
                         "each) but that epoch's batches are gone: set step only to a multiple of steps_per_epoch")
    seed = epoch_seed(state.config.seed, epoch + 1)
    sampler = getattr(state.train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(seed)  # the shuffling order and every sample's augmentation
    torch.manual_seed(seed + 1_000_003 * state.dist.rank)  # dropout, its own on every rank
    batches = itertools.islice(state.train_loader, state.batches_per_epoch)
    return step_groups(batches, state.config.accumulate_steps)


def _budget(state: RunState, n: int) -> Iterator:
    """The next ``n`` step groups, opening epochs as they end; ``state.step`` counts each finished step."""
    for _ in range(n):
        group = next(state._groups, None) if state._groups is not None else None
        if group is None:
            state._groups = _start_epoch(state)
            group = next(state._groups)
        yield group
        state.step += 1  # the loop asks for the next group only after this one's optimizer step


def _torch_rng(device: torch.device) -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def train_steps(state: RunState, n: int, *, progress: bool = False, desc: str = "train") -> dict:
    """Train ``n`` optimizer steps (``accumulate_steps`` batches each), from where ``state`` stands.

    Crosses epoch boundaries as ``fit`` does (reseeding each new epoch); a call continues the previous
    one exactly, the torch random state (dropout) included. Losses stay on the device until the end
    (one read for all steps; a finiteness check every ``config.log_every`` batches).

    Returns:
        ``{"losses": the mean loss of each step (n floats), "train_loss": mean batch loss, "images",
        "batches", "steps": n, "seconds": wall time, "images_per_s", "step": state.step after the call,
        "epoch": epochs completed, "lr": the learning rate now}``.

    Raises:
        ValueError: ``n`` not an integer >= 1, or beyond the schedule's ``total_steps`` (``prepare(...,
            total_steps=...)`` sets it).
        FloatingPointError: the loss became nan/inf.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"train_steps(n=...) must be an integer >= 1 (optimizer steps), got {n!r}")
    if state.step + n > state.total_steps:
        raise ValueError(f"train_steps: {n} more steps after step {state.step} go past the schedule's "
                         f"{state.total_steps} steps (its learning rate ends there): call prepare(config, "
                         f"total_steps=...) with the whole budget, or raise --epochs")  # fmt: skip
    config = state.config
    if state._rng is not None:  # continue the random stream where the last call stopped
        torch.set_rng_state(state._rng[0])
        if state._rng[1] is not None:
            torch.cuda.set_rng_state(state._rng[1], state.device)
    total = n * config.accumulate_steps if state.batches_per_epoch % config.accumulate_steps == 0 else None
    with tqdm(total=total, desc=desc, leave=False, disable=not progress) as bar:
        result = run_steps(state.train_model, _budget(state, n), state.criterion, state.optimizer, state.scheduler,
                           device=state.device, amp_dtype=state.amp_dtype, scaler=state.scaler,
                           channels_last=state.channels_last, accumulate_steps=config.accumulate_steps,
                           log_every=config.log_every, bar=bar)
    state._rng = _torch_rng(state.device)
    return dict(result, step=state.step, epoch=state.epoch, lr=state.optimizer.param_groups[0]["lr"])


def evaluate_state(state: RunState, **overrides) -> dict:
    """``evaluate`` of ``state.model`` on ``state.val_loader`` as ``fit`` scores every epoch: the state's
    precision and memory format, ``config.max_val_batches``, full-size scoring with ``val_full_size``,
    exact over the ranks under DDP (``evaluate_distributed``). ``overrides``: other ``evaluate`` keywords
    (e.g. ``max_batches``, ``inference``, ``progress``) or ``loader``. Returns ``evaluate``'s dict."""
    config = state.config
    kwargs = dict(device=state.device, criterion=state.criterion, ignore_index=config.ignore_index,
                  amp_dtype=state.amp_dtype, channels_last=state.channels_last, max_batches=config.max_val_batches,
                  input_max_size=config.max_size if config.val_full_size else None, pad_multiple=config.pad_multiple,
                  progress=False)  # fmt: skip
    kwargs.update(overrides)
    loader = kwargs.pop("loader", state.val_loader)
    run = evaluate_distributed if state.dist.enabled else evaluate
    return run(state.model, loader, state.num_classes, **kwargs)
