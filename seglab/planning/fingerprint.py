"""A dataset's fingerprint: what nnU-Net measures before it plans anything.

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18, 2021 (Fig. 2, "dataset fingerprint"); re-implemented from the paper and
from nnunetv2's ``experiment_planning/dataset_fingerprint/fingerprint_extractor.py``. Per training case:

- the image is cropped to the bounding box of its nonzero pixels (any channel); its size after the crop
  and the cropped fraction are recorded (``shapes``, ``median_relative_size_after_crop``);
- its pixel spacing (``spacings``; natural images have none: 1.0 per axis unless given);
- the intensities of its *foreground* pixels, per channel: the pixels inside the crop whose label is not 0
  (the background class; ignore pixels count as foreground, as nnU-Net's ``seg > 0`` does). Over all cases,
  each case weighing the same (nnunetv2 samples as many pixels from every case): mean, std, median, min,
  max and the 0.5 / 99.5 percentiles (:class:`IntensityStats`); CT normalisation uses them, z-score
  normalisation does not.

seglab adds the class frequencies (fraction of labelled pixels per class, and of ignore pixels), which
the paper's fingerprint lacks and its planner does not use: they are shown to say why nnU-Net's Dice +
cross-entropy loss, not a re-weighted one, copes with rare classes.

Differences from nnunetv2: the statistics are exact for that equal-weight mixture of the cases (integer
images are histogrammed; nnunetv2 draws a random sample of 10^8 / num_cases pixels per case, with
replacement, and interpolates its percentiles), so its numbers differ from seglab's by sampling noise;
an image whose channels are all equal in every case (ISBI's gray slices, which seglab replicates to RGB)
counts as one channel, as nnunetv2 reads the gray PNG; an image without any nonzero pixel keeps its
full size (nnunetv2 fails on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityStats", "Fingerprint", "dataset_fingerprint", "normalization_scheme", "iter_pairs"]

#: Channel names whose intensities mean something absolute (CT: Hounsfield units) -> "ct"; others "zscore".
CT_CHANNELS = frozenset({"ct"})


def normalization_scheme(channel_name: str) -> str:
    """``"ct"`` for a channel named CT (any case), else ``"zscore"`` (nnU-Net's default for MRI, RGB, EM ...)."""
    return "ct" if channel_name.casefold() in CT_CHANNELS else "zscore"


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of one channel's foreground pixels over the dataset, every case weighing the same (image
    units, e.g. 0-255). Percentiles are the smallest value whose weighted CDF reaches them."""

    mean: float
    std: float  # population std (ddof 0) of the case-weighted mixture
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    num_pixels: int  # how many foreground pixels they are computed from


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`dataset_fingerprint` measured (one entry per training case in ``shapes`` / ``spacings``)."""

    num_cases: int
    shapes: tuple[tuple[int, int], ...]  # (H, W) after cropping to the nonzero region, pixels
    spacings: tuple[tuple[float, float], ...]  # (H, W) pixel spacing, physical units (1.0: none given)
    median_relative_size_after_crop: float  # median over cases of cropped area / image area
    channel_names: tuple[str, ...]  # e.g. ("gray",), ("R", "G", "B"), ("CT",)
    intensity: tuple[IntensityStats, ...]  # one per channel, over foreground pixels
    num_classes: int  # K, the background class 0 included
    class_frequencies: tuple[float, ...]  # K fractions of the labelled (non-ignore) pixels, summing to 1
    ignore_fraction: float  # fraction of all pixels labelled ignore_index

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def median_shape(self) -> tuple[float, float]:
        """Per-axis median of ``shapes`` (may end in .5)."""
        return tuple(float(v) for v in np.median(np.array(self.shapes, dtype=np.float64), axis=0))

    @property
    def median_spacing(self) -> tuple[float, float]:
        return tuple(float(v) for v in np.median(np.array(self.spacings, dtype=np.float64), axis=0))


