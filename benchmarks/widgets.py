"""Redraw latency of every seglab.widgets explorer: how long after a control moves until the new
picture is in the widget (model outputs, gradients, metrics and the PNG rendering included).

Usage::

    python benchmarks/widgets.py                       # 256×256, U-Net base_channels=16, 5 repeats
    python benchmarks/widgets.py --base-channels 64    # the paper's U-Net width (slower gradients)
    python benchmarks/widgets.py --size 128 --repeats 3
    python benchmarks/widgets.py --threads 1           # steadier when other jobs share the CPU

Each row sets one control to new values ``--repeats`` times, without a display (the same code runs
in a notebook; the browser adds the PNG transfer, a few ms locally). Two columns per row:

- cold: the value was never shown before, so the explorer computes what it needs (a model forward
  for a new image, an ERF gradient for a new pixel/layer, a trimap curve);
- warm (the baseline): the value was shown before; only the figure is redrawn from the caches.
  This is also the cost of a redraw with Output + pyplot, minus pyplot's own overhead.

The target is a redraw under about 0.5 s at 256×256 on the 2-core CPU. The load average of the
machine is printed, and two reference rows (a U-Net forward pass, a one-imshow figure rendered to
PNG) are timed in the same run: on a shared machine every row scales with them.

Results: a table on stdout and ``benchmarks/results/widgets_<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from seglab import viz, widgets  # noqa: E402
from seglab.data.synthetic import SyntheticShapes  # noqa: E402
from seglab.models import build_model  # noqa: E402


def measure(explorer, control, values) -> list[float]:
    """Set ``control`` to each value in turn; return the explorer's redraw time per change (s)."""
    times = []
    for value in values:
        if control.value == value:
            continue
        control.value = value
        if explorer.error:
            raise RuntimeError(f"{type(explorer).__name__}: {explorer.error}")
        times.append(explorer.redraw_seconds)
    return times


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _simple_png(image) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=viz.DPI)
    fig.subplots().imshow(image)
    return viz.figure_to_png(fig)


