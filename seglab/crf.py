"""Fully connected CRF with Gaussian edge potentials: mean-field inference on a segmentation's logits.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NeurIPS 2011; run after the network by DeepLab v1 (Chen et al., ICLR 2015) and v2 (TPAMI 2018).

Every pixel ``i`` is linked to every other pixel ``j``. The energy is
``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with the unary ``U = -log softmax(logits)``,
Potts compatibility ``mu(l, l') = [l != l']`` and two Gaussian kernels on pixel positions ``p`` and RGB
colours ``c``::

    k(f_i, f_j) = w_b exp(-|p_i - p_j|^2 / 2 sxy_b^2 - |c_i - c_j|^2 / 2 srgb_b^2)   appearance (bilateral)
                + w_g exp(-|p_i - p_j|^2 / 2 sxy_g^2)                                 smoothness (Gaussian)

Mean-field inference (the paper's Algorithm 1) starts from ``Q = softmax(-U)`` and repeats::

    m_i(l)   = sum_kernels w sum_{j != i} k(f_i, f_j) Q_j(l)      message passing: a Gaussian filter of Q
                                                                   (normalised by default, see below)
    p_i(l)   = sum_{l'} mu(l, l') m_i(l') = sum_l' m_i(l') - m_i(l)   Potts compatibility transform
    Q_i(l)   = softmax_l(-U_i(l) - p_i(l))                         local update and normalisation

Two ways to compute the message, chosen by ``method``:

- ``"exact"``: every pixel pair, an ``(H W) x (H W)`` kernel matrix; small images only (at most
  :data:`MAX_EXACT_PIXELS` pixels). The reference the fast method is measured against.
- ``"fast"``: the smoothness kernel is separable, so it is computed exactly as two 1-D convolutions (the
  kernel cut at 4 sigma, or at the image size). The bilateral kernel is computed on a downsampled
  *bilateral grid* (Paris & Durand, ECCV 2006; Chen, Paris & Durand, SIGGRAPH 2007): each pixel is splatted
  with multilinear weights into a dense 5-D grid over (y, x, r, g, b) with cells of about one sigma, the grid
  is blurred with ``[1, 2, 1] / 4`` along each axis, and read back (sliced) with the same weights. Cells of
  ``sigma / sqrt(passes / 2 + 1 / 3)`` make the splat-blur-slice kernel's variance sigma^2 along each axis;
  the grid's total mass is scaled to the Gaussian's and its self-weight at each pixel is subtracted exactly
  (``j != i``). Cost ``O(HW + grid cells)`` per iteration instead of ``O((HW)^2)``; measured against
  ``"exact"`` in tests/test_crf.py: on 40x48 images at the default sigmas one (unnormalised) message has a
  relative L2 error of about 0.1 (2 passes); after 5 iterations with the default parameters the marginals
  differ by 5e-5 on average and 0.05 at worst, with identical labels.

Why a bilateral grid and not ConvCRF's local window (Teichmann & Cipolla 2018): with DeepLab's and
densecrf's spatial sigmas (67-121 and 80 pixels) a window that sees the whole kernel is the whole image,
and cutting it changes the model. The grid keeps the fully connected model and its error falls with the
cell size (``passes``). The permutohedral lattice of Krähenbühl's own code (Adams et al. 2010) is the same
idea on a sparse lattice, and the better choice for small colour sigmas: a dense grid grows as
``(range / sigma)^5``, so DeepLab v2's ``srgb=3`` on a full colour range exceeds ``max_cells`` (a clear error).

Differences from the paper and from densecrf/pydensecrf:

- Kernels are normalised as densecrf's default (``normalization="symmetric"``: ``D^-1/2 K D^-1/2``, ``D`` the
  kernel's row sums with the self term); the paper's equations use plain sums (``normalization="none"``),
  with which weights such as 3 and 10 swamp any unary on a real image. The self term ``j = i`` is left out
  of the message, as in the paper; densecrf's lattice keeps it (a small difference) and has its own
  approximation error, so the same weights give close but not identical results.
- Inference runs without gradients (post-processing, as in DeepLab), in float32 (float64 for float64 logits),
  with autocast switched off (sparse matrix products have no bfloat16 kernels).
- The default parameters are pydensecrf's README example, taken from densecrf's ``dense_inference.cpp``:
  smoothness ``sxy=3, compat=3``, appearance ``sxy=80, srgb=13, compat=10``, 5 iterations. DeepLab v2's
  cross-validated values (ResNet-101, VOC) are ``w_b=4, sxy_b=67, srgb_b=3, w_g=3, sxy_g=1``, 10 iterations.
"""