class _Values:
    """One channel's foreground values, each case weighted equally (1 / its foreground pixels), as nnunetv2's
    equal-size sample per case; uint8/uint16/bool values are histogrammed, others kept."""

    def __init__(self) -> None:
        self.weights = np.zeros(0, dtype=np.float64)  # histogram: summed weight of each integer value
        self.chunks: list[tuple[np.ndarray, float]] = []  # (values, weight of each) of float cases
        self.cases = 0
        self.num_pixels = 0

    def add(self, values: np.ndarray) -> None:
        """Add one case's foreground values (a case without any is left out, as nnunetv2 does)."""
        if values.size == 0:
            return
        self.cases += 1
        self.num_pixels += values.size
        if values.dtype in (np.uint8, np.uint16, np.bool_):
            counts = np.bincount(values.ravel().astype(np.int64), minlength=len(self.weights)) / values.size
            counts[: len(self.weights)] += self.weights
            self.weights = counts
        else:
            self.chunks.append((values.astype(np.float64).ravel(), 1.0 / values.size))

    def stats(self) -> IntensityStats | None:
        if self.cases == 0:
            return None
        values = np.nonzero(self.weights)[0].astype(np.float64)
        weights = self.weights[values.astype(np.int64)]
        if self.chunks:
            values = np.concatenate([values, *(v for v, _ in self.chunks)])
            weights = np.concatenate([weights, *(np.full(v.size, w) for v, w in self.chunks)])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order] / self.cases  # the mixture's probabilities
        cdf = np.cumsum(weights)

        def percentile(p: float) -> float:  # smallest value whose CDF reaches p ("inverted_cdf")
            reach = p / 100 * cdf[-1] * (1 - 1e-12)  # a CDF that hits p exactly is not lost to rounding
            return float(values[min(np.searchsorted(cdf, reach, side="left"), len(values) - 1)])

        mean = float((values * weights).sum() / cdf[-1])
        std = float(math.sqrt((((values - mean) ** 2) * weights).sum() / cdf[-1]))
        return IntensityStats(mean, std, percentile(50), float(values[0]), float(values[-1]), percentile(0.5),
                              percentile(99.5), self.num_pixels)


def iter_pairs(data) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """The ``(image, mask)`` pairs of ``data``: a seglab dataset's items before their transform (``read``), or
    whatever ``data`` iterates over."""
    read = getattr(data, "read", None)  # seglab datasets: the item before its transform
    if read is not None and hasattr(data, "__len__"):
        return (read(i) for i in range(len(data)))
    return iter(data)


def _spacing_of(spacing, index: int) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    one = np.asarray(spacing, dtype=np.float64)
    pair = one if one.ndim == 1 else one[index]
    if pair.shape != (2,) or not np.all(np.isfinite(pair) & (pair > 0)):
        raise ValueError(f"spacing must be one positive (H, W) pair, or one pair per image; got {spacing!r}")
    return (float(pair[0]), float(pair[1]))


