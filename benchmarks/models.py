"""Benchmark every seglab model: parameters, GFLOPs, forward latency, training-step memory (and on CUDA,
training throughput fp32 vs bf16 autocast + channels_last), next to torchvision baselines in the same run.

Usage::

    python benchmarks/models.py                  # all rows, CPU
    python benchmarks/models.py --quick          # a small subset, 256×256 only
    python benchmarks/models.py --device cuda    # adds images/s fp32 vs bf16 + channels_last
    python benchmarks/models.py --throughput     # also measure images/s on CPU (slow)

What is measured (all with random weights and inputs; speed does not depend on the values):

- params: trainable + frozen parameters. GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` at
  1×3×256×256, FLOPs / 1e9; it counts one multiply-add as 2 FLOPs (convolutions, matmuls) and ignores
  element-wise ops (BN, ReLU, interpolation).
- forward ms: batch 1, ``model.eval()``, ``torch.inference_mode()``, median of ``--runs`` runs after one warm-up.
- train step: batch 8, 256×256, cross-entropy, SGD with momentum, one step from a fresh model (so it includes
  allocating gradients and momentum buffers). CPU: run in a fresh subprocess per model; the peak is
  Linux's VmHWM (peak resident memory, reset through /proc/self/clear_refs just before the step) minus
  the resident memory just before the step: everything the step allocates — activations, gradients,
  optimizer state, allocator overhead. CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation
  before the step (tensors only, not the caching allocator's reserve).
- images/s (CUDA, or CPU with --throughput): training steps at batch 8, 256×256 after warm-up, fp32
  versus ``torch.autocast(dtype=torch.bfloat16)`` with the model and input in ``channels_last``.

Results: a table on stdout and ``benchmarks/results/models_<date>_<device>.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seglab.models import build_model  # noqa: E402

NUM_CLASSES = 21
TRAIN_BATCH, TRAIN_SIZE = 8, 256


class _OutOnly(nn.Module):
    """torchvision segmentation models return {"out": logits}; the benchmark wants the tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _torchvision(name: str):
    return lambda: _OutOnly(getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False))


def _ours(name: str, **kwargs):
    return lambda: build_model(name, NUM_CLASSES, **kwargs)


# name: (kind, description, factory). kind: "cpu" = a configuration meant for CPU work, "paper" = the
# paper's configuration, "baseline" = torchvision's model (the same input, the same run).
ROWS = {
    "fcn32s-resnet18": ("cpu", "FCN-32s, ResNet-18", _ours("fcn32s", backbone="resnet18")),
    "fcn16s-resnet18": ("cpu", "FCN-16s, ResNet-18", _ours("fcn16s", backbone="resnet18")),
    "fcn8s-resnet18": ("cpu", "FCN-8s, ResNet-18", _ours("fcn8s", backbone="resnet18")),
    "unet-16": ("cpu", "U-Net base 16, depth 4, same+BN", _ours("unet", base_channels=16)),
    "unet-resnet18": ("cpu", "U-Net, ResNet-18 encoder", _ours("unet", backbone="resnet18")),
    "deeplabv3-resnet18-os16": ("cpu", "DeepLabV3, ResNet-18, OS 16", _ours("deeplabv3", backbone="resnet18")),
    "deeplabv3plus-resnet18-os16": ("cpu", "DeepLabV3+, ResNet-18, OS 16", _ours("deeplabv3plus", backbone="resnet18")),
    "fcn32s-vgg16": ("paper", "FCN-32s, VGG16", _ours("fcn32s")),
    "fcn16s-vgg16": ("paper", "FCN-16s, VGG16", _ours("fcn16s")),
    "fcn8s-vgg16": ("paper", "FCN-8s, VGG16", _ours("fcn8s")),
    "unet-64-valid": ("paper", "U-Net base 64, depth 4, valid, no BN (overlap-tile)",
                      _ours("unet", padding="valid", batch_norm=False)),
    "unet-64": ("paper", "U-Net base 64, depth 4, same+BN (seglab default)", _ours("unet")),
    "deeplabv3-resnet50-os8": ("paper", "DeepLabV3, ResNet-50, OS 8 (= torchvision's)",
                               _ours("deeplabv3", output_stride=8)),
    "deeplabv3-resnet50-os16": ("paper", "DeepLabV3, ResNet-50, OS 16 (seglab default)", _ours("deeplabv3")),
    "deeplabv3plus-resnet50-os16": ("paper", "DeepLabV3+, ResNet-50, OS 16", _ours("deeplabv3plus")),
    "tv-deeplabv3-resnet50": ("baseline", "torchvision deeplabv3_resnet50 (OS 8)", _torchvision("deeplabv3_resnet50")),
    "tv-fcn-resnet50": ("baseline", "torchvision fcn_resnet50 (OS 8, not the paper's FCN)", _torchvision("fcn_resnet50")),
}
QUICK = ["fcn8s-resnet18", "unet-16", "deeplabv3plus-resnet18-os16", "deeplabv3-resnet50-os8", "tv-deeplabv3-resnet50"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_gflops(model: nn.Module, size: int = 256) -> float:
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def forward_ms(model: nn.Module, device: torch.device, size: int, runs: int) -> float:
    model.eval()
    x = torch.randn(1, 3, size, size, device=device)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(runs):
            synchronize(device)
            start = time.perf_counter()
            model(x)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor,
                amp: bool = False) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), target)  # the loss in fp32 either way
    loss.backward()
    optimizer.step()


