"""Execute notebooks in a run profile, without nbval's output comparison; print each one's time and peak memory.

nbval (the README's test command) runs every notebook in the ``smoke`` profile and compares the checked
cells with their stored outputs. Other profiles print other numbers, so they are run with this tool
instead: a notebook passes when every cell runs, which means every ``assert`` in it holds.

Usage::

    SEGLAB_PROFILE=laptop python tools/run_notebooks.py notebooks/03_fcn.ipynb notebooks/06_*.ipynb
    python tools/run_notebooks.py --profile laptop --json times.json notebooks/0[35678]_*.ipynb
    python tools/run_notebooks.py --profile laptop --save-dir /tmp/executed notebooks/08_*.ipynb  # keep the outputs
    python tools/fake_hub_cache.py /tmp/torch-home && TORCH_HOME=/tmp/torch-home \
        python tools/run_notebooks.py --profile full-dry --json full-dry.json notebooks/[0-9]*.ipynb

``full-dry`` runs the ``full`` settings (full image sizes, the real backbones, VOC) for 2 steps on a few
images (seglab/profiles.py); tools/fake_hub_cache.py writes random stand-ins for the pretrained files.

Each notebook runs in a fresh kernel with its own folder as the working directory (as in Jupyter and
nbval), and nothing is written back to the notebook. Peak memory is the kernel's peak resident set
size (each notebook runs under its own child process of this tool, which reads ``ru_maxrss`` of its
children after the kernel exits). Exit code 1 if any notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, timeout: int, save_dir: Path | None = None) -> dict:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:  # the failing cell and its traceback: keep the error and the failing line
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # without the colour codes
        arrows = [line.strip() for line in lines if line.lstrip().startswith("---->")]
        error = lines[-1] + (f" (at: {arrows[-1]})" if arrows else "")
    except Exception as exc:  # kernel died, timeout, ...
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    if save_dir is not None:  # the executed notebook, outputs and all (up to the failing cell, if one failed)
        nbformat.write(nb, save_dir / path.name)
    # the kernel is a child of this process: RUSAGE_CHILDREN holds the largest peak RSS of the children so far
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"notebook": str(path), "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib), "error": error}


def run_isolated(path: Path, timeout: int, save_dir: Path | None = None) -> dict:
    """:func:`run` in a child process, so that the peak RSS it reports is this notebook's alone."""
    save = ["--save-dir", str(save_dir)] if save_dir is not None else []
    done = subprocess.run([sys.executable, __file__, "--single", "--timeout", str(timeout), *save, str(path)],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"notebook": str(path), "seconds": 0.0, "peak_rss_mib": 0,
                "error": f"runner failed: {done.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", choices=["smoke", "laptop", "full", "full-dry"], help="sets SEGLAB_PROFILE for the kernels")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--save-dir", type=Path, help="also write each executed notebook, with its outputs, into this "
                        "existing folder (under its own name; never into notebooks/)")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # internal: one notebook, JSON out
    args = parser.parse_args(argv)
    if args.save_dir is not None:
        args.save_dir = args.save_dir.resolve()
        if not args.save_dir.is_dir():
            parser.error(f"--save-dir {str(args.save_dir)!r} is not an existing folder: create it first")
        sources = {p.resolve().parent for p in args.notebooks}
        if args.save_dir in sources:
            parser.error(f"--save-dir {str(args.save_dir)!r} holds the notebooks themselves: it would overwrite them; "
                         "pick another folder")
        names = [p.name for p in args.notebooks]
        taken = [n for n in names if os.path.lexists(args.save_dir / n)] if not args.single else []
        if taken or len(set(names)) < len(names):
            parser.error(f"--save-dir {str(args.save_dir)!r}: {', '.join(taken) or 'two notebooks of one name'} would be "
                         "overwritten; use an empty folder")
    if args.single:
        print(json.dumps(run(args.notebooks[0], args.timeout, args.save_dir)))
        return 0
    if args.profile:
        os.environ["SEGLAB_PROFILE"] = args.profile
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if os.environ.get("SEGLAB_DATA"):
        os.environ["SEGLAB_DATA"] = str(Path(os.environ["SEGLAB_DATA"]).resolve())  # kernels run elsewhere
    profile = os.environ.get("SEGLAB_PROFILE") or ("smoke" if os.environ.get("SEGLAB_FAST") == "1" else "default")
    results = []
    for path in args.notebooks:
        result = run_isolated(path, args.timeout, args.save_dir)
        results.append(result)
        status = "ok" if result["error"] is None else f"FAILED: {result['error']}"
        print(f"{path.name:45s} {profile:8s} {result['seconds']:7.1f} s  peak RSS <= {result['peak_rss_mib']:6d} MiB  "
              f"{status}", flush=True)
    total = sum(r["seconds"] for r in results)
    failed = [r for r in results if r["error"] is not None]
    print(f"{len(results)} notebooks in {total:.1f} s ({total / 60:.1f} min), {len(failed)} failed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
