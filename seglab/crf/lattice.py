"""The permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral
Lattice", Eurographics 2010): a fast approximation of a Gaussian filter over D-dimensional features, the one
Krähenbühl & Koltun's densecrf (and so pydensecrf) uses for both CRF kernels.

Each pixel's feature vector ``f`` (already divided by its sigmas) is *elevated* into the hyperplane
``sum(x) = 0`` of ``R^(D+1)``, scaled so that the lattice spacing matches the Gaussian's sigma, and lands in one
simplex of the lattice ``{x in Z^(D+1): sum(x) = 0, all x_i equal mod D + 1}``. Then:

- **splat**: the pixel's value goes to the simplex's ``D + 1`` vertices with its barycentric weights;
- **blur**: the lattice is blurred with ``[1/2, 1, 1/2]`` along each of its ``D + 1`` directions in turn, a
  lattice point seeing only its two neighbours along that direction (those no pixel touched count as 0);
- **slice**: each pixel reads its vertices back with the same weights.

The lattice is built once per image (hashing the vertices' integer keys: each key is packed into one int64,
the keys are sorted with their positions in the low bits, and neighbours are found with ``searchsorted``) and
kept as two sparse CSR matrices (splat, slice) and the neighbours' indices, so that filtering any values (each
mean-field iteration) is two sparse products and ``2 (D + 1)`` row gathers on ``M`` lattice points, with ``M``
far below the pixel count at the CRF's sigmas (about 0.06 P at ``sxy=80, srgb=13`` on CamVid).

Where it departs from the paper and from densecrf: the output is scaled by the ratio of the Gaussian's mass
to the lattice kernel's (``(2 pi)^(D/2) / (2^(D+1) V)``, ``V`` the lattice's volume per point in feature
units), so that ``filter`` approximates ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` itself (densecrf only scales by
``1 / (1 + 2^-D)``, which cancels in its normalised kernels); ``self_weight`` is the weight the lattice gives a
pixel's own value *when all the lattice points around it are occupied* (exact inside the data, an upper bound
at its edges), used by the CRF to leave out the ``j = i`` term. Its error against the exact Gaussian filter
(tests/test_crf_lattice.py): a relative L2 error of 0.01-0.02 for D = 1-3 inside dense data; about 0.2 for
D = 5 at the CRF's default sigmas on sparse colour data (mass lost where neighbours are missing), 0.03 once
the kernel is normalised as the CRF normalises it (``D^-1/2 K D^-1/2``).

Memory, one image of ``P`` pixels, ``s`` bytes a float (4, or 8 for float64), ``M`` lattice points
(``M <= (D + 1) P``), kept while the lattice lives: the slice and splat matrices, ``(D + 1) P`` entries each
(an int32 index and a value) and their row pointers, ``2 (D + 1) (M + 1)`` int32 neighbour indices, and the
self weights: ``2 (D + 1) (4 + s) P + (8 + s) P + (8 D + 12) M`` bytes, **104 bytes a pixel plus 52 a lattice
point for D = 5 in float32** (at most 416 bytes a pixel, were every vertex distinct); 56 plus 28 a point (at
most 140) for D = 2. Building it peaks at about ``56 (D + 1)`` bytes a pixel more (int64 keys, their sorted
copy, the order and the inverse); measured, both kernels' lattices of ``dense_crf(method="lattice")`` with
their build come to about 0.5 KB a pixel. Filtering ``C`` channels holds the lattice's values twice and a
gather, ``3 (M + 1) c s``, ``c = C`` channels at a time, fewer when ``M > P`` so that this stays under
``3 P C s``. ``seglab.crf.memory`` turns this into an estimate before any work.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from seglab.crf.inputs import check_finite_output, check_tensor, work_dtype

__all__ = ["PermutohedralLattice", "lattice_gaussian_filter", "lattice_volume", "MAX_LATTICE_FEATURES"]

#: The most feature dimensions (a pixel has ``D + 1`` vertices; keys must fit one int64).
MAX_LATTICE_FEATURES = 16
_KEY_BITS = 62  # packed keys (and neighbours' keys) stay below 2^62


def _as_int(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool tensor as 0/1 integers (through uint8: a direct bool conversion is several times slower)."""
    return mask.view(torch.uint8).to(dtype)