def _train_batch(device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, NUM_CLASSES, (TRAIN_BATCH, TRAIN_SIZE, TRAIN_SIZE), device=device)


def _proc_status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def train_step_memory(name: str, device: torch.device) -> dict:
    """One training step from a fresh model: {"train_step_ms", "train_peak_mib"} (see the module docstring)."""
    if device.type == "cpu":  # a fresh interpreter per model, so that earlier models leave no high-water mark
        result = subprocess.run([sys.executable, __file__, "--_memory-child", name], capture_output=True, text=True)
        if result.returncode != 0:  # e.g. killed for memory: report it, keep benchmarking the other rows
            print(f"{name}: training-step subprocess failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            return {"train_step_ms": None, "train_peak_mib": None}
        return json.loads(result.stdout.strip().splitlines()[-1])
    model = ROWS[name][2]().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = _train_batch(device)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    _train_step(model, optimizer, x, target)
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - before
    del model, optimizer, x, target
    torch.cuda.empty_cache()
    return {"train_step_ms": 1000 * elapsed, "train_peak_mib": peak / 2**20}


def _memory_child(name: str) -> None:
    model = ROWS[name][2]().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = _train_batch(torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    before = _proc_status_kib("VmRSS")
    start = time.perf_counter()
    _train_step(model, optimizer, x, target)
    elapsed = time.perf_counter() - start
    peak = _proc_status_kib("VmHWM") - before
    print(json.dumps({"train_step_ms": 1000 * elapsed, "train_peak_mib": peak / 1024}))


def train_images_per_s(name: str, device: torch.device, amp: bool, steps: int = 10, warmup: int = 3) -> float:
    """Training images/s at batch 8, 256×256: fp32 (amp=False) or bf16 autocast + channels_last (amp=True)."""
    model = ROWS[name][2]().to(device).train()
    if amp:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = _train_batch(device, channels_last=amp)
    for _ in range(warmup):
        _train_step(model, optimizer, x, target, amp)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        _train_step(model, optimizer, x, target, amp)
    synchronize(device)
    images_per_s = TRAIN_BATCH * steps / (time.perf_counter() - start)
    del model, optimizer, x, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return images_per_s


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    memory = ""
    if Path("/proc/meminfo").exists():
        memory = f", {_meminfo_gib():.0f} GiB RAM"
    text = (f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads){memory}; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


def _meminfo_gib() -> float:
    return int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) / 2**20


def benchmark(names: list[str], device: torch.device, sizes: list[int], runs: int, throughput: bool) -> list[dict]:
    rows = []
    for name in names:
        kind, description, factory = ROWS[name]
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        model = factory()
        row = {"name": name, "kind": kind, "description": description,
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gflops_256": count_gflops(model)}
        model = model.to(device)
        for size in sizes:
            row[f"forward_ms_{size}"] = forward_ms(model, device, size, runs)
        del model
        row.update(train_step_memory(name, device))
        if throughput:
            row["train_img_s_fp32"] = train_images_per_s(name, device, amp=False)
            row["train_img_s_bf16_cl"] = train_images_per_s(name, device, amp=True)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], sizes: list[int], throughput: bool) -> str:
    header = ["model", "kind", "configuration", "params (M)", "GFLOPs @256"]
    header += [f"fwd {s}² (ms)" for s in sizes] + ["train step (ms)", "train peak (MiB)"]
    if throughput:
        header += ["train img/s fp32", "train img/s bf16+CL", "speed-up"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"], row["kind"], row["description"], f"{row['params_m']:.2f}", f"{row['gflops_256']:.1f}"]
        cells += [f"{row[f'forward_ms_{s}']:.0f}" for s in sizes]
        cells += ["n/a" if row[key] is None else f"{row[key]:.0f}" for key in ("train_step_ms", "train_peak_mib")]
        if throughput:
            fp32, bf16 = row["train_img_s_fp32"], row["train_img_s_bf16_cl"]
            cells += [f"{fp32:.1f}", f"{bf16:.1f}", f"{bf16 / fp32:.2f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} at 256×256")
    parser.add_argument("--runs", type=int, default=3, help="timed forward runs per size (median reported)")
    parser.add_argument("--throughput", action="store_true", help="measure training images/s on CPU too (slow)")
    parser.add_argument("--models", nargs="+", choices=list(ROWS), help="explicit list of rows")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    names = args.models or (QUICK if args.quick else list(ROWS))
    sizes = [256] if args.quick else [256, 512]
    throughput = device.type == "cuda" or args.throughput
    machine = machine_description(device)
    started = datetime.datetime.now()
    load_before = os.getloadavg()
    rows = benchmark(names, device, sizes, args.runs, throughput)
    load = f"1-min load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    table = to_markdown(rows, sizes, throughput)
    stamp = started.strftime("%Y-%m-%d")
    title = f"# seglab.models benchmark, {stamp} ({device.type}{', quick' if args.quick else ''})"
    notes = (f"Machine: {machine}; {load} (timings are only comparable within a run on a quiet machine).\n\nGFLOPs: FlopCounterMode at 1×3×256×256, a multiply-add counted as 2 FLOPs. "
             f"Forward: batch 1, eval, inference_mode, median of {args.runs} runs after a warm-up. Train step: batch "
             f"{TRAIN_BATCH}, {TRAIN_SIZE}², cross-entropy + SGD momentum, first step of a fresh model; peak = "
             + ("VmHWM - VmRSS before the step, fresh subprocess per model (CPU)" if device.type == "cpu"
                else "torch.cuda.max_memory_allocated - allocated before the step")
             + f". {NUM_CLASSES} classes. Baselines: the rows of kind 'baseline' (torchvision), same inputs, same run.")
    markdown = f"{title}\n\n{notes}\n\n{table}\n"
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    subset = "_quick" if args.quick else "_subset" if args.models else ""
    stem = args.out / f"models_{stamp}_{device.type}{subset}"
    stem.with_suffix(".md").write_text(markdown)
    stem.with_suffix(".json").write_text(json.dumps(
        {"date": started.isoformat(timespec="seconds"), "device": device.type, "machine": machine, "load": load,
         "num_classes": NUM_CLASSES, "sizes": sizes, "runs": args.runs, "rows": rows}, indent=2))
    print(f"saved {stem}.md and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
