"""The training loop as taught: one ``TrainConfig``, ``fit``, ``train_one_epoch``, ``evaluate``.

Recipe (Chen et al. 2017, DeepLabV3 section 4.1, also used by torchvision's segmentation references):
pixel-wise cross-entropy with ``ignore_index=255``, SGD with momentum 0.9 and the "poly" learning
rate ``lr * (1 - iter / max_iter) ** 0.9`` stepped every iteration, random scale 0.5-2.0 / crop /
flip augmentation, and evaluation on the *whole* validation image with a confusion matrix
accumulated over the split. AdamW is offered (and is the default) because it trains small models
from scratch far more reliably on a CPU budget; pass ``optimizer="sgd", lr=0.01`` for the paper recipe.

On CUDA the loop uses mixed precision (bf16 where supported, else fp16 with a gradient scaler),
channels_last memory format, cudnn benchmark, pinned memory and non-blocking copies. On a CPU it
runs the same code in fp32.

Every epoch appends one record to the history and writes, atomically, into ``config.out``:
``history.json`` (full records), ``history.csv`` (one row per epoch), ``curves.png``, ``last.pt``
(everything needed to resume) and ``best.pt`` (best validation mIoU). A run killed mid-epoch loses
only that epoch: ``fit(replace(config, resume=True))`` continues from ``last.pt`` exactly — the
model, optimizer, scheduler, scaler, history and RNG states are restored, and every epoch reseeds
its shuffling and augmentation from ``(seed, epoch)``, so a resumed run equals an uninterrupted one.

Checkpoints are plain dicts of tensors and Python values, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from seglab.losses import build_loss
from seglab.metrics import ConfusionMatrix

__all__ = [
    "TrainConfig",
    "fit",
    "train_one_epoch",
    "evaluate",
    "resolve_device",
    "build_loaders",
    "build_model_for",
    "save_checkpoint",
    "load_checkpoint",
    "load_history",
    "load_model",
    "Callback",
]

Callback = Callable[[dict, list], None]
"""Called after every epoch as ``callback(epoch_record, history)``; ``history`` includes the record."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. The CLI flags map one-to-one onto these fields.

    Defaults train a small U-Net on the built-in synthetic shapes on a CPU in two to three minutes (5 epochs).
    """

    # --- what to train ---------------------------------------------------------------------------
    model: str = "unet"  # a name from seglab.models.list_models()
    backbone: str | None = None  # e.g. "vgg16", "resnet18", "resnet50"; None = the model's default
    weights_backbone: str | None = None  # "IMAGENET1K_V1" or a local .pth path; None = from scratch
    output_stride: int | None = None  # DeepLab only: 8 or 16
    base_channels: int | None = 16  # U-Net only: width of the first stage (64 in the paper)
    num_classes: int | None = None  # None = the dataset's; if given it must match the dataset
    # --- data ------------------------------------------------------------------------------------
    dataset: str = "synthetic"  # a name from seglab.data.list_datasets()
    data_root: str | None = None  # folder of that dataset; None = $SEGLAB_DATA/<name> or data/<name>
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 64  # training crop, pixels (square)
    scale_min: float | None = None  # random scale range of training images; None = the dataset's default:
    scale_max: float | None = None  # 0.5-2.0 (the DeepLab recipe), 1.0-1.0 for the synthetic shapes
    max_size: int | None = None  # resize so the longer side equals this (train and val), pixels
    pad_multiple: int = 32  # validation images are padded (with ignore) to a multiple of this
    batch_size: int = 8
    val_batch_size: int | None = None  # None = batch_size
    num_workers: int = 0  # DataLoader worker processes
    # --- optimisation ----------------------------------------------------------------------------
    epochs: int = 5
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9, the DeepLab recipe)
    lr: float = 5e-3  # peak learning rate
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    lr_schedule: str = "poly"  # "poly" (power 0.9, per iteration) or "constant"
    loss: str = "cross_entropy"  # "cross_entropy", "dice" or "focal"
    class_weights: bool = False  # use the dataset's class_weights (e.g. CamVid's median frequency)
    ignore_index: int = 255
    # --- machine ---------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"
    amp: bool = True  # mixed precision on CUDA (bf16 if supported, else fp16 + GradScaler)
    channels_last: bool = True  # on CUDA only
    deterministic: bool = False  # deterministic kernels (slower), no cudnn benchmark
    # --- bookkeeping -----------------------------------------------------------------------------
    out: str = "runs/default"  # output folder: history, curves, checkpoints
    resume: bool = False  # continue from out/last.pt
    seed: int = 0
    max_train_batches: int | None = None  # cap batches per epoch (smoke runs)
    max_val_batches: int | None = None
    progress: bool = True  # tqdm progress bars
    verbose: bool = True  # print one line per epoch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**values)


# ------------------------------------------------------------------------------------------------
# Setup helpers
# ------------------------------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; otherwise ``torch.device(device)``.

    Raises:
        RuntimeError: a CUDA / MPS device was asked for but is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available: use --device cpu (or auto)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {device!r} asked for but MPS is not available: use --device cpu (or auto)")
    return dev


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _base_dataset(dataset):
    while hasattr(dataset, "dataset"):  # torch.utils.data.Subset and friends
        dataset = dataset.dataset
    return dataset


def _seed_transform(dataset, seed: int) -> None:
    """albumentations draws from its own generator: reseed it so augmentation is reproducible."""
    transform = getattr(_base_dataset(dataset), "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed % 2**32)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32  # base_seed (from the loader's generator) + worker_id
    random.seed(seed)
    np.random.seed(seed)
    _seed_transform(info.dataset, seed)


# The synthetic shapes are drawn at random sizes and positions already; rescaling 64-px images as well
# made the default one-minute run learn nothing beyond background (val mIoU 0.22 after 5 epochs with
# 0.75-1.25, against 0.40 without), so its default range is 1.0-1.0.
_DEFAULT_SCALE = {"synthetic": (1.0, 1.0)}


def build_loaders(config: TrainConfig, device: torch.device | None = None) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders for ``config``.

    Train: ``train_transform(crop_size)`` (random scale ``scale_min``-``scale_max``, by default 0.5-2.0
    and 1.0 for the synthetic shapes; pad with 255, crop, flip, jitter),
    shuffled, incomplete last batch dropped. Val: ``eval_transform`` on the whole image, padded with
    ignore to ``pad_multiple``, batched with ``pad_collate``.

    Raises:
        ValueError: unknown dataset, ``num_classes`` that does not match the dataset, empty split.
        FileNotFoundError: dataset folder missing (the message says how to get it).
    """
    from seglab.data import build_dataset, pad_collate
    from seglab.transforms import eval_transform, train_transform

    device = device or resolve_device(config.device)
    low, high = _DEFAULT_SCALE.get(config.dataset, (0.5, 2.0))
    scale = (config.scale_min or low, config.scale_max or high)
    train_tf = train_transform(config.crop_size, scale=scale, ignore_index=config.ignore_index, max_size=config.max_size)
    val_tf = eval_transform(pad_multiple=config.pad_multiple, ignore_index=config.ignore_index, max_size=config.max_size)
    train_set = build_dataset(config.dataset, config.train_split, root=config.data_root, transform=train_tf)
    val_set = build_dataset(config.dataset, config.val_split, root=config.data_root, transform=val_tf)
    if config.num_classes is not None and config.num_classes != train_set.num_classes:
        raise ValueError(
            f"num_classes={config.num_classes} but dataset {config.dataset!r} has {train_set.num_classes} classes "
            f"{list(train_set.classes)}: drop --num-classes or set it to {train_set.num_classes}"
        )
    if len(train_set) < config.batch_size:
        raise ValueError(
            f"the {config.train_split!r} split of {config.dataset!r} has {len(train_set)} images, fewer than "
            f"batch_size={config.batch_size}: lower --batch-size"
        )
    pin = device.type == "cuda"
    common = dict(num_workers=config.num_workers, pin_memory=pin, worker_init_fn=_worker_init)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(config.seed), **common,
    )
    val_loader = DataLoader(
        val_set, batch_size=config.val_batch_size or config.batch_size, shuffle=False,
        collate_fn=functools.partial(pad_collate, ignore_index=config.ignore_index), **common,
    )
    return train_loader, val_loader