from __future__ import annotations

import itertools
import math
import warnings

import torch

__all__ = [
    "MAX_EXACT_PIXELS",
    "BilateralGrid",
    "crf_features",
    "dense_crf",
    "exact_gaussian_filter",
    "grid_gaussian_filter",
    "mean_field_step",
    "separable_gaussian_filter",
]

#: The largest image (H * W pixels) ``method="exact"`` accepts: its kernel matrix has (H W)^2 entries.
MAX_EXACT_PIXELS = 4096
_METHODS = ("exact", "fast")


def crf_features(images: torch.Tensor, sxy: float, srgb: float | None = None) -> torch.Tensor:
    """The CRF's kernel features, already divided by their sigmas.

    ``images``: ``(N, 3, H, W)`` RGB in [0, 255] (uint8 or float). Returns ``(N, 2, H, W)`` float32
    ``(y / sxy, x / sxy)`` when ``srgb`` is None (smoothness kernel), else ``(N, 5, H, W)``
    ``(y / sxy, x / sxy, r / srgb, g / srgb, b / srgb)`` (appearance kernel); positions in pixels.
    """
    n, _, h, w = images.shape
    dtype = images.dtype if images.is_floating_point() and images.dtype == torch.float64 else torch.float32
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=dtype),
                            torch.arange(w, device=images.device, dtype=dtype), indexing="ij")
    position = torch.stack([ys, xs]).expand(n, 2, h, w) / sxy
    if srgb is None:
        return position
    return torch.cat([position, images.to(dtype) / srgb], dim=1)


