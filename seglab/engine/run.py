"""``fit``: the whole training run of a ``TrainConfig``, with history, curves and exact resume.

Every epoch appends one record to the history and writes, atomically, into ``config.out``:
``history.json`` (full records), ``history.csv`` (one row per epoch), ``curves.png``, ``last.pt``
(everything needed to resume) and ``best.pt`` (best validation mIoU). A run killed mid-epoch loses
only that epoch: ``fit(replace(config, resume=True))`` continues from ``last.pt`` exactly -- the
model, optimizer, scheduler, scaler, history and RNG states are restored, and every epoch reseeds
its shuffling and each sample's augmentation from ``(seed, epoch)``, so a resumed run equals an
uninterrupted one, whatever the number of DataLoader workers. With ``tensorboard=True`` the same numbers,
the learning rate and a grid of validation predictions also go to ``out/tensorboard/`` (``seglab.engine.tensorboard``).

The run is four steps, each its own module: lock the folder (``seglab.files``), ``prepare``
(``seglab.engine.state``), ``resume`` (``seglab.engine.resume``: what may change), then epochs of
``train_steps`` + ``evaluate_state`` + the files (``seglab.engine.checkpoint``, ``seglab.engine.history``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from seglab.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint
from seglab.engine.config import TrainConfig
from seglab.engine.distributed import DistInfo, distributed_session, reduce_epoch_stats
from seglab.engine.health import check_finite_model
from seglab.engine.history import plot_curves, write_history
from seglab.engine.resume import check_resume, resume
from seglab.engine.state import RunState, epoch_seed, evaluate_state, prepare, train_steps
from seglab.engine.tensorboard import TensorBoardLogger, require_tensorboard
from seglab.files import atomic_write_bytes, check_target, remove_stale_tmp, run_folder_lock

__all__ = ["fit", "Callback", "epoch_seed"]

Callback = Callable[[dict, list], None]
"""Called after every epoch as ``callback(epoch_record, history)``; ``history`` includes the record."""


def fit(config: TrainConfig, *, callbacks: Iterable[Callback] = ()) -> list[dict]:
    """Train ``config.model`` on ``config.dataset`` for ``config.epochs`` epochs; return the history.

    ``prepare`` builds the run; with ``resume=True`` it continues ``out/last.pt`` (``seglab.engine.resume``:
    which fields may change and how). Each epoch: ``train_steps`` for one epoch of steps (reseeding
    shuffling/augmentation from ``(seed, epoch)``), evaluate on the whole validation images, append a
    record, write history/curves/``last.pt`` (and ``best.pt`` when val mIoU improves), call every
    callback with ``(record, history)``, print one line. With ``tensorboard=True`` the epoch also goes to
    ``out/tensorboard/`` (``seglab.engine.tensorboard.TensorBoardLogger``), just before ``last.pt``.

    Record keys: ``epoch`` (1-based), ``train_loss``, ``lr`` (at the end of the epoch), ``val_loss``,
    ``val_mIoU``, ``val_iou_per_class`` (K floats, nan = absent), ``val_pixel_accuracy``,
    ``val_mean_class_accuracy``, ``val_fw_iou``, ``seconds`` (train + val wall time), ``images_per_s``
    (training throughput), ``elapsed`` (seconds since the run started, summed over resumed parts).

    Raises:
        FileNotFoundError / ValueError: bad dataset, model or options (messages say how to fix them);
        RuntimeError: ``tensorboard=True`` without the ``tensorboard`` package (before anything is written).
            ``resume=True`` with a checkpoint another config may not continue (the message names the field).
        KeyboardInterrupt: re-raised after printing how to resume; ``last.pt`` holds the last full epoch.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :mod:`seglab.engine.distributed`): one
    process per GPU (or CPU process with Gloo), the model in ``DistributedDataParallel``, each epoch
    sharded by a ``DistributedSampler``, BatchNorm as SyncBatchNorm unless ``sync_batchnorm=False``,
    validation scored exactly (disjoint shards, confusion matrices summed). ``batch_size`` is per process:
    the global batch is ``batch_size * world_size * accumulate_steps``. Only rank 0 prints, calls the
    callbacks and writes files; every rank loads ``last.pt`` on resume, which needs the same world size.
    Every rank returns the same history.
    """
    if config.tensorboard:
        require_tensorboard()  # a missing extra fails now, on every rank, not after the first epoch
    with distributed_session(config.device, config.dist_backend, config.dist_timeout) as dist_info:
        # one run per --out folder (rank 0 holds the lock); anomaly and determinism modes restored on exit
        with run_folder_lock(config.out, enabled=dist_info.is_main), torch.autograd.set_detect_anomaly(
                config.detect_anomaly), _global_modes_restored():
            if dist_info.is_main:
                remove_stale_tmp(config.out, verbose=config.verbose)  # temp files of a killed run
            return _fit(config, callbacks, dist_info)


def _check_earlier_run(config: TrainConfig) -> None:
    """Refuse to replace an earlier run in ``config.out`` without ``overwrite`` (or ``resume``), and a
    ``weights_backbone`` file that this run would replace (one of its own checkpoints), before any work."""
    out = Path(config.out)
    if config.weights_backbone and Path(config.weights_backbone).is_file():
        for name in ("last.pt", "best.pt"):  # the run's own outputs may not be its input, even with overwrite
            check_target(out / name, overwrite=True, inputs=[config.weights_backbone], what="--out")
    if not config.resume and not config.overwrite and (out / "last.pt").exists():
        raise FileExistsError(f"{out} already holds a run ({out / 'last.pt'}): pass --resume to continue it, "
                              f"--overwrite to replace it, or another --out")


def _fit(config: TrainConfig, callbacks: Iterable[Callback], dist_info: DistInfo) -> list[dict]:
    out, main = Path(config.out), dist_info.is_main
    _check_earlier_run(config)
    if config.resume:  # what may not change is refused before anything is built
        checkpoint = load_checkpoint(out / "last.pt", map_location=dist_info.device)
        check_resume(checkpoint, config, path=out / "last.pt", world_size=dist_info.world_size)
    state = prepare(config, dist_info=dist_info)
    history, best, resumes = [], -math.inf, []
    if config.resume:
        history, best, resumes = resume(state, out / "last.pt", checkpoint)
        if config.verbose and main:
            changed = resumes[-1]["changes"] if resumes and resumes[-1]["epoch"] == state.epoch else {}
            print(f"resumed from {out / 'last.pt'} at epoch {state.epoch} (best val mIoU {best:.4f})"
                  + "".join(f"; {k} {old!r} -> {new!r}" for k, (old, new) in changed.items()), flush=True)
    elif (out / "last.pt").exists() and config.verbose and main:
        print(f"note: --overwrite: the earlier run in {out} is replaced epoch by epoch")
    if main:
        atomic_write_bytes(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    elapsed = history[-1].get("elapsed", 0.0) if history else 0.0
    board = TensorBoardLogger(state, history=history) if config.tensorboard else None  # writes on rank 0 only
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            train = train_steps(state, state.steps_per_epoch, progress=config.progress and main,
                                desc=f"epoch {epoch}/{config.epochs}")
            train = reduce_epoch_stats(train, state.device)  # under DDP: mean loss, all images, slowest rank
            check_finite_model(state.model, epoch=epoch, out=out, lr=config.lr)  # never evaluate or save nan
            val_start = time.perf_counter()
            val = evaluate_state(state, progress=config.progress and main)
            seconds = train["seconds"] + time.perf_counter() - val_start
            elapsed += seconds
            history.append(_record(epoch, train, val, seconds, elapsed))
            improved = history[-1]["val_mIoU"] > best
            best = max(best, history[-1]["val_mIoU"])
            if not main:  # only rank 0 writes, prints and calls back; the others hold the same record
                continue
            if board is not None:  # before last.pt: a kill in between re-runs the epoch, and purge_step drops it
                board(history[-1], history)
            _save(state, out, history, best, resumes, improved)
            if config.verbose:
                print(_summary(history[-1], config.epochs, improved), flush=True)
            for callback in callbacks:
                callback(history[-1], history)
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else 0
        if main:
            print(f"\ninterrupted during epoch {done + 1}; {out / 'last.pt'} holds epoch {done}. Continue with: "
                  f"python -m seglab train ... --out {out} --resume", flush=True)
        raise
    finally:
        if board is not None:
            board.close()
    if state.dist.enabled:
        torch.distributed.barrier()  # rank 0 has written the last epoch's files when fit returns on any rank
    return history


def _record(epoch: int, train: dict, val: dict, seconds: float, elapsed: float) -> dict:
    return {"epoch": epoch, "train_loss": train["train_loss"], "lr": train["lr"], "val_loss": val["loss"],
            "val_mIoU": val["mIoU"], "val_iou_per_class": val["iou_per_class"],
            "val_pixel_accuracy": val["pixel_accuracy"], "val_mean_class_accuracy": val["mean_class_accuracy"],
            "val_fw_iou": val["fw_iou"], "seconds": seconds, "elapsed": elapsed,
            "images_per_s": train["images_per_s"]}  # fmt: skip


def _save(state: RunState, out: Path, history: list[dict], best: float, resumes: list[dict], improved: bool) -> None:
    """``best.pt`` (when improved), then ``last.pt`` (last: resume never skips a best.pt), history, curves."""
    checkpoint = {
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict() if state.scaler else None,
        "epoch": history[-1]["epoch"], "history": history, "best_mIoU": best, "config": state.config.to_dict(),
        "num_classes": state.num_classes, "classes": state.classes, "colors": state.colors, "rng": rng_state(),
        "world_size": state.dist.world_size, "resumes": resumes,
    }  # fmt: skip
    if improved:
        save_checkpoint(out / "best.pt", checkpoint)
    save_checkpoint(out / "last.pt", checkpoint)
    write_history(out, history, state.classes)
    plot_curves(out, history, f"{state.config.model} on {state.config.dataset}")


def _summary(record: dict, epochs: int, improved: bool) -> str:
    return (f"epoch {record['epoch']:3d}/{epochs}  train_loss {record['train_loss']:.4f}  "
            f"val_loss {record['val_loss']:.4f}  val_mIoU {record['val_mIoU']:.4f}  "
            f"pixel_acc {record['val_pixel_accuracy']:.4f}  lr {record['lr']:.2e}  "
            f"{record['seconds']:.1f} s  {record['images_per_s']:.1f} img/s" + ("  *best" if improved else ""))


@contextlib.contextmanager
def _global_modes_restored():
    """Restore torch's process-wide deterministic-algorithms and cudnn.benchmark modes (``prepare`` sets them)."""
    modes = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(modes[0], warn_only=modes[1])
        torch.backends.cudnn.benchmark = modes[2]