def build_model_for(config: TrainConfig, num_classes: int) -> nn.Module:
    """``seglab.models.build_model`` with the model options of ``config`` that are set."""
    from seglab.models import build_model

    if config.output_stride is not None and not config.model.startswith("deeplab"):
        raise ValueError(f"output_stride applies to DeepLab models only, not {config.model!r}: drop --output-stride")
    kwargs = {
        "backbone": config.backbone,
        "weights_backbone": config.weights_backbone,
        "output_stride": config.output_stride,
        "base_channels": config.base_channels if config.model == "unet" else None,  # a default, not an error
    }
    return build_model(config.model, num_classes, **{k: v for k, v in kwargs.items() if v is not None})


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: ['adamw', 'sgd']")


def _build_scheduler(config: TrainConfig, optimizer, total_iters: int):
    if config.lr_schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: max(0.0, 1.0 - it / max(1, total_iters)) ** 0.9
        )
    if config.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; valid: ['poly', 'constant']")


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ------------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation
# ------------------------------------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    *,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict:
    """One pass over ``loader``: forward, loss, backward, step (and scheduler step per iteration).

    Args:
        loader: yields ``(images (N, 3, H, W) float32, masks (N, H, W) int64)``.
        criterion: ``criterion(logits (N, K, H, W), masks) -> scalar``.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast on CUDA, ``None`` for fp32.
        scaler: a GradScaler for fp16 (``None`` otherwise).

    Returns:
        ``{"train_loss": mean loss over batches, "images": images seen, "seconds": wall time,
        "images_per_s": throughput}``. Raises ``FloatingPointError`` if the loss becomes nan/inf.
    """
    device = torch.device(device)
    model.train()
    total_loss, batches, images_seen = 0.0, 0, 0
    start = time.perf_counter()
    n_total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and n_total is not None:
        n_total = min(n_total, max_batches)
    batches_iter = loader if max_batches is None else itertools.islice(loader, max_batches)
    bar = tqdm(batches_iter, total=n_total, desc=desc, leave=False, disable=not progress)
    for images, masks in bar:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (N, K, H, W)
            loss = criterion(logits.float(), masks)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at batch {batches}: lower the learning rate (--lr) or disable --amp"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item()
        batches += 1
        images_seen += images.shape[0]
        bar.set_postfix(loss=f"{total_loss / batches:.4f}")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss / max(1, batches),
        "images": images_seen,
        "seconds": seconds,
        "images_per_s": images_seen / seconds if seconds > 0 else math.nan,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    criterion: nn.Module | None = None,
    ignore_index: int = 255,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate on whole images: one confusion matrix over the split (not a mean of per-image scores).

    Args:
        loader: yields ``(images (N, 3, H, W), masks (N, H, W) int64)``; padding must carry ``ignore_index``.
        criterion: optional loss to report as ``"val_loss"``.

    Returns:
        ``{"mIoU", "iou_per_class", "pixel_accuracy", "mean_class_accuracy", "fw_iou", "loss",
        "confusion_matrix" ((K, K) int64 tensor, rows = ground truth)}``; fractions in [0, 1].
    """
    device = torch.device(device)
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    total_loss, batches = 0.0, 0
    batches_iter = loader if max_batches is None else itertools.islice(loader, max_batches)
    for images, masks in tqdm(batches_iter, desc="val", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (N, K, H, W)
        if criterion is not None:
            total_loss += criterion(logits, masks).item()
        cm.update(logits.argmax(1), masks)
        batches += 1
    result = cm.compute()
    result["loss"] = total_loss / batches if (criterion is not None and batches) else math.nan
    result["confusion_matrix"] = cm.matrix.cpu()
    return result


# ------------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoints, history
# ------------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (temp file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``torch.load(weights_only=True)``: tensors and plain Python values only).

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: the file is not a seglab checkpoint, is corrupted, or holds arbitrary objects
            (which are never unpickled: only load checkpoints from sources you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first (python -m seglab train --out {path.parent})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle/zip errors differ by torch version
        raise RuntimeError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {error}. It is corrupted, or it holds Python "
            "objects other than tensors and plain values, which are refused for safety (weights_only=True)."
        ) from error
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path} is not a seglab checkpoint (expected a dict with a 'model' state dict)")
    return state


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_SCALAR_KEYS = ["epoch", "train_loss", "val_loss", "val_mIoU", "val_pixel_accuracy", "val_mean_class_accuracy",
                "val_fw_iou", "lr", "seconds", "images_per_s"]


def _write_history(out: Path, history: list[dict], classes: list[str]) -> None:
    _atomic_write_bytes(out / "history.json", json.dumps(history, indent=1).encode())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(_SCALAR_KEYS + [f"iou_{c}" for c in classes])
    for record in history:
        writer.writerow([record.get(k) for k in _SCALAR_KEYS] + list(record.get("val_iou_per_class", [])))
    _atomic_write_bytes(out / "history.csv", text.getvalue().encode())


def _plot_curves(out: Path, history: list[dict], title: str) -> None:
    from seglab.viz import plot_history

    fig = plot_history(history, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    _atomic_write_bytes(out / "curves.png", buffer.getvalue())


def load_history(path: str | Path) -> list[dict]:
    """Read ``history.json`` (give the file or the run folder). Raises FileNotFoundError with the path."""
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}: point at a run folder written by seglab.engine.fit")
    return json.loads(path.read_text())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint written by ``fit`` and load its weights.

    Returns ``(model in eval mode, its TrainConfig, the checkpoint dict)``.
    """
    state = load_checkpoint(path, map_location)
    config = TrainConfig.from_dict(state["config"])
    config = dataclasses.replace(config, weights_backbone=None)  # the checkpoint holds every weight
    model = build_model_for(config, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), config, state


