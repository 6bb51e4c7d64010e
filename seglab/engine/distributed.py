"""Data-parallel training with ``torch.distributed``: process group, sharding, SyncBatchNorm, exact evaluation.

Launched by ``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, SLURM's
``srun`` included)::

    torchrun --nproc_per_node=4 -m seglab train --model deeplabv3plus --batch-size 4   # global batch 16

Every process ("rank") holds a replica of the model (``DistributedDataParallel``), trains on its own
shard of every epoch (``DistributedSampler``), and the gradients are averaged with an all-reduce
during ``backward``, so the replicas stay identical: one step on ``world_size`` shards of ``B`` images
equals one step on ``world_size * B`` images in one process (checked in ``tests/test_distributed.py``).

Validation is *exact*: :class:`ShardSampler` gives each rank a disjoint shard (no padding with
duplicates, unlike ``DistributedSampler``), and the ``(K, K)`` int64 confusion matrices are summed
with ``all_reduce``: the counts are bit-identical to a single process scoring the whole split.

BatchNorm over the global batch (SyncBatchNorm, also on the CPU) is :mod:`seglab.engine.sync_batchnorm`;
its names are importable from here too.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from seglab.engine.sync_batchnorm import (  # re-exported: their home before seglab.engine.sync_batchnorm
    AllReduceBatchNorm2d, check_batch_for_batchnorm, convert_sync_batchnorm, has_batchnorm,
)

__all__ = [
    "DistInfo", "launcher_env", "init_distributed", "shutdown", "distributed_session", "ShardSampler",
    "all_reduce_sum", "reduce_epoch_stats", "evaluate_distributed", "AllReduceBatchNorm2d", "convert_sync_batchnorm",
    "has_batchnorm",
    "check_batch_for_batchnorm",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, ``backend``
    (``"nccl"`` / ``"gloo"``; ``None`` = not distributed) and the ``device`` it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0


def launcher_env(environ: dict | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` set by the launcher, or ``None`` for a plain single process.

    torchrun (and ``torch.distributed.launch``) set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; SLURM's
    ``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` (used when ``SLURM_NTASKS`` > 1 and
    no torchrun variables are set; ``MASTER_ADDR``/``MASTER_PORT`` must then be exported by the job script).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
    return None


def init_distributed(device: str = "auto", backend: str = "auto", timeout: float = 600.0,
                     environ: dict | None = None) -> DistInfo:
    """Join the process group the launcher describes (:func:`launcher_env`); a no-op without a launcher.

    Args:
        device: ``TrainConfig.device``. ``"auto"``/``"cuda"``: rank ``r`` trains on ``cuda:LOCAL_RANK``
            when CUDA is available; ``"cpu"``: the CPU.
        backend: ``"auto"`` (NCCL on CUDA, Gloo on the CPU), ``"nccl"`` or ``"gloo"``.
        timeout: seconds a collective waits for the other ranks before it fails (a dead or stuck rank
            then raises an error in the others instead of hanging them forever).

    Raises:
        ValueError: unknown backend; NCCL asked for without CUDA; more processes per node than GPUs;
            SLURM without ``MASTER_ADDR``.
    """
    from seglab.engine.device import resolve_device

    env = os.environ if environ is None else environ
    if backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"dist_backend must be 'auto', 'nccl' or 'gloo', got {backend!r}")
    if timeout <= 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {timeout}")
    launched = launcher_env(env)
    if launched is None:
        return DistInfo(device=resolve_device(device))
    rank, world_size, local_rank = launched
    use_cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if backend == "nccl" and not use_cuda:
        raise ValueError("dist_backend 'nccl' needs CUDA GPUs, but " + (
            "--device cpu was given" if device == "cpu" else "no CUDA device is available") +
            ": use --dist-backend gloo (or auto) to train on the CPU")
    if use_cuda:
        gpus = torch.cuda.device_count()
        local_world = int(env.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if max(local_world, local_rank + 1) > gpus:
            raise ValueError(f"{max(local_world, local_rank + 1)} processes on this node but only {gpus} CUDA "
                             f"GPU(s): use torchrun --nproc_per_node={gpus} (one process per GPU)")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = resolve_device(device if device != "auto" else "cpu")
    chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
    if "MASTER_ADDR" not in env and "RANK" not in env:
        raise ValueError("SLURM launch without MASTER_ADDR/MASTER_PORT: export them in the job script "
                         "(e.g. the first host of $SLURM_NODELIST and a free port), or launch with torchrun")
    if not dist.is_initialized():
        dist.init_process_group(chosen, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout), init_method="env://")
    return DistInfo(rank, world_size, local_rank, chosen, dev)


def shutdown() -> None:
    """``destroy_process_group`` if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _terminate_as_interrupt(signum, frame):  # torchrun stops its workers with SIGTERM on Ctrl-C
    raise KeyboardInterrupt(f"signal {signum}")


#: How a collective fails when another rank is stuck (Gloo's and NCCL's wording). A rank that died closes its
#: connections instead ("Connection closed by peer"): torchrun names that one itself (its exit code).
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)
_sessions = itertools.count()  # every rank opens its sessions in the same order: a shared key per session


