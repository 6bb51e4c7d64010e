"""The bilateral grid (Paris & Durand, ECCV 2006; Chen, Paris & Durand, SIGGRAPH 2007): a fast approximation
of a Gaussian filter over 5-D (position, colour) features, used by the fast CRF's appearance kernel.

Memory, per image of ``P = H W`` pixels with ``D = 5`` features (``2^D = 32`` cell corners a pixel): the
splat and slice matrices are two sparse CSR matrices with ``32 P`` entries each, int32 column indices and
float32 weights: **512 bytes per pixel** kept while the grid lives (1024 in float64; int64 indices beyond
2^31 entries); building them peaks at about **1 KB per pixel** more (the sort that transposes the matrix),
and the grid itself holds ``cells x C`` values per filtered ``C`` channels (three copies while it is
blurred). ``seglab.crf.memory`` turns this into an estimate before any work.
"""

from __future__ import annotations

import itertools
import math
import warnings

import torch

from seglab.crf.inputs import check_count, check_finite_output, check_tensor, work_dtype

__all__ = ["BilateralGrid", "grid_gaussian_filter", "grid_dims", "MAX_PASSES", "MAX_FEATURES", "DEFAULT_PASSES",
           "DEFAULT_MAX_CELLS"]

#: The most ``[1, 2, 1] / 4`` blur passes per axis (each one makes the cells smaller and more numerous).
MAX_PASSES = 8
#: The most feature dimensions (a pixel has ``2^D`` cell corners).
MAX_FEATURES = 8
#: Defaults: two blur passes (cells of 0.87 sigma) and at most 2^25 cells (with K = 21 classes, 2.7 GiB a copy).
DEFAULT_PASSES, DEFAULT_MAX_CELLS = 2, 2**25


def _step(passes: int) -> float:
    """Cell size in sigmas: hat * blur^passes * hat has variance 1 cell^2 x (passes / 2 + 1 / 3)."""
    return 1.0 / math.sqrt(passes / 2 + 1 / 3)


def grid_dims(extents, passes: int = DEFAULT_PASSES) -> list[int]:
    """Cells along each axis of a grid over features spanning ``extents`` (max - min, in sigmas, per axis)."""
    step = _step(passes)
    return [math.floor(extent / step) + 2 for extent in extents]  # each pixel's upper corner is base + 1


