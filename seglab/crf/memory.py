"""How much memory the dense CRF needs, estimated from H, W, K and the parameters before any work, and the
refusal (with the ``max_size`` / ``--crf-max-size`` that fits) of what does not fit a budget.

The model of the peak (bytes; images are processed one at a time; ``P = h w`` pixels of the image the CRF
runs on; ``s`` bytes a float: 4, or 8 for float64 logits):

- outputs ``4 N K P`` (float32; with ``max_size`` also the shrunk logits and images; the full-size result is
  filled a few channels at a time, so its size, that of the logits given, is not counted) and 64 MiB of fixed
  cost (kernels loaded on first use, allocator slack);
- ``"fast"``: the bilateral grid's sparse splat/slice matrices, ``64 (4 + s) P`` (**512 bytes a pixel** in
  float32: 2 x 32 entries, an int32 index and a value each), then the larger of building them (sorting the
  ``32 P`` entries: ``(640 + 100 s) P``) and the mean field (``16 K P s``, plus the grid's ``cells x K``
  values three times while it is blurred);
- ``"lattice"``: each kernel's permutohedral lattice (``seglab.crf.lattice``; D = 5 features for the appearance
  kernel, 2 for the smoothness kernel), kept while the mean field runs: ``2 (D + 1) (4 + s) P + 3 s P`` bytes
  (splat and slice matrices, self weights and normalisers: **120 + 48 bytes a pixel** for the two kernels in
  float32) plus ``4 (2 D + 3)`` bytes per lattice point (CSR rows, int32 neighbours), the number of points
  bounded by ``(D + 1) P`` and, for the appearance kernel, by the lattice points in the features' bounding box;
  then the larger of building one (``(D + 1) (72 + 3 s) P``: int64 keys, sorted copies, order, inverse) and the
  mean field (``16 K P s``, the lattice's values included: at most ``3 K P s``);
- ``"exact"``: the ``P x P`` kernel matrix (three copies while it is built) and the mean field.

Measured peak resident memory of ``"lattice"`` (one thread, float32; tests/test_crf_lattice.py checks one size
in a fresh process): 480x360 CamVid K=11 132 MiB (803 bytes a pixel), K=21 205 MiB; 320x240 random colours
K=2 42 MiB, K=21 88 MiB. Measured for ``"fast"`` (CPU, float32, 2-thread torch; tests/test_crf_guards.py
checks one size in a fresh process): 375x500 K=21 358 MiB (estimate 1.06x + fixed cost), K=2 238 MiB
(1.17x); 600x800 K=21 816 MiB (1.17x); 1000x1400 K=3 1.6 GiB (1.27x). Before this estimate existed the
grid's build alone took about 3.2 KB a pixel (a ``(P, 32, 5)`` int64 corner tensor and its products); now
about 1.3-2 KB a pixel in all.
"""

from __future__ import annotations

import math
import numbers

import torch

from seglab.crf.grid import DEFAULT_MAX_CELLS, DEFAULT_PASSES, MAX_PASSES, grid_dims
from seglab.crf.lattice import lattice_volume
from seglab.crf.inputs import check_count, check_number, check_sigma

__all__ = ["DEFAULT_MAX_BYTES", "crf_memory_bytes", "largest_crf_size", "check_crf_memory", "reduced_size"]

#: The default memory budget of one ``dense_crf`` call (2 GiB): a 500x375 VOC image with 21 classes needs
#: about 0.6 GiB (estimated); larger photos need ``max_size`` (the CLI's ``--crf-max-size``), e.g. 984 px.
DEFAULT_MAX_BYTES = 2 * 2**30
_OVERHEAD = 64 * 2**20  # paid once whatever the size: kernels and libraries loaded on first use, allocator slack
_METHODS = ("exact", "fast", "lattice")


def reduced_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """``(h, w)`` with the longer side shrunk to at most ``max_size`` (never enlarged, never below 1 px)."""
    if max_size is None or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _grid_cells(height: int, width: int, sxy_bilateral: float, srgb_bilateral: float, passes: int,
                ranges: tuple[float, float, float]) -> tuple[int, list[int]]:
    extents = [(height - 1) / sxy_bilateral, (width - 1) / sxy_bilateral, *(r / srgb_bilateral for r in ranges)]
    dims = grid_dims(extents, passes)
    return math.prod(dims), dims


