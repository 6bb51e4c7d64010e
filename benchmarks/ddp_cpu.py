"""CPU scaling of data-parallel training: 1 vs 2 processes (torchrun, Gloo), same global batch, and the
data pipeline's images/s per worker at the VOC recipe.

Usage::

    python benchmarks/ddp_cpu.py            # U-Net-8 on the synthetic shapes, 64x64 crops, global batch 8
    python benchmarks/ddp_cpu.py --tiny     # a few batches only: proves the script runs

Rows (same run): the baseline, a plain ``python -m seglab train`` process (all cores, intra-op
threads); ``torchrun --nproc_per_node=1`` (one thread); ``torchrun --nproc_per_node=2`` (one thread
each, batch 4 per process). images/s is the training throughput of the last epoch as ``fit`` records
it (all ranks' images over the slowest rank's time). On a machine with 2 cores, 2 processes can at
best match one process using both cores through intra-op threads: DDP adds a gradient all-reduce per
step and duplicates the Python/DataLoader overhead, and it wins only where one process cannot use the
cores well (small convolutions, Python-bound steps). On a shared, loaded machine every figure is
noisy; the load average is printed with the table.

Results: a table on stdout and ``benchmarks/results/ddp_cpu_<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(prefix: list[str], batch: int, epochs: int, batches: int, threads: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="seglab_ddp_cpu_")) / "run"
    command = prefix + ["-m", "seglab", "train", "--model", "unet", "--base-channels", "8", "--crop-size", "64",
                        "--batch-size", str(batch), "--epochs", str(epochs), "--max-train-batches", str(batches),
                        "--max-val-batches", "1", "--num-workers", "0", "--device", "cpu", "--no-progress",
                        "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NO_ALBUMENTATIONS_UPDATE="1",
               MPLBACKEND="Agg")
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    history = json.loads((out / "history.json").read_text())
    return {"images_per_s": history[-1]["images_per_s"], "train_loss": history[-1]["train_loss"],
            "wall_s": time.perf_counter() - start}


def pipeline(images: int) -> dict:
    """images/s of one worker at the VOC recipe (scale 0.5-2, crop 513, flip, jitter, normalise)."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu import data_pipeline  # benchmarks/gpu.py

    torch.set_num_threads(1)
    return data_pipeline(513, images, torch.device("cpu"), loader_workers=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    epochs, batches = (1, 2) if args.tiny else (2, 12)
    cores = len(os.sched_getaffinity(0))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    rows = [
        (f"baseline: 1 plain process, {cores} threads, batch 8", _run([sys.executable], 8, epochs, batches, cores)),
        ("torchrun 1 process x 1 thread, batch 8", _run(torchrun + ["--nproc_per_node=1"], 8, epochs, batches, 1)),
        ("torchrun 2 processes x 1 thread, batch 4 each (global 8)",
         _run(torchrun + ["--nproc_per_node=2"], 4, epochs, 2 * batches // 2, 1)),
    ]
    pipe = pipeline(6 if args.tiny else 24)
    load = os.getloadavg()
    base = rows[0][1]["images_per_s"]
    lines = [f"# CPU data-parallel scaling ({datetime.date.today().isoformat()})", "",
             f"{cores} cores; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) during the run"
             + ("; --tiny: a proof that the script runs, not a measurement" if args.tiny else ""), "",
             "U-Net-8, synthetic shapes, crop 64, global batch 8, images/s of the last epoch:", "",
             "| run | images/s | vs baseline | wall s |", "|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f}x | {r['wall_s']:.0f} |")
    lines += ["", f"data pipeline, VOC recipe (scale 0.5-2, crop 513, flip, jitter, normalise), {pipe['images']} VOC "
              f"sample images: {pipe['per_worker']:.1f} images/s per worker (in-process); a DataLoader with 2 workers: "
              f"{pipe['loader']:.1f} images/s"]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ddp_cpu_{datetime.date.today().isoformat()}{'_tiny' if args.tiny else ''}.md"
    path.write_text(table + "\n")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
