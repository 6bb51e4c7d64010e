"""Predict masks for image files: class-index palette PNGs at the input's full size, and optional overlays.

``python -m seglab predict CKPT INPUT... --out DIR`` calls ``predict_files``. Inputs are image files,
folders (their images, not recursive) and glob patterns (``"photos/**/*.jpg"``). Each prediction is
written as ``DIR/<stem>.png``: a palette PNG (mode "P") whose pixel values are the class indices and
whose palette holds the dataset's colours, the convention of PASCAL VOC's ``SegmentationClass``
masks, so any evaluator reads the indices and any viewer shows the colours. ``overlay=True`` also
writes ``DIR/<stem>_overlay.png`` (the colours blended over the photo).

Nothing is lost: every output path is planned and checked before the first image is read. Inputs
that share a stem (``a/x.png``, ``b/x.jpg``) get names from their folders (``DIR/a/x.png``,
``DIR/b/x.png``) and a note says so; an output that would replace an input file is refused; an
existing prediction is replaced only with ``overwrite=True``; each file is written atomically.

Inference: ``predict_image(model, image)`` -> ``(H, W) int64`` class indices at the image's full size
(``predict_batch`` for several). Images are normalised with the ImageNet statistics, shrunk so the
longer side is at most ``max_size`` (never below one pixel, so extreme aspect ratios keep their
content), padded bottom/right to a multiple of ``pad_multiple``, and the logits are cropped and
upsampled bilinearly to the full size before the argmax (the steps of ``seglab.engine.forward_resized``,
the full-size validation of ``fit``, with a work-around for a torch resize bug on 1-pixel-wide output).
``inference={...}`` passes test-time augmentation, sliding-window and CRF options to
``seglab.inference.infer_logits``, which runs every step.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from seglab.inference import infer_logits

__all__ = [
    "IMAGE_SUFFIXES",
    "predict_image",
    "predict_batch",
    "collect_inputs",
    "plan_outputs",
    "index_png",
    "overlay_image",
    "predict_files",
    "PredictionPlan",
]

#: Files taken from folders and globs (an explicitly named file is read whatever its suffix).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_MEAN = (0.485, 0.456, 0.406)  # ImageNet, as seglab.transforms.eval_transform
_STD = (0.229, 0.224, 0.225)
_VOC_IGNORE_COLOR = (224, 224, 192)  # palette entry 255, as in VOC's masks
_MAX_LOGIT_ELEMENTS = 2**27  # N * K * H * W per forward (512 MB of float32 logits at full size)


# ------------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------------


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` normalised with the ImageNet mean and std."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"predict: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(_MEAN).view(3, 1, 1)
    std = torch.tensor(_STD).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, max_size: int | None, pad_multiple: int,
            inference: dict | None = None) -> torch.Tensor:
    """``(N, 3, H, W)`` normalised -> ``(N, K, H, W)`` float32 scores at full size.

    ``seglab.inference.infer_logits``: with no ``inference`` options ``seglab.engine.forward_resized``, the
    same steps as the full-size validation of ``fit`` (shrink so the longer side is at most ``max_size``,
    never enlarged, never below 1 pixel; pad bottom/right with 0, the mean colour, to a multiple of
    ``pad_multiple``; crop the logits to the shrunk size; upsample them bilinearly to ``(H, W)``);
    ``inference`` adds test-time augmentation, sliding windows or a dense CRF (its keyword arguments).
    """
    return infer_logits(model, images, max_size=max_size, pad_multiple=pad_multiple, **(inference or {})).float()


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    batch_size: int = 4,
    inference: dict | None = None,
) -> list[np.ndarray]:
    """Class indices for each of ``images``, at each image's full size.

    Args:
        model: returns ``(N, K, h, w)`` logits for ``(N, 3, h, w)`` ImageNet-normalised input (eval mode
            is set here).
        images: ``(H_i, W_i, 3) uint8`` RGB arrays (``seglab.data.read_image``).
        max_size: run the model with the longer side shrunk to at most this many pixels (None: full size).
        pad_multiple: pad the model input bottom/right to a multiple of this (the model's stride).
        device: where the model is (default: the device of its first parameter).
        batch_size: images of the same size per forward pass (images of different sizes never
            share a batch, so batching does not change any prediction).
        inference: keyword arguments of ``seglab.inference.infer_logits`` (``scales``, ``flip``, ``window``,
            ``stride``, ``blend``, ``crf``): test-time augmentation, sliding windows, dense CRF.

    Returns:
        One ``(H_i, W_i) int64`` array of class indices in ``[0, K)`` per image, in order.

    Raises:
        ValueError: an image that is not ``(H, W, 3) uint8``, or ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.eval()
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape[:2])].append(i)
    results: list[np.ndarray | None] = [None] * len(images)
    num_classes = 32  # a guess until the first forward tells
    for (height, width), indices in groups.items():
        pos = 0
        while pos < len(indices):
            # at most batch_size images, and full-size logits under _MAX_LOGIT_ELEMENTS (at least one image)
            n = max(1, min(batch_size, _MAX_LOGIT_ELEMENTS // (num_classes * height * width)))
            chunk, pos = indices[pos:pos + n], pos + n
            x = torch.stack([_to_tensor(images[i]) for i in chunk]).to(device)  # (N, 3, H, W)
            logits = _logits(model, x, max_size, pad_multiple, inference)  # (N, K, H, W)
            num_classes = logits.shape[1]
            pred = logits.argmax(1).to("cpu", torch.int64).numpy()  # (N, H, W)
            for j, i in enumerate(chunk):
                results[i] = pred[j]
    return results  # type: ignore[return-value]


def predict_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    inference: dict | None = None,
) -> np.ndarray:
    """Class indices ``(H, W) int64`` in ``[0, K)`` for one ``(H, W, 3) uint8`` RGB image, at its full size.

    See ``predict_batch`` for the arguments.
    """
    return predict_batch(model, [image], max_size=max_size, pad_multiple=pad_multiple, device=device,
                         inference=inference)[0]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------


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


def plan_outputs(
    inputs: Sequence[Path], out: str | os.PathLike, *, overlay: bool = False, overwrite: bool = False
) -> PredictionPlan:
    """Decide every output path before anything is read or written.

    Names: ``out/<stem>.png``; inputs sharing a stem are named after their path relative to their
    common folder (``out/a/x.png``, ``out/b/x.png``; if that still clashes, e.g. ``x.png`` and
    ``x.jpg`` in one folder, the suffix joins the name: ``out/x_png.png``, ``out/x_jpg.png``), and
    ``notes`` says so. Overlays: ``<mask name>_overlay.png``.

    Raises:
        FileExistsError: an output already exists and ``overwrite`` is False (all listed up to 5), or
            an output path would replace one of the inputs (never allowed, even with ``overwrite``),
            or two outputs would still share a path.
        NotADirectoryError: ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: pass a folder for the predictions")
    inputs = list(inputs)
    names = [p.stem for p in inputs]
    notes: list[str] = []
    for level in ("folder", "suffix"):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(names):
            groups[name].append(i)
        clashes = [idx for idx in groups.values() if len(idx) > 1]
        if not clashes:
            break
        for idx in clashes:
            before = names[idx[0]]
            if level == "folder":
                renamed = _relative_names([inputs[i] for i in idx])
            else:
                renamed = [f"{names[i]}_{inputs[i].suffix.lstrip('.').lower() or 'noext'}" for i in idx]
            for i, name in zip(idx, renamed):
                names[i] = name
            pairs = ", ".join(f"{inputs[i]} -> {names[i]}.png" for i in idx)
            notes.append(f"note: {len(idx)} inputs would all be written as {before}.png; writing {pairs}")
    masks = [out / f"{name}.png" for name in names]
    overlays = [out / f"{name}_overlay.png" for name in names] if overlay else [None] * len(names)
    targets = masks + [p for p in overlays if p is not None]
    resolved_inputs = {p.resolve(): p for p in inputs}
    seen: dict[Path, Path] = {}
    for target in targets:
        key = target.resolve()
        if key in resolved_inputs:
            raise FileExistsError(
                f"the prediction {target} would replace the input image {resolved_inputs[key]}; refusing "
                "(inputs are never overwritten): choose another --out folder"
            )
        if key in seen:
            raise FileExistsError(f"two predictions would both be written to {target}: rename one of the inputs")
        seen[key] = target
    if not overwrite:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} predictions already exist (e.g. {existing[:5]}); pass --overwrite "
                "(overwrite=True) to replace them, or choose another --out folder"
            )
    return PredictionPlan(inputs, masks, overlays, notes)


def _palette(colors: Sequence[Sequence[int]]) -> list[int]:
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)[:256]
    if len(colors) < 256:
        palette[255] = _VOC_IGNORE_COLOR
    return palette.reshape(-1).tolist()


def index_png(pred: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """``(H, W)`` class indices (< 256) -> a mode "P" image: pixel values = indices, palette = ``colors``
    (entry 255, the ignore value, in VOC's cream). ``np.array(Image.open(path))`` gives the indices back.

    Raises:
        ValueError: not 2-D, or values outside ``[0, 256)``.
    """
    pred = np.asarray(pred)
    if pred.ndim != 2 or (pred.size and (pred.min() < 0 or pred.max() > 255)):
        raise ValueError(f"index_png: expected (H, W) class indices in [0, 256), got {pred.dtype} {pred.shape}")
    image = Image.fromarray(pred.astype(np.uint8))  # mode "L"
    image.putpalette(_palette(colors))  # "L" -> "P", pixel values kept
    return image


def overlay_image(image: np.ndarray, pred: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5) -> Image.Image:
    """The class colours blended over the photo: ``(1 - alpha) * image + alpha * colour``, an RGB image."""
    palette = np.asarray(_palette(colors), np.float32).reshape(256, 3)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[pred]
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _save_png_atomically(image: Image.Image, path: Path) -> None:
    """Write ``path`` through a temporary file in its folder + ``os.replace``, with the umask's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        from seglab.engine.checkpoint import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def predict_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    colors: Sequence[Sequence[int]],
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    batch_size: int = 4,
    overlay: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    inference: dict | None = None,
) -> PredictionPlan:
    """Predict every image of ``inputs`` (files, folders, globs) and write its mask (and overlay) under ``out``.

    All output paths are planned and checked first (``plan_outputs``); images are then read
    ``batch_size`` at a time, predicted at full size (``predict_batch``) and written as class-index
    palette PNGs (``index_png``), with a tqdm bar.

    Returns:
        The ``PredictionPlan`` (what was written where).

    Raises:
        FileNotFoundError: an input missing (``collect_inputs``). FileExistsError / NotADirectoryError:
            see ``plan_outputs``. seglab.data.BadImageError (a ValueError): an input is not a readable
            image (the message names it); the predictions before it are kept.
    """
    from tqdm.auto import tqdm

    from seglab.data import read_image

    plan = plan_outputs(collect_inputs(inputs), out, overlay=overlay, overwrite=overwrite)
    for note in plan.notes:
        log(note)
    Path(out).mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(plan.inputs), desc="predict", unit=" images", disable=not progress or len(plan.inputs) < 2) as bar:
        for start in range(0, len(plan.inputs), batch_size):
            index = range(start, min(start + batch_size, len(plan.inputs)))
            images = [read_image(plan.inputs[i]) for i in index]
            preds = predict_batch(model, images, max_size=max_size, pad_multiple=pad_multiple, device=device,
                                  batch_size=batch_size, inference=inference)  # fmt: skip
            for i, image, pred in zip(index, images, preds):
                _save_png_atomically(index_png(pred, colors), plan.masks[i])
                if plan.overlays[i] is not None:
                    _save_png_atomically(overlay_image(image, pred, colors, alpha), plan.overlays[i])
            bar.update(len(index))
    return plan
