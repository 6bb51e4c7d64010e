"""Helpers shared by the tests (imported as ``from _helpers import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn


@contextlib.contextmanager
def address_space_cap(extra_bytes: int) -> Iterator[int]:
    """Cap this process's address space at its current size + ``extra_bytes`` (RLIMIT_AS) while the block runs,
    so that a runaway allocation fails the test (MemoryError / RuntimeError) instead of the machine; yields the
    cap in bytes and restores the old limit. Skips on systems without Linux's /proc."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory cap needs Linux's RLIMIT_AS and /proc")
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * resource.getpagesize()
    old = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap if old[1] == resource.RLIM_INFINITY else min(cap, old[1]), old[1]))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-identity BatchNorm statistics and affines (in place): a BN loaded into the wrong place, or a
    missing one, changes the output, which a default BN (identity) would hide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model
