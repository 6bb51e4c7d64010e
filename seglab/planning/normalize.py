"""nnU-Net's intensity normalisation of one image, by the scheme its plan chose per channel.

Isensee et al., Nature Methods 2021 (Online Methods, "Intensity normalization"); nnunetv2's
``preprocessing/normalization/default_normalization_schemes.py`` (``ZScoreNormalization``,
``CTNormalization``), re-implemented:

- ``"zscore"``: subtract the image's own mean, divide by its std (at least 1e-8), per channel; with
  ``use_mask`` only the pixels inside ``mask`` are used and changed (the rest stays as it was: 0 after
  cropping to the nonzero region);
- ``"ct"``: clip to the dataset's foreground 0.5 / 99.5 percentiles, then subtract the foreground mean
  and divide by its std (:class:`~seglab.planning.IntensityStats`): one fixed mapping for every image,
  because CT intensities (Hounsfield units) mean the same in every scan.

Differences from nnunetv2: none in the numbers; the image is channels-last ``(H, W, C)`` (seglab's
images) and comes back ``(C, H, W)`` float32, ready for a network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seglab.planning.fingerprint import IntensityStats

__all__ = ["normalize_image"]


def normalize_image(image: np.ndarray, schemes: Sequence[str], stats: Sequence[IntensityStats] | None = None, *,
                    use_mask: Sequence[bool] | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise ``image`` ``(H, W)`` or ``(H, W, C)`` channel by channel; return ``(C, H, W)`` float32.

    Args:
        schemes: one of ``"zscore"`` / ``"ct"`` per channel (``Plan.normalization``).
        stats: per channel, the fingerprint's foreground statistics (``Fingerprint.intensity``); needed for "ct".
        use_mask: per channel (``Plan.use_mask_for_norm``); default all False.
        mask: ``(H, W)`` bool, the region a masked z-score uses (the nonzero region); needed if any use_mask.

    Raises:
        ValueError: a scheme per channel missing or unknown; "ct" without ``stats``; ``use_mask`` without ``mask``.
    """
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    channels = image.shape[-1]
    use_mask = [False] * channels if use_mask is None else list(use_mask)
    if len(schemes) != channels or len(use_mask) != channels:
        raise ValueError(f"need one scheme and one use_mask per channel ({channels}); got {list(schemes)}, {use_mask}")
    out = np.empty((channels, *image.shape[:2]), dtype=np.float32)
    for c, scheme in enumerate(schemes):
        x = image[..., c].astype(np.float32)
        if scheme == "ct":
            if stats is None:
                raise ValueError("CT normalisation needs the fingerprint's intensity stats: "
                                 "pass stats=fingerprint.intensity")
            s = stats[c]
            x = (np.clip(x, s.percentile_00_5, s.percentile_99_5) - s.mean) / max(s.std, 1e-8)
        elif scheme == "zscore":
            if use_mask[c]:
                if mask is None:
                    raise ValueError("use_mask needs mask= (the image's nonzero region, (H, W) bool)")
                inside = x[mask]
                x[mask] = (inside - inside.mean()) / max(float(inside.std()), 1e-8)
            else:
                x = (x - x.mean()) / max(float(x.std()), 1e-8)
        else:
            raise ValueError(f"unknown normalisation scheme {scheme!r}; valid: 'zscore', 'ct'")
        out[c] = x
    return out
