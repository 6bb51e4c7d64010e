"""BatchNorm over the global batch of data-parallel training (SyncBatchNorm, on any device and backend).

BatchNorm statistics of one rank's few images are noisy; :func:`convert_sync_batchnorm` computes them
over the global batch: ``torch.nn.SyncBatchNorm`` on CUDA, :class:`AllReduceBatchNorm2d` (the same
arithmetic, with a differentiable all-reduce of the per-channel sums) on the CPU, where PyTorch's
SyncBatchNorm refuses to run. :func:`check_batch_for_batchnorm` refuses a batch BatchNorm cannot use.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["AllReduceBatchNorm2d", "convert_sync_batchnorm", "has_batchnorm", "check_batch_for_batchnorm"]


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
    all-reduce, so backward sums the statistics' gradients over ranks too. ``x: (N, C, H, W)`` -> same shape
    and dtype. Statistics in float32; the variance as
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
