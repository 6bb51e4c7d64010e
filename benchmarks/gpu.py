"""One command for a lent GPU: every CUDA path of seglab once, throughput against torchvision, MFU, data
pipeline, time to accuracy. Prints one table and saves it under ``benchmarks/results/``.

Usage::

    python benchmarks/gpu.py                 # on a CUDA GPU: under 8 minutes (5 of them time-to-accuracy)
    python benchmarks/gpu.py --cpu-smoke     # tiny sizes on the CPU, well under a minute: CI runs this so
                                             # the script cannot rot; its numbers mean nothing

What is measured (GPU mode; the CPU smoke runs the same code at toy sizes):

1. Training images/s and peak memory (``torch.cuda.max_memory_allocated``) at crop 513, batch 8, 21
   classes, random inputs already on the device: **seglab's** ``train_one_epoch`` (DeepLabV3-R50 at output stride 8, the
   like-for-like model, DeepLabV3+-R50, and the real-time DDRNet-23-slim / DDRNet-23 and FastFCN-R50) against **torchvision's** ``deeplabv3_resnet50`` (aux head
   on) driven by the loop of torchvision's reference script (``references/segmentation/train.py``:
   fp32, or fp16 autocast + GradScaler, ``loss.item()`` every step), same process, same batch. seglab
   rows: fp32; bf16 autocast; fp16 + GradScaler; bf16 + channels_last with cudnn.benchmark off and on;
   bf16 + channels_last + ``torch.compile``; bf16 + channels_last in ``DistributedDataParallel``
   (NCCL, world size 1). Warm-up steps first, ``torch.cuda.synchronize`` around the clock.
2. Model FLOPs per image (``FlopCounterMode``, forward; a training step ~ 3x forward) and MFU: achieved
   training FLOP/s over the dense bf16 matmul rate measured in the same run (8192^3 matmuls).
3. Data pipeline: images/s of one worker at the VOC recipe (scale 0.5-2, crop 513, flip, jitter,
   normalise) on the VOC sample images, and the workers needed to feed the fastest training row; one
   pass of a pinned-memory loader with ``non_blocking`` copies.
4. Time to accuracy: DeepLabV3+-R50 from scratch on CamVid (``../shared/data/camvid``), AdamW, bf16,
   val mIoU on the full 480x360 val images after 1, 2 and 5 minutes of training (evaluation excluded).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from seglab.engine import TrainConfig, build_loaders, evaluate, train_one_epoch  # noqa: E402
from seglab.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 21


def _data_root() -> Path:
    return Path(os.environ.get("SEGLAB_DATA", REPO.parent / "shared" / "data"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


# --- 1. training throughput -----------------------------------------------------------------------------

def seglab_row(name: str, model_name: str, size: int, batch: int, steps: int, warmup: int, device, *,
               amp_dtype=None, channels_last=False, cudnn_benchmark=True, compile=False, ddp=False,
               output_stride: int | None = None, backbone: str | None = "resnet50") -> dict:
    """images/s of seglab's train_one_epoch on ``steps`` batches of random device tensors (``backbone=None``: the
    model's own, for DDRNet)."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.manual_seed(0)
    _peak_reset(device)
    extra = {} if output_stride is None else {"output_stride": output_stride}
    model = build_model(model_name, NUM_CLASSES, backbone=backbone, **extra).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
    compile_s = math.nan
    if compile:
        train_model = torch.compile(train_model)
    images = torch.randn(batch, 3, size, size, device=device)
    masks = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    kwargs = dict(device=device, amp_dtype=amp_dtype, scaler=scaler, channels_last=channels_last, log_every=10**9)
    start = time.perf_counter()
    train_one_epoch(train_model, [(images, masks)] * warmup, criterion, optimizer, **kwargs)
    _sync(device)
    if compile:
        compile_s = time.perf_counter() - start
    result = train_one_epoch(train_model, [(images, masks)] * steps, criterion, optimizer, **kwargs)
    torch.backends.cudnn.benchmark = False
    return {"name": name, "images_per_s": result["images_per_s"], "peak_GiB": _peak_gib(device),
            "compile_s": compile_s, "model": model}


