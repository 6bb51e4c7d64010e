"""Helpers shared by the tests (imported as ``from _helpers import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import math
import time
import resource
import sys
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
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


def crf_scene(seed, h=40, w=48, k=3, noise=1.5):
    """A noisy three-region image (1, 3, H, W) float32 in [0, 255], its truth (1, H, W) int64, and noisy float64
    logits (1, K, H, W) that favour the truth (tests of seglab.crf)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(1, h, w, dtype=torch.long)
    truth[:, :, w // 2:] = 1
    truth[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 2
    colours = torch.tensor([[200.0, 40, 40], [40.0, 40, 200], [60.0, 180, 60]])
    images = (colours[truth].permute(0, 3, 1, 2) + 20 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 255)
    logits = 2 * F.one_hot(truth, k).permute(0, 3, 1, 2).double() + noise * torch.randn(1, k, h, w, generator=g,
                                                                                          dtype=torch.float64)
    return images, logits, truth


class FuzzTally:
    """The fuzz suites' bookkeeping: examples run and accepted per public name, and the rule for a refusal (a
    one-line ``ValueError`` whose message starts with one of ``arguments``, the names of the arguments)."""

    def __init__(self, arguments: tuple[str, ...]) -> None:
        self.arguments = tuple(arguments)
        self.examples = Counter()  # examples run per function
        self.accepted = Counter()  # of which returned a result (the others were refused with a ValueError)

    @contextlib.contextmanager
    def capped(self, label: str, extra_bytes: int = 3 * 2**30) -> Iterator[None]:
        """Run under ``address_space_cap(extra_bytes)``; then print the examples run and returned, and the seconds."""
        start = time.perf_counter()
        with address_space_cap(extra_bytes):
            yield
            print(f"\n{label}: {sum(self.examples.values())} examples ({sum(self.accepted.values())} returned a "
                  f"result, the others refused) in {time.perf_counter() - start:.1f} s; per function (run, returned): "
                  + ", ".join(f"{name} ({n}, {self.accepted[name]})" for name, n in self.examples.items()))

    def refused_cleanly(self, error: Exception) -> None:
        message = str(error)
        assert isinstance(error, ValueError), f"{type(error).__name__} instead of ValueError: {message}"
        assert "\n" not in message and message.startswith(self.arguments), message

    def run(self, name: str, call: Callable[[], object], check: Callable[[object], None]) -> None:
        """``call()``: its result must pass ``check``, or it must be refused cleanly."""
        self.examples[name] += 1
        try:
            result = call()
        except Exception as error:  # noqa: BLE001 - anything but a clean ValueError fails the example
            self.refused_cleanly(error)
            return
        check(result)
        self.accepted[name] += 1


def fractions(t: torch.Tensor, shape) -> None:
    """float64, of ``shape``, every value nan or in [0, 1]."""
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and tuple(t.shape) == tuple(shape), t
    assert bool((t.isnan() | ((t >= 0) & (t <= 1))).all()), t


def fraction(x: float) -> None:
    assert isinstance(x, float) and (math.isnan(x) or 0 <= x <= 1), x


def perturb_parameters(model: nn.Module, seed: int, *, scale: float = 0.02,
                       is_norm_weight: Callable[[str, torch.Tensor], bool] | None = None) -> torch.Generator:
    """Move every parameter of an oracle model off its initialisation, in place, from one seeded generator: norm
    weights to ``1 + 0.1 * N(0, 1)``, everything else by ``scale * N(0, 1)`` (so no LayerNorm is left at weight 1 /
    bias 0, and a swapped or missing tensor changes the outputs). ``is_norm_weight(name, param)``: default, a weight
    whose name holds "norm". Returns the generator, for the caller's further draws (e.g. BatchNorm statistics)."""
    is_norm_weight = is_norm_weight or (lambda name, param: "norm" in name and name.endswith("weight"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if is_norm_weight(name, param) else param + scale * noise)
    return generator