def _estimate(height: int, width: int, k: int, batch: int, method: str, sxy_bilateral: float,
              srgb_bilateral: float, passes: int, ranges: tuple[float, float, float], s: int,
              reduced: bool = False) -> int:
    pixels = height * width
    outputs = 4 * batch * k * pixels * (1 + reduced) + (3 * batch * pixels * s if reduced else 0)  # + shrunk inputs
    mean_field = 16 * k * pixels * s
    if method == "exact":
        return _OVERHEAD + outputs + 3 * pixels * pixels * s + mean_field
    if method == "lattice":
        extents = [(height - 1) / sxy_bilateral, (width - 1) / sxy_bilateral, *(r / srgb_bilateral for r in ranges)]
        kept = 0
        for d, points in ((5, _lattice_points(extents, pixels)), (2, 3 * pixels)):
            kept += 2 * (d + 1) * (4 + s) * pixels + 3 * s * pixels + 4 * (2 * d + 3) * (points + 1)
        return _OVERHEAD + outputs + kept + max(6 * (72 + 3 * s) * pixels, mean_field)
    cells, _ = _grid_cells(height, width, sxy_bilateral, srgb_bilateral, passes, ranges)
    kept = 64 * (4 + s) * pixels  # splat + slice: 2 x 32 entries a pixel, an int32 index and a value each
    build = (640 + 100 * s) * pixels  # sorting the 32 P entries to transpose the slice matrix
    return _OVERHEAD + outputs + kept + max(build, mean_field + 3 * cells * k * s)


def _lattice_points(extents: list[float], pixels: int) -> int:
    """At most how many points a 5-D lattice over features spanning ``extents`` (sigmas) has: ``(D + 1) P``, and
    the lattice points in the bounding box grown by two lattice steps a side (a pixel's vertices lie within one)."""
    volume = math.prod(extent + 4 for extent in extents) / lattice_volume(len(extents))
    return int(min(6 * pixels, volume))


def _checked(height, width, num_classes, batch, method, sxy_bilateral, srgb_bilateral, passes, color_range,
             dtype) -> tuple:
    for name, value in (("height", height), ("width", width), ("num_classes", num_classes), ("batch", batch)):
        check_count(name, value, 1, 2**40)
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not one of {_METHODS}")
    check_sigma("sxy_bilateral", sxy_bilateral)
    check_sigma("srgb_bilateral", srgb_bilateral)
    check_count("passes", passes, 1, MAX_PASSES)
    ranges = (color_range,) * 3 if isinstance(color_range, numbers.Real) else color_range
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 3:
        raise ValueError(f"color_range must be a number or 3 numbers (RGB levels, 0 to 255), got {color_range!r}")
    ranges = tuple(check_number("color_range", r, positive=False) for r in ranges)
    if max(ranges) > 255:
        raise ValueError(f"color_range must be at most 255 (RGB levels), got {color_range!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (what the CRF computes in), got {dtype!r}")
    return (int(height), int(width), int(num_classes), int(batch), method, float(sxy_bilateral),
            float(srgb_bilateral), int(passes), ranges, 8 if dtype == torch.float64 else 4)


def crf_memory_bytes(
    height: int, width: int, num_classes: int, *, batch: int = 1, method: str = "fast",
    sxy_bilateral: float = 80.0, srgb_bilateral: float = 13.0, passes: int = DEFAULT_PASSES,
    color_range: float | tuple[float, float, float] = 255.0, dtype: torch.dtype = torch.float32,
) -> int:
    """Estimated peak memory (bytes) of ``dense_crf`` on ``batch`` images of ``height x width`` pixels and
    ``num_classes`` classes (the model in the module docstring; measured to bound the real peak).

    Args:
        height, width, num_classes, batch: sizes, each >= 1.
        method: ``"fast"``, ``"lattice"`` or ``"exact"``.
        sxy_bilateral, srgb_bilateral, passes: as ``dense_crf`` (they set the bilateral grid's cells).
        color_range: the range (max - min, RGB levels 0-255) of each colour channel, one number or three;
            255, the default, is the worst case.
        dtype: what the CRF computes in: float64 for float64 logits, else float32.

    Returns:
        Bytes (an int).

    Raises:
        ValueError: a size, sigma, pass count, colour range, method or dtype out of range.
    """
    return _estimate(*_checked(height, width, num_classes, batch, method, sxy_bilateral, srgb_bilateral, passes,
                               color_range, dtype))  # fmt: skip


