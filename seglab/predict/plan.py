"""Which files to read and where each prediction goes, decided before anything is read or written.

``collect_inputs`` expands files, folders (their images, not recursive) and glob patterns; ``plan_outputs``
names every output (``<stem>.png``, ``<stem>_overlay.png``), renames inputs that share a stem (and says so),
and checks every destination with ``seglab.files``: no existing file without ``overwrite``, never an input or
a ``protected`` file (the checkpoint), never a symbolic link, a writable folder.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seglab.files import check_folder, check_target

__all__ = ["IMAGE_SUFFIXES", "collect_inputs", "PredictionPlan", "plan_outputs"]

#: Files taken from folders and globs (an explicitly named file is read whatever its suffix).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (their ``IMAGE_SUFFIXES`` files, sorted, not recursive) and glob patterns.

    Returns the image paths in the order given, each once (duplicates by resolved path dropped).

    Raises:
        FileNotFoundError: a path that does not exist, a folder without images, a glob matching no image.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
            found += images
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
            images = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise FileNotFoundError(f"the pattern {text!r} matches no image ({', '.join(IMAGE_SUFFIXES)})")
            found += images
        else:
            raise FileNotFoundError(f"no image, folder or glob match at {text}")
    unique, seen = [], set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


@dataclass
class PredictionPlan:
    """Where each input's outputs go: ``masks[i]`` (and ``overlays[i]`` or None) for ``inputs[i]``;
    ``notes``: what was renamed and why."""

    inputs: list[Path]
    masks: list[Path]
    overlays: list[Path | None]
    notes: list[str]


def _relative_names(paths: list[Path]) -> list[str]:
    """Paths relative to their common folder, without suffix (``a/x``, ``b/x``)."""
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [p.relative_to(common).with_suffix("").as_posix() for p in resolved]


def _groups(names: list[str]) -> list[list[int]]:
    """Indices of equal names, one list per distinct name, in order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    return list(groups.values())


def plan_outputs(
    inputs: Sequence[Path],
    out: str | os.PathLike,
    *,
    overlay: bool = False,
    overwrite: bool = False,
    protected: Sequence[str | os.PathLike] = (),
) -> PredictionPlan:
    """Decide every output path before anything is read or written.

    Names: ``out/<stem>.png``; inputs sharing a stem are named after their path relative to their
    common folder (``out/a/x.png``, ``out/b/x.png``; if that still clashes, e.g. ``x.png`` and
    ``x.jpg`` in one folder, the suffix joins the name: ``out/x_png.png``, ``out/x_jpg.png``), and
    ``notes`` says so, one line per clash with the final names. Overlays: ``<mask name>_overlay.png``.
    Every output is checked by ``seglab.files.check_target``: ``protected`` (e.g. the checkpoint) and the
    inputs are never replaced, symbolic links are refused.

    Raises:
        FileExistsError: an output already exists and ``overwrite`` is False (all listed up to 5), an output
            would replace one of the inputs or ``protected`` (never allowed, even with ``overwrite``), is a
            symbolic link, or two outputs would still share a path.
        NotADirectoryError: ``out`` exists and is not a folder. PermissionError: ``out`` is not writable.
        IsADirectoryError: a folder is in the way of an output.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: pass a folder for the predictions")
    check_folder(out, what="--out")
    inputs = list(inputs)
    names = [p.stem for p in inputs]
    clashes = [idx for idx in _groups(names) if len(idx) > 1]  # by the first name, for the notes
    for level in ("folder", "suffix"):
        for idx in _groups(names):
            if len(idx) < 2:
                continue
            if level == "folder":
                renamed = _relative_names([inputs[i] for i in idx])
            else:
                renamed = [f"{names[i]}_{inputs[i].suffix.lstrip('.').lower() or 'noext'}" for i in idx]
            for i, name in zip(idx, renamed):
                names[i] = name
    notes = [f"note: {len(idx)} inputs would all be written as {inputs[idx[0]].stem}.png; writing "
             + ", ".join(f"{inputs[i]} -> {names[i]}.png" for i in idx) for idx in clashes]
    masks = [out / f"{name}.png" for name in names]
    overlays = [out / f"{name}_overlay.png" for name in names] if overlay else [None] * len(names)
    targets = masks + [p for p in overlays if p is not None]
    seen: dict[Path, Path] = {}
    for target in targets:
        key = target.resolve()
        if key in seen:
            raise FileExistsError(f"two predictions would both be written to {target}: rename one of the inputs")
        seen[key] = target
    for target in targets:  # inputs, symlinks, folders in the way: refused even with overwrite
        check_target(target, overwrite=True, inputs=[*inputs, *protected], what="the prediction")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:  # all of them in one message
        raise FileExistsError(
            f"{len(existing)} predictions already exist (e.g. {existing[:5]}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another --out folder"
        )
    return PredictionPlan(inputs, masks, overlays, notes)