def torchvision_row(name: str, size: int, batch: int, steps: int, warmup: int, device, *, amp: bool) -> dict:
    """images/s of torchvision's deeplabv3_resnet50 under the loop of its reference train.py."""
    import torchvision

    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    _peak_reset(device)
    model = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True).to(device)
    model.train()
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if amp and device.type == "cuda" else None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def criterion(inputs, target):  # references/segmentation/train.py
        losses = {k: F.cross_entropy(x, target, ignore_index=255) for k, x in inputs.items()}
        return losses["out"] + 0.5 * losses["aux"] if len(losses) > 1 else losses["out"]

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = criterion(model(images), target)
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.item()  # the reference logs every step: a host sync

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    torch.backends.cudnn.benchmark = False
    return {"name": name, "images_per_s": steps * batch / (time.perf_counter() - start), "peak_GiB": _peak_gib(device),
            "compile_s": math.nan}


def flops_per_image(model: nn.Module, size: int, device) -> float:
    """Forward FLOPs of one image (FlopCounterMode: a multiply-add = 2 FLOPs)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, size, size, device=device))
    model.train(was_training)
    return float(counter.get_total_flops())


def matmul_rate(device, n: int, repeats: int) -> float:
    """Measured dense bf16 matmul FLOP/s: ``repeats`` (n x n) @ (n x n) products."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


# --- 3. data pipeline -----------------------------------------------------------------------------------

def data_pipeline(crop: int, images: int, device, loader_workers: int) -> dict:
    """images/s of one worker (in this process) at the VOC recipe, and one pinned, non_blocking loader pass."""
    from torch.utils.data import DataLoader, Subset

    from seglab.data import build_dataset
    from seglab.transforms import train_transform

    transform = train_transform(crop, scale=(0.5, 2.0))
    dataset = build_dataset("voc", "train", root=_data_root() / "voc-samples", transform=transform)
    subset = Subset(dataset, range(min(images, len(dataset))))
    subset[0]  # first decode / import costs
    start = time.perf_counter()
    for i in range(len(subset)):
        subset[i]
    per_worker = len(subset) / (time.perf_counter() - start)
    loader = DataLoader(subset, batch_size=4, num_workers=loader_workers, pin_memory=device.type == "cuda")
    start = time.perf_counter()
    seen = 0
    for batch_images, batch_masks in loader:
        batch_images = batch_images.to(device, non_blocking=True)  # from pinned memory: an async copy
        batch_masks = batch_masks.to(device, non_blocking=True)
        seen += batch_images.shape[0]
    _sync(device)
    return {"per_worker": per_worker, "loader": seen / (time.perf_counter() - start), "loader_workers": loader_workers,
            "pinned": device.type == "cuda", "images": len(subset)}


# --- 4. time to accuracy --------------------------------------------------------------------------------