def _elevation(d: int) -> torch.Tensor:
    """``(D + 1, D)`` float64: the map E from features to the hyperplane, with densecrf's scales (the blur's
    standard deviation matches 1 feature unit: ``sqrt(2/3) (D + 1) / sqrt(k (k + 1))`` along axis ``k``)."""
    matrix = torch.zeros(d + 1, d, dtype=torch.float64)
    for k in range(1, d + 1):  # column k-1: E e_{k-1} = scale_k (1, ..., 1, -k, 0, ..., 0) (k ones)
        scale = math.sqrt(2 / 3) * (d + 1) / math.sqrt(k * (k + 1))
        matrix[:k, k - 1] = scale
        matrix[k, k - 1] = -k * scale
    return matrix


def lattice_volume(d: int) -> float:
    """The volume (in feature units, sigmas^D) per point of the D-dimensional lattice: its covolume in the
    hyperplane, ``(D + 1)^(D - 1/2)``, over the elevation's volume factor ``sqrt(det(E^T E))``."""
    elevation = _elevation(d)
    return (d + 1) ** (d - 0.5) / math.sqrt(float(torch.linalg.det(elevation.T @ elevation)))


def _mass_ratio(d: int) -> float:
    """The Gaussian's mass ``(2 pi)^(D/2)`` over the lattice kernel's: splat, blur (``2^(D+1)``) and slice
    conserve mass, ``2^(D+1)`` per unit splatted, spread over one lattice point's volume."""
    return (2 * math.pi) ** (d / 2) / (2 ** (d + 1) * lattice_volume(d))


def _self_response(d: int) -> torch.Tensor:
    """``(D + 1, D + 1)``: the full lattice's blur response between vertices ``a`` and ``b`` of one simplex,
    ``2^-|a-b| + 2^-(D+1-|a-b|)`` (two ways round the lattice), and ``1 + 2^-D`` on the diagonal."""
    gap = (torch.arange(d + 1)[:, None] - torch.arange(d + 1)[None, :]).abs().double()
    response = 0.5**gap + 0.5 ** (d + 1 - gap)
    response.fill_diagonal_(1 + 2.0**-d)
    return response


