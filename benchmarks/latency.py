"""CPU inference latency of every seglab model: PyTorch eager fp32 (the baseline) vs onnxruntime, same run.

For each model of ``seglab.models.list_models()`` (default configuration, 21 classes, random weights):

- params (M): all parameters / 1e6. Parameters left all-zero by an initialisation (FCN's score layers)
  are drawn from N(0, 0.05²) so that the diff below compares non-constant logits; speed does not depend on it.
- GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward at 1×3×H×W, / 1e9. It counts a
  multiply-add as 2 FLOPs (so GFLOPs = 2 × GMACs) and only convolutions, matmuls and the like; element-wise
  ops (BN, ReLU, interpolation, softmax) are not counted.
- eager ms: ``model.eval()`` under ``torch.inference_mode()``, batch 1, fp32 NCHW.
- onnxruntime ms: the graph of ``seglab.export.export_onnx`` (torch's dynamo exporter, opset 18, onnxscript's
  optimizer), ``CPUExecutionProvider`` with all graph optimisations, as many intra-op threads as torch uses.
- speed-up: eager ms / onnxruntime ms (> 1: onnxruntime is faster).
- max abs diff: onnxruntime's logits vs PyTorch's on the timed input (the two compute the same thing).

Each latency is the median of ``--runs`` timings after ``--warmup`` untimed runs, eager and onnxruntime
interleaved so that a change of machine load hits both alike. Export time is reported apart.

Usage::

    python benchmarks/latency.py                     # every model at 512x512 (minutes per large model)
    python benchmarks/latency.py --models unet,segformer --runs 20
    python benchmarks/latency.py --quick             # 3 small models at 64x64, 1 run (CI; well under a minute)

The table is printed and saved as ``benchmarks/results/latency_<date>.md`` / ``.json`` (``--quick`` writes
nothing unless ``--out`` is given). Run it on a quiet machine: times on a shared one mean little.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from seglab.export import DEFAULT_OPSET, export_onnx  # noqa: E402
from seglab.models import build_model, list_models  # noqa: E402

NUM_CLASSES = 21
#: --quick: small configurations of three architectures (CI checks the script, not the numbers)
QUICK = {"fcn8s": {"backbone": "resnet18"}, "unet": {"base_channels": 8},
         "deeplabv3plus": {"backbone": "resnet18"}}


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward / 1e9 (FlopCounterMode: 2 per multiply-add; element-wise ops not counted)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure(name: str, kwargs: dict, size: int, runs: int, warmup: int, folder: Path) -> dict:
    import onnxruntime

    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, **kwargs).eval()
    with torch.no_grad():  # FCN zero-initialises its score layers: constant logits would make the diff say nothing
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    path = export_onnx(model, folder / f"{name}.onnx", input_size=(size, size))
    export_s = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}

    def eager():
        with torch.inference_mode():
            return model(x)

    def ort():
        return session.run(None, feed)[0]

    for _ in range(warmup):
        eager(), ort()
    times = {"eager": [], "ort": []}
    for _ in range(runs):
        for label, fn in (("eager", eager), ("ort", ort)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    diff = float((torch.from_numpy(ort()) - eager()).abs().max())
    eager_ms, ort_ms = (1000 * statistics.median(times[k]) for k in ("eager", "ort"))
    config = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default"
    row = {"model": name, "config": config, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
           "gflops": gflops(model, x), "eager_ms": eager_ms, "ort_ms": ort_ms, "speedup": eager_ms / ort_ms,
           "max_abs_diff": diff, "export_s": export_s, "onnx_MB": path.stat().st_size / 1e6}
    path.unlink()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small models at 64x64, 1 run (CI)")
    parser.add_argument("--models", default=None, help="comma-separated names (default: every model)")
    parser.add_argument("--size", type=int, default=512, help="H = W in pixels (default 512)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and runtime (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        models, size, runs, warmup = dict(QUICK), 64, 1, 1
    else:
        models, size, runs, warmup = {name: {} for name in list_models()}, args.size, args.runs, args.warmup
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = sorted(set(names) - set(list_models()))
        if unknown:
            parser.error(f"unknown models {unknown}; valid: {', '.join(list_models())}")
        models = {n: models.get(n, {}) for n in names}

    rows = []
    with tempfile.TemporaryDirectory(prefix="seglab-latency-") as folder:
        for name, kwargs in models.items():
            r = measure(name, kwargs, size, runs, warmup, Path(folder))
            rows.append(r)
            print(f"{r['model']:14s} {r['params_M']:7.2f} M  {r['gflops']:7.1f} GFLOPs  eager {r['eager_ms']:8.1f} ms  "
                  f"onnxruntime {r['ort_ms']:8.1f} ms  x{r['speedup']:.2f}  diff {r['max_abs_diff']:.1e}  "
                  f"(export {r['export_s']:.0f} s)", flush=True)

    import onnxruntime

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"onnxruntime {onnxruntime.__version__}, threads {torch.get_num_threads()}, "
               f"load average at the end {os.getloadavg()[0]:.1f}")
    lines = [f"# CPU inference latency, PyTorch eager vs onnxruntime, {dt.date.today()}", "", machine, "",
             f"batch 1, {size}x{size}, fp32, {NUM_CLASSES} classes, random weights; median of {runs} interleaved runs "
             f"after {warmup} warm-up; baseline = PyTorch eager, same run; ONNX opset {DEFAULT_OPSET} "
             "(seglab.export, dynamo exporter). GFLOPs: FlopCounterMode, 2 FLOPs per multiply-add.", "",
             "| model | config | params (M) | GFLOPs | eager (ms) | onnxruntime (ms) | speed-up | max abs diff "
             "| export (s) | .onnx (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['config']} | {r['params_M']:.2f} | {r['gflops']:.1f} | {r['eager_ms']:.1f} "
              f"| {r['ort_ms']:.1f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | {r['export_s']:.0f} "
              f"| {r['onnx_MB']:.0f} |" for r in rows]
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"latency_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "size": size, "runs": runs,
                                                         "rows": rows}, indent=1))
        print(f"saved {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