class BilateralGrid:
    """A dense bilateral grid over one batch's features, built once and applied to any values.

    ``features``: ``(N, D, H, W)`` float, divided by their sigmas (``crf_features``), ``1 <= D <= 8``.
    ``passes``: ``[1, 2, 1] / 4`` blurs per axis (1 to :data:`MAX_PASSES`); more passes mean smaller cells
    (``sigma / sqrt(passes / 2 + 1 / 3)``), a kernel closer to the Gaussian and ``~(2 passes)^(D/2)`` times the
    cells. The splat/slice weights of each image are an ``(H W) x cells`` sparse matrix with ``2^D`` entries a
    row (each pixel's cell corners); memory in the module docstring (512 bytes per pixel at D = 5).

    ``grid.filter(values)``: ``(N, C, H, W)`` -> ``(N, C, H, W)``, approximately
    ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (self included). ``grid.self_weight``: ``(N, 1, H, W)``, the weight
    the filter gives each pixel's own value (subtract ``self_weight * v`` for the sum over ``j != i``).
    ``grid.dims``: the cells along each axis, per image.

    Raises:
        TypeError, ValueError: features that are not a non-empty finite float tensor or have more than
            :data:`MAX_FEATURES` channels, ``passes`` or ``max_cells`` out of range, and a grid that would
            hold more than ``max_cells`` cells (checked before anything is built; e.g. a colour sigma of 3
            on the full colour range): use larger sigmas, a smaller image, or raise ``max_cells``.
    """

    def __init__(self, features: torch.Tensor, *, passes: int = DEFAULT_PASSES, max_cells: int = DEFAULT_MAX_CELLS) -> None:
        check_tensor(features, "features", "(N, D, H, W)")
        passes = check_count("passes", passes, 1, MAX_PASSES)
        max_cells = check_count("max_cells", max_cells, 1, 2**62)
        n, d, h, w = features.shape
        if d > MAX_FEATURES:
            raise ValueError(f"features have D = {d} channels > {MAX_FEATURES}: a pixel would have 2^{d} grid corners")
        dtype = work_dtype(features)
        self.passes, self.shape = passes, (h, w)
        step = _step(passes)
        self.scale = (2 * math.pi) ** (d / 2) / step**d  # the Gaussian's mass over the grid kernel's (1 cell^D)
        u = features.flatten(2).to(dtype) / step  # (N, D, HW) in cells
        u = u - u.amin(dim=2, keepdim=True)
        if not bool(torch.isfinite(u).all()):
            raise ValueError(f"features span more than {dtype} holds (up to {float(features.abs().amax()):.3g} "
                             "sigmas): use larger sigmas")  # fmt: skip
        tops = u.amax(dim=2).floor().tolist()  # (N, D) the largest base cell; each pixel's upper corner is base + 1
        self.dims = [[int(top) + 2 for top in image] for image in tops]
        for dims in self.dims:  # before anything large is built
            cells = math.prod(dims)
            if cells > max_cells:
                raise ValueError(
                    f"the bilateral grid would hold {cells} cells ({' x '.join(map(str, dims))}) > max_cells="
                    f"{max_cells}: use larger sigmas, a smaller image, or raise max_cells (memory: cells x C floats)")
        self.taps = _blur_taps(passes)  # 2 passes + 1 taps, the middle one at index `passes`
        base = u.floor()
        frac = u.sub_(base)  # (N, D, HW) position inside the cell, in [0, 1)
        b0, b1 = self.taps[passes], self.taps[passes + 1]  # B(0), B(+-1)
        per_axis = ((1 - frac) ** 2 + frac**2) * b0 + 2 * frac * (1 - frac) * b1  # sum_ab h_a h_b B(a - b)
        self.self_weight = (self.scale * per_axis.prod(dim=1)).view(n, 1, h, w)
        del per_axis
        self.splat, self.slice = [], []
        for index, dims in enumerate(self.dims):
            flat, weight = _corners(base[index], frac[index], dims)  # (HW, 2^D) each
            self.slice.append(_csr(flat, weight, math.prod(dims)))  # (HW, cells)
            self.splat.append(_csr(flat, weight, math.prod(dims), transpose=True))  # (cells, HW)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)`` (values' dtype), the Gaussian filter over the grid, self included."""
        check_tensor(values, "values", "(N, C, H, W)")
        if values.shape[0] != len(self.dims) or tuple(values.shape[2:]) != self.shape:
            raise ValueError(f"values {tuple(values.shape)} must be (N, C, H, W) with N = {len(self.dims)} and "
                             f"H, W = {self.shape}, as the grid's features")  # fmt: skip
        return check_finite_output(self._filter(values), values)

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        n, c, h, w = values.shape
        out = torch.empty_like(values)
        for index, dims in enumerate(self.dims):
            v = values[index].flatten(1).T.to(self.slice[index].dtype)  # (HW, C)
            grid = (self.splat[index] @ v).view(*dims, c)  # splat: (cells, C) as (D_1, ..., D_D, C)
            for axis, size in enumerate(dims):  # blur: one convolution per axis, zero beyond the grid
                blurred = self.taps[self.passes] * grid
                for offset in range(1, min(self.passes, size - 1) + 1):
                    tap = self.taps[self.passes + offset]
                    blurred.narrow(axis, offset, size - offset).add_(grid.narrow(axis, 0, size - offset), alpha=tap)
                    blurred.narrow(axis, 0, size - offset).add_(grid.narrow(axis, offset, size - offset), alpha=tap)
                grid = blurred
            sliced = self.slice[index] @ grid.reshape(-1, c)  # slice: (HW, C)
            out[index] = sliced.mul_(self.scale).T.reshape(c, h, w).to(values.dtype)
        return out