class _ImageLattice:
    """One image's lattice: ``slice`` (P x M CSR), ``splat`` (M x P CSR), ``neighbours`` ((D + 1, 2, M + 1) int64,
    index M = the zero row), ``self_weight`` (P, 1); ``points`` = M."""

    def __init__(self, features: torch.Tensor, dtype: torch.dtype) -> None:
        d, pixels = features.shape  # (D, P), float32 or float64 (as densecrf, float32 unless the features are large)
        d1 = d + 1
        elevated = _elevation(d).to(features.dtype) @ features  # (D + 1, P)
        rem0 = torch.ceil(elevated / d1 - 0.5)  # nearest remainder-0 point (ties down, as densecrf)
        total = rem0.sum(0).round_().long()  # (P,) how far off the plane sum(x) = 0 it is
        rem0 *= d1
        rank = self._ranks(elevated - rem0).add_(total)  # (D + 1, P) int64
        wrap = _as_int((rank < 0), torch.int64).sub_(_as_int(rank > d, torch.int64))  # back onto the plane
        rank.add_(wrap, alpha=d1)
        rem0.add_(wrap.to(rem0.dtype), alpha=d1)
        del wrap, total
        offset = (elevated - rem0).div_(d1)  # (D + 1, P)
        del elevated
        barycentric = torch.zeros(d + 2, pixels, dtype=features.dtype)
        barycentric.scatter_add_(0, d - rank, offset)
        barycentric.scatter_add_(0, d - rank + 1, -offset)
        barycentric[0] += 1 + barycentric[d1]
        barycentric = barycentric[:d1]  # (D + 1, P) weights of the vertices of remainder 0..D, summing to 1
        del offset
        response = _self_response(d).to(barycentric.dtype)
        self.self_weight = (barycentric * (response @ barycentric)).sum(0).mul_(_mass_ratio(d))
        self.self_weight = self.self_weight.to(dtype)[:, None]  # (P, 1)
        keys, strides = self._vertex_keys(rem0, rank)  # (P, D + 1) int64, vertex r of pixel p at [p, r]
        del rem0, rank
        sorted_keys, order, inverse, counts = self._unique(keys.view(-1), pixels * d1)
        del keys
        self.points = m = sorted_keys.numel()
        self.neighbours = self._neighbours(sorted_keys, strides, d)
        weights = barycentric.T.to(dtype).contiguous().view(-1)  # (P (D + 1),) entry p (D + 1) + r
        del barycentric
        index = torch.int32 if pixels * d1 < 2**31 else torch.int64
        crow = torch.zeros(m + 1, dtype=index)
        crow[1:] = counts.cumsum(0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul with a dense matrix is stable
            warnings.simplefilter("ignore", UserWarning)
            splat_weights = weights.index_select(0, order)  # grouped by lattice point
            self.splat = torch.sparse_csr_tensor(crow, order.div_(d1, rounding_mode="floor").to(index), splat_weights,
                                                 size=(m, pixels), check_invariants=False)  # fmt: skip
            del order, splat_weights
            self.slice = torch.sparse_csr_tensor(torch.arange(0, pixels * d1 + 1, d1, dtype=index), inverse.to(index),
                                                 weights, size=(pixels, m), check_invariants=False)  # fmt: skip
        self.scale = _mass_ratio(d)

    @staticmethod
    def _ranks(diff: torch.Tensor) -> torch.Tensor:
        """``(D + 1, P)`` int64 rank of each coordinate of ``diff`` in decreasing order, ties to the lower index
        (densecrf's rule): ``rank_i = i + #{j > i: d_i < d_j} - #{j < i: d_j < d_i}``."""
        d1 = diff.shape[0]
        rank = torch.zeros(diff.shape, dtype=torch.int16)
        for i in range(d1 - 1):
            for j in range(i + 1, d1):
                smaller = _as_int(diff[i] < diff[j], torch.int16)
                rank[i] += smaller
                rank[j] -= smaller
        return rank.long().add_(torch.arange(d1)[:, None])

    @staticmethod
    def _vertex_keys(rem0: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Each pixel's ``D + 1`` vertices as int64 keys ``r + (D + 1) Q``: vertex ``r`` has coordinates
        ``rem0_i + r - (D + 1) [rank_i > D - r]``, all ``= r mod (D + 1)``; ``Q`` packs their quotients (the
        first D; the last follows from the sum) in mixed radix with a margin of one for the neighbours."""
        d1 = rem0.shape[0]
        d = d1 - 1
        quotient = rem0[:d].div(d1, rounding_mode="floor").long()  # (D, P) of vertex 0
        low = quotient.amin(1) - 2  # vertex r's quotient is lower by up to 1, its neighbours by 1 more
        sizes = (quotient.amax(1) - low + 2).tolist()
        span = math.prod(sizes) * d1
        if span >= 2**_KEY_BITS:
            raise ValueError(
                f"the permutohedral lattice's keys would span {span:.3g} > 2^{_KEY_BITS} (features spread over "
                f"{' x '.join(map(str, sizes))} lattice steps): use larger sigmas or a smaller image (max_size)")
        strides = [math.prod(sizes[i + 1:]) for i in range(d)]
        base = torch.zeros(rem0.shape[1], dtype=torch.int64)
        for i in range(d):
            base += (quotient[i] - low[i]) * strides[i]
        del quotient
        # vertex r + 1 = vertex r with the coordinate of rank D - r lowered by D + 1 (its quotient by 1)
        by_rank = torch.zeros(d1, rem0.shape[1], dtype=torch.int64)
        by_rank.scatter_(0, rank, torch.tensor([*strides, 0])[:, None].expand(d1, rem0.shape[1]))
        keys = torch.empty(rem0.shape[1], d1, dtype=torch.int64)
        keys[:, 0] = base * d1
        for r in range(1, d1):
            base -= by_rank[d1 - r]
            keys[:, r] = base * d1 + r
        return keys, strides

    @staticmethod
    def _unique(keys: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """Sorted unique keys ``(M,)``, the entries grouped by key (``order``, ascending within a key), each
        entry's key index (``inverse``) and the entries per key (``counts``)."""
        bits = max(1, (n - 1).bit_length())
        if int(keys.max()) < 2 ** (63 - bits):  # the entry's position in the low bits: a plain (fast) sort
            tagged = keys.view(-1) << bits
            tagged |= torch.arange(n)
            ordered = torch.from_numpy(np.sort(tagged.numpy()))
            del tagged
            order = ordered & ((1 << bits) - 1)
            ordered >>= bits
        else:
            ordered, order = torch.sort(keys, stable=True)
        first = torch.ones(n, dtype=torch.bool)
        torch.ne(ordered[1:], ordered[:-1], out=first[1:])
        group = torch.cumsum(_as_int(first, torch.uint8), 0, dtype=torch.int64).sub_(1)
        inverse = torch.empty(n, dtype=torch.int64).scatter_(0, order, group)
        unique = ordered[first]
        counts = torch.bincount(group, minlength=unique.numel())
        return unique, order, inverse, counts

    @staticmethod
    def _neighbours(keys: torch.Tensor, strides: list[int], d: int) -> torch.Tensor:
        """``(D + 1, 2, M + 1)`` int32 (int64 past 2^31 points): the index of each point's two neighbours along
        each direction ``j`` (``x + (D + 1) e_j - 1`` and its opposite), ``M`` where no pixel touched it."""
        d1, m = d + 1, keys.numel()
        remainder, packed = keys % d1, keys // d1
        everything = sum(strides)
        out = torch.full((d1, 2, m + 1), m, dtype=torch.int32 if m < 2**31 - 1 else torch.int64)
        for j in range(d1):
            along = strides[j] if j < d else 0
            down = torch.where(remainder >= 1, remainder - 1 + d1 * (packed + along),
                               d + d1 * (packed - everything + along))  # fmt: skip
            up = torch.where(remainder < d, remainder + 1 + d1 * (packed - along),
                             d1 * (packed + everything - along))  # fmt: skip
            for side, wanted in enumerate((down, up)):
                found = torch.searchsorted(keys, wanted).clamp_(max=m - 1)
                out[j, side, :m] = torch.where(keys.index_select(0, found) == wanted, found, m)
        return out

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``(P, C)`` -> ``(P, C)``: splat, blur, slice, scaled to the Gaussian's mass; a few channels at a time
        when the lattice has more points than the image has pixels."""
        pixels, channels = values.shape
        m = self.points
        chunk = channels if m <= pixels else max(1, channels * pixels // m)
        if chunk < channels:
            return torch.cat([self.filter(values[:, first:first + chunk].contiguous())
                              for first in range(0, channels, chunk)], dim=1)  # fmt: skip
        lattice = torch.cat([self.splat @ values, values.new_zeros(1, channels)])  # (M + 1, C); row M (the
        # missing neighbour) stays 0
        for down, up in self.neighbours:  # [1/2, 1, 1/2] along each of the D + 1 directions
            blurred = lattice.index_select(0, down)
            blurred += lattice.index_select(0, up)
            lattice = blurred.mul_(0.5).add_(lattice)
        return (self.slice @ lattice[:m]).mul_(self.scale)


class PermutohedralLattice:
    """The permutohedral lattice over one batch's features, built once and applied to any values.

    ``features``: ``(N, D, H, W)`` float, divided by their sigmas (``crf_features``), ``1 <= D <= 16``.

    ``lattice.filter(values)``: ``(N, C, H, W)`` -> ``(N, C, H, W)``, approximately
    ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (self included). ``lattice.self_weight``: ``(N, 1, H, W)``, the weight
    the filter gives each pixel's own value inside the data (subtract ``self_weight * v`` for ``j != i``).
    ``lattice.points``: lattice points per image. Memory: the module docstring (about 112 bytes a pixel plus
    96 a lattice point for D = 5, float32).

    Raises:
        TypeError, ValueError: features that are not a non-empty finite float tensor or have more than
            :data:`MAX_LATTICE_FEATURES` channels; features so spread (in sigmas) that the lattice's keys would
            not fit 62 bits (use larger sigmas or a smaller image).
    """

    def __init__(self, features: torch.Tensor) -> None:
        check_tensor(features, "features", "(N, D, H, W)")
        n, d, h, w = features.shape
        if d > MAX_LATTICE_FEATURES:
            raise ValueError(f"features have D = {d} channels > {MAX_LATTICE_FEATURES} (MAX_LATTICE_FEATURES)")
        self.shape, self.dtype = (h, w), work_dtype(features)
        largest = float(features.abs().amax())
        if largest >= 2**40:  # far past what the 62-bit keys can span; refused before any integer conversion
            raise ValueError(f"features reach {largest:.3g} sigmas from 0, far more than the permutohedral lattice's "
                             f"keys can span: use larger sigmas or a smaller image (max_size)")
        # float32 keeps a lattice coordinate to ~1e-5 of a step up to 2^10 sigmas; beyond, float64
        elevation = self.dtype if float(features.abs().amax()) < 2**10 else torch.float64
        self.images = [_ImageLattice(features[index].reshape(d, h * w).to(elevation), self.dtype) for index in range(n)]
        self.points = [image.points for image in self.images]
        self.self_weight = torch.stack([image.self_weight.view(1, h, w) for image in self.images])  # (N, 1, H, W)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)`` (values' dtype), the Gaussian filter over the lattice, self included.

        Raises:
            TypeError, ValueError: values that are not a non-empty finite float tensor, another N or H, W than
                the features', an output that overflows the dtype.
        """
        check_tensor(values, "values", "(N, C, H, W)")
        if values.shape[0] != len(self.images) or tuple(values.shape[2:]) != self.shape:
            raise ValueError(f"values {tuple(values.shape)} must be (N, C, H, W) with N = {len(self.images)} and "
                             f"H, W = {self.shape}, as the lattice's features")  # fmt: skip
        return check_finite_output(self._filter(values), values)

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        n, c, h, w = values.shape
        out = torch.empty_like(values)
        for index, image in enumerate(self.images):
            flat = values[index].reshape(c, h * w).T.to(self.dtype).contiguous()  # (P, C)
            out[index] = image.filter(flat).T.reshape(c, h, w).to(values.dtype)
        return out


def lattice_gaussian_filter(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Approximate ``exact_gaussian_filter`` on the permutohedral lattice: ``PermutohedralLattice(features).filter``.

    Args:
        values: ``(N, C, H, W)`` float.
        features: ``(N, D, H, W)`` float, divided by their sigmas, same N, H, W.

    Returns:
        ``(N, C, H, W)`` in the values' dtype (computed in float32, or float64 for float64 values), the self
        term included as in the exact filter.

    Raises:
        TypeError, ValueError: as :class:`PermutohedralLattice`, and values that do not match the features.
    """
    check_tensor(values, "values", "(N, C, H, W)")
    check_tensor(features, "features", "(N, D, H, W)")
    if values.shape[0] != features.shape[0] or values.shape[2:] != features.shape[2:]:
        raise ValueError(f"values {tuple(values.shape)} and features {tuple(features.shape)} must share N, H and W")
    lattice = PermutohedralLattice(features.to(work_dtype(values)))
    return check_finite_output(lattice._filter(values.to(work_dtype(values))).to(values.dtype), values)
