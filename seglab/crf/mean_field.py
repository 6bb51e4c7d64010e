"""Mean-field inference of the fully connected CRF (Krähenbühl & Koltun 2011, Algorithm 1): ``dense_crf``
(the whole inference, optionally at reduced resolution) and ``mean_field_step`` (one update).

Images are processed one at a time (they do not interact), so memory is that of one image plus the
outputs; it is estimated (``seglab.crf.memory``) and checked against ``max_bytes`` before any work.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from seglab.crf.filters import MAX_EXACT_PIXELS, _exact_filter, _separable_filter, crf_features
from seglab.crf.grid import DEFAULT_MAX_CELLS, DEFAULT_PASSES, MAX_PASSES, BilateralGrid
from seglab.crf.inputs import check_count, check_number, check_rgb, check_sigma, check_tensor, check_weight, work_dtype
from seglab.crf.lattice import PermutohedralLattice
from seglab.crf.memory import check_crf_memory, reduced_size

__all__ = ["dense_crf", "mean_field_step", "check_default_crf_memory", "MAX_ITERATIONS"]

#: The most mean-field iterations ``dense_crf`` runs (DeepLab uses 10; it converges in a few).
MAX_ITERATIONS = 100
_METHODS = ("exact", "fast", "lattice")
_NORMALIZATIONS = ("symmetric", "none")


def _checked(logits, images, method, sigmas: dict, weights: dict, method_kwargs: dict, max_bytes) -> dict:
    """Every argument of dense_crf / mean_field_step checked at once; returns the kernel options."""
    check_tensor(logits, "logits", "(N, K, H, W)")
    check_rgb(images)
    if images.shape[0] != logits.shape[0] or images.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and images {tuple(images.shape)} differ in batch size or H, W: "
            "upsample the logits to the image size (F.interpolate(..., mode='bilinear')) before the CRF")
    if images.device != logits.device:
        raise ValueError(f"logits are on {logits.device} and images on {images.device}: move both to one device")
    if method not in _METHODS:
        hint = " (the permutohedral lattice is method='lattice')" if method == "permutohedral" else ""
        raise ValueError(f"method={method!r} is not one of {_METHODS}{hint}")
    options = {name: check_sigma(name, value) for name, value in sigmas.items()}
    options.update({name: check_weight(name, value) for name, value in weights.items()})
    allowed = {"normalization", "passes", "max_cells"} if method == "fast" else {"normalization"}
    unknown = set(method_kwargs) - allowed
    if unknown:
        raise ValueError(f"method={method!r} takes no option(s) {sorted(unknown)} (got "
                         f"{', '.join(f'{name}={method_kwargs[name]!r}' for name in sorted(unknown))}; every method: "
                         "normalization; fast: passes, max_cells)")
    normalization = method_kwargs.get("normalization", "symmetric")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be 'symmetric' (densecrf's default) or 'none' (the paper's sums), "
                         f"got {normalization!r}")
    options["normalization"] = normalization
    options["passes"] = check_count("passes", method_kwargs.get("passes", DEFAULT_PASSES), 1, MAX_PASSES)
    options["max_cells"] = check_count("max_cells", method_kwargs.get("max_cells", DEFAULT_MAX_CELLS), 1, 2**62)
    if max_bytes is not None:
        check_number("max_bytes", max_bytes)
    if method == "exact" and logits.shape[2] * logits.shape[3] > MAX_EXACT_PIXELS:
        raise ValueError(
            f"method='exact' builds an (H W)^2 kernel; {logits.shape[2]}x{logits.shape[3]} = "
            f"{logits.shape[2] * logits.shape[3]} pixels > {MAX_EXACT_PIXELS}: use method='fast'")
    return options


class _Messages:
    """``m = sum_kernels w sum_{j != i} k(f_i, f_j) Q_j`` (normalised) for one image: the filters, the self
    weights and the symmetric normalisers are built once and reused at every iteration.

    ``"exact"`` and ``"fast"`` take ``(1, K, H, W)`` marginals; ``"lattice"`` takes them as ``(H W, K)`` (pixels
    major: what its sparse products read), see :meth:`to_layout` / :meth:`from_layout`."""

    def __init__(self, images: torch.Tensor, method: str, dtype: torch.dtype, options: dict) -> None:
        self.normalization, self.kernels = options["normalization"], []
        self.flat, self.size = method == "lattice", tuple(images.shape[2:])
        if self.flat:  # both kernels on a permutohedral lattice, features in densecrf's order (x, y[, r, g, b])
            bilateral = (options["sxy_bilateral"], options["srgb_bilateral"])
            for weight, sigmas in ((options["compat_gaussian"], (options["sxy_gaussian"],)),
                                   (options["compat_bilateral"], bilateral)):
                if weight:
                    f = crf_features(images, *sigmas).to(dtype)
                    lattice = PermutohedralLattice(torch.cat([f[:, 1:2], f[:, :1], f[:, 2:]], dim=1)).images[0]
                    self._add(weight, lattice.filter, lattice.self_weight, images, dtype)
            return
        if options["compat_gaussian"]:
            if method == "exact":
                smooth = crf_features(images, options["sxy_gaussian"]).to(dtype)
                self._add(options["compat_gaussian"], lambda v: _exact_filter(v, smooth), 1.0, images, dtype)
            else:
                self._add(options["compat_gaussian"], lambda v: _separable_filter(v, options["sxy_gaussian"]), 1.0,
                          images, dtype)  # fmt: skip
        if options["compat_bilateral"]:
            bilateral = crf_features(images, options["sxy_bilateral"], options["srgb_bilateral"]).to(dtype)
            if method == "exact":
                self._add(options["compat_bilateral"], lambda v: _exact_filter(v, bilateral), 1.0, images, dtype)
            else:
                grid = BilateralGrid(bilateral, passes=options["passes"], max_cells=options["max_cells"])
                self._add(options["compat_bilateral"], grid._filter, grid.self_weight, images, dtype)

    def _add(self, weight: float, filter_fn, self_weight, images: torch.Tensor, dtype: torch.dtype) -> None:
        scale = None
        if self.normalization == "symmetric":  # d^-1/2, d_i = sum_j k_ij with the self term (densecrf)
            ones = torch.ones(1, 1, *images.shape[2:], dtype=dtype, device=images.device)
            scale = filter_fn(self.to_layout(ones)).clamp_min(1e-20).rsqrt()  # (1, 1, H, W) or (H W, 1)
        self.kernels.append((weight, filter_fn, self_weight, scale))
        if self.flat:  # the lattice's self terms, all kernels at once: sum_kernels w self_i (d_i^-1/2)^2
            own = weight * self_weight * (1 if scale is None else scale.square())
            self.own = own if len(self.kernels) == 1 else self.own + own

    def __call__(self, q: torch.Tensor) -> torch.Tensor | None:
        if self.flat:
            return self._lattice_messages(q)
        m = None
        for weight, filter_fn, self_weight, scale in self.kernels:
            if scale is None:  # the paper's plain sums over j != i
                message = filter_fn(q) - self_weight * q
            else:  # d_i^-1/2 sum_{j != i} k_ij d_j^-1/2 Q_j
                scaled = q * scale
                message = scale * (filter_fn(scaled) - self_weight * scaled)
            m = weight * message if m is None else m.add_(message, alpha=weight)
        return m

    def _lattice_messages(self, q: torch.Tensor) -> torch.Tensor | None:
        """The same sum for ``(H W, K)`` marginals, in fewer passes over them: each kernel's filtered (scaled)
        marginals added with their weights, then all self terms at once; clamped at 0, since the lattice's
        self weight (exact inside the data) is a little too large at its edges."""
        m = None
        for weight, filter_fn, _, scale in self.kernels:
            if scale is None:
                m = weight * filter_fn(q) if m is None else m.add_(filter_fn(q), alpha=weight)
            else:
                filtered = filter_fn(q * scale)
                m = torch.mul(filtered, scale).mul_(weight) if m is None else m.addcmul_(filtered, scale, value=weight)
        return None if m is None else m.addcmul_(q, self.own, value=-1).clamp_min_(0)

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, C, H, W)`` -> the layout the filters take: itself, or ``(H W, C)`` for the lattice."""
        return x.flatten(2)[0].T.contiguous() if self.flat else x

    def from_layout(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_layout`: ``(1, C, H, W)``."""
        return x.T.reshape(1, x.shape[1], *self.size) if self.flat else x


def _update(unary: torch.Tensor, m: torch.Tensor | None, flat: bool = False) -> torch.Tensor:
    """Potts compatibility transform and local update: ``softmax(-U - (sum_l' m(l') - m(l)))``; ``flat``
    (the lattice's ``(H W, K)`` layout, a fresh ``m``): as ``softmax(m - U)``, the same (the sum over ``l'`` is
    the same for every label), in one pass less."""
    if m is None:  # both weights 0
        return torch.softmax(-unary, dim=1)
    if flat:
        return torch.softmax(m.sub_(unary), dim=1)
    pairwise = m.sum(dim=1, keepdim=True) - m  # Potts: mu(l, l') = [l != l']
    return torch.softmax(-unary - pairwise, dim=1)


@torch.no_grad()
def mean_field_step(
    logits: torch.Tensor, q: torch.Tensor, images: torch.Tensor, *, method: str = "exact",
    sxy_gaussian: float = 3.0, compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
    srgb_bilateral: float = 13.0, compat_bilateral: float = 10.0, max_bytes: int | None = None, **method_kwargs,
) -> torch.Tensor:
    """One mean-field update (Krähenbühl & Koltun 2011, Algorithm 1): message passing, Potts, normalisation.

    Args:
        logits: ``(N, K, H, W)`` float unary logits (``U = -log softmax(logits)``).
        q: ``(N, K, H, W)`` float, the current marginals.
        images: ``(N, 3, H, W)`` RGB in [0, 255].
        method, the kernel parameters, ``max_bytes`` and ``**method_kwargs``: as :func:`dense_crf`.

    Returns:
        ``(N, K, H, W)`` new marginals (softmax over K), float64 for float64 logits, else float32.

    Raises:
        TypeError, ValueError: as :func:`dense_crf`, and ``q`` of another shape or not in [0, 1].
    """
    options = _checked(logits, images, method,
                       dict(sxy_gaussian=sxy_gaussian, sxy_bilateral=sxy_bilateral, srgb_bilateral=srgb_bilateral),
                       dict(compat_gaussian=compat_gaussian, compat_bilateral=compat_bilateral), method_kwargs,
                       max_bytes)  # fmt: skip
    check_tensor(q, "q", "(N, K, H, W)")
    if q.shape != logits.shape:
        raise ValueError(f"q {tuple(q.shape)} must have the shape of logits {tuple(logits.shape)}")
    if float(q.amin()) < 0 or float(q.amax()) > 1:
        raise ValueError(f"q must be marginals in [0, 1] (a softmax over K), got values in [{float(q.amin()):.3g}, "
                         f"{float(q.amax()):.3g}]")  # fmt: skip
    dtype = work_dtype(logits)
    check_crf_memory(*logits.shape, images, method, options, max_bytes=max_bytes, dtype=dtype)
    out = torch.empty(logits.shape, dtype=dtype, device=logits.device)
    with torch.autocast(logits.device.type, enabled=False):  # float32 (or 64) even inside an autocast region
        for index in range(logits.shape[0]):
            messages = _Messages(images[index:index + 1], method, dtype, options)
            unary = messages.to_layout(-torch.log_softmax(logits[index:index + 1].to(dtype), dim=1))
            new = _update(unary, messages(messages.to_layout(q[index:index + 1].to(dtype))), messages.flat)
            out[index:index + 1] = messages.from_layout(new)
    return out


@torch.no_grad()
def dense_crf(
    logits: torch.Tensor, images: torch.Tensor, *, method: str = "fast", num_iterations: int = 5,
    sxy_gaussian: float = 3.0, compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
    srgb_bilateral: float = 13.0, compat_bilateral: float = 10.0, max_size: int | None = None,
    max_bytes: int | None = None, **method_kwargs,
) -> torch.Tensor:
    """Refine logits with a fully connected CRF: ``num_iterations`` mean-field updates (see ``seglab.crf``).

    Args:
        logits: ``(N, K, H, W)`` float logits at the image resolution (unary ``-log softmax(logits)``), finite.
        images: ``(N, 3, H, W)`` RGB in [0, 255]: uint8, integer or float (*not* ImageNet-normalised).
        method: ``"fast"`` (separable Gaussian + bilateral grid, any size), ``"lattice"`` (both kernels on a
            permutohedral lattice, as densecrf: 5-11 times faster than ``"fast"`` at 480x360, a little
            less accurate) or ``"exact"`` (all pixel pairs, at most :data:`MAX_EXACT_PIXELS` pixels).
        num_iterations: mean-field updates, 0 to :data:`MAX_ITERATIONS` (0 returns ``log_softmax(logits)``).
        sxy_gaussian, compat_gaussian: smoothness kernel's sigma (pixels) and Potts weight ``w_g``.
        sxy_bilateral, srgb_bilateral, compat_bilateral: appearance kernel's position sigma (pixels), colour
            sigma (RGB levels 0-255) and Potts weight ``w_b``. Defaults: pydensecrf's / densecrf's example.
            Sigmas are refused outside [0.001, 1e6], weights outside [0, 1e6].
        max_size: run the CRF on a copy shrunk (antialiased bilinear) so its longer side is at most this many
            pixels, with the same parameters, and upsample the refined log-marginals bilinearly to ``(H, W)``
            (renormalised); what DeepLab-era pipelines did with large images. The CRF then sees the image as
            at that size: its sigmas are in the shrunk image's pixels. None: at full size.
        max_bytes: refuse (before any work) a CRF whose estimated peak memory (``crf_memory_bytes``: the work
            and its output at the size it runs) is above this; None = :data:`DEFAULT_MAX_BYTES` (2 GiB). The
            message gives the ``max_size`` (CLI: ``--crf-max-size``) that fits.
        **method_kwargs: ``normalization``: ``"symmetric"`` (default; densecrf's ``NORMALIZE_SYMMETRIC``:
            each kernel becomes ``D^-1/2 K D^-1/2`` with ``D`` its row sums, so a message is a weighted *average*
            and the weights mean the same at any image size) or ``"none"`` (the paper's plain sums, which grow
            with the number of similar pixels: thousands at 80-px sigmas). For ``"fast"`` also ``passes`` (int,
            1 to 8, default 2) and ``max_cells`` of :class:`BilateralGrid`.

    Returns:
        ``(N, K, H, W)`` float32 refined logits, the log of the final marginals: ``argmax`` gives the labels,
        ``softmax`` the marginals.

    Raises:
        TypeError: logits or images that are not tensors.
        ValueError: empty tensors (N, K, H or W = 0), integer/bool logits, non-finite logits, images that are
            not RGB in [0, 255], shapes that do not match (named in the message), a parameter that is not a
            finite number in range, an unknown method or keyword, too many pixels for ``"exact"``, a grid over
            ``max_cells``, lattice keys over 62 bits (features spread over thousands of sigmas), or an
            estimated memory over ``max_bytes`` (with the ``--crf-max-size`` that fits).
    """
    options = _checked(logits, images, method,
                       dict(sxy_gaussian=sxy_gaussian, sxy_bilateral=sxy_bilateral, srgb_bilateral=srgb_bilateral),
                       dict(compat_gaussian=compat_gaussian, compat_bilateral=compat_bilateral), method_kwargs,
                       max_bytes)  # fmt: skip
    num_iterations = check_count("num_iterations", num_iterations, 0, MAX_ITERATIONS)
    if max_size is not None:
        check_count("max_size", max_size, 1, 2**31)
    n, k, height, width = logits.shape
    dtype = work_dtype(logits)
    if num_iterations:  # before any work: the estimate, refused over max_bytes with the max_size that fits
        check_crf_memory(n, k, height, width, images, method, options, max_size=max_size, max_bytes=max_bytes,
                         dtype=dtype)  # fmt: skip
    size = reduced_size(height, width, max_size)
    with torch.autocast(logits.device.type, enabled=False):  # float32 (or 64) even inside an autocast region
        if size != (height, width):  # at reduced resolution: shrink, refine, upsample
            from seglab.inference.resize import shrink

            logits = shrink(logits.to(dtype), size)  # (N, K, h, w)
            images = shrink(images.to(dtype), size).clamp_(0, 255)  # (N, 3, h, w)
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        for index in range(n):  # images do not interact: one at a time bounds the memory
            unary = -torch.log_softmax(logits[index:index + 1].to(dtype), dim=1)  # (1, K, h, w)
            if not num_iterations:
                out[index:index + 1] = torch.log(torch.softmax(-unary, dim=1).clamp_min(torch.finfo(dtype).tiny))
                continue
            messages = _Messages(images[index:index + 1], method, dtype, options)
            unary = messages.to_layout(unary)  # (1, K, h, w), or (h w, K) for the lattice
            q = torch.softmax(-unary, dim=1)
            for _ in range(num_iterations):
                q = _update(unary, messages(q), messages.flat)
            out[index:index + 1] = messages.from_layout(torch.log(q.clamp_min(torch.finfo(dtype).tiny)))
    if size != (height, width):
        out = _upsample_log_marginals(out, (height, width))
    return out


def _upsample_log_marginals(small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, K, h, w)`` log-marginals -> ``(N, K, H, W)``: bilinear, a few channels at a time (bilinear acts on
    each channel alone; temporaries of at most 64 MiB), renormalised (``log_softmax`` over K) in place."""
    n, k = small.shape[:2]
    full = torch.empty(n, k, *size, dtype=torch.float32, device=small.device)
    chunk = max(1, 2**24 // (size[0] * size[1]))  # channels a piece
    for index in range(n):
        for first in range(0, k, chunk):
            full[index:index + 1, first:first + chunk] = F.interpolate(
                small[index:index + 1, first:first + chunk], size=size, mode="bilinear", align_corners=False)
        rows = max(1, 2**24 // (k * size[1]))
        for top in range(0, size[0], rows):  # log_softmax over K, a few rows at a time
            piece = full[index, :, top:top + rows]
            piece -= torch.logsumexp(piece, dim=0, keepdim=True)
    return full


def check_default_crf_memory(images: torch.Tensor, *, num_classes: int = 1, max_size: int | None = None) -> None:
    """The memory check of ``dense_crf(logits, images, max_size=max_size)`` with its default parameters, run
    before the logits exist (``infer_logits``, before the model): ``num_classes`` is a lower bound.

    Raises:
        ValueError: the CRF would not fit :data:`DEFAULT_MAX_BYTES` (the message gives the ``--crf-max-size``).
    """
    defaults = {name: p.default for name, p in inspect.signature(dense_crf).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    options = dict(defaults, passes=DEFAULT_PASSES, max_cells=DEFAULT_MAX_CELLS)
    n, _, height, width = images.shape
    check_crf_memory(n, num_classes, height, width, images, defaults["method"], options, max_size=max_size,
                     classes_known=False)  # fmt: skip
