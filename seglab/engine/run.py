"""``fit``: the whole training run of a ``TrainConfig``, with history, curves and exact resume.

Every epoch appends one record to the history and writes, atomically, into ``config.out``:
``history.json`` (full records), ``history.csv`` (one row per epoch), ``curves.png``, ``last.pt``
(everything needed to resume) and ``best.pt`` (best validation mIoU). A run killed mid-epoch loses
only that epoch: ``fit(replace(config, resume=True))`` continues from ``last.pt`` exactly -- the
model, optimizer, scheduler, scaler, history and RNG states are restored, and every epoch reseeds
its shuffling and each sample's augmentation from ``(seed, epoch)``, so a resumed run equals an
uninterrupted one, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from seglab.engine.build import build_model_for, build_optimizer, build_scheduler
from seglab.engine.checkpoint import (
    atomic_write_bytes, check_finite_gradients, check_finite_model, load_checkpoint, plot_curves, remove_stale_tmp,
    rng_state, run_folder_lock, save_checkpoint, set_rng_state, write_history,
)
from seglab.engine.config import TrainConfig, resolve_amp_dtype, resolve_channels_last, resolve_device
from seglab.engine.distributed import (
    DistInfo, ShardSampler, all_reduce_sum, check_batch_for_batchnorm, convert_sync_batchnorm, distributed_session,
    evaluate_distributed, has_batchnorm,
)
from seglab.engine.loaders import base_dataset, build_loaders
from seglab.engine.loop import evaluate, train_one_epoch
from seglab.data import check_first_items
from seglab.losses import build_loss

__all__ = ["fit", "Callback", "epoch_seed"]

Callback = Callable[[dict, list], None]
"""Called after every epoch as ``callback(epoch_record, history)``; ``history`` includes the record."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based) of a run seeded ``seed``: shuffling, augmentation, dropout."""
    return seed * 100_003 + epoch


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(config: TrainConfig, *, callbacks: Iterable[Callback] = ()) -> list[dict]:
    """Train ``config.model`` on ``config.dataset`` for ``config.epochs`` epochs; return the history.

    Each epoch: reseed shuffling/augmentation from ``(seed, epoch)``, train, evaluate on the whole
    validation images, append a record, write history/curves/``last.pt`` (and ``best.pt`` when
    val mIoU improves), call every callback with ``(record, history)``, print one line.

    Record keys: ``epoch`` (1-based), ``train_loss``, ``lr`` (at the end of the epoch), ``val_loss``,
    ``val_mIoU``, ``val_iou_per_class`` (K floats, nan = absent), ``val_pixel_accuracy``,
    ``val_mean_class_accuracy``, ``val_fw_iou``, ``seconds`` (train + val wall time), ``images_per_s``
    (training throughput), ``elapsed`` (seconds since the run started, summed over resumed parts).

    Raises:
        FileNotFoundError / ValueError: bad dataset, model or options (messages say how to fix them).
        RuntimeError: ``resume=True`` with a checkpoint of another model/dataset.
        KeyboardInterrupt: re-raised after printing how to resume; ``last.pt`` holds the last full epoch.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :mod:`seglab.engine.distributed`): one
    process per GPU (or CPU process with Gloo), the model in ``DistributedDataParallel``, each epoch
    sharded by a ``DistributedSampler``, BatchNorm as SyncBatchNorm unless ``sync_batchnorm=False``,
    validation scored exactly (disjoint shards, confusion matrices summed). ``batch_size`` is per process:
    the global batch is ``batch_size * world_size * accumulate_steps``. Only rank 0 prints, calls the
    callbacks and writes files; every rank loads ``last.pt`` on resume, which needs the same world size.
    Every rank returns the same history.
    """
    with distributed_session(config.device, config.dist_backend, config.dist_timeout) as dist_info:
        # one run per --out folder (rank 0 holds the lock); anomaly mode restored on exit
        with run_folder_lock(config.out, enabled=dist_info.is_main), torch.autograd.set_detect_anomaly(
                config.detect_anomaly):
            if dist_info.is_main:
                remove_stale_tmp(config.out, verbose=config.verbose)  # temp files of a killed run
            return _fit(config, callbacks, dist_info)


