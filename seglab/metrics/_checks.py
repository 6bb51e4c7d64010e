"""Argument checks shared by every public function of ``seglab.metrics``: inputs are validated once, at the
boundary, and the internals trust what these functions return.

Every check raises ``ValueError`` with a one-line message that names the argument, what it got, what it needs
and how to fix it (a tensor argument that is not a tensor included: the metrics never guess a conversion).
The checks of labels, predictions, confusion matrices and devices live in ``confusion.py`` (so that file copies
out alone) and are re-exported here; the distance and pixel-count checks of the boundary metrics are here.
"""

from __future__ import annotations

import math
import numbers
import sys

from seglab.metrics.confusion import (
    MAX_NUM_CLASSES, _is_integer, _tensor, check_confusion, check_device, check_ignore_index, check_labels,
    check_num_classes, check_pair,
)

__all__ = [
    "MAX_NUM_CLASSES",
    "check_num_classes",
    "check_ignore_index",
    "check_labels",
    "check_pair",
    "check_confusion",
    "check_distance",
    "check_pixels",
    "check_device",
]

def check_distance(name: str, value, *, positive: bool, need: str, example: str) -> float:
    """A real number, finite, ``> 0`` (``positive``) or ``>= 0``, as a float; ``need`` says what it measures."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an int past float's range: a huge finite distance, which callers cap
            number = sys.float_info.max
        ok = math.isfinite(number) and (number > 0 if positive else number >= 0)
    if not ok:
        raise ValueError(
            f"{name} must be {need}, a finite number {'> 0' if positive else '>= 0'}, got {value!r} "
            f"({type(value).__name__}): pass e.g. {name}={example}"
        )
    return number


def check_pixels(name: str, value, *, minimum: int, need: str, example: int) -> int:
    """An integer number of pixels ``>= minimum``."""
    if not _is_integer(value) or value < minimum:
        raise ValueError(
            f"{name} must be {need}, an integer >= {minimum}, got {value!r} ({type(value).__name__}): "
            f"pass e.g. {name}={example}"
        )
    return int(value)
