"""Where and how fast a run computes: device, precision (autocast dtype), memory format, loader workers.

Precision and memory format (``TrainConfig.amp``, ``TrainConfig.channels_last``) default to ``"auto"``:
the fast choice measured on each kind of device (``benchmarks/cpu_speed.py``; results in
``benchmarks/results/``):

- CUDA: bf16 autocast where the GPU supports it, else fp16 with a gradient scaler; channels_last.
- CPU with a native bf16 path (x86 AVX512-BF16 or AMX, detected from the CPU flags): bf16 autocast
  (oneDNN) and channels_last. On this project's 2-core AMD EPYC (AVX512-BF16), against fp32 NCHW:
  bf16 2.0-2.8x, bf16 + channels_last 2.6-3.5x (U-Net-16, DeepLabV3+-R18, crops 160 and 240).
- other CPUs and Apple MPS: fp32, NCHW (no measured speed-up).

``"on"`` forces 16-bit / channels_last (bf16 on a CPU even without a fast path, slow but useful to
check numerics), ``"off"`` forces fp32 / NCHW.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

__all__ = ["resolve_device", "check_device_name", "resolve_amp_dtype", "resolve_channels_last", "cpu_has_fast_bf16",
           "default_num_workers", "DEVICE_CHOICES"]

#: What ``--device`` accepts (``cuda:N`` picks GPU ``N``).
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` as named.

    Checked before any work or file: every other device type (``"meta"``, ``"xpu"``, ...) is refused,
    since seglab's loops, autocast and checkpoints are written for these three.

    Raises:
        ValueError: not a device string, a device type other than cpu / cuda / mps, or ``cuda:N`` with
            ``N`` not below the number of GPUs (one line naming ``--device``, the value and the choices).
        RuntimeError: CUDA / MPS asked for but not available on this machine.
    """
    if check_device_name(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available: use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")  # fmt: skip
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {device!r} asked for but MPS is not available: use --device cpu (or auto)")
    return dev


def check_device_name(device: str | torch.device) -> str | torch.device:
    """Return ``device`` if it names a device seglab runs on (whether it is present is not checked).

    Raises:
        ValueError: not a device string, or a device type other than cpu / cuda / mps.
    """
    if isinstance(device, str) and device == "auto":
        return device
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device: use {DEVICE_CHOICES}") from None
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device!r} is not supported (seglab runs on cpu, cuda and mps): use "
                         f"{DEVICE_CHOICES}")  # fmt: skip
    return device


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has a native bf16 matrix path that oneDNN uses (x86 AVX512-BF16 or AMX-BF16).

    Read from the CPU flags in ``/proc/cpuinfo`` (Linux); ``False`` elsewhere, where no speed-up was measured.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def resolve_amp_dtype(amp: str | bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (``"auto"``/``"on"``/``"off"``) on ``device``; ``None`` = fp32."""
    amp = {True: "auto", False: "off"}.get(amp, amp)
    if amp == "off" or device.type == "mps":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp == "on" or cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def resolve_channels_last(channels_last: str | bool, device: torch.device) -> bool:
    """Whether to use channels_last for ``channels_last`` (``"auto"``/``"on"``/``"off"``) on ``device``."""
    channels_last = {True: "auto", False: "off"}.get(channels_last, channels_last)
    auto = device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    return channels_last == "on" or (channels_last == "auto" and auto)


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers when ``num_workers`` is ``None``.

    CUDA: one per core, at most 8 (the GPU waits otherwise). CPU: the model trains on every core, so a
    worker only helps when cores are left over: ``cores // 4`` (0 on a 2-core laptop, where 2 workers were
    measured slower: ``benchmarks/cpu_speed.py``).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(8, cores)
    return cores // 4
