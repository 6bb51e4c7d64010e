"""``TrainConfig``: every training field (one CLI flag each), validated in one place.

The CLI flags map one-to-one onto the fields (``batch_size`` -> ``--batch-size``). Only *training* lives
here: test-time options (TTA scales, sliding windows, the CRF) are ``seglab.inference.InferenceOptions``,
given to ``evaluate`` / ``predict`` directly. The device, precision and worker choices are in
:mod:`seglab.engine.device` (importable from here too, as before).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from seglab.engine.device import (  # re-exported: their home before seglab.engine.device
    check_device_name, cpu_has_fast_bf16, default_num_workers, resolve_amp_dtype, resolve_channels_last,
    resolve_device,
)

__all__ = ["TrainConfig", "resolve_device", "resolve_amp_dtype", "resolve_channels_last", "cpu_has_fast_bf16",
           "default_num_workers"]

_SWITCH = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Everything that defines a training run. The CLI flags map one-to-one onto these fields.

    Defaults train a small U-Net on the built-in synthetic shapes on a CPU (see the README for the
    measured time and mIoU).
    """

    # --- what to train ---------------------------------------------------------------------------
    model: str = "unet"  # a name from seglab.models.list_models()
    backbone: str | None = None  # e.g. "vgg16", "resnet18", "resnet50"; None = the model's default
    weights_backbone: str | None = None  # "IMAGENET1K_V1" or a local .pth path; None = from scratch
    output_stride: int | None = None  # DeepLab only: 8 or 16
    base_channels: int | None = 16  # U-Net only: width of the first stage (64 in the paper)
    num_classes: int | None = None  # None = the dataset's; if given it must match the dataset
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # other build_model options, e.g. num_queries
    # --- data ------------------------------------------------------------------------------------
    dataset: str = "synthetic"  # a name from seglab.data.list_datasets()
    data_root: str | None = None  # folder of that dataset; None = $SEGLAB_DATA/<name> or data/<name>
    dataset_kwargs: dict = dataclasses.field(default_factory=dict)  # extra build_dataset arguments, e.g. folder classes
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 64  # training crop, pixels (square)
    scale_min: float | None = None  # random scale range of training images; None = the dataset's default:
    scale_max: float | None = None  # 0.5-2.0 (the DeepLab recipe), 1.0-1.0 for the synthetic shapes
    max_size: int | None = None  # resize so the longer side equals this (train and val), pixels
    val_full_size: bool = False  # with max_size: predict at max_size, upsample the logits, score at full size
    pad_multiple: int = 32  # validation images are padded (with ignore) to a multiple of this
    batch_size: int = 16  # per process (the global batch is batch_size * world_size * accumulate_steps)
    val_batch_size: int | None = None  # None = batch_size
    accumulate_steps: int = 1  # add the gradients of this many batches per optimizer step
    num_workers: int | None = None  # DataLoader worker processes; None = automatic (default_num_workers)
    # --- optimisation ----------------------------------------------------------------------------
    epochs: int = 15
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9, the DeepLab recipe)
    lr: float = 5e-3  # peak learning rate
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    lr_schedule: str = "cosine"  # "cosine", "poly" (power 0.9, the DeepLab recipe) or "constant"; per iteration
    warmup_epochs: float = 1.0  # linear warm-up from lr/100 to lr over this many epochs (may be a fraction)
    loss: str = "cross_entropy"  # "cross_entropy", "dice" or "focal"
    label_smoothing: float = 0.0  # cross-entropy only
    class_weights: bool = False  # use the dataset's class_weights (e.g. CamVid's median frequency)
    ignore_index: int = 255
    # --- machine ---------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"
    amp: str = "auto"  # 16-bit autocast: "auto" (where measured faster: CUDA, CPUs with AVX512-BF16/AMX), "on", "off"
    channels_last: str = "auto"  # "auto" (CUDA, and CPUs with a native bf16 path), "on", "off"
    compile: bool = False  # torch.compile the model (opt-in; see benchmarks/cpu_speed.py for its effect)
    deterministic: bool = False  # deterministic kernels (slower), no cudnn benchmark
    detect_anomaly: bool = False  # debug: autograd anomaly mode and a finiteness check of every gradient
    # --- several processes (torchrun; seglab.engine.distributed) ---------------------------------
    sync_batchnorm: bool = True  # under DDP: BatchNorm statistics over the global batch (SyncBatchNorm)
    dist_backend: str = "auto"  # "auto" (NCCL on CUDA, Gloo on the CPU), "nccl" or "gloo"
    dist_timeout: float = 600.0  # seconds a rank waits for the others in a collective, then fails
    # --- bookkeeping -----------------------------------------------------------------------------
    out: str = "runs/default"  # output folder: history, curves, checkpoints
    resume: bool = False  # continue from out/last.pt
    seed: int = 0
    max_train_batches: int | None = None  # cap batches per epoch (smoke runs)
    max_val_batches: int | None = None
    log_every: int = 25  # read the running loss back from the device every this many steps
    progress: bool = True  # tqdm progress bars
    verbose: bool = True  # print one line per epoch
    tensorboard: bool = False  # also log to out/tensorboard/ (seglab.engine.tensorboard; the [tensorboard] extra)
    overwrite: bool = False  # replace an earlier run in out (else refused: resume it, or choose another out)

    def __post_init__(self) -> None:
        # booleans from older configs / checkpoints: True = "auto", False = "off"
        for name in ("amp", "channels_last"):
            value = getattr(self, name)
            if isinstance(value, bool):
                setattr(self, name, "auto" if value else "off")
            elif getattr(self, name) not in _SWITCH:
                raise ValueError(f"TrainConfig.{name} must be one of {list(_SWITCH)}, got {value!r}")
        validate_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config of ``to_dict`` (a checkpoint's ``"config"``, a ``config.json``).

        Fields that older versions had and this one dropped (the test-time options ``tta_scales``,
        ``tta_flip``, ``window``, ``window_stride``, ``crf``, now ``seglab.inference.InferenceOptions``)
        are ignored, so older checkpoints still load.

        Raises:
            ValueError: an unknown field, or a value out of range (``validate_config``).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in _DROPPED_FIELDS}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**values)


