"""The training loop as taught (one body for an epoch and for a budget of steps) and evaluation.

Recipe (Chen et al. 2017, DeepLabV3 section 4.1, also torchvision's segmentation references): pixel-wise
cross-entropy with ``ignore_index=255``, a learning rate stepped every iteration, and evaluation on the
*whole* validation image with one confusion matrix accumulated over the split.

:func:`run_steps` is the loop body: one optimizer step per group of ``accumulate_steps`` batches.
:func:`train_one_epoch` runs it over one pass of a loader; ``seglab.engine.train_steps`` runs it over a
budget of steps that crosses epochs. Neither reads a value back from the device at every step
(``loss.item()`` would wait for the GPU): the losses and a "still finite" flag stay on the device and
are read every ``log_every`` batches.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from seglab.inference import forward_resized, infer_logits
from seglab.metrics import ConfusionMatrix

__all__ = ["train_one_epoch", "run_steps", "step_groups", "evaluate", "forward_resized"]


def step_groups(batches: Iterable, accumulate_steps: int) -> Iterator[Iterator]:
    """Consecutive groups of ``accumulate_steps`` batches, the last one possibly shorter: one optimizer step
    each. Lazy: each group must be used up before the next is asked for (batches load in loop order)."""
    batches = iter(batches)
    for first in batches:
        yield itertools.chain([first], itertools.islice(batches, accumulate_steps - 1))


def run_steps(
    model: nn.Module,
    groups: Iterable[Iterable],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    *,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    accumulate_steps: int = 1,
    log_every: int = 25,
    bar: tqdm | None = None,
) -> dict:
    """One optimizer step (then one scheduler step) per group of batches: forward, loss, backward each batch.

    Args:
        groups: yields groups (iterables) of ``(images (N, 3, H, W) float32, masks (N, H, W) int64)``
            batches, e.g. :func:`step_groups`; the loss of each batch is divided by ``accumulate_steps``, so
            a full group's gradient is that of its mean loss.
        criterion: ``criterion(logits (N, K, H, W) float32, masks) -> scalar``; unused for a model whose
            ``computes_own_loss`` is true (Mask2Former: ``model(images, masks)`` returns its set-prediction loss).
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast, ``None`` for fp32.
        scaler: a GradScaler for fp16 (``None`` otherwise).
        log_every: read the running loss back from the device (finiteness check, ``bar``) every this many
            batches, and after the last.
        bar: a tqdm bar advanced by one per batch (``None``: none).

    Returns:
        ``{"train_loss": mean batch loss, "losses": per-step mean loss (list, one float per step),
        "images": images seen, "batches", "steps": optimizer steps, "seconds": wall time,
        "images_per_s": throughput}``.

    Raises:
        FloatingPointError: the loss became nan/inf (the message says between which batches).
    """
    device = torch.device(device)
    model.train()
    loss_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    step_losses: list[torch.Tensor] = []
    batches = images_seen = checked = 0
    start = time.perf_counter()

    def check() -> None:
        nonlocal checked
        if not bool(finite):  # the one host sync, every log_every batches
            raise FloatingPointError(
                f"the training loss became nan/inf between batches {checked} and {batches}: lower the learning rate "
                "(--lr) or turn off mixed precision (--amp off)"
            )
        checked = batches
        if bar is not None and batches:
            bar.set_postfix(loss=f"{float(loss_sum) / batches:.4f}")

    # a model with ``computes_own_loss = True`` returns its training loss from ``model(images, masks)`` (through
    # forward, so DDP's gradient hooks and autocast see it); ``criterion`` is then unused in training
    own_loss = getattr(getattr(model, "module", model), "computes_own_loss", False)
    optimizer.zero_grad(set_to_none=True)
    for group in groups:
        group_sum, group_size = torch.zeros((), device=device), 0
        for images, masks in group:
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if own_loss:  # set prediction (Mask2Former): matching and every decoder layer's loss inside forward
                    loss = model(images, masks)
                else:
                    logits = model(images)  # (N, K, H, W)
                    loss = criterion(logits.float(), masks)
            finite &= torch.isfinite(loss)
            loss_sum += loss.detach()
            group_sum += loss.detach()
            scaled = loss / accumulate_steps
            if scaler is not None:
                scaler.scale(scaled).backward()
            else:
                scaled.backward()
            batches += 1
            group_size += 1
            images_seen += images.shape[0]
            if bar is not None:
                bar.update(1)
            if batches % log_every == 0:
                check()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        step_losses.append(group_sum / group_size)
    check()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "train_loss": float(loss_sum) / max(1, batches),
        "losses": torch.stack(step_losses).tolist() if step_losses else [],  # one read for every step
        "images": images_seen,
        "batches": batches,
        "steps": len(step_losses),
        "seconds": seconds,
        "images_per_s": images_seen / seconds if seconds > 0 else math.nan,
    }


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    *,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
    accumulate_steps: int = 1,
    log_every: int = 25,
    progress: bool = False,
    desc: str = "train",
) -> dict:
    """One pass over ``loader`` (at most ``max_batches`` batches): :func:`run_steps` over its step groups.

    Args:
        loader: yields ``(images (N, 3, H, W) float32, masks (N, H, W) int64)``.
        criterion: ``criterion(logits (N, K, H, W), masks) -> scalar``.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast (CUDA; bf16 on a CPU), ``None`` for fp32.
        scaler: a GradScaler for fp16 (``None`` otherwise).
        accumulate_steps: add the gradients of this many batches before each optimizer step (the loss of
            each is divided by it), e.g. 4 batches of 4 for the paper's batch of 16 on one GPU; the last
            group of the pass steps too, however short.
        log_every: read the running loss back from the device (progress bar, finiteness check) every this
            many batches, and after the last.

    Returns:
        ``{"train_loss": mean loss over batches, "losses": the mean loss of each optimizer step, "images":
        images seen, "batches", "seconds": wall time, "images_per_s": throughput, "steps": optimizer steps}``.

    Raises:
        FloatingPointError: the loss became nan/inf (checked every ``log_every`` batches; the message says
            which range of batches).
    """
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None:
        loader = itertools.islice(loader, max_batches)
        total = max_batches if total is None else min(total, max_batches)
    with tqdm(total=total, desc=desc, leave=False, disable=not progress) as bar:
        return run_steps(model, step_groups(loader, accumulate_steps), criterion, optimizer, scheduler, device=device,
                         amp_dtype=amp_dtype, scaler=scaler, channels_last=channels_last,
                         accumulate_steps=accumulate_steps, log_every=log_every, bar=bar)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    criterion: nn.Module | None = None,
    ignore_index: int = 255,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
    input_max_size: int | None = None,
    pad_multiple: int = 32,
    inference: dict | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate on whole images: one confusion matrix over the split (not a mean of per-image scores).

    Args:
        loader: yields ``(images (N, 3, H, W), masks (N, H, W) int64)``; padding must carry ``ignore_index``.
        criterion: optional loss to report as ``"val_loss"``.
        input_max_size: run the model on images shrunk to this longer side and score its upsampled
            logits against the full-size masks (:func:`forward_resized`); ``None`` = as given.
        inference: test-time options of :func:`seglab.inference.infer_logits` (``scales``, ``flip``, ``window``,
            ``stride``, ``blend``, ``crf``), e.g. ``seglab.inference.InferenceOptions(...).as_kwargs()``; scores
            then are the log of the averaged probabilities (TTA) or CRF scores, and ``"loss"`` is computed on them.

    Returns:
        ``{"mIoU", "iou_per_class", "pixel_accuracy", "mean_class_accuracy", "fw_iou", "loss",
        "confusion_matrix" ((K, K) int64 tensor, rows = ground truth)}``; fractions in [0, 1].
    """
    device = torch.device(device)
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    loss_sum, batches = torch.zeros((), device=device), 0
    batches_iter = loader if max_batches is None else itertools.islice(loader, max_batches)
    for images, masks in tqdm(batches_iter, desc="val", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if input_max_size is None and not inference:
                logits = model(images)
            else:  # inference steps: seglab.inference (forward_resized when no option is given)
                logits = infer_logits(model, images, max_size=input_max_size, pad_multiple=pad_multiple,
                                      **(inference or {}))  # fmt: skip
        logits = logits.float()  # (N, K, H, W)
        if criterion is not None:
            loss_sum += criterion(logits, masks)
        cm.update(logits.argmax(1), masks)
        batches += 1
    result = cm.compute()
    result["loss"] = float(loss_sum) / batches if (criterion is not None and batches) else math.nan
    result["confusion_matrix"] = cm.matrix.cpu()
    return result