def dataset_fingerprint(data, *, num_classes: int | None = None, ignore_index: int | None = None,
                        spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
                        channel_names: Sequence[str] | None = None, max_images: int | None = None) -> Fingerprint:
    """Measure the fingerprint of a segmentation training set (see the module docstring for what and how).

    Args:
        data: a seglab dataset (its items are read before any transform) or an iterable of
            ``(image, mask)`` pairs: image ``(H, W)`` or ``(H, W, C)`` (integer or float; tensors are
            converted), mask ``(H, W)`` integer class indices in ``[0, K)`` or ``ignore_index``.
        num_classes: K; default ``data.num_classes``, else the largest label seen + 1.
        ignore_index: the ignore label; default ``data.ignore_index``, else 255.
        spacing: pixel spacing ``(H, W)`` for all images, or one pair per image; default 1.0 per axis.
        channel_names: one name per channel; ``"CT"`` selects CT normalisation. Default ``("gray",)`` or
            ``("R", "G", "B")`` (z-score).
        max_images: use only the first this-many pairs (a quick fingerprint, e.g. in a smoke run).

    Returns:
        A :class:`Fingerprint`.

    Raises:
        ValueError: no pairs; an image that is not ``(H, W[, C])`` or whose mask has another size; a
            non-integer mask or labels outside ``[0, K)`` and ``ignore_index``; images with different
            channel counts; ``channel_names`` of the wrong length; a bad ``spacing``.
    """
    ignore = int(getattr(data, "ignore_index", 255) if ignore_index is None else ignore_index)
    given_k = num_classes if num_classes is not None else getattr(data, "num_classes", None)
    shapes, spacings, relative, label_counts = [], [], [], np.zeros(256, dtype=np.int64)
    channels: list[_Values] = []
    gray, ignored, total_pixels = True, 0, 0
    for index, (image, mask) in enumerate(iter_pairs(data)):
        if max_images is not None and index >= max_images:
            break
        image, mask = np.asarray(image), np.asarray(mask)
        image = image[..., None] if image.ndim == 2 else image
        if image.ndim != 3 or mask.shape != image.shape[:2]:
            raise ValueError(f"image {index}: expected image (H, W) or (H, W, C) and mask (H, W) of the same size; "
                             f"got image {image.shape} and mask {mask.shape} (channels last; masks hold class indices)")
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"mask {index}: class indices must be integers, got {mask.dtype}; round or cast it")
        if not channels:
            channels = [_Values() for _ in range(image.shape[2])]
        elif len(channels) != image.shape[2]:
            raise ValueError(f"image {index} has {image.shape[2]} channels, the first had {len(channels)}: "
                             "convert all images to the same mode (all RGB or all gray)")
        gray = gray and all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[2]))
        rows, cols = np.nonzero((image != 0).any(axis=2))  # crop to nonzero (nnU-Net; holes do not change a box)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)) if rows.size else np.s_[:, :]
        crop_image, crop_mask = image[box], mask[box]
        shapes.append(crop_mask.shape)
        relative.append(crop_mask.size / mask.size)
        spacings.append(_spacing_of(spacing, index))
        foreground = crop_mask != 0
        for c, values in enumerate(channels):
            values.add(crop_image[..., c][foreground])
        labelled = mask[mask != ignore]
        if labelled.size and (labelled.min() < 0 or labelled.max() > 255
                              or (given_k is not None and labelled.max() >= given_k)):
            bad = np.unique(labelled[(labelled < 0) | (labelled >= (given_k or 256))])[:8].tolist()
            raise ValueError(f"mask {index}: labels {bad} are outside [0, {given_k or 256}) and ignore_index={ignore}; "
                             "map them to a class or to the ignore value, or pass num_classes")
        label_counts += np.bincount(labelled.ravel().astype(np.int64), minlength=256)
        ignored += mask.size - labelled.size
        total_pixels += mask.size
    if not shapes:
        raise ValueError("dataset_fingerprint: no (image, mask) pairs in data (an empty dataset, or max_images=0)")
    k = int(given_k) if given_k is not None else int(np.nonzero(label_counts)[0].max()) + 1
    if gray and len(channels) > 1:
        channels = channels[:1]  # replicated gray (seglab's ISBI): one channel, as the file holds
    if channel_names is None:
        channel_names = ("gray",) if len(channels) == 1 else ("R", "G", "B", "A")[: len(channels)]
    if len(channel_names) != len(channels):
        raise ValueError(f"channel_names has {len(channel_names)} names for {len(channels)} channels")
    stats = tuple(values.stats() for values in channels)
    if any(s is None for s in stats):
        raise ValueError("no foreground pixel (label != 0) in any image: nothing to measure intensities on")
    counts = label_counts[:k].astype(np.float64)
    return Fingerprint(
        num_cases=len(shapes), shapes=tuple((int(h), int(w)) for h, w in shapes), spacings=tuple(spacings),
        median_relative_size_after_crop=float(np.median(relative)), channel_names=tuple(channel_names),
        intensity=stats, num_classes=k, class_frequencies=tuple(float(v) for v in counts / max(counts.sum(), 1)),
        ignore_fraction=ignored / total_pixels,
    )
