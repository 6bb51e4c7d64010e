"""Training images/s on the CPU: what each speed lever buys, against fp32 NCHW in the same run.

Models: U-Net (base 16) and DeepLabV3+ on ResNet-18 (output stride 16), at 160x160 and 240x240 crops,
batch 8, AdamW, cross-entropy. Compute rows time the training step on a batch already in memory:

- ``fp32 NCHW``          the baseline;
- ``fp32 channels_last`` model and inputs in NHWC;
- ``bf16 NCHW``          ``torch.autocast("cpu", torch.bfloat16)`` (oneDNN: AVX512-BF16 / AMX where present);
- ``bf16 channels_last``;
- ``bf16 + compile``     ``torch.compile`` of the model (inductor), compile time excluded and reported apart
  (at the first crop size only: compiling costs minutes per model and shape on a small CPU).

Data rows run the real loop (``seglab.engine.build_loaders`` on CamVid when ``SEGLAB_DATA`` holds it, else the
synthetic shapes at the crop size) with bf16, ``num_workers`` 0 and 2, so data loading is included.

Usage::

    python benchmarks/cpu_speed.py            # the table (about 10 minutes on a 2-core CPU)
    python benchmarks/cpu_speed.py --quick    # every path once, U-Net only, tiny sizes (CI runs this)

The table is printed and saved as ``benchmarks/results/cpu_speed_<date>.md`` / ``.json`` (``--quick`` writes
nothing unless ``--out`` is given). Interleaved repeats: each row is the median of ``--repeats`` timings,
the rows of one model/size taken in turn so that a change of machine load hits all of them alike.
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
import torch.nn.functional as F  # noqa: E402

from seglab.engine import TrainConfig, build_loaders, cpu_has_fast_bf16, train_one_epoch  # noqa: E402
from seglab.losses import build_loss  # noqa: E402
from seglab.models import build_model  # noqa: E402

MODELS = {"U-Net-16": ("unet", {"base_channels": 16}), "DeepLabV3+-R18": ("deeplabv3plus", {"backbone": "resnet18"})}
COMPUTE = {
    "fp32 NCHW": dict(dtype=None, channels_last=False, compile=False),
    "fp32 channels_last": dict(dtype=None, channels_last=True, compile=False),
    "bf16 NCHW": dict(dtype=torch.bfloat16, channels_last=False, compile=False),
    "bf16 channels_last": dict(dtype=torch.bfloat16, channels_last=True, compile=False),
    "bf16 + compile": dict(dtype=torch.bfloat16, channels_last=False, compile=True),
}


def _step_fn(model, optimizer, dtype):
    def step(images, masks):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(images).float(), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def compute_images_per_s(name: str, size: int, batch: int, steps: int, repeats: int, num_classes: int = 11,
                         compile: bool = True) -> dict:
    """images/s per compute variant (median of ``repeats`` timings of ``steps`` steps, interleaved)."""
    arch, kwargs = MODELS[name]
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size)
    masks = torch.randint(0, num_classes, (batch, size, size))
    variants = {}
    for label, v in COMPUTE.items():
        if v["compile"] and not compile:
            continue
        torch.manual_seed(0)
        model = build_model(arch, num_classes, **kwargs).train()
        x = images
        if v["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        run_model = model
        compile_s = None
        if v["compile"]:
            start = time.perf_counter()
            run_model = torch.compile(model)
            _step_fn(run_model, optimizer, v["dtype"])(x, masks)  # compiles forward and backward
            compile_s = time.perf_counter() - start
        step = _step_fn(run_model, optimizer, v["dtype"])
        step(x, masks)  # warm-up (oneDNN primitive caches)
        variants[label] = {"step": step, "x": x, "times": [], "compile_s": compile_s}
    for _ in range(repeats):
        for v in variants.values():
            start = time.perf_counter()
            for _ in range(steps):
                v["step"](v["x"], masks)
            v["times"].append(time.perf_counter() - start)
    return {label: {"images_per_s": batch * steps / statistics.median(v["times"]), "compile_s": v["compile_s"]}
            for label, v in variants.items()}


def data_images_per_s(name: str, size: int, batch: int, steps: int, workers: int, dataset: str, root) -> float:
    """images/s of the real loop (loader + bf16 training step) with ``workers`` DataLoader workers."""
    arch, kwargs = MODELS[name]
    config = TrainConfig(model=arch, dataset=dataset, data_root=root, crop_size=size, batch_size=batch,
                         num_workers=workers, device="cpu", progress=False,
                         max_size={"camvid": 360}.get(dataset), **kwargs)
    train_loader, _ = build_loaders(config, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(arch, train_loader.dataset.dataset.num_classes, **kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = build_loss("cross_entropy")
    train_loader.sampler.set_epoch(0)
    train_one_epoch(model, train_loader, criterion, optimizer, amp_dtype=torch.bfloat16, max_batches=1)  # warm-up
    result = train_one_epoch(model, train_loader, criterion, optimizer, amp_dtype=torch.bfloat16, max_batches=steps)
    return result["images_per_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every path once at tiny sizes (CI)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    sizes, steps, repeats, batch = ((32,), 1, 1, 2) if args.quick else ((160, 240), args.steps, args.repeats, args.batch_size)
    data_root = os.environ.get("SEGLAB_DATA")
    camvid = Path(data_root) / "camvid" if data_root else None
    dataset, root = ("camvid", str(camvid)) if camvid is not None and (camvid / "train").is_dir() else ("synthetic", None)

    rows = []
    for name in (list(MODELS)[:1] if args.quick else MODELS):
        for size in sizes:
            # compile only at the first size: it costs minutes per model and shape on a small CPU
            compute = compute_images_per_s(name, size, batch, steps, repeats, compile=size == sizes[0])
            base = compute["fp32 NCHW"]["images_per_s"]
            for label, r in compute.items():
                rows.append({"model": name, "size": size, "variant": label, "images_per_s": r["images_per_s"],
                             "speedup": r["images_per_s"] / base, "compile_s": r["compile_s"]})
            for workers in (0, 2):
                ips = data_images_per_s(name, size, batch, max(2, steps * 2), workers, dataset, root)
                rows.append({"model": name, "size": size, "variant": f"bf16 + {dataset} loader, workers {workers}",
                             "images_per_s": ips, "speedup": ips / base, "compile_s": None})
            for r in rows[-(len(compute) + 2):]:
                print(f"{r['model']:15s} {r['size']:4d}  {r['variant']:34s} {r['images_per_s']:7.2f} img/s  "
                      f"x{r['speedup']:.2f}" + (f"  (compile {r['compile_s']:.0f} s)" if r["compile_s"] else ""),
                      flush=True)

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, fast bf16 path detected: {cpu_has_fast_bf16()}, "
               f"load average at the end {os.getloadavg()[0]:.1f}")
    lines = [f"# CPU training speed, {dt.date.today()}", "", machine, "",
             f"batch {batch}, {steps} steps x {repeats} interleaved repeats (median); baseline = fp32 NCHW, same run",
             "", "| model | crop | variant | images/s | vs fp32 NCHW |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['size']} | {r['variant']}"
              + (f" (compile {r['compile_s']:.0f} s)" if r["compile_s"] else "")
              + f" | {r['images_per_s']:.2f} | {r['speedup']:.2f}x |" for r in rows]
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"cpu_speed_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        print(f"saved {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
