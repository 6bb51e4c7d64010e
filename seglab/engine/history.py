"""The history of a run: ``history.json`` (full records), ``history.csv`` (one row per epoch), ``curves.png``.

One record per epoch, as ``fit`` appends them (keys in ``seglab.engine.run.fit``). Every file is written
atomically (``seglab.files.atomic_write_bytes``). ``plot_curves`` is the engine's only use of the
teaching layer (``seglab.viz.plot_history``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from seglab.files import atomic_write_bytes

__all__ = ["write_history", "load_history", "plot_curves", "SCALAR_KEYS"]

#: The per-epoch numbers of ``history.csv``, in column order (then one ``iou_<class>`` column per class).
SCALAR_KEYS = ("epoch", "train_loss", "val_loss", "val_mIoU", "val_pixel_accuracy", "val_mean_class_accuracy",
               "val_fw_iou", "lr", "seconds", "images_per_s")


def write_history(out: Path, history: list[dict], classes: list[str]) -> None:
    """Write ``out/history.json`` (the records as given) and ``out/history.csv`` (scalars + per-class IoU)."""
    out = Path(out)
    atomic_write_bytes(out / "history.json", json.dumps(history, indent=1).encode())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(list(SCALAR_KEYS) + [f"iou_{c}" for c in classes])
    for record in history:
        writer.writerow([record.get(k) for k in SCALAR_KEYS] + list(record.get("val_iou_per_class", [])))
    atomic_write_bytes(out / "history.csv", text.getvalue().encode())


def plot_curves(out: Path, history: list[dict], title: str) -> None:
    """Write ``out/curves.png``: loss, mIoU and learning rate per epoch (``seglab.viz.plot_history``)."""
    import matplotlib.pyplot as plt

    from seglab.viz import plot_history

    fig = plot_history(history, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(out) / "curves.png", buffer.getvalue())


def load_history(path: str | Path) -> list[dict]:
    """Read ``history.json`` (give the file or the run folder).

    Raises:
        FileNotFoundError: no history there (the message names the path).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}: point at a run folder written by seglab.engine.fit")
    return json.loads(path.read_text())
