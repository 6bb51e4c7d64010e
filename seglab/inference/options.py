"""The test-time options: ``parse_scales`` and ``InferenceOptions``, what the CLI's ``evaluate`` and
``predict`` flags build, validated once (each error names its flag)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

__all__ = ["MAX_TTA_SCALE", "parse_scales", "InferenceOptions"]

#: The largest test-time scale: a scale of 4 already runs the model on 16 times the pixels of one pass.
MAX_TTA_SCALE = 4.0


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    """Test-time scales from ``"0.5,0.75,1,1.25,1.5,1.75"`` (or a sequence of numbers): a tuple of floats,
    each in ``(0, MAX_TTA_SCALE]`` (4: one pass on 16 times the pixels).

    Raises:
        ValueError: empty, not a number, not finite, <= 0 or > ``MAX_TTA_SCALE``.
    """
    error = ValueError(f"test-time scales must be numbers separated by commas, e.g. 0.5,1,1.5; got {text!r}")
    if isinstance(text, str):
        items = [item.strip() for item in text.split(",") if item.strip()]
    elif isinstance(text, Sequence) and not any(isinstance(item, bool) for item in text):
        items = list(text)
    else:
        raise error
    try:
        scales = tuple(float(item) for item in items)
    except (TypeError, ValueError, OverflowError):
        raise error from None
    if not scales or not all(math.isfinite(s) and 0 < s <= MAX_TTA_SCALE for s in scales):
        raise ValueError(f"test-time scales must be one or more numbers > 0 and <= {MAX_TTA_SCALE:g} such as 0.5,1,1.5 "
                         f"(a scale multiplies the model input's sides); got {text!r}")  # fmt: skip
    return scales


def _positive_int(value, flag: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{flag} must be a whole number of pixels >= 1{' (or None)' if optional else ''}, "
                         f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """The test-time options of ``seglab.inference.infer_logits``, validated once: what the CLI's ``evaluate`` and
    ``predict`` flags build (each error names its flag).

    Fields (CLI flag in brackets):
        scales: test-time scale factors, each in ``(0, MAX_TTA_SCALE]`` [``--tta-scales``]; a string such as
            ``"0.5,1,1.5"`` is parsed (:func:`parse_scales`). ``(1.0,)``: one pass.
        flip: also run on the left-right mirrored image [``--tta-flip``].
        window: sliding windows of this many pixels (square), None = the whole image [``--window``].
        window_stride: pixels between windows, ``1 <= window_stride <= window``; None = 2/3 of the window
            [``--window-stride``]. Only with ``window``.
        crf: refine the scores with the dense CRF (``seglab.crf.dense_crf``) [``--crf``].
        crf_max_size: run the CRF with the longer side shrunk to at most this many pixels and upsample its
            scores (None: at full size) [``--crf-max-size``]. Only with ``crf``.

    ``as_kwargs()``: the keyword arguments of ``seglab.inference.infer_logits`` that differ from its defaults (``{}`` =
    plain inference), e.g. ``{"scales": (0.5, 1.0), "flip": True}``.

    Raises:
        ValueError: any field out of range (the message names the CLI flag, what it got and what it needs).
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: int | None = None
    window_stride: int | None = None
    crf: bool = False
    crf_max_size: int | None = None

    def __post_init__(self) -> None:
        try:
            scales = parse_scales(self.scales)
        except ValueError as error:
            raise ValueError(f"--tta-scales: {error}") from None
        object.__setattr__(self, "scales", scales)
        for name in ("flip", "crf"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"--{'tta-flip' if name == 'flip' else name} must be True or False, "
                                 f"got {getattr(self, name)!r}")  # fmt: skip
        _positive_int(self.window, "--window")
        _positive_int(self.window_stride, "--window-stride")
        _positive_int(self.crf_max_size, "--crf-max-size")
        if self.window_stride is not None and self.window is None:
            raise ValueError(f"--window-stride needs --window: got --window-stride {self.window_stride} without a "
                             "window size (e.g. --window 512 --window-stride 341)")
        if self.window_stride is not None and self.window_stride > self.window:
            raise ValueError(f"--window-stride must be at most --window (set, in pixels), got --window-stride "
                             f"{self.window_stride} with --window {self.window}")  # fmt: skip
        if self.crf_max_size is not None and not self.crf:
            raise ValueError(f"--crf-max-size {self.crf_max_size} needs --crf (it sets the size the CRF runs at)")

    def as_kwargs(self) -> dict:
        """Keyword arguments of ``seglab.inference.infer_logits`` for the options that are set (``{}``: plain
        inference)."""
        options = {"scales": self.scales if self.scales != (1.0,) else None, "flip": self.flip or None,
                   "window": self.window, "stride": self.window_stride, "crf": self.crf or None,
                   "crf_max_size": self.crf_max_size}  # fmt: skip
        return {name: value for name, value in options.items() if value is not None}