def row(rows, name, control, cold, warm) -> None:
    ms = lambda ts: f"{1000 * statistics.median(ts):.0f}" if ts else "-"  # noqa: E731
    worst = max(cold + warm) if cold or warm else float("nan")
    rows.append((name, control, ms(cold), ms(warm), f"{1000 * worst:.0f}", len(cold) + len(warm)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--base-channels", type=int, default=16, help="U-Net width (default 16; paper 64)")
    parser.add_argument("--repeats", type=int, default=5, help="changes per row (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is steadier on a busy shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, n = args.size, args.repeats
    ds = SyntheticShapes("val", num_images=max(8, 2 * n + 2), image_size=size)
    items = [ds[i] for i in range(len(ds))]
    torch.manual_seed(0)
    unet = build_model("unet", ds.num_classes, base_channels=args.base_channels).eval()
    unet_noskip = build_model("unet", ds.num_classes, base_channels=args.base_channels, skip_connections=False).eval()
    rows: list[tuple] = []

    # Reference work in the same run, to read the rows on a busy machine: a U-Net forward pass and the
    # simplest figure (one imshow) rendered to PNG.
    x = widgets.model_input(items[0][0])
    with torch.no_grad():
        forward = [_timed(lambda: unet(x)) for _ in range(n)]
    rows.append(("reference", f"U-Net forward, 1×3×{size}×{size}", "-", f"{1000 * statistics.median(forward):.0f}",
                 f"{1000 * max(forward):.0f}", n))
    png = [_timed(lambda: _simple_png(items[0][0])) for _ in range(n)]
    rows.append(("reference", "one-imshow figure to PNG", "-", f"{1000 * statistics.median(png):.0f}",
                 f"{1000 * max(png):.0f}", n))

    ex = widgets.DilationExplorer((1, 2, 3))
    values = [2, 3, 4, 5, 6, 7, 8][:n]
    row(rows, "DilationExplorer", "rate 1", [], measure(ex, ex.rates[0], values))

    ex = widgets.ReceptiveFieldExplorer({"untrained": unet, "no skips": unet_noskip}, items[0][0])
    pixels = [size // 2 + 7 * (i + 1) for i in range(n)]
    cold = measure(ex, ex.row, pixels)
    ex.row.value = size // 2
    warm = measure(ex, ex.row, pixels)
    row(rows, "ReceptiveFieldExplorer", "row (output layer)", cold, warm)
    layers = [v for _, v in ex.layer.options][:-1][-n:]
    cold = measure(ex, ex.layer, layers)
    ex.layer.value = ""
    warm = measure(ex, ex.layer, layers)
    row(rows, "ReceptiveFieldExplorer", "layer", cold, warm)
    cold = measure(ex, ex.weights, ["no skips", "untrained"])
    warm = measure(ex, ex.weights, ["no skips", "untrained"] * max(1, n // 2))
    row(rows, "ReceptiveFieldExplorer", "weights", cold, warm)
    row(rows, "ReceptiveFieldExplorer", "log-scale ERF", [], measure(ex, ex.log_scale, [True, False] * max(1, n // 2)))

    image, mask = items[1]
    ex = widgets.SkipExplorer(image, mask, {"U-Net": unet, "U-Net without skips": unet_noskip}, ds.classes, ds.colors)
    row(rows, "SkipExplorer", "band width", [], measure(ex, ex.band_width, [2, 6, 10, 14, 18, 22][:n]))
    cold = measure(ex, ex.view, ["trimap curve"])
    warm = measure(ex, ex.view, ["predictions", "trimap curve"] * max(1, n // 2))
    row(rows, "SkipExplorer", "view: trimap curve", cold, warm)
    ex.view.value = "feature maps"
    row(rows, "SkipExplorer", "feature-map mode", [], measure(ex, ex.mode, ["channels", "mean_abs"] * max(1, n // 2)))

    ex = widgets.PredictionBrowser([im for im, _ in items], [m for _, m in items], model=unet, classes=ds.classes,
                                   colors=ds.colors)
    cold = measure(ex, ex.index, list(range(1, n + 1)))
    ex.index.value = 0
    warm = measure(ex, ex.index, list(range(1, n + 1)))
    row(rows, "PredictionBrowser", "image index", cold, warm)

    monitor = widgets.TrainingMonitor(classes=ds.classes)
    history, times = [], []
    for epoch in range(1, 31):
        history.append({"epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1.2 / epoch, "lr": 1e-3,
                        "val_mIoU": 0.6 * (1 - 0.9 ** epoch), "val_iou_per_class": [0.5] * 4,
                        "val_pixel_accuracy": 0.9, "seconds": 1.0, "images_per_s": 10.0})
        monitor(history[-1], history)
        times.append(monitor.redraw_seconds)
    row(rows, "TrainingMonitor", "callback per epoch (30 epochs)", [], times[-n:])

    with tempfile.TemporaryDirectory() as tmp:
        names = [f"run{i}" for i in range(4)]
        for name in names:
            (Path(tmp) / name).mkdir()
            (Path(tmp) / name / "history.json").write_text(json.dumps(history + history[:20]))
        ex = widgets.RunComparer(tmp)
        choices = [tuple(names[: k + 1]) for k in range(4)][: n] + [tuple(names[:1])]
        row(rows, "RunComparer", "run selection (50 epochs each)", [], measure(ex, ex.runs, choices))

    load = os.getloadavg()
    header = (f"seglab.widgets redraw latency, {size}×{size}, U-Net base_channels={args.base_channels}, "
              f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {load[0]:.1f} / {load[1]:.1f}")
    lines = [header, "", "| explorer | control | cold median ms | warm median ms (baseline) | max ms | changes |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(str(c) for c in r)} |" for r in rows]
    lines += ["", "cold: value never shown (computes model outputs / gradients); warm: cached, figure only. "
              "Target: < 500 ms."]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results" / f"widgets_{datetime.date.today()}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