def largest_crf_size(height: int, width: int, num_classes: int, *, max_bytes: float, max_cells: int = DEFAULT_MAX_CELLS,
                     batch: int = 1, method: str = "fast", sxy_bilateral: float = 80.0, srgb_bilateral: float = 13.0,
                     passes: int = DEFAULT_PASSES, color_range=255.0, dtype: torch.dtype = torch.float32) -> int | None:
    """The largest ``max_size`` (longer side, pixels; at most ``max(height, width)``) at which ``dense_crf`` on a
    ``height x width`` image fits ``max_bytes`` and, for ``"fast"``, ``max_cells``; None when not even 1 px does.
    Options as :func:`crf_memory_bytes`.

    Raises:
        ValueError: as :func:`crf_memory_bytes`, and ``max_bytes`` / ``max_cells`` not > 0.
    """
    args = _checked(height, width, num_classes, batch, method, sxy_bilateral, srgb_bilateral, passes, color_range,
                    dtype)  # fmt: skip
    return _largest(args, check_number("max_bytes", max_bytes), check_count("max_cells", max_cells, 1, 2**62))


def _largest(args: tuple, max_bytes: float, max_cells: int) -> int | None:
    height, width, k, batch, method, sxy, srgb, passes, ranges, s = args

    def fits(size: int) -> bool:
        h, w = reduced_size(height, width, size)
        if _estimate(h, w, k, batch, method, sxy, srgb, passes, ranges, s, (h, w) != (height, width)) > max_bytes:
            return False
        return method != "fast" or _grid_cells(h, w, sxy, srgb, passes, ranges)[0] <= max_cells

    if not fits(1):
        return None
    low, high = 1, max(height, width)  # fits(low)
    while low < high:  # the largest size that fits (the estimate grows with the size)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def check_crf_memory(num_images: int, num_classes: int, height: int, width: int, images: torch.Tensor,
                     method: str, options: dict, *, max_size: int | None = None, max_bytes=None,
                     dtype: torch.dtype = torch.float32, classes_known: bool = True) -> None:
    """Refuse, before any work, a CRF on ``num_images`` images of ``height x width`` (run at ``max_size``)
    whose estimated memory is over ``max_bytes`` (None: :data:`DEFAULT_MAX_BYTES`) or whose bilateral grid is
    over ``options["max_cells"]``; the message gives the ``max_size`` (``--crf-max-size``) that fits.

    ``images``: the checked ``(N, 3, H, W)`` RGB images (their colour ranges set the grid's colour cells).
    ``options``: checked ``sxy_bilateral``, ``srgb_bilateral``, ``passes``, ``max_cells``, ``compat_bilateral``.
    ``classes_known=False``: a check before the model has run, ``num_classes`` being a lower bound.

    Raises:
        ValueError: ``max_bytes`` not a finite number > 0, or the CRF does not fit.
    """
    budget = DEFAULT_MAX_BYTES if max_bytes is None else check_number("max_bytes", max_bytes)
    h, w = reduced_size(height, width, max_size)
    flat = images.flatten(2)
    ranges = tuple((flat.amax(2) - flat.amin(2)).amax(0).double().tolist())  # (3,) per-channel colour ranges
    grid = method == "fast" and bool(options["compat_bilateral"])
    args = (height, width, num_classes, num_images, method, options["sxy_bilateral"], options["srgb_bilateral"],
            options["passes"], ranges, 8 if dtype == torch.float64 else 4)  # fmt: skip
    needed = _estimate(h, w, *args[2:], (h, w) != (height, width))
    cells, dims = _grid_cells(h, w, options["sxy_bilateral"], options["srgb_bilateral"], options["passes"], ranges)
    too_many_cells = grid and cells > options["max_cells"]
    if needed <= budget and not too_many_cells:
        return
    size = _largest(args, budget, options["max_cells"] if grid else 2**62)
    if size is None:
        advice = ("no --crf-max-size fits: use larger sigmas or fewer classes, or raise max_bytes / max_cells if "
                  "the memory is there")  # fmt: skip
    else:
        advice = (f"run it at reduced resolution with --crf-max-size {size} or less (dense_crf(max_size={size}), "
                  f"infer_logits(crf_max_size={size}): the refined scores are upsampled), or raise max_bytes / "
                  "max_cells if the memory is there")  # fmt: skip
    classes = f"{num_classes} classes" if classes_known else f"at least {num_classes} class(es), before the model runs"
    what = f"the dense CRF on {num_images} image(s) of {h}x{w} px (height x width) with {classes}"
    if too_many_cells:
        raise ValueError(f"{what} would need a bilateral grid of {cells} cells ({' x '.join(map(str, dims))}) > "
                         f"max_cells = {options['max_cells']}: {advice}")
    grid_note = f"; grid {' x '.join(map(str, dims))} cells" if grid else ""
    raise ValueError(f"{what} would need about {needed / 2**30:.2f} GiB ({needed / (h * w):.0f} bytes a pixel"
                     f"{grid_note}) > max_bytes = {budget / 2**30:.2f} GiB: {advice}")