def _fit(config: TrainConfig, callbacks: Iterable[Callback], dist_info: DistInfo) -> list[dict]:
    out = Path(config.out)
    device = dist_info.device  # resolve_device(config.device), or this rank's GPU under torchrun
    main, world = dist_info.is_main, dist_info.world_size
    verbose = config.verbose and main
    _seed_everything(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic

    train_loader, val_loader = build_loaders(config, device)
    if dist_info.enabled:  # the same loaders, each rank on its shard (training: reshuffled every epoch)
        from torch.utils.data.distributed import DistributedSampler

        train_loader, val_loader = build_loaders(
            config, device,
            train_sampler=DistributedSampler(train_loader.dataset, num_replicas=world, rank=dist_info.rank,
                                             shuffle=True, seed=config.seed, drop_last=True),
            val_sampler=ShardSampler(len(val_loader.dataset), dist_info.rank, world),
        )
    check_first_items(base_dataset(train_loader.dataset), base_dataset(val_loader.dataset))  # bad files: now
    dataset = base_dataset(train_loader.dataset)
    num_classes = dataset.num_classes
    classes = list(dataset.classes)
    model = build_model_for(config, num_classes).to(device)
    check_batch_for_batchnorm(model, config.batch_size, world, config.sync_batchnorm)
    if dist_info.enabled and config.sync_batchnorm and has_batchnorm(model):
        model = convert_sync_batchnorm(model, device)  # statistics over the global batch; same state dict
    if config.detect_anomaly:
        check_finite_gradients(model)  # every gradient, every step (slow: debugging)
    channels_last = resolve_channels_last(config.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    weight = None
    if config.class_weights:
        weight = getattr(dataset, "class_weights", None)
        if weight is None:
            raise ValueError(f"dataset {config.dataset!r} defines no class_weights: drop --class-weights")
        weight = torch.as_tensor(weight, dtype=torch.float32)
    criterion = build_loss(config.loss, weight=weight, ignore_index=config.ignore_index,
                           label_smoothing=config.label_smoothing).to(device)
    optimizer = build_optimizer(config, model)
    batches_per_epoch = len(train_loader) if config.max_train_batches is None else min(len(train_loader), config.max_train_batches)
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate_steps)
    scheduler = build_scheduler(config, optimizer, config.epochs * steps_per_epoch, steps_per_epoch)
    amp_dtype = resolve_amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    train_model = model
    if dist_info.enabled:  # gradients averaged over the ranks during backward
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)  # same parameters, compiled forward
    if verbose and (dist_info.enabled or config.accumulate_steps > 1):
        print(f"global batch {config.batch_size * world * config.accumulate_steps} = batch {config.batch_size} per "
              f"process x {world} process(es) x {config.accumulate_steps} accumulated"
              + (f" ({dist_info.backend}, SyncBatchNorm {'on' if config.sync_batchnorm and has_batchnorm(model) else 'off'})"
                 if dist_info.enabled else ""), flush=True)

    history: list[dict] = []
    best = -math.inf
    start_epoch = 1
    if config.resume:
        state = load_checkpoint(out / "last.pt", map_location=device)
        saved = state["config"]
        for key in ("model", "dataset", "backbone", "output_stride", "base_channels"):
            if saved.get(key) != getattr(config, key):
                raise RuntimeError(
                    f"cannot resume: {out / 'last.pt'} was trained with {key}={saved.get(key)!r} but the config says "
                    f"{getattr(config, key)!r}; use the same settings or another --out folder"
                )
        if state.get("world_size", 1) != world:
            raise RuntimeError(
                f"cannot resume: {out / 'last.pt'} was trained by {state.get('world_size', 1)} process(es), this run has "
                f"{world}; exact resume needs the same world size: torchrun --nproc_per_node="
                f"{state.get('world_size', 1)} (or start a new --out folder)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history = list(state["history"])
        best = state["best_mIoU"]
        start_epoch = state["epoch"] + 1
        if verbose:
            print(f"resumed from {out / 'last.pt'} at epoch {state['epoch']} (best val mIoU {best:.4f})")
    elif (out / "last.pt").exists() and verbose:
        print(f"note: {out} already holds a run; it will be overwritten (pass --resume to continue it)")

    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    title = f"{config.model} on {config.dataset}"
    elapsed = history[-1].get("elapsed", 0.0) if history else 0.0
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            seed = epoch_seed(config.seed, epoch)
            train_loader.sampler.set_epoch(seed)  # shuffling order and every sample's augmentation
            torch.manual_seed(seed + 1_000_003 * dist_info.rank)  # dropout, its own on every rank
            train = train_one_epoch(
                train_model, train_loader, criterion, optimizer, scheduler, device=device, amp_dtype=amp_dtype,
                scaler=scaler, channels_last=channels_last, max_batches=config.max_train_batches,
                accumulate_steps=config.accumulate_steps, log_every=config.log_every,
                progress=config.progress and main, desc=f"epoch {epoch}/{config.epochs}",
            )
            check_finite_model(model, epoch=epoch, out=out, lr=config.lr)  # never evaluate or save a diverged model
            if dist_info.enabled:  # every rank ran as many batches: the global mean loss, images, slowest rank
                totals = all_reduce_sum(torch.tensor([train["train_loss"], train["images"]], dtype=torch.float64,
                                                     device=device))  # NCCL reduces device tensors only
                slowest = torch.tensor([train["seconds"]], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
                train = dict(train, train_loss=totals[0].item() / world, images=int(totals[1].item()),
                             seconds=slowest.item(), images_per_s=totals[1].item() / max(slowest.item(), 1e-9))
            val_start = time.perf_counter()
            val = (evaluate_distributed if dist_info.enabled else evaluate)(
                model, val_loader, num_classes, device=device, criterion=criterion, ignore_index=config.ignore_index,
                amp_dtype=amp_dtype, channels_last=channels_last, max_batches=config.max_val_batches,
                input_max_size=config.max_size if config.val_full_size else None, pad_multiple=config.pad_multiple,
                progress=config.progress and main,
            )
            seconds = train["seconds"] + time.perf_counter() - val_start
            elapsed += seconds
            record = {
                "epoch": epoch,
                "train_loss": train["train_loss"],
                "lr": optimizer.param_groups[0]["lr"],
                "val_loss": val["loss"],
                "val_mIoU": val["mIoU"],
                "val_iou_per_class": val["iou_per_class"],
                "val_pixel_accuracy": val["pixel_accuracy"],
                "val_mean_class_accuracy": val["mean_class_accuracy"],
                "val_fw_iou": val["fw_iou"],
                "seconds": seconds,
                "elapsed": elapsed,
                "images_per_s": train["images_per_s"],
            }
            history.append(record)
            improved = record["val_mIoU"] > best
            best = max(best, record["val_mIoU"])
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,
                "history": history,
                "best_mIoU": best,
                "config": config.to_dict(),
                "num_classes": num_classes,
                "classes": classes,
                "colors": [list(c) for c in dataset.colors],
                "rng": rng_state(),
                "world_size": world,
            }
            if not main:  # only rank 0 writes, prints and calls back; the others hold the same record
                continue
            if improved:
                save_checkpoint(out / "best.pt", state)
            save_checkpoint(out / "last.pt", state)  # written last: resume never skips a best.pt
            write_history(out, history, classes)
            plot_curves(out, history, title)
            if config.verbose:
                print(
                    f"epoch {epoch:3d}/{config.epochs}  train_loss {record['train_loss']:.4f}  "
                    f"val_loss {record['val_loss']:.4f}  val_mIoU {record['val_mIoU']:.4f}  "
                    f"pixel_acc {record['val_pixel_accuracy']:.4f}  lr {record['lr']:.2e}  "
                    f"{record['seconds']:.1f} s  {record['images_per_s']:.1f} img/s" + ("  *best" if improved else ""),
                    flush=True,
                )
            for callback in callbacks:
                callback(record, history)
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start_epoch - 1
        if main:
            print(
                f"\ninterrupted during epoch {done + 1}; {out / 'last.pt'} holds epoch {done}. "
                f"Continue with: python -m seglab train ... --out {out} --resume",
                flush=True,
            )
        raise
    if dist_info.enabled:
        torch.distributed.barrier()  # rank 0 has written the last epoch's files when fit returns on any rank
    return history