def time_to_accuracy(device, marks_s: list[float], *, backbone: str, crop: int, batch: int, val_batches,
                     max_size, workers: int) -> list[dict]:
    """val mIoU of DeepLabV3+ trained from scratch on CamVid after ``marks_s`` seconds of training."""
    from seglab.engine.build import build_model_for
    from seglab.engine.loaders import base_dataset

    config = TrainConfig(model="deeplabv3plus", backbone=backbone, dataset="camvid", data_root=str(_data_root() / "camvid"),
                         crop_size=crop, batch_size=batch, val_batch_size=4, num_workers=workers, max_size=max_size,
                         val_full_size=max_size is not None, out=tempfile.mkdtemp(prefix="seglab_gpu_bench_"))
    train_loader, val_loader = build_loaders(config, device)
    num_classes = base_dataset(train_loader.dataset).num_classes
    torch.manual_seed(0)
    model = build_model_for(config, num_classes).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    warmup = 50
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / warmup))
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None
    rows, trained_s, epoch, steps = [], 0.0, 0, 0
    marks = list(marks_s)
    while marks:
        epoch += 1
        train_loader.sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        for images, masks in train_loader:
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = criterion(model(images).float(), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
            if steps % (10 if device.type == "cuda" else 1) == 0:  # a sync every 10 steps on a GPU
                _sync(device)
                if trained_s + time.perf_counter() - start >= marks[0]:
                    break
        _sync(device)
        trained_s += time.perf_counter() - start
        if trained_s >= marks[0]:
            val = evaluate(model, val_loader, num_classes, device=device, amp_dtype=amp_dtype,
                           channels_last=channels_last, max_batches=val_batches,
                           input_max_size=max_size, pad_multiple=32)
            rows.append({"minutes": marks[0] / 60, "trained_s": trained_s, "steps": steps, "val_mIoU": val["mIoU"]})
            print(f"  time to accuracy: {trained_s:6.1f} s, {steps} steps: val mIoU {val['mIoU']:.4f}", flush=True)
            marks.pop(0)
    torch.backends.cudnn.benchmark = False
    return rows


# --- the run --------------------------------------------------------------------------------------------

def _init_world_of_one(device) -> str:
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    store = dist.HashStore() if hasattr(dist, "HashStore") else None
    if store is not None:
        dist.init_process_group(backend, store=store, rank=0, world_size=1)
    else:  # pragma: no cover
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group(backend, rank=0, world_size=1)
    return backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (CI): proves the script runs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--skip-tta", action="store_true", help="skip the 5-minute time-to-accuracy run")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("error: no CUDA GPU found: run on a GPU, or pass --cpu-smoke for the reduced CPU run", file=sys.stderr)
        return 2
    device = torch.device("cpu") if smoke else torch.device("cuda")
    if smoke:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    size, batch, steps, warmup = (64, 2, 1, 1) if smoke else (513, 8, 10, 3)
    gpu_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    began = time.perf_counter()
    print(f"benchmarks/gpu.py on {gpu_name} ({'CPU smoke: toy sizes, numbers mean nothing' if smoke else 'GPU'}); "
          f"torch {torch.__version__}; crop {size}, batch {batch}, {steps} timed steps after {warmup} warm-up", flush=True)

    half = torch.bfloat16
    fp16 = torch.float16 if device.type == "cuda" else None  # fp16 + GradScaler: a CUDA path
    backend = _init_world_of_one(device)
    rows = []
    plan = [
        ("seglab deeplabv3 R50 (OS 8) fp32", "deeplabv3", {}),
        ("seglab deeplabv3 R50 (OS 8) bf16 autocast", "deeplabv3", dict(amp_dtype=half)),
        ("seglab deeplabv3 R50 (OS 8) fp16 + GradScaler", "deeplabv3", dict(amp_dtype=fp16)) if fp16 else None,
        ("seglab deeplabv3 R50 (OS 8) bf16 + channels_last, cudnn.benchmark off", "deeplabv3",
         dict(amp_dtype=half, channels_last=True, cudnn_benchmark=False)),
        ("seglab deeplabv3 R50 (OS 8) bf16 + channels_last", "deeplabv3", dict(amp_dtype=half, channels_last=True)),
        ("seglab deeplabv3 R50 (OS 8) bf16 + channels_last + compile", "deeplabv3",
         dict(amp_dtype=half, channels_last=True, compile=True)) if not smoke else None,
        (f"seglab deeplabv3 R50 (OS 8) bf16 + channels_last, DDP {backend} world 1", "deeplabv3",
         dict(amp_dtype=half, channels_last=True, ddp=True)),
        ("seglab deeplabv3plus R50 (OS 16) fp32", "deeplabv3plus", {}),
        ("seglab deeplabv3plus R50 (OS 16) bf16 + channels_last", "deeplabv3plus", dict(amp_dtype=half, channels_last=True)),
        # real time (issue 22): DDRNet's two branches; FastFCN's JPU on an OS-32 R50 (compare with deeplabv3 OS 8)
        ("seglab ddrnet23_slim fp32", "ddrnet23_slim", dict(backbone=None)),
        ("seglab ddrnet23_slim bf16 + channels_last", "ddrnet23_slim", dict(amp_dtype=half, channels_last=True, backbone=None)),
        ("seglab ddrnet23 bf16 + channels_last", "ddrnet23", dict(amp_dtype=half, channels_last=True, backbone=None)),
        ("seglab fastfcn R50 (OS 32 + JPU) fp32", "fastfcn", {}),
        ("seglab fastfcn R50 (OS 32 + JPU) bf16 + channels_last", "fastfcn", dict(amp_dtype=half, channels_last=True)),
    ]
    flops = {}
    for entry in plan:
        if entry is None:
            continue
        name, model_name, options = entry
        if model_name == "deeplabv3":  # like torchvision's deeplabv3_resnet50: output stride 8
            options = dict(options, output_stride=8)
        row = seglab_row(name, model_name, size, batch, steps, warmup, device, **options)
        model = row.pop("model")
        if model_name not in flops:
            flops[model_name] = flops_per_image(model, size, device)
        row["flops_per_image"] = flops[model_name]
        rows.append(row)
        print(f"  {name:66s} {row['images_per_s']:8.2f} img/s", flush=True)
        del model
    import torchvision

    tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                             num_classes=NUM_CLASSES, aux_loss=True).to(device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        tv.eval()(torch.randn(1, 3, size, size, device=device))
    tv_flops = float(counter.get_total_flops())
    del tv
    for name, amp in (("torchvision deeplabv3_resnet50 (reference loop) fp32", False),
                      ("torchvision deeplabv3_resnet50 (reference loop) AMP" + (" fp16 + GradScaler" if fp16 else " bf16"),
                       True)):
        row = torchvision_row(name, size, batch, steps, warmup, device, amp=amp)
        row["flops_per_image"] = tv_flops
        rows.append(row)
        print(f"  {name:66s} {row['images_per_s']:8.2f} img/s", flush=True)
    import torch.distributed as dist

    dist.destroy_process_group()

    rate = matmul_rate(device, 512 if smoke else 8192, 5 if smoke else 50)
    for row in rows:  # a training step ~ 3x the forward FLOPs (backward = 2x forward)
        row["MFU"] = 3 * row["flops_per_image"] * row["images_per_s"] / rate

    fastest = max(r["images_per_s"] for r in rows)
    pipeline = data_pipeline(size if smoke else 513, 6 if smoke else 48, device, loader_workers=0 if smoke else 4)
    pipeline["workers_to_feed"] = math.ceil(fastest / pipeline["per_worker"])
    print(f"  data pipeline: {pipeline['per_worker']:.1f} img/s per worker", flush=True)

    tta = []
    if not args.skip_tta:
        if smoke:
            tta = time_to_accuracy(device, [1.0, 2.0, 3.0], backbone="resnet18", crop=64, batch=2, val_batches=1,
                                   max_size=120, workers=0)
        else:
            tta = time_to_accuracy(device, [60.0, 120.0, 300.0], backbone="resnet50", crop=352, batch=8,
                                   val_batches=None, max_size=None, workers=min(8, os.cpu_count() or 1))
    total = time.perf_counter() - began

    lines = [f"# benchmarks/gpu.py: {gpu_name}" + (" (CPU smoke: toy sizes, not a measurement)" if smoke else ""),
             "", f"{datetime.date.today().isoformat()}; torch {torch.__version__}; crop {size}, batch {batch}, "
             f"{NUM_CLASSES} classes; {steps} timed steps after {warmup} warm-up; baseline: torchvision "
             "deeplabv3_resnet50 under its reference training loop, same run.", "",
             f"measured dense bf16 matmul rate: {rate / 1e12:.2f} TFLOP/s", "",
             "| training step | images/s | vs torchvision fp32 | peak GiB | GFLOPs/image (fwd) | MFU | compile s |",
             "|---|---|---|---|---|---|---|"]
    baseline = next(r for r in rows if r["name"].startswith("torchvision") and "fp32" in r["name"])["images_per_s"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['images_per_s']:.2f} | {r['images_per_s'] / baseline:.2f}x | "
                     f"{'-' if math.isnan(r['peak_GiB']) else format(r['peak_GiB'], '.2f')} | {r['flops_per_image'] / 1e9:.1f} | {r['MFU']:.1%} | "
                     + (f"{r['compile_s']:.1f}" if not math.isnan(r["compile_s"]) else "-") + " |")
    lines += ["", f"data pipeline (VOC recipe: scale 0.5-2, crop {513 if not smoke else size}, flip, jitter, normalise; "
              f"{pipeline['images']} VOC sample images): {pipeline['per_worker']:.1f} images/s per worker; "
              f"{pipeline['workers_to_feed']} worker(s) feed the fastest row ({fastest:.1f} img/s); loader with "
              f"{pipeline['loader_workers']} workers, pinned={pipeline['pinned']}, non_blocking copies: "
              f"{pipeline['loader']:.1f} img/s"]
    if tta:
        lines += ["", "time to accuracy, DeepLabV3+ from scratch on CamVid" + (" (R18, toy crop)" if smoke else
                  " R50, crop 352, batch 8, AdamW 1e-3, bf16; val on the full 480x360 images") + ":", "",
                  "| training time | steps | val mIoU |", "|---|---|---|"]
        lines += [f"| {t['trained_s']:.0f} s | {t['steps']} | {t['val_mIoU']:.4f} |" for t in tta]
    lines += ["", f"total wall time {total:.0f} s"]
    table = "\n".join(lines)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_{datetime.date.today().isoformat()}_{'cpu-smoke' if smoke else 'cuda'}"
    (args.out / f"{stem}.md").write_text(table + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps({"device": gpu_name, "smoke": smoke, "rows": rows,
                                                       "matmul_bf16_flops": rate, "pipeline": pipeline, "tta": tta,
                                                       "total_s": total}, indent=1, default=float))
    print(f"saved {args.out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