# ------------------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------------------


def fit(config: TrainConfig, *, callbacks: Iterable[Callback] = ()) -> list[dict]:
    """Train ``config.model`` on ``config.dataset`` for ``config.epochs`` epochs; return the history.

    Each epoch: reseed shuffling/augmentation from ``(seed, epoch)``, train, evaluate on the whole
    validation images, append a record, write history/curves/``last.pt`` (and ``best.pt`` when
    val mIoU improves), call every callback with ``(record, history)``, print one line.

    Record keys: ``epoch`` (1-based), ``train_loss``, ``lr`` (at the end of the epoch), ``val_loss``,
    ``val_mIoU``, ``val_iou_per_class`` (K floats, nan = absent), ``val_pixel_accuracy``,
    ``val_mean_class_accuracy``, ``val_fw_iou``, ``seconds`` (train + val wall time), ``images_per_s``
    (training throughput).

    Raises:
        FileNotFoundError / ValueError: bad dataset, model or options (messages say how to fix them).
        RuntimeError: ``resume=True`` with a checkpoint of another model/dataset.
        KeyboardInterrupt: re-raised after printing how to resume; ``last.pt`` holds the last full epoch.
    """
    out = Path(config.out)
    device = resolve_device(config.device)
    _seed_everything(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic

    train_loader, val_loader = build_loaders(config, device)
    dataset = _base_dataset(train_loader.dataset)
    num_classes = dataset.num_classes
    classes = list(dataset.classes)
    model = build_model_for(config, num_classes).to(device)
    channels_last = config.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    weight = None
    if config.class_weights:
        weight = getattr(dataset, "class_weights", None)
        if weight is None:
            raise ValueError(f"dataset {config.dataset!r} defines no class_weights: drop --class-weights")
        weight = torch.as_tensor(weight, dtype=torch.float32)
    criterion = build_loss(config.loss, weight=weight, ignore_index=config.ignore_index).to(device)
    optimizer = _build_optimizer(config, model)
    steps_per_epoch = len(train_loader) if config.max_train_batches is None else min(len(train_loader), config.max_train_batches)
    scheduler = _build_scheduler(config, optimizer, config.epochs * steps_per_epoch)
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    history: list[dict] = []
    best = -math.inf
    start_epoch = 1
    if config.resume:
        state = load_checkpoint(out / "last.pt", map_location=device)
        saved = state["config"]
        for key in ("model", "dataset", "backbone", "output_stride", "base_channels"):
            if saved.get(key) != getattr(config, key):
                raise RuntimeError(
                    f"cannot resume: {out / 'last.pt'} was trained with {key}={saved.get(key)!r} but the config says "
                    f"{getattr(config, key)!r}; use the same settings or another --out folder"
                )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history = list(state["history"])
        best = state["best_mIoU"]
        start_epoch = state["epoch"] + 1
        if config.verbose:
            print(f"resumed from {out / 'last.pt'} at epoch {state['epoch']} (best val mIoU {best:.4f})")
    elif (out / "last.pt").exists() and config.verbose:
        print(f"note: {out} already holds a run; it will be overwritten (pass --resume to continue it)")

    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    title = f"{config.model} on {config.dataset}"
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            epoch_seed = config.seed * 100_003 + epoch
            train_loader.generator.manual_seed(epoch_seed)  # shuffling order
            _seed_transform(train_loader.dataset, epoch_seed)  # augmentation (num_workers=0)
            torch.manual_seed(epoch_seed)  # dropout, workers' base seed
            train = train_one_epoch(
                model, train_loader, criterion, optimizer, scheduler, device=device, amp_dtype=amp_dtype,
                scaler=scaler, channels_last=channels_last, max_batches=config.max_train_batches,
                progress=config.progress, desc=f"epoch {epoch}/{config.epochs}",
            )
            val_start = time.perf_counter()
            val = evaluate(
                model, val_loader, num_classes, device=device, criterion=criterion, ignore_index=config.ignore_index,
                amp_dtype=amp_dtype, channels_last=channels_last, max_batches=config.max_val_batches,
                progress=config.progress,
            )
            record = {
                "epoch": epoch,
                "train_loss": train["train_loss"],
                "lr": optimizer.param_groups[0]["lr"],
                "val_loss": val["loss"],
                "val_mIoU": val["mIoU"],
                "val_iou_per_class": val["iou_per_class"],
                "val_pixel_accuracy": val["pixel_accuracy"],
                "val_mean_class_accuracy": val["mean_class_accuracy"],
                "val_fw_iou": val["fw_iou"],
                "seconds": train["seconds"] + time.perf_counter() - val_start,
                "images_per_s": train["images_per_s"],
            }
            history.append(record)
            improved = record["val_mIoU"] > best
            best = max(best, record["val_mIoU"])
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,
                "history": history,
                "best_mIoU": best,
                "config": config.to_dict(),
                "num_classes": num_classes,
                "classes": classes,
                "colors": [list(c) for c in dataset.colors],
                "rng": _rng_state(),
            }
            if improved:
                save_checkpoint(out / "best.pt", state)
            save_checkpoint(out / "last.pt", state)  # written last: resume never skips a best.pt
            _write_history(out, history, classes)
            _plot_curves(out, history, title)
            if config.verbose:
                print(
                    f"epoch {epoch:3d}/{config.epochs}  train_loss {record['train_loss']:.4f}  "
                    f"val_loss {record['val_loss']:.4f}  val_mIoU {record['val_mIoU']:.4f}  "
                    f"pixel_acc {record['val_pixel_accuracy']:.4f}  lr {record['lr']:.2e}  "
                    f"{record['seconds']:.1f} s  {record['images_per_s']:.1f} img/s" + ("  *best" if improved else ""),
                    flush=True,
                )
            for callback in callbacks:
                callback(record, history)
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start_epoch - 1
        print(
            f"\ninterrupted during epoch {done + 1}; {out / 'last.pt'} holds epoch {done}. "
            f"Continue with: python -m seglab train ... --out {out} --resume",
            flush=True,
        )
        raise
    return history
