"""Normalise the workbook's notebooks before committing them.

nbval (run with ``--nbval-lax``) compares only cells marked ``# NBVAL_CHECK_OUTPUT`` that have a
stored output and an execution count. So a committed notebook keeps outputs **only** on those cells
(the deterministic ones: shapes, receptive-field numbers, metric checks) and nothing else: no
figures, no widget state, no progress bars — which also keeps the repository small.

Usage::

    python tools/normalize_notebooks.py --execute notebooks/03_fcn.ipynb   # run, then normalise
    python tools/normalize_notebooks.py notebooks/*.ipynb                  # normalise only
    python tools/normalize_notebooks.py --check notebooks/                 # exit 1 if not normalised

Executing runs the notebook in FAST mode (``SEGLAB_FAST=1``) in the current Python environment,
with its folder as the working directory, exactly as nbval does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KEEP_OUTPUT_TYPES = {"stream", "execute_result", "error"}
KEEP_CELL_METADATA = {"tags"}


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def _text_only(output) -> dict | None:
    """Keep the text of an output; drop images, html and widget views (nbval compares text/plain)."""
    if output.output_type == "stream":
        return nbformat.v4.new_output("stream", name=output.name, text=output.text)
    if output.output_type in ("execute_result", "display_data") and "text/plain" in output.get("data", {}):
        return nbformat.v4.new_output(
            "execute_result", data={"text/plain": output.data["text/plain"]},
            execution_count=output.get("execution_count"),
        )
    return None


def normalize(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip outputs and counts except on checked cells; renumber checked cells 1, 2, ...; clean metadata."""
    count = 0
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        cell.pop("id", None)
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        if is_checked(cell):
            count += 1
            cell.execution_count = count
            outputs = [o for o in (_text_only(o) for o in cell.outputs) if o is not None]
            for o in outputs:
                if "execution_count" in o:
                    o.execution_count = count
            cell.outputs = outputs
        else:
            cell.execution_count = None
            cell.outputs = []
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def execute(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    os.environ["SEGLAB_FAST"] = "1"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def _paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        paths += sorted(p.rglob("*.ipynb")) if p.is_dir() else [p]
    return [p for p in paths if ".ipynb_checkpoints" not in p.parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--execute", action="store_true", help="run each notebook (FAST mode) before normalising")
    parser.add_argument("--check", action="store_true", help="only report notebooks that are not normalised")
    args = parser.parse_args(argv)
    bad = 0
    for path in _paths(args.paths):
        original = path.read_text()
        nb = execute(path) if args.execute else nbformat.reads(original, as_version=4)
        text = dumps(normalize(nb))
        if args.check:
            if text != original:
                print(f"not normalised: {path} (run python tools/normalize_notebooks.py {path})")
                bad += 1
        elif text != original:
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
