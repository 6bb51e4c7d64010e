"""A click segmenter that needs no learning: flood fill of the clicked pixel's colour, within a tolerance.

Each click takes the 4-connected region around the clicked pixel whose colour is within ``tolerance`` (Euclidean
distance in RGB, 0..255 units, on the image smoothed by a Gaussian of ``sigma`` pixels to tame pixel noise) of the
clicked pixel's smoothed colour. Clicks apply in order to a mask that starts empty: a positive click adds its
region, a negative click removes its region (so a later click overrides an earlier one where they overlap). The
"magic wand" of image editors (e.g. GIMP's fuzzy select), the usual non-learned reference for click tools.

Its one number, ``tolerance``, can be chosen on training images with ``choose_tolerance`` (a grid search, not
learning in any other sense).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["FloodFillSegmenter", "choose_tolerance"]


class FloodFillSegmenter:
    """Flood-fill click segmentation of one image.

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` uint8/float, 0..255.
        tolerance: colour distance (0..255 units) still counted as "the same colour"; > 0.
        sigma: Gaussian smoothing (pixels) before comparing colours; 0 for none.

    ``segment(clicks)`` with clicks ``[(row, col, positive), ...]`` -> ``(H, W)`` bool.

    Raises:
        ValueError: an image that is not 2-D or ``(H, W, C)``, ``tolerance <= 0``, ``sigma < 0``; a click outside.
    """

    def __init__(self, image: np.ndarray, tolerance: float = 40.0, sigma: float = 1.0) -> None:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W) or (H, W, C); got shape {image.shape}")
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0 (colour distance, 0..255 units); got {tolerance}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0 pixels; got {sigma}")
        if sigma > 0:
            image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
        self.image, self.tolerance = image, float(tolerance)
        self._regions: dict[tuple[int, int], np.ndarray] = {}  # cache: a click's region never changes

    def region(self, row: int, col: int) -> np.ndarray:
        """``(H, W)`` bool: the 4-connected pixels around ``(row, col)`` within ``tolerance`` of its colour."""
        height, width = self.image.shape[:2]
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(f"click (row, col) = ({row}, {col}) is outside the {height}x{width} image")
        if (row, col) not in self._regions:
            close = np.linalg.norm(self.image - self.image[row, col], axis=-1) <= self.tolerance  # (H, W)
            labels, _ = ndimage.label(close)
            self._regions[row, col] = labels == labels[row, col]
        return self._regions[row, col]

    def segment(self, clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        for row, col, positive in clicks:
            region = self.region(int(row), int(col))
            mask = mask | region if positive else mask & ~region
        return mask


def choose_tolerance(images: Sequence[np.ndarray], targets: Sequence[np.ndarray], candidates: Sequence[float],
                     *, sigma: float = 1.0, max_clicks: int = 20, threshold: float = 0.85) -> float:
    """The candidate tolerance with the lowest mean NoC@``threshold`` over ``(image, target)`` pairs (training
    images; ties: the first candidate). Uses the evaluation clicker; see ``seglab.interactive.evaluate``.

    Raises:
        ValueError: no candidates or no pairs.
    """
    from .evaluate import click_curves  # here: evaluate imports this module
    from .metrics import number_of_clicks

    if not candidates or not len(images):
        raise ValueError("choose_tolerance needs at least one candidate and one (image, target) pair")
    scores = []
    for tolerance in candidates:
        segmenters = [FloodFillSegmenter(image, tolerance, sigma) for image in images]
        ious = click_curves(lambda i, clicks: segmenters[i].segment(clicks), targets, max_clicks)
        scores.append(number_of_clicks(ious, threshold).mean())
    return float(candidates[int(np.argmin(scores))])
