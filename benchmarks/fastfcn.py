"""FastFCN's JPU against dilation, measured in one run: FLOPs, parameters and CPU latency of FastFCN (ResNet at
output stride 32 + JPU + DeepLabV3's head) and DeepLabV3 at output stride 8 (same backbone, same head).

- GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward at 1×3×H×W, / 1e9, 2 FLOPs per multiply-add
  (papers that say "GFLOPs" usually count multiply-adds: halve these), convolutions and matmuls only; split into
  backbone, JPU (FastFCN) and head (ASPP, classifier) by module.
- eager ms: ``model.eval()`` under ``torch.inference_mode()``, batch 1, fp32, random weights; the median of
  ``--runs`` timings after ``--warmup`` untimed runs, the models interleaved so that a change of machine load hits
  them alike. Threads: ``torch.get_num_threads()`` (set ``OMP_NUM_THREADS``).

The paper (Wu et al. 2019, its table of Pascal Context results with ResNet-50) reports DeepLabV3 at 15.99 FPS and
DeepLabV3+JPU at 20.67 FPS on a GPU: 1.29× faster.

Usage::

    python benchmarks/fastfcn.py                          # ResNet-50 at 512x512 (minutes on a 2-core CPU)
    python benchmarks/fastfcn.py --backbone resnet101 --size 480 --runs 10
    python benchmarks/fastfcn.py --quick                  # ResNet-18 at 64x64, 1 run: checks the script only

The table is printed and saved as ``benchmarks/results/fastfcn_<date>.md`` / ``.json`` (``--quick`` writes nothing
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from seglab.models import build_model  # noqa: E402

NUM_CLASSES = 21
PARTS = {"backbone": ("backbone",), "jpu": ("jpu",), "head": ("aspp", "classifier")}


def flops_by_part(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """GFLOPs of one forward: ``"total"`` and one entry per ``PARTS`` key (2 FLOPs per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    counts = counter.get_flop_counts()
    top = type(model).__name__

    def module_flops(name: str) -> float:
        return sum(counts.get(f"{top}.{name}", {}).values()) / 1e9

    parts = {part: sum(module_flops(m) for m in modules) for part, modules in PARTS.items()}
    parts["total"] = counter.get_total_flops() / 1e9
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", help="a ResNet (default resnet50, the paper's ablations)")
    parser.add_argument("--size", type=int, default=512, help="H = W in pixels (default 512)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="resnet18 at 64x64, 1 run (checks the script)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    backbone, size, runs, warmup = ("resnet18", 64, 1, 1) if args.quick else (args.backbone, args.size, args.runs,
                                                                               args.warmup)
    configs = {  # the baseline first
        f"DeepLabV3 {backbone} OS 8 (dilated layer3+4)": ("deeplabv3", {"output_stride": 8}),
        f"FastFCN {backbone} OS 32 + JPU (DeepLabV3 head)": ("fastfcn", {}),
    }
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    models, rows = {}, []
    for label, (name, options) in configs.items():
        torch.manual_seed(0)
        models[label] = build_model(name, NUM_CLASSES, backbone=backbone, **options).eval()
        rows.append({"model": label, "params_M": sum(p.numel() for p in models[label].parameters()) / 1e6,
                     "gflops": flops_by_part(models[label], x)})
    times = {label: [] for label in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for _ in range(runs):
            for label, model in models.items():
                start = time.perf_counter()
                model(x)
                times[label].append(time.perf_counter() - start)
    for row in rows:
        row["eager_ms"] = 1000 * statistics.median(times[row["model"]])
    base = rows[0]
    for row in rows:
        row["speedup"] = base["eager_ms"] / row["eager_ms"]
        row["flops_ratio"] = row["gflops"]["total"] / base["gflops"]["total"]

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, load average at the end {os.getloadavg()[0]:.1f}")
    lines = [f"# FastFCN (JPU) vs DeepLabV3 at output stride 8, {dt.date.today()}", "", machine, "",
             f"batch 1, {size}x{size}, fp32, {NUM_CLASSES} classes, random weights, eager PyTorch; median of {runs} "
             f"interleaved runs after {warmup} warm-up; baseline = DeepLabV3 OS 8, same run. GFLOPs: FlopCounterMode, "
             "2 FLOPs per multiply-add (halve for the papers' convention).", "",
             "| model | params (M) | GFLOPs total | backbone | JPU | head | FLOPs vs baseline | eager (ms) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['params_M']:.2f} | {r['gflops']['total']:.1f} | {r['gflops']['backbone']:.1f} | "
              f"{r['gflops']['jpu']:.1f} | {r['gflops']['head']:.1f} | {r['flops_ratio']:.2f}x | {r['eager_ms']:.0f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    table = "\n".join(lines)
    print(table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"fastfcn_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "size": size, "runs": runs, "rows": rows},
                                                        indent=1))
        print(f"saved {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
