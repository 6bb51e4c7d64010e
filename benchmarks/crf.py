"""Dense CRF on CamVid: seglab's bilateral grid ("fast"), seglab's permutohedral lattice ("lattice") and
pydensecrf2, in the same run: seconds, peak resident memory, labels against pydensecrf2's.

Five CamVid val images at their 480x360, K = 11 unaries, one thread, pydensecrf's default parameters (seglab's
defaults: smoothness sxy=3, w=3; appearance sxy=80, srgb=13, w=10; 5 mean-field iterations, symmetric
normalisation). The unaries are a simple stand-in for a network's: a softened one-hot of the ground truth
plus noise, ``logits = 2 onehot(truth) + 1.5 N(0, 1)`` (seeded; void pixels get noise only), so that the CRF
has work to do (it changes about a third of the labels). Each method runs on each image in turn (interleaved,
so that a change of machine load hits all of them alike); a time is the median of ``--repeats`` runs per image
(the grid, 15-20 times slower, runs once), and the table gives the mean over the images and the ratio to
pydensecrf2's time on the same images. Peak memory: the growth of the resident set during one call on the
first image, each method in a fresh process (in one process, memory freed by the method before would be reused
and hide the peak; Linux ``VmHWM`` reset before the call, else ``ru_maxrss``). Agreement: the share of pixels
whose label equals pydensecrf2's (min and mean over images); ``vs truth``: pixel accuracy against the
annotation (void ignored).

Usage::

    python benchmarks/crf.py                 # the table (about a minute on a quiet 2-core CPU)
    python benchmarks/crf.py --quick         # one image shrunk to 120x90, every method once (CI runs this)

pydensecrf2 is optional (``pip install pydensecrf2==1.1``: it builds from its sdist with a C++ compiler); without
it its row says so and there is no ratio. Without CamVid (``SEGLAB_DATA``) synthetic scenes stand in. The table
is printed and saved as ``benchmarks/results/crf_<date>.md`` / ``.json`` (``--quick`` writes nothing unless
``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread, pydensecrf's (it is single-threaded) and torch's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seglab.crf import dense_crf  # noqa: E402

NUM_CLASSES = 11
METHODS = ("seglab grid (fast)", "seglab lattice", "pydensecrf2")


def load_images(count: int, size: tuple[int, int] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` CamVid val images spread over the split (name, (H, W, 3) uint8 RGB, (H, W) int64 truth with
    void = 255), shrunk to ``size`` (H, W) if given; synthetic scenes when CamVid is not there."""
    root = Path(os.environ.get("SEGLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "camvid"
    if (root / "val").is_dir():
        from PIL import Image

        names = sorted(os.listdir(root / "val"))
        picked = [names[i * len(names) // count] for i in range(count)]
        out = []
        for name in picked:
            rgb, truth = Image.open(root / "val" / name).convert("RGB"), Image.open(root / "valannot" / name)
            if size is not None:
                rgb = rgb.resize(size[::-1], Image.BILINEAR)
                truth = truth.resize(size[::-1], Image.NEAREST)
            truth = np.array(truth).astype(np.int64)
            truth[truth == 11] = 255
            out.append((name, np.array(rgb), truth))
        return out
    h, w = size or (360, 480)
    g = np.random.default_rng(0)
    out = []
    for index in range(count):  # blocks of flat colour with noise, one class each
        truth = np.zeros((h, w), dtype=np.int64)
        for label in range(1, 6):
            y, x = g.integers(0, h // 2), g.integers(0, w // 2)
            truth[y:y + h // 3, x:x + w // 3] = (label + index) % NUM_CLASSES
        colours = g.integers(0, 256, (NUM_CLASSES, 3))
        rgb = np.clip(colours[truth] + g.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append((f"synthetic-{index}", rgb, truth))
    return out


def unary_logits(truth: np.ndarray, seed: int) -> torch.Tensor:
    """``(1, K, H, W)`` float32: ``2 onehot(truth) + 1.5 N(0, 1)``, void pixels noise only."""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(truth).clamp(max=NUM_CLASSES), NUM_CLASSES + 1)
    onehot = onehot[..., :NUM_CLASSES].permute(2, 0, 1)[None].float()  # (1, K, H, W)
    return 2 * onehot + 1.5 * torch.randn(onehot.shape, generator=g)


def run_pydensecrf(logits: torch.Tensor, rgb: np.ndarray) -> np.ndarray:
    import pydensecrf.densecrf as densecrf

    _, k, h, w = logits.shape
    crf = densecrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-torch.log_softmax(logits[0], 0).reshape(k, -1).numpy()))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(rgb), compat=10)
    return np.asarray(crf.inference(5)).reshape(k, h, w).argmax(0)


def run_seglab(method: str):
    def run(logits: torch.Tensor, rgb: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        return dense_crf(logits, images, method=method)[0].argmax(0).numpy()
    return run


def _status(field: str) -> int | None:
    try:
        match = re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return None if match is None else int(match.group(1)) * 1024


def timed(fn, *args) -> tuple[float, int, np.ndarray]:
    """Seconds, peak resident-memory growth (bytes) and the result of one call."""
    rss = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        exact_peak = rss is not None
    except OSError:
        exact_peak, rss = False, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, max(0, peak - rss), result


def peak_in_fresh_process(method: str, size: tuple[int, int] | None) -> int:
    """Peak resident-memory growth (bytes) of one call of ``method`` on the first image, in a child process."""
    command = [sys.executable, __file__, "--_peak-child", method] + (["--quick"] if size is not None else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"the memory measurement of {method} failed: {result.stderr[-2000:]}")
    return int(result.stdout.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one image at 120x90, every method once (CI)")
    parser.add_argument("--images", type=int, default=5, help="CamVid val images (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image of lattice and pydensecrf2")
    parser.add_argument("--no-grid", action="store_true", help="skip the (slow) bilateral grid")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--_peak-child", dest="peak_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    count, size, repeats = (1, (90, 120), 1) if args.quick else (args.images, None, args.repeats)
    runners = {"seglab grid (fast)": run_seglab("fast"), "seglab lattice": run_seglab("lattice"),
               "pydensecrf2": run_pydensecrf}  # fmt: skip
    if args.peak_child:  # one call in this fresh process, after a warm-up on a 16x16 crop
        _, rgb, truth = load_images(count, size)[0]
        runners[args.peak_child](unary_logits(truth[:16, :16], 0), np.ascontiguousarray(rgb[:16, :16]))
        print(timed(runners[args.peak_child], unary_logits(truth, 0), rgb)[1])
        return 0
    try:
        import pydensecrf.densecrf  # noqa: F401

        have_pydensecrf = True
    except ImportError:
        have_pydensecrf = False
        print("pydensecrf2 is not installed (pip install pydensecrf2==1.1): its row is left empty")
    methods = [m for m in METHODS if (m != "pydensecrf2" or have_pydensecrf) and not (args.no_grid and "grid" in m)]
    images = load_images(count, size)
    warm = images[0]
    for method in methods:  # libraries and kernels loaded once, outside the measurements
        runners[method](unary_logits(warm[2][:16, :16], 0), np.ascontiguousarray(warm[1][:16, :16]))
    per_image = []
    for index, (name, rgb, truth) in enumerate(images):
        logits = unary_logits(truth, index)
        record = {"image": name, "size": list(rgb.shape[:2]), "seconds": {}, "labels": {}}
        for _ in range(repeats):
            for method in methods:  # interleaved
                if "grid" in method and method in record["labels"]:
                    continue  # the grid once
                seconds, _, labels = timed(runners[method], logits, rgb)
                record["seconds"].setdefault(method, []).append(seconds)
                record["labels"][method] = labels
        valid = truth != 255
        record["agreement"] = {m: float((record["labels"][m] == record["labels"]["pydensecrf2"]).mean())
                               for m in methods} if have_pydensecrf else {}  # fmt: skip
        record["accuracy"] = {m: float((record["labels"][m] == truth)[valid].mean()) for m in methods}
        record["accuracy"]["unaries"] = float((logits[0].argmax(0).numpy() == truth)[valid].mean())
        record["median_s"] = {m: statistics.median(t) for m, t in record["seconds"].items()}
        del record["labels"]
        per_image.append(record)
        print(f"{name}: " + "  ".join(f"{m} {record['median_s'][m]:.2f} s" for m in methods)
              + ("  agreement with pydensecrf2: " + ", ".join(f"{m} {100 * record['agreement'][m]:.2f} %"
                                                             for m in methods if m != "pydensecrf2")
                 if have_pydensecrf else ""), flush=True)  # fmt: skip

    peaks = {method: peak_in_fresh_process(method, size) for method in methods}
    rows = []
    for method in methods:
        seconds = [r["median_s"][method] for r in per_image]
        row = {"method": method, "seconds": statistics.mean(seconds),
               "peak_MiB": peaks[method] / 2**20,
               "peak_bytes_per_pixel": peaks[method] / math.prod(per_image[0]["size"]),
               "accuracy": statistics.mean(r["accuracy"][method] for r in per_image)}  # fmt: skip
        if have_pydensecrf:
            reference = [r["median_s"]["pydensecrf2"] for r in per_image]
            row["ratio"] = statistics.mean(s / p for s, p in zip(seconds, reference))
            row["agreement_min"] = min(r["agreement"][method] for r in per_image)
            row["agreement_mean"] = statistics.mean(r["agreement"][method] for r in per_image)
        rows.append(row)
    h, w = per_image[0]["size"]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, load average at the end {os.getloadavg()[0]:.1f}")
    source = "CamVid val" if not per_image[0]["image"].startswith("synthetic") else "synthetic scenes"
    unaries = statistics.mean(r["accuracy"]["unaries"] for r in per_image)
    lines = [f"# Dense CRF: seglab vs pydensecrf2, {dt.date.today()}", "", machine, "",
             f"{len(per_image)} {source} images at {w}x{h}, K = {NUM_CLASSES}, unaries 2 onehot(truth) + 1.5 N(0, 1) "
             f"(pixel accuracy {100 * unaries:.1f} %), pydensecrf's default parameters, 5 iterations, one thread; "
             f"seconds: mean over the images of the median of {repeats} interleaved runs (the grid: 1); ratio: "
             "to pydensecrf2 on the same images, same run; peak: resident memory growth during one call on the first "
             "image, in a fresh process; agreement: pixels whose label equals pydensecrf2's (min / mean over images); "
             "vs truth: pixel accuracy (void ignored).", "",
             "| method | seconds | x pydensecrf2 | peak RSS (MiB) | bytes / pixel | agreement min (%) "
             "| agreement mean (%) | vs truth (%) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        agree = (f"{100 * r['agreement_min']:.2f} | {100 * r['agreement_mean']:.2f}" if "agreement_min" in r
                 else "- | -")  # fmt: skip
        lines.append(f"| {r['method']} | {r['seconds']:.3f} | {ratio} | {r['peak_MiB']:.0f} "
                     f"| {r['peak_bytes_per_pixel']:.0f} | {agree} | {100 * r['accuracy']:.1f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"crf_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "repeats": repeats, "rows": rows,
                                                         "images": per_image}, indent=1))  # fmt: skip
        print(f"saved {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