def exact_gaussian_filter(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over *all* pixel pairs (the self term ``j = i`` included).

    ``values``: ``(N, C, H, W)``; ``features``: ``(N, D, H, W)`` (from :func:`crf_features`). Returns
    ``(N, C, H, W)`` in the values' dtype. Builds the ``(HW, HW)`` kernel: for small images only.
    """
    n, c, h, w = values.shape
    f = features.flatten(2).transpose(1, 2).to(values.dtype)  # (N, HW, D)
    kernel = torch.exp(-0.5 * torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist").square())  # (N, HW, HW)
    return (values.flatten(2) @ kernel).view(n, c, h, w)  # kernel is symmetric


def separable_gaussian_filter(values: torch.Tensor, sxy: float) -> torch.Tensor:
    """The smoothness kernel's filter ``sum_j exp(-|p_i - p_j|^2 / 2 sxy^2) v_j`` (self included), exactly.

    The Gaussian over positions is separable: a 1-D convolution along H, then along W, with zero padding
    (pixels outside the image do not exist) and the kernel cut at ``4 sxy`` (weights below ``e^-8``) or at
    the image size, whichever is smaller. ``values``: ``(N, C, H, W)`` -> ``(N, C, H, W)``.
    """
    out = values
    for axis in (2, 3):
        size = values.shape[axis]
        radius = min(math.ceil(4 * sxy), size - 1)
        taps = [math.exp(-0.5 * (offset / sxy) ** 2) for offset in range(radius + 1)]
        blurred = taps[0] * out
        for offset in range(1, radius + 1):  # shifted adds: zero beyond the image
            blurred.narrow(axis, offset, size - offset).add_(out.narrow(axis, 0, size - offset), alpha=taps[offset])
            blurred.narrow(axis, 0, size - offset).add_(out.narrow(axis, offset, size - offset), alpha=taps[offset])
        out = blurred
    return out


class BilateralGrid:
    """A dense bilateral grid over one batch's features, built once and applied to any values.

    ``features``: ``(N, D, H, W)`` divided by their sigmas (:func:`crf_features`). ``passes``: ``[1, 2, 1] / 4``
    blurs per axis; more passes mean smaller cells (``sigma / sqrt(passes / 2 + 1 / 3)``), a kernel closer to
    the Gaussian and ``~(2 passes)^(D/2)`` times the cells. The splat/slice weights of each image are an
    ``(H W) x cells`` sparse matrix with ``2^D`` entries a row (each pixel's cell corners).

    ``grid.filter(values)``: ``(N, C, H, W)`` -> ``(N, C, H, W)``, approximately
    ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (self included). ``grid.self_weight``: ``(N, 1, H, W)``, the weight
    the filter gives each pixel's own value (subtract ``self_weight * v`` for the sum over ``j != i``).

    Raises:
        ValueError: a grid would hold more than ``max_cells`` cells (e.g. a colour sigma of 3 on the full
            colour range); raise ``max_cells`` if memory allows (each cell holds C floats).
    """

    def __init__(self, features: torch.Tensor, *, passes: int = 2, max_cells: int = 2**25) -> None:
        if not isinstance(passes, int) or passes < 1:
            raise ValueError(f"passes must be a positive integer, got {passes!r}")
        n, d, h, w = features.shape
        self.passes, self.shape = passes, (h, w)
        step = 1.0 / math.sqrt(passes / 2 + 1 / 3)  # cell size in sigmas: hat * blur^passes * hat has variance 1
        self.scale = (2 * math.pi) ** (d / 2) / step**d  # the Gaussian's mass over the grid kernel's (1 cell^D)
        self.taps = _blur_taps(passes)  # 2 passes + 1 taps, the middle one at index `passes`
        self.dims, self.splat, self.slice = [], [], []
        u = features.flatten(2) / step  # (N, D, HW) in cells
        u = u - u.amin(dim=2, keepdim=True)
        base = u.floor()
        frac = u - base  # (N, D, HW) position inside the cell, in [0, 1)
        b0, b1 = self.taps[passes], self.taps[passes + 1]  # B(0), B(+-1)
        per_axis = ((1 - frac) ** 2 + frac**2) * b0 + 2 * frac * (1 - frac) * b1  # sum_ab h_a h_b B(a - b)
        self.self_weight = (self.scale * per_axis.prod(dim=1)).view(n, 1, h, w)
        base = base.long()
        bits = torch.tensor(list(itertools.product((0, 1), repeat=d)), device=features.device)  # (2^D, D)
        for index in range(n):
            dims = (base[index].amax(dim=1) + 2).tolist()  # each pixel's upper corner is base + 1
            cells = math.prod(dims)
            if cells > max_cells:
                raise ValueError(
                    f"the bilateral grid would hold {cells} cells ({' x '.join(map(str, dims))}) > max_cells="
                    f"{max_cells}: use larger sigmas, fewer passes, or raise max_cells (memory: cells x C floats)"
                )
            strides = torch.tensor([math.prod(dims[k + 1:]) for k in range(d)], device=features.device)
            corner = base[index].T[:, None, :] + bits  # (HW, 2^D, D), columns sorted within each row
            flat = (corner * strides).sum(dim=2)  # (HW, 2^D)
            t = frac[index].T[:, None, :]  # (HW, 1, D)
            weight = torch.where(bits.bool(), t, 1 - t).prod(dim=2)  # (HW, 2^D) multilinear weights
            self.dims.append(dims)
            self.slice.append(_csr(flat, weight, cells))  # (HW, cells)
            self.splat.append(_csr(flat, weight, cells, transpose=True))  # (cells, HW)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        n, c, h, w = values.shape
        out = torch.empty_like(values)
        for index, dims in enumerate(self.dims):
            v = values[index].flatten(1).T.to(self.slice[index].dtype)  # (HW, C)
            grid = (self.splat[index] @ v).view(*dims, c)  # splat: (cells, C) as (D_1, ..., D_D, C)
            for axis, size in enumerate(dims):  # blur: one convolution per axis, zero beyond the grid
                blurred = self.taps[self.passes] * grid
                for offset in range(1, min(self.passes, size - 1) + 1):
                    tap = self.taps[self.passes + offset]
                    blurred.narrow(axis, offset, size - offset).add_(tap * grid.narrow(axis, 0, size - offset))
                    blurred.narrow(axis, 0, size - offset).add_(tap * grid.narrow(axis, offset, size - offset))
                grid = blurred
            sliced = self.slice[index] @ grid.reshape(-1, c)  # slice: (HW, C)
            out[index] = (self.scale * sliced).T.reshape(c, h, w).to(values.dtype)
        return out


def _csr(flat: torch.Tensor, weight: torch.Tensor, cells: int, transpose: bool = False) -> torch.Tensor:
    """The ``(P, cells)`` sparse CSR matrix with ``weight[p, k]`` at ``(p, flat[p, k])``, or its transpose."""
    pixels, per_row = flat.shape
    flat, weight = flat.flatten(), weight.flatten()
    if transpose:
        order = torch.argsort(flat, stable=True)
        columns = torch.arange(pixels, device=flat.device).repeat_interleave(per_row)[order]
        counts = torch.bincount(flat, minlength=cells)
        rows = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        flat, weight, size = columns, weight[order], (cells, pixels)
    else:
        rows = torch.arange(0, pixels * per_row + 1, per_row, device=flat.device)
        size = (pixels, cells)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul with a dense matrix is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rows, flat, weight, size=size, check_invariants=False)


def grid_gaussian_filter(
    values: torch.Tensor, features: torch.Tensor, *, passes: int = 2, max_cells: int = 2**25
) -> torch.Tensor:
    """Approximate :func:`exact_gaussian_filter` on a dense bilateral grid: ``BilateralGrid(features).filter(values)``.

    ``values``: ``(N, C, H, W)``; ``features``: ``(N, D, H, W)`` divided by their sigmas. Returns
    ``(N, C, H, W)``, the self term included as in the exact filter. See :class:`BilateralGrid`.
    """
    return BilateralGrid(features.to(values.dtype), passes=passes, max_cells=max_cells).filter(values)


def _blur_taps(passes: int) -> list[float]:
    """``[1, 2, 1] / 4`` convolved with itself ``passes`` times: ``2 passes + 1`` taps, the middle one at ``passes``."""
    taps = [1.0]
    for _ in range(passes):
        padded = [0.0, 0.0, *taps, 0.0, 0.0]
        taps = [0.25 * padded[i] + 0.5 * padded[i + 1] + 0.25 * padded[i + 2] for i in range(len(taps) + 2)]
    return taps


def _check(logits: torch.Tensor, images: torch.Tensor, method: str, method_kwargs: dict) -> None:
    if logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float (N, K, H, W) tensor, got {tuple(logits.shape)} {logits.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 255], got shape {tuple(images.shape)}")
    if images.shape[0] != logits.shape[0] or images.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and images {tuple(images.shape)} differ in batch size or H, W: "
            "upsample the logits to the image size (F.interpolate(..., mode='bilinear')) before the CRF"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values: the CRF needs finite logits")
    if images.is_floating_point() and images.numel():
        low, high = float(images.amin()), float(images.amax())
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 255:
            raise ValueError(f"images must be RGB in [0, 255] (not ImageNet-normalised), got values in "
                             f"[{low:.3g}, {high:.3g}]: undo the normalisation, image * std + mean, times 255")
        if 0 < high <= 1:
            raise ValueError(f"images look scaled to [0, 1] (max {high:.3g}): multiply by 255")
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not one of {_METHODS}")
    unknown = set(method_kwargs) - ({"normalization", "passes", "max_cells"} if method == "fast" else {"normalization"})
    if unknown:
        raise ValueError(f"method={method!r} takes no option(s) {sorted(unknown)} (both: normalization; "
                         "fast: passes, max_cells)")
    if method_kwargs.get("normalization", "symmetric") not in ("symmetric", "none"):
        raise ValueError(f"normalization must be 'symmetric' (densecrf's default) or 'none' (the paper's sums), "
                         f"got {method_kwargs['normalization']!r}")
    if method == "exact" and logits.shape[2] * logits.shape[3] > MAX_EXACT_PIXELS:
        raise ValueError(
            f"method='exact' builds an (H W)^2 kernel; {logits.shape[2]}x{logits.shape[3]} = "
            f"{logits.shape[2] * logits.shape[3]} pixels > {MAX_EXACT_PIXELS}: use method='fast'"
        )


def _check_sigmas(**sigmas: float) -> None:
    for name, value in sigmas.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _kernel_message(filter_fn, self_weight, q: torch.Tensor, normalization: str) -> torch.Tensor:
    """``sum_{j != i} k_ij Q_j`` (``"none"``) or ``d_i^-1/2 sum_{j != i} k_ij d_j^-1/2 Q_j`` (``"symmetric"``,
    ``d_i = sum_j k_ij`` with the self term, as densecrf's ``NORMALIZE_SYMMETRIC``); ``filter_fn`` sums over all j."""
    if normalization == "none":
        return filter_fn(q) - self_weight * q
    scale = filter_fn(torch.ones_like(q[:, :1])).clamp_min(1e-20).rsqrt()  # (N, 1, H, W) d^-1/2
    return scale * (filter_fn(q * scale) - self_weight * q * scale)


def _messages(q, images, method, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral,
              compat_bilateral, grid=None, normalization="symmetric", passes=2, max_cells=2**25):
    """``m = sum_kernels w sum_{j != i} k(f_i, f_j) Q_j`` (normalised): ``(N, K, H, W)`` -> ``(N, K, H, W)``."""
    if method == "exact":
        smooth = crf_features(images, sxy_gaussian).to(q.dtype)
        bilateral = crf_features(images, sxy_bilateral, srgb_bilateral).to(q.dtype)
        gaussian = _kernel_message(lambda v: exact_gaussian_filter(v, smooth), 1.0, q, normalization)
        appearance = _kernel_message(lambda v: exact_gaussian_filter(v, bilateral), 1.0, q, normalization)
    else:
        gaussian = _kernel_message(lambda v: separable_gaussian_filter(v, sxy_gaussian), 1.0, q, normalization)
        if grid is None:
            features = crf_features(images, sxy_bilateral, srgb_bilateral).to(q.dtype)
            grid = BilateralGrid(features, passes=passes, max_cells=max_cells)
        appearance = _kernel_message(grid.filter, grid.self_weight, q, normalization)
    return compat_gaussian * gaussian + compat_bilateral * appearance


def mean_field_step(
    logits: torch.Tensor, q: torch.Tensor, images: torch.Tensor, *, method: str = "exact",
    sxy_gaussian: float = 3.0, compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
    srgb_bilateral: float = 13.0, compat_bilateral: float = 10.0, **method_kwargs,
) -> torch.Tensor:
    """One mean-field update (Krähenbühl & Koltun 2011, Algorithm 1): message passing, Potts, normalisation.

    ``logits``: ``(N, K, H, W)`` unary logits (``U = -log softmax(logits)``); ``q``: ``(N, K, H, W)`` current
    marginals; ``images``: ``(N, 3, H, W)`` RGB in [0, 255]. Returns the new ``(N, K, H, W)`` marginals
    (softmax over K) in the logits' dtype. Parameters as :func:`dense_crf`.
    """
    _check(logits, images, method, method_kwargs)
    _check_sigmas(sxy_gaussian=sxy_gaussian, sxy_bilateral=sxy_bilateral, srgb_bilateral=srgb_bilateral)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    unary = -torch.log_softmax(logits.to(dtype), dim=1)
    with torch.autocast(logits.device.type, enabled=False):  # float32 (or 64) even inside an autocast region
        m = _messages(q.to(dtype), images, method, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral,
                      compat_bilateral, **method_kwargs)
        return _update(unary, m)


def _update(unary: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Potts compatibility transform and local update: ``softmax(-U - (sum_l' m(l') - m(l)))``."""
    pairwise = m.sum(dim=1, keepdim=True) - m  # Potts: mu(l, l') = [l != l']
    return torch.softmax(-unary - pairwise, dim=1)


@torch.no_grad()
def dense_crf(
    logits: torch.Tensor, images: torch.Tensor, *, method: str = "fast", num_iterations: int = 5,
    sxy_gaussian: float = 3.0, compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
    srgb_bilateral: float = 13.0, compat_bilateral: float = 10.0, **method_kwargs,
) -> torch.Tensor:
    """Refine logits with a fully connected CRF: ``num_iterations`` mean-field updates (see the module docstring).

    Args:
        logits: ``(N, K, H, W)`` float logits at the image resolution (unary ``-log softmax(logits)``).
        images: ``(N, 3, H, W)`` RGB, uint8 or float in [0, 255] (*not* ImageNet-normalised).
        method: ``"fast"`` (separable Gaussian + bilateral grid, any size) or ``"exact"`` (all pixel pairs,
            at most :data:`MAX_EXACT_PIXELS` pixels).
        num_iterations: mean-field updates (0 returns ``log_softmax(logits)``).
        sxy_gaussian, compat_gaussian: smoothness kernel's sigma (pixels) and Potts weight ``w_g``.
        sxy_bilateral, srgb_bilateral, compat_bilateral: appearance kernel's position sigma (pixels), colour
            sigma (RGB levels 0-255) and Potts weight ``w_b``. Defaults: pydensecrf's / densecrf's example.
        **method_kwargs: ``normalization``: ``"symmetric"`` (default; densecrf's ``NORMALIZE_SYMMETRIC``:
            each kernel becomes ``D^-1/2 K D^-1/2`` with ``D`` its row sums, so a message is a weighted *average*
            and the weights mean the same at any image size) or ``"none"`` (the paper's plain sums, which grow
            with the number of similar pixels: thousands at 80-px sigmas). For ``"fast"`` also ``passes`` (int,
            default 2) and ``max_cells`` of :class:`BilateralGrid`.

    Returns:
        ``(N, K, H, W)`` float32 refined logits, the log of the final marginals: ``argmax`` gives the labels,
        ``softmax`` the marginals.

    Raises:
        ValueError: shapes that do not match (named in the message), images that are not RGB,
            an unknown method or keyword, too many pixels for ``"exact"``, or a negative ``num_iterations``.
    """
    _check(logits, images, method, method_kwargs)
    _check_sigmas(sxy_gaussian=sxy_gaussian, sxy_bilateral=sxy_bilateral, srgb_bilateral=srgb_bilateral)
    if not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"num_iterations must be an integer >= 0, got {num_iterations!r}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    unary = -torch.log_softmax(logits.to(dtype), dim=1)
    q = torch.softmax(-unary, dim=1)
    with torch.autocast(logits.device.type, enabled=False):  # float32 (or 64) even inside an autocast region
        grid = None
        options = dict(method_kwargs)
        normalization = options.pop("normalization", "symmetric")
        if method == "fast" and num_iterations:  # the splat/slice weights do not change between iterations
            features = crf_features(images, sxy_bilateral, srgb_bilateral).to(dtype)
            grid = BilateralGrid(features, **options)
        for _ in range(num_iterations):
            m = _messages(q, images, method, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral,
                          compat_bilateral, grid=grid, normalization=normalization)
            q = _update(unary, m)
        return torch.log(q.clamp_min(torch.finfo(dtype).tiny)).float()
