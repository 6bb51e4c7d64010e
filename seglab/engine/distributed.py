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

BatchNorm statistics of one rank's few images are noisy; :func:`convert_sync_batchnorm` computes them
over the global batch: ``torch.nn.SyncBatchNorm`` on CUDA, :class:`AllReduceBatchNorm2d` (the same
arithmetic, with a differentiable all-reduce of the per-channel sums) on the CPU, where PyTorch's
SyncBatchNorm refuses to run.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

__all__ = [
    "DistInfo", "launcher_env", "init_distributed", "shutdown", "distributed_session", "ShardSampler",
    "all_reduce_sum", "evaluate_distributed", "AllReduceBatchNorm2d", "convert_sync_batchnorm", "has_batchnorm",
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
    from seglab.engine.config import resolve_device

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


@contextlib.contextmanager
def distributed_session(device: str = "auto", backend: str = "auto", timeout: float = 600.0):
    """``with distributed_session(...) as info:`` init (:func:`init_distributed`), then always shut down.

    On an error a distributed rank prints ``rank R/W failed: ...`` to stderr (torchrun also names the
    first failed rank in its summary); SIGTERM (how torchrun stops the workers after a failure or a
    Ctrl-C) is raised as ``KeyboardInterrupt`` so ``destroy_process_group`` still runs.
    """
    info = init_distributed(device, backend, timeout)
    previous = None
    if info.enabled:
        try:
            previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        except ValueError:  # not the main thread
            previous = None
    try:
        yield info
    except BaseException as error:
        if info.enabled:
            print(f"rank {info.rank}/{info.world_size} failed: {type(error).__name__}: {error}", file=sys.stderr,
                  flush=True)
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


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over ranks of x``; backward: the gradient of ``y`` summed over ranks (every rank's loss
    depends on every rank's ``x``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every rank's batch (Ioffe & Szegedy 2015; the global
    statistics of ``torch.nn.SyncBatchNorm``), on any device and backend (Gloo on the CPU included).

    Forward: per-channel sum, sum of squares and count are summed over ranks with a differentiable
    all-reduce, so backward sums the statistics' gradients over ranks too. ``x: (N, C, H, W)`` -> same shape and dtype. Statistics in float32; the variance as
    ``E[x^2] - E[x]^2`` (PyTorch's CUDA kernel uses Welford's update: equal within float tolerance).
    Without a process group, or in eval mode, this is plain ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), float(xf.numel() // xf.shape[1]), device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])  # (2C + 1,)
        stats = _AllReduceSum.apply(stats)  # summed over ranks; differentiable
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp(min=0)  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (total / (total - 1).clamp(min=1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` computing its statistics over all ranks (weights kept).

    CUDA: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; other devices: :class:`AllReduceBatchNorm2d`.
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        if type(module) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                       module.track_running_stats).to(next(iter(module.state_dict().values())).device)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            return new
        for name, child in module.named_children():
            setattr(module, name, convert(child))
        return module

    return convert(model)


def check_batch_for_batchnorm(model: nn.Module, batch_size: int, world_size: int, sync_batchnorm: bool) -> None:
    """Fail early, with the fix, where BatchNorm would see one image per batch.

    Raises:
        ValueError: ``batch_size`` 1 per process and BatchNorm statistics over one image (no SyncBN
            across several processes): BatchNorm over a 1x1 map (DeepLab's image pooling, PSPNet's bin)
            is undefined and otherwise the statistics are one image's.
    """
    if batch_size >= 2 or not has_batchnorm(model):
        return
    if world_size > 1 and sync_batchnorm:
        return
    hint = ("keep --sync-batchnorm (the default under DDP)" if world_size > 1 else
            "or train on several processes with SyncBatchNorm (torchrun --nproc_per_node=N)")
    raise ValueError(
        f"batch size 1 per process with a BatchNorm model: BatchNorm needs at least 2 images per batch. Raise "
        f"--batch-size to 2 or more, {hint}, or use a model with GroupNorm (or without BatchNorm)"
    )
