"""Metrics of interactive segmentation: IoU after k clicks and NoC@t, the number of clicks to reach IoU t.

NoC (Xu et al., "Deep Interactive Object Selection", CVPR 2016; the standard of the field since, e.g. Sofiiuk
et al., RITM, ICIP 2022): the clicks come from a deterministic clicker (``seglab.interactive.clicks.next_click``),
one after the other, each new mask given to the clicker; the curve ``ious[k-1]`` is the IoU after click ``k``.

Definitions used here, for one object with the IoU curve ``ious`` of length ``max_clicks``:

- ``IoU@k = ious[k-1]``;
- ``NoC@t = min{k in 1..max_clicks : ious[k-1] >= t}``, and ``max_clicks`` when no k reaches t (the cap counts
  as ``max_clicks`` clicks, the usual convention, so a failure and a success at the last click score alike;
  ``NoF@t``, the number of objects that never reach t, tells them apart);
- the reported NoC@t is the mean over objects.

When the clicker has nothing left to correct (a perfect mask), the curve keeps that IoU for the remaining clicks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_iou", "number_of_clicks", "summarize_clicks"]


def mask_iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """IoU of two bool masks of one shape; 1.0 when both are empty. Raises ValueError if the shapes differ."""
    prediction, target = np.asarray(prediction, dtype=bool), np.asarray(target, dtype=bool)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have one shape; got {prediction.shape} and {target.shape}")
    union = np.logical_or(prediction, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(prediction, target).sum() / union)


def number_of_clicks(ious, threshold: float, max_clicks: int | None = None) -> np.ndarray:
    """NoC of each object: ``ious`` ``(num_objects, K)`` (IoU after clicks 1..K) -> ``(num_objects,)`` int.

    The first click count ``k`` with ``ious[:, k-1] >= threshold``, else ``max_clicks`` (default K).

    Raises:
        ValueError: ``ious`` not 2-D, ``threshold`` outside (0, 1], or ``max_clicks`` larger than K or < 1.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[1] < 1:
        raise ValueError(f"ious must be (num_objects, K) with K >= 1 clicks; got shape {ious.shape}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be an IoU in (0, 1]; got {threshold}")
    max_clicks = ious.shape[1] if max_clicks is None else int(max_clicks)
    if not 1 <= max_clicks <= ious.shape[1]:
        raise ValueError(f"max_clicks must be in 1..{ious.shape[1]} (the clicks in ious); got {max_clicks}")
    reached = ious[:, :max_clicks] >= threshold  # (num_objects, max_clicks)
    return np.where(reached.any(1), reached.argmax(1) + 1, max_clicks)


def summarize_clicks(ious, at=(1, 3, 5), thresholds=(0.85, 0.90), max_clicks: int = 20) -> dict[str, float]:
    """The table row: ``IoU@k`` (mean over objects) for k in ``at``, ``NoC@t`` and ``NoF@t`` (objects that never
    reach t within ``max_clicks``) for t in ``thresholds`` (keys ``"NoC@85"``, ``"NoF@85"``, ...), ``"objects"``.

    Raises:
        ValueError: as ``number_of_clicks``; a k in ``at`` beyond the clicks in ``ious``.
    """
    ious = np.asarray(ious, dtype=np.float64)
    row: dict[str, float] = {"objects": float(len(ious))}
    for k in at:
        if not 1 <= k <= ious.shape[-1]:
            raise ValueError(f"at: click {k} is outside the {ious.shape[-1]} clicks of ious")
        row[f"IoU@{k}"] = float(ious[:, k - 1].mean())
    for t in thresholds:
        noc = number_of_clicks(ious, t, max_clicks)
        name = f"{round(100 * t):d}"
        row[f"NoC@{name}"] = float(noc.mean())
        row[f"NoF@{name}"] = float((ious[:, :max_clicks] < t).all(1).sum())
    return row