def _corners(base: torch.Tensor, frac: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's ``2^D`` cell corners: flat cell indices ``(HW, 2^D)`` (int32 while they fit, increasing
    along each row) and multilinear weights ``(HW, 2^D)``, corner bits in ``itertools.product`` order.

    ``base``, ``frac``: ``(D, HW)`` lower cell corner and position inside the cell. No ``(HW, 2^D, D)``
    tensor is built: the flat index is the base cell's plus a per-corner offset, and the weights are an
    outer product built one axis at a time.
    """
    d, pixels = base.shape
    strides = [math.prod(dims[k + 1:]) for k in range(d)]
    index_dtype = torch.int32 if max(math.prod(dims), pixels * 2**d) < 2**31 else torch.int64
    base_flat = torch.zeros(pixels, dtype=torch.int64, device=base.device)
    for k in range(d):
        base_flat += base[k].to(torch.int64) * strides[k]
    offsets = [sum(bit * stride for bit, stride in zip(bits, strides)) for bits in itertools.product((0, 1), repeat=d)]
    flat = base_flat.to(index_dtype)[:, None] + torch.tensor(offsets, dtype=index_dtype, device=base.device)
    weight = torch.ones(pixels, 1, dtype=frac.dtype, device=frac.device)
    for k in range(d):  # corner bit of axis k appended as the fastest-varying index
        pair = torch.empty(pixels, weight.shape[1], 2, dtype=frac.dtype, device=frac.device)
        pair[:, :, 0] = weight * (1 - frac[k])[:, None]
        pair[:, :, 1] = weight * frac[k][:, None]
        weight = pair.view(pixels, -1)
    return flat, weight


def _csr(flat: torch.Tensor, weight: torch.Tensor, cells: int, transpose: bool = False) -> torch.Tensor:
    """The ``(P, cells)`` sparse CSR matrix with ``weight[p, k]`` at ``(p, flat[p, k])``, or its transpose."""
    pixels, per_row = flat.shape
    index_dtype = flat.dtype
    flat, weight = flat.flatten(), weight.flatten()
    if transpose:
        order = torch.argsort(flat, stable=True)  # int64 (P per_row)
        counts = torch.bincount(flat, minlength=cells)
        rows = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(index_dtype)
        del counts
        weight = weight[order]
        columns = order.div_(per_row, rounding_mode="floor").to(index_dtype)  # the pixel of each entry
        del order
        flat, size = columns, (cells, pixels)
    else:
        rows = torch.arange(0, pixels * per_row + 1, per_row, device=flat.device, dtype=index_dtype)
        size = (pixels, cells)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul with a dense matrix is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rows, flat, weight, size=size, check_invariants=False)


def grid_gaussian_filter(
    values: torch.Tensor, features: torch.Tensor, *, passes: int = DEFAULT_PASSES, max_cells: int = DEFAULT_MAX_CELLS
) -> torch.Tensor:
    """Approximate ``exact_gaussian_filter`` on a dense bilateral grid: ``BilateralGrid(features).filter(values)``.

    Args:
        values: ``(N, C, H, W)`` float.
        features: ``(N, D, H, W)`` float, divided by their sigmas, same N, H, W.
        passes, max_cells: as :class:`BilateralGrid`.

    Returns:
        ``(N, C, H, W)`` in the values' dtype, the self term included as in the exact filter.

    Raises:
        TypeError, ValueError: as :class:`BilateralGrid`, and values that do not match the features.
    """
    check_tensor(values, "values", "(N, C, H, W)")
    check_tensor(features, "features", "(N, D, H, W)")
    if values.shape[0] != features.shape[0] or values.shape[2:] != features.shape[2:]:
        raise ValueError(f"values {tuple(values.shape)} and features {tuple(features.shape)} must share N, H and W")
    grid = BilateralGrid(features.to(work_dtype(values)), passes=passes, max_cells=max_cells)
    return check_finite_output(grid._filter(values.to(work_dtype(values))).to(values.dtype), values)


def _blur_taps(passes: int) -> list[float]:
    """``[1, 2, 1] / 4`` convolved with itself ``passes`` times: ``2 passes + 1`` taps, the middle one at ``passes``."""
    taps = [1.0]
    for _ in range(passes):
        padded = [0.0, 0.0, *taps, 0.0, 0.0]
        taps = [0.25 * padded[i] + 0.5 * padded[i + 1] + 0.25 * padded[i + 2] for i in range(len(taps) + 2)]
    return taps
