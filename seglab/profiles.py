"""Run profiles of the notebooks: ``smoke``, ``laptop`` and ``full``.

A notebook sets its sizes and training budgets from one profile:

- ``smoke``: seconds per notebook, to prove the code runs (what ``pytest`` / nbval runs);
- ``laptop``: real training on a 2-core CPU, at most about 5 minutes per notebook, budgets set by step
  counts (never by the clock, so results do not depend on the machine's speed); the default when no
  CUDA device is found;
- ``full``: the papers' recipes, meant for a GPU; the default on CUDA.

Chosen by, first to last: ``SEGLAB_PROFILE`` (``smoke`` | ``laptop`` | ``full`` | ``full-dry``),
``SEGLAB_FAST=1`` (an alias of ``smoke``), then the device.

``full-dry`` is the ``full`` profile (``PROFILE.full`` is true, ``pick`` returns the ``full`` values:
full image sizes, the real backbones, VOC) with its budgets cut to a handful, so that every cell a GPU
course runs also executes on a CPU in CI: at most 2 training steps (:meth:`Profile.cap_steps`), 4
images per dataset or evaluation (:meth:`Profile.cap_images`) and batches of 2
(:meth:`Profile.cap_batch`). ``SEGLAB_MAX_STEPS``, ``SEGLAB_MAX_IMAGES`` and ``SEGLAB_MAX_BATCH`` set
those caps explicitly, for any profile. ``SEGLAB_SEED`` (default 0) sets ``PROFILE.seed``, the seed a notebook's
experiments start from, so the reference runs over seeds 0, 1, 2 are one variable away; ``SEGLAB_AMP`` and
``SEGLAB_CHANNELS_LAST`` (``auto`` | ``on`` | ``off``, default ``auto``) pass to the notebooks' ``TrainConfig``:
``SEGLAB_AMP=off SEGLAB_CHANNELS_LAST=off`` stands for a CPU without native bf16.

Usage in a notebook::

    from seglab.profiles import select_profile
    PROFILE = select_profile()  # prints which profile and why
    CROP_SIZE = PROFILE.pick(smoke=64, laptop=160, full=321)
    TRAIN_STEPS = PROFILE.cap_steps(PROFILE.pick(smoke=2, laptop=300, full=3000))
    VAL_IMAGES = PROFILE.cap_images(PROFILE.pick(smoke=4, laptop=101, full=1449))
    BATCH_SIZE = PROFILE.cap_batch(PROFILE.pick(smoke=2, laptop=8, full=16))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PROFILES", "Profile", "select_profile"]

PROFILES = ("smoke", "laptop", "full", "full-dry")
#: The caps a ``full-dry`` run uses unless ``SEGLAB_MAX_*`` says otherwise.
DRY_CAPS = {"max_steps": 2, "max_images": 4, "max_batch": 2}
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """The profile a notebook runs: ``name`` (``smoke``, ``laptop`` or ``full``), the ``reason`` it was
    chosen, whether it is a ``dry`` run of ``full``, and optional caps (``None`` = no cap): training
    steps, images per dataset/evaluation, and batch size."""

    name: str
    reason: str
    max_steps: int | None = None
    max_images: int | None = None
    max_batch: int | None = None
    dry: bool = False
    seed: int = 0  # SEGLAB_SEED: the seed a notebook's experiments start from (reference tables: seeds 0, 1, 2)
    amp: str = "auto"  # SEGLAB_AMP: TrainConfig.amp for the notebooks' training (off = a CPU without native bf16)
    channels_last: str = "auto"  # SEGLAB_CHANNELS_LAST: TrainConfig.channels_last likewise

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def laptop(self) -> bool:
        return self.name == "laptop"

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, *, smoke: T, laptop: T, full: T) -> T:
        """The value for this profile, e.g. ``PROFILE.pick(smoke=64, laptop=160, full=321)``."""
        return {"smoke": smoke, "laptop": laptop, "full": full}[self.name]

    def cap_steps(self, steps: int) -> int:
        """``min(steps, max_steps)``: a training budget (steps, or epochs) under the cap (at least 1)."""
        return steps if self.max_steps is None else max(1, min(steps, self.max_steps))

    def cap_images(self, count: int | None) -> int | None:
        """``min(count, max_images)``: how many images to load or evaluate (``None`` = all, or the cap)."""
        if self.max_images is None:
            return count
        return self.max_images if count is None else max(1, min(count, self.max_images))

    def cap_batch(self, batch_size: int) -> int:
        """``min(batch_size, max_batch)``: a batch size under the cap (at least 1)."""
        return batch_size if self.max_batch is None else max(1, min(batch_size, self.max_batch))

    def __str__(self) -> str:
        caps = [f"{value} {what}" for value, what in ((self.max_steps, "training steps"),
                (self.max_images, "images"), (self.max_batch, "per batch")) if value is not None]
        cap = f", at most {', '.join(caps)}" if caps else ""
        extra = [f"seed {self.seed}"] if self.seed else []
        extra += [f"{name} {value}" for name, value in (("amp", self.amp), ("channels_last", self.channels_last))
                  if value != "auto"]
        more = f"; {', '.join(extra)}" if extra else ""
        return f"profile: {'full-dry' if self.dry else self.name} ({self.reason}{cap}{more})"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def select_profile(environ: dict | None = None, *, verbose: bool = True) -> Profile:
    """The profile to run, from the environment (see the module docstring); prints it when ``verbose``.

    Raises:
        ValueError: ``SEGLAB_PROFILE`` is not one of :data:`PROFILES`, a ``SEGLAB_MAX_*`` cap is not a
            positive integer, ``SEGLAB_SEED`` is not a whole number, or ``SEGLAB_AMP`` /
            ``SEGLAB_CHANNELS_LAST`` is not auto, on or off.
    """
    env = os.environ if environ is None else environ
    requested = env.get("SEGLAB_PROFILE", "").strip().lower()
    if requested and requested not in PROFILES:
        raise ValueError(f"SEGLAB_PROFILE={requested!r} is not a profile; use one of {list(PROFILES)}")
    dry = requested == "full-dry"
    caps = {}
    for key in DRY_CAPS:
        variable = f"SEGLAB_{key.upper()}"
        value = env.get(variable) or None
        if value is not None and (not value.isdigit() or int(value) < 1):
            raise ValueError(f"{variable} must be a positive integer, got {value!r}")
        caps[key] = int(value) if value is not None else (DRY_CAPS[key] if dry else None)
    seed = env.get("SEGLAB_SEED") or "0"
    if not seed.isdigit():
        raise ValueError(f"SEGLAB_SEED must be a whole number >= 0, got {seed!r}")
    caps["seed"] = int(seed)
    for key in ("amp", "channels_last"):
        variable = f"SEGLAB_{key.upper()}"
        value = (env.get(variable) or "auto").strip().lower()
        if value not in ("auto", "on", "off"):
            raise ValueError(f"{variable} must be auto, on or off, got {value!r}")
        caps[key] = value
    if dry:
        profile = Profile("full", "set by SEGLAB_PROFILE: the full settings, budgets cut to a handful", dry=True, **caps)
    elif requested:
        profile = Profile(requested, "set by SEGLAB_PROFILE", **caps)
    elif env.get("SEGLAB_FAST", "0") == "1":
        profile = Profile("smoke", "SEGLAB_FAST=1, as under pytest: proves the code runs, trains nothing", **caps)
    elif _cuda_available():
        profile = Profile("full", "a CUDA device was found: the papers' recipes", **caps)
    else:
        profile = Profile(
            "laptop", "no CUDA device found: real training sized for a laptop CPU; SEGLAB_PROFILE=full for the "
            "papers' recipes", **caps,
        )
    if verbose:
        print(profile)
    return profile