#: Fields of older versions, ignored by from_dict: test-time options, now seglab.inference.InferenceOptions
_DROPPED_FIELDS = frozenset({"tta_scales", "tta_flip", "window", "window_stride", "crf"})

# Valid ranges, checked in one place (validate_config). (low, high): inclusive bounds, None = unbounded.
_INT_RANGES: dict[str, tuple[int | None, int | None]] = {
    "epochs": (1, None), "batch_size": (1, None), "val_batch_size": (1, None), "accumulate_steps": (1, None),
    "num_workers": (0, None), "crop_size": (1, None), "max_size": (1, None), "pad_multiple": (1, None),
    "max_train_batches": (1, None), "max_val_batches": (1, None), "log_every": (1, None),
    "base_channels": (1, None), "num_classes": (1, 255), "output_stride": (1, None), "seed": (0, 2**32 - 1),
    "ignore_index": (0, 255),
}
_FLOAT_RANGES: dict[str, tuple[float | None, float | None, str]] = {  # (low, high, how): "open" = low < x,
    # "half-open" = low <= x < high, "closed" = low <= x <= high
    "lr": (0.0, None, "open"), "weight_decay": (0.0, None, "closed"), "momentum": (0.0, 1.0, "half-open"),
    "scale_min": (0.0, None, "open"), "scale_max": (0.0, None, "open"), "warmup_epochs": (0.0, None, "closed"),
    "label_smoothing": (0.0, 1.0, "half-open"), "dist_timeout": (0.0, None, "open"),
}
_CHOICES = {"optimizer": ("adamw", "sgd"), "lr_schedule": ("poly", "cosine", "constant"),
            "dist_backend": ("auto", "nccl", "gloo")}


def _flag(name: str) -> str:
    return f"TrainConfig.{name} (--{name.replace('_', '-')})"


def validate_config(config: "TrainConfig") -> None:
    """Check every field of ``config`` against its type and valid range.

    Raises:
        ValueError: naming the field, its CLI flag, the value given and the valid range, e.g.
            ``TrainConfig.epochs (--epochs) must be an integer >= 1, got 0``.
    """
    from seglab.data import list_datasets
    from seglab.losses import LOSSES
    from seglab.models import list_models, model_options

    optional = {f.name for f in dataclasses.fields(config) if "None" in str(f.type)}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            if f.name not in optional:
                raise ValueError(f"{_flag(f.name)} must be set, got None")
            continue
        kind = str(f.type).split("|")[0].strip()
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{_flag(f.name)} must be True or False, got {value!r}")
        if kind == "str" and not (isinstance(value, str) and value):
            raise ValueError(f"{_flag(f.name)} must be a non-empty string, got {value!r}")
        if kind == "dict" and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise ValueError(f"{_flag(f.name)} must be a dict with string keys, got {value!r}")
        if kind == "int":
            low, high = _INT_RANGES.get(f.name, (None, None))
            bounds = " and ".join(t for t in (f">= {low}" if low is not None else "",
                                              f"<= {high}" if high is not None else "") if t)  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
                    high is not None and value > high):
                raise ValueError(f"{_flag(f.name)} must be an integer{' ' + bounds if bounds else ''}"
                                 f"{' (or None)' if f.name in optional else ''}, got {value!r}")  # fmt: skip
        if kind == "float":
            low, high, how = _FLOAT_RANGES.get(f.name, (None, None, "closed"))  # unlisted: any finite number
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok and low is not None:
                ok = value > low if how == "open" else value >= low
            if ok and high is not None:
                ok = value < high if how == "half-open" else value <= high
            if not ok:
                lower = "" if low is None else (f" > {low}" if how == "open" else f" >= {low}")
                upper = "" if high is None else f" and {'<' if how == 'half-open' else '<='} {high}"
                raise ValueError(f"{_flag(f.name)} must be a finite number{lower}{upper}"
                                 f"{' (or None)' if f.name in optional else ''}, got {value!r}")  # fmt: skip
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            raise ValueError(f"{_flag(name)} must be one of {list(choices)}, got {getattr(config, name)!r}")
    if config.loss not in LOSSES:
        raise ValueError(f"{_flag('loss')} must be one of {sorted(LOSSES)}, got {config.loss!r}")
    if config.model not in list_models():
        raise ValueError(f"{_flag('model')} must be one of {list_models()}, got {config.model!r}")
    unknown = sorted(set(config.model_kwargs) - set(model_options(config.model)))
    if unknown:
        raise ValueError(f"{_flag('model_kwargs')} holds {unknown}, not options of {config.model!r}; its options: "
                         f"{list(model_options(config.model))}")
    if config.dataset not in list_datasets():
        raise ValueError(f"{_flag('dataset')} must be one of {list_datasets()}, got {config.dataset!r}")
    check_device_name(config.device)  # e.g. "meta": refused here, before any folder or file is made
    if config.scale_min is not None and config.scale_max is not None and config.scale_min > config.scale_max:
        raise ValueError(f"{_flag('scale_min')} = {config.scale_min} must be <= {_flag('scale_max')} = "
                         f"{config.scale_max}")  # fmt: skip
