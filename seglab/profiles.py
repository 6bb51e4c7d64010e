"""Run profiles of the notebooks: ``smoke``, ``laptop`` and ``full``.

A notebook sets its sizes and training budgets from one profile:

- ``smoke``: seconds per notebook, to prove the code runs (what ``pytest`` / nbval runs);
- ``laptop``: real training on a 2-core CPU, at most about 5 minutes per notebook, budgets set by step
  counts (never by the clock, so results do not depend on the machine's speed); the default when no
  CUDA device is found;
- ``full``: the papers' recipes, meant for a GPU; the default on CUDA.

Chosen by, first to last: ``SEGLAB_PROFILE`` (``smoke`` | ``laptop`` | ``full``), ``SEGLAB_FAST=1``
(an alias of ``smoke``), then the device. ``SEGLAB_MAX_STEPS=N`` caps every training budget that a
notebook passes through :func:`cap_steps` (a "full-dry" run: the full settings for a handful of
steps, so every full-mode cell executes on a CPU in CI).

Usage in a notebook::

    from seglab.profiles import select_profile
    PROFILE = select_profile()  # prints which profile and why
    CROP_SIZE = PROFILE.pick(smoke=64, laptop=160, full=321)
    TRAIN_STEPS = PROFILE.cap_steps(PROFILE.pick(smoke=2, laptop=300, full=3000))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PROFILES", "Profile", "select_profile"]

PROFILES = ("smoke", "laptop", "full")
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """The profile a notebook runs: ``name`` in :data:`PROFILES`, ``reason`` it was chosen, and an
    optional ``max_steps`` cap (from ``SEGLAB_MAX_STEPS``; ``None`` = no cap)."""

    name: str
    reason: str
    max_steps: int | None = None

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
        """``min(steps, max_steps)``: the training budget under ``SEGLAB_MAX_STEPS`` (at least 1)."""
        return steps if self.max_steps is None else max(1, min(steps, self.max_steps))

    def __str__(self) -> str:
        cap = f", at most {self.max_steps} training steps (SEGLAB_MAX_STEPS)" if self.max_steps is not None else ""
        return f"profile: {self.name} ({self.reason}{cap})"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def select_profile(environ: dict | None = None, *, verbose: bool = True) -> Profile:
    """The profile to run, from the environment (see the module docstring); prints it when ``verbose``.

    Raises:
        ValueError: ``SEGLAB_PROFILE`` is not one of :data:`PROFILES`, or ``SEGLAB_MAX_STEPS`` is not a
            positive integer.
    """
    env = os.environ if environ is None else environ
    max_steps = env.get("SEGLAB_MAX_STEPS") or None
    if max_steps is not None:
        if not max_steps.isdigit() or int(max_steps) < 1:
            raise ValueError(f"SEGLAB_MAX_STEPS must be a positive integer, got {max_steps!r}")
        max_steps = int(max_steps)
    requested = env.get("SEGLAB_PROFILE", "").strip().lower()
    if requested:
        if requested not in PROFILES:
            raise ValueError(f"SEGLAB_PROFILE={requested!r} is not a profile; use one of {list(PROFILES)}")
        profile = Profile(requested, "set by SEGLAB_PROFILE", max_steps)
    elif env.get("SEGLAB_FAST", "0") == "1":
        profile = Profile("smoke", "SEGLAB_FAST=1, as under pytest: proves the code runs, trains nothing", max_steps)
    elif _cuda_available():
        profile = Profile("full", "a CUDA device was found: the papers' recipes", max_steps)
    else:
        profile = Profile(
            "laptop", "no CUDA device found: real training sized for a laptop CPU; SEGLAB_PROFILE=full for the "
            "papers' recipes", max_steps,
        )
    if verbose:
        print(profile)
    return profile