def _name_silent_ranks(error: BaseException, info: DistInfo, timeout: float, session: int) -> BaseException | None:
    """After a collective timed out: every rank that is still alive checks in (the process group's store);
    rank 0 waits up to ``min(timeout, 30)`` seconds for them and returns an error naming the ranks that
    did not answer (stopped, hung or dead), with the ``--dist-timeout`` advice. ``None`` where that does
    not apply (another kind of error, every rank answered, no store)."""
    if not (isinstance(error, RuntimeError) and _TIMED_OUT.search(str(error))):
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"seglab/session{session}/failed/{info.rank}", "1")
    except Exception:  # no store to talk through: keep the original error
        return None
    if not info.is_main:
        return None
    silent, deadline = [], time.monotonic() + min(timeout, 30.0)
    for rank in range(1, info.world_size):
        try:
            wait = datetime.timedelta(seconds=max(0.1, deadline - time.monotonic()))
            store.wait([f"seglab/session{session}/failed/{rank}"], wait)
        except Exception:
            silent.append(rank)
    if not silent:
        return None
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    names = ", ".join(str(r) for r in silent)
    return RuntimeError(
        f"rank {names} of {info.world_size} did not answer within the {timeout:g} s timeout: that process stopped, "
        f"hung or was killed (out of memory, a debugger, SIGSTOP?); check it. If it is only slow (more data, a slow "
        f"disk, a long first epoch), raise --dist-timeout (now {timeout:g} s). ({type(error).__name__}: {first_line})"
    )


@contextlib.contextmanager
def distributed_session(device: str = "auto", backend: str = "auto", timeout: float = 600.0):
    """``with distributed_session(...) as info:`` init (:func:`init_distributed`), then always shut down.

    On an error a distributed rank prints ``rank R/W failed: ...`` to stderr (torchrun also names the
    first failed rank in its summary, which is the first to time out, not the one that stopped); when a
    collective timed out, the ranks still alive check in, and rank 0 raises an error naming
    the ranks that did not, with the ``--dist-timeout`` advice. SIGTERM (how torchrun stops the workers
    after a failure or a Ctrl-C) is raised as ``KeyboardInterrupt`` so ``destroy_process_group`` still runs.
    """
    info = init_distributed(device, backend, timeout)
    session = next(_sessions)
    previous = None
    if info.enabled:
        try:
            previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        except ValueError:  # not the main thread
            previous = None
    try:
        yield info
    except BaseException as error:
        if not info.enabled:
            raise
        named = _name_silent_ranks(error, info, timeout, session)
        shown = named or error
        print(f"rank {info.rank}/{info.world_size} failed: {type(shown).__name__}: {shown}", file=sys.stderr,
              flush=True)
        if named is not None:
            raise named from error
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if info.enabled:
            shutdown()


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``length`` items: disjoint shards whose
    union is every index exactly once (shards differ in length by at most one; nothing is padded)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks (in place; the tensor itself when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_epoch_stats(train: dict, device: torch.device | str) -> dict:
    """The training numbers of one epoch over every rank (each ran as many batches): ``train_loss`` the mean
    over ranks, ``images`` the sum, ``seconds`` the slowest rank's, ``images_per_s`` from those two.

    ``train``: a result of ``seglab.engine.train_steps`` (or ``train_one_epoch``) on this rank; returned
    as is without a process group. Tensors on ``device``: NCCL reduces device tensors only.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return train
    world = dist.get_world_size()
    totals = all_reduce_sum(torch.tensor([train["train_loss"], train["images"]], dtype=torch.float64, device=device))
    slowest = torch.tensor([train["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return dict(train, train_loss=totals[0].item() / world, images=int(totals[1].item()), seconds=slowest.item(),
                images_per_s=totals[1].item() / max(slowest.item(), 1e-9))


def evaluate_distributed(model: nn.Module, loader, num_classes: int, **kwargs) -> dict:
    """:func:`seglab.engine.evaluate` on this rank's shard, then the confusion matrices summed over ranks.

    ``loader`` must iterate a disjoint shard (``ShardSampler``). The result has the keys of ``evaluate``;
    ``confusion_matrix`` ((K, K) int64) and every metric derived from it are those of the whole split,
    bit-identical to one process; ``"loss"`` is the mean of the per-batch losses over all ranks.
    Without a process group this is ``evaluate``.
    """
    from seglab.engine.loop import evaluate
    from seglab.metrics import ConfusionMatrix

    result = evaluate(model, loader, num_classes, **kwargs)
    if not (dist.is_available() and dist.is_initialized()):
        return result
    device = torch.device(kwargs.get("device", "cpu"))
    matrix = all_reduce_sum(result["confusion_matrix"].to(device))
    batches = len(loader) if kwargs.get("max_batches") is None else min(len(loader), kwargs["max_batches"])
    loss = 0.0 if math.isnan(result["loss"]) else result["loss"] * batches
    totals = all_reduce_sum(torch.tensor([loss, float(batches)], dtype=torch.float64, device=device)).tolist()
    cm = ConfusionMatrix(num_classes, ignore_index=kwargs.get("ignore_index", 255))
    cm.matrix = matrix.cpu()
    merged = cm.compute()
    merged["loss"] = totals[0] / totals[1] if (not math.isnan(result["loss"]) and totals[1]) else math.nan
    merged["confusion_matrix"] = cm.matrix
    return merged
