"""One epoch of training and one pass of evaluation: the loop as taught.

Recipe (Chen et al. 2017, DeepLabV3 section 4.1, also torchvision's segmentation references): pixel-wise
cross-entropy with ``ignore_index=255``, a learning rate stepped every iteration, and evaluation on the
*whole* validation image with one confusion matrix accumulated over the split.

Neither loop reads a value back from the device at every step (``loss.item()`` would wait for the GPU):
the running loss and a "still finite" flag stay on the device and are read every ``log_every`` steps.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from seglab.inference import _shrink, forward_resized, infer_logits  # noqa: F401 -- _shrink: its old home
from seglab.metrics import ConfusionMatrix

__all__ = ["train_one_epoch", "evaluate", "forward_resized"]


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
    """One pass over ``loader``: forward, loss, backward, step (and scheduler step per optimizer step).

    Args:
        loader: yields ``(images (N, 3, H, W) float32, masks (N, H, W) int64)``.
        criterion: ``criterion(logits (N, K, H, W), masks) -> scalar``.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast (CUDA; bf16 on a CPU), ``None`` for fp32.
        scaler: a GradScaler for fp16 (``None`` otherwise).
        accumulate_steps: add the gradients of this many batches before each optimizer step (the loss of
            each is divided by it), e.g. 4 batches of 4 for the paper's batch of 16 on one GPU.
        log_every: read the running loss back from the device (progress bar, finiteness check) every this
            many batches, and after the last.

    Returns:
        ``{"train_loss": mean loss over batches, "images": images seen, "seconds": wall time,
        "images_per_s": throughput, "steps": optimizer steps}``.

    Raises:
        FloatingPointError: the loss became nan/inf (checked every ``log_every`` batches; the message says
            which range of batches).
    """
    device = torch.device(device)
    model.train()
    loss_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    batches, images_seen, steps = 0, 0, 0
    start = time.perf_counter()
    n_total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and n_total is not None:
        n_total = min(n_total, max_batches)
    batches_iter = loader if max_batches is None else itertools.islice(loader, max_batches)
    bar = tqdm(batches_iter, total=n_total, desc=desc, leave=False, disable=not progress)

    def check(last: bool = False) -> None:
        if not bool(finite):  # the one host sync, every log_every batches
            first = max(0, batches - log_every) if not last else max(0, batches - (batches % log_every or log_every))
            raise FloatingPointError(
                f"the training loss became nan/inf between batches {first} and {batches}: lower the learning rate "
                "(--lr) or turn off mixed precision (--amp off)"
            )
        if progress and batches:
            bar.set_postfix(loss=f"{float(loss_sum) / batches:.4f}")

    optimizer.zero_grad(set_to_none=True)
    for images, masks in bar:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (N, K, H, W)
            loss = criterion(logits.float(), masks)
        finite &= torch.isfinite(loss)
        loss_sum += loss.detach()
        scaled = loss / accumulate_steps
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            scaled.backward()
        batches += 1
        images_seen += images.shape[0]
        if batches % accumulate_steps == 0 or batches == n_total:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if scheduler is not None:
                scheduler.step()
        if batches % log_every == 0:
            check()
    check(last=True)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "train_loss": float(loss_sum) / max(1, batches),
        "images": images_seen,
        "seconds": seconds,
        "images_per_s": images_seen / seconds if seconds > 0 else math.nan,
        "steps": steps,
    }


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
            ``stride``, ``blend``, ``crf``), e.g. ``TrainConfig.inference_options()``; scores then are the
            log of the averaged probabilities (TTA) or CRF scores, and ``"loss"`` is computed on them.

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
