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

Three ways to compute the message, chosen by ``method``:

- ``"exact"``: every pixel pair, an ``(H W) x (H W)`` kernel matrix; small images only (at most
  :data:`MAX_EXACT_PIXELS` pixels). The reference the fast method is measured against.
  (``max_size`` runs either on a shrunk copy and upsamples the refined scores, for large images.)
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
- ``"lattice"``: both kernels on a **permutohedral lattice** (Adams, Baek & Davis, Eurographics 2010), as
  Krähenbühl's densecrf and pydensecrf compute them: each pixel is splatted onto the ``D + 1`` vertices of the
  lattice simplex around its features (D = 5 for the appearance kernel, 2 for the smoothness kernel), the
  occupied lattice points are blurred along the lattice's ``D + 1`` directions, and read back. The lattice is
  built once per image (``seglab.crf.lattice``: vertex keys hashed by sorting packed int64 keys) and every
  iteration is then two sparse products and a few gathers per kernel. On five 480x360 CamVid images with
  K = 11 it takes about 1.6 times pydensecrf2's time (1.4-1.9 per image; one thread, the same run, a loaded
  machine: benchmarks/crf.py), against 9-18 times for ``"fast"``, and its labels agree with pydensecrf2's on
  99.90-99.94 % of the pixels. Its kernel is coarser than the grid's (one message's relative L2 error about 0.2 unnormalised, 0.03
  normalised, at the default sigmas; after 5 iterations the marginals differ from ``"exact"``'s by about 1e-3 on
  average, the labels agree on 99.9 %; tests/test_crf_lattice.py). Memory: about 0.5 KB a pixel plus 35 bytes
  per pixel and class (measured), bounded by ``seglab.crf.memory``'s estimate (about 1.7 KB a pixel at K = 11).

Why a bilateral grid and not ConvCRF's local window (Teichmann & Cipolla 2018): with DeepLab's and
densecrf's spatial sigmas (67-121 and 80 pixels) a window that sees the whole kernel is the whole image,
and cutting it changes the model. The grid keeps the fully connected model and its error falls with the
cell size (``passes``). The permutohedral lattice of Krähenbühl's own code (``"lattice"``) is the same idea on
a sparse lattice: much faster (``D + 1`` vertices a pixel instead of ``2^D`` corners, and only the lattice points
some pixel touches), a little less accurate, and the one that scales to small colour sigmas: a dense grid grows
as ``(range / sigma)^5``, so DeepLab v2's ``srgb=3`` on a full colour range exceeds ``max_cells`` (a clear
error), while the lattice never has more than ``6 P`` points.

Differences from the paper and from densecrf/pydensecrf:

- Kernels are normalised as densecrf's default (``normalization="symmetric"``: ``D^-1/2 K D^-1/2``, ``D`` the
  kernel's row sums with the self term); the paper's equations use plain sums (``normalization="none"``),
  with which weights such as 3 and 10 swamp any unary on a real image. The self term ``j = i`` is left out
  of the message, as in the paper; densecrf's lattice keeps it (a small difference) and has its own
  approximation error, so the same weights give close but not identical results. ``"lattice"`` removes the
  weight its lattice gives a pixel's own value when the lattice around it is full (exact inside the data, a
  little too much at its edges, so its messages are clamped at 0), and orders the features as densecrf,
  ``(x, y, r, g, b)`` (the lattice is not rotation invariant).
- Inference runs without gradients (post-processing, as in DeepLab), in float32 (float64 for float64 logits),
  with autocast switched off (sparse matrix products have no bfloat16 kernels).
- The default parameters are pydensecrf's README example, taken from densecrf's ``dense_inference.cpp``:
  smoothness ``sxy=3, compat=3``, appearance ``sxy=80, srgb=13, compat=10``, 5 iterations. DeepLab v2's
  cross-validated values (ResNet-101, VOC) are ``w_b=4, sxy_b=67, srgb_b=3, w_g=3, sxy_g=1``, 10 iterations.

Layout: ``filters`` (features, exact and separable filters), ``grid`` (the bilateral grid), ``lattice`` (the
permutohedral lattice), ``mean_field``
(``dense_crf``, ``mean_field_step``), ``memory`` (the estimate checked before any work: ``dense_crf`` refuses,
with the ``max_size`` / ``--crf-max-size`` that fits, a call over ``max_bytes``, 2 GiB by default), ``inputs``
(the checks every public function makes at its boundary: ``ValueError``/``TypeError`` naming the argument).
"""

from seglab.crf.filters import MAX_EXACT_PIXELS, crf_features, exact_gaussian_filter, separable_gaussian_filter
from seglab.crf.grid import BilateralGrid, grid_gaussian_filter
from seglab.crf.lattice import PermutohedralLattice, lattice_gaussian_filter
from seglab.crf.mean_field import MAX_ITERATIONS, dense_crf, mean_field_step
from seglab.crf.memory import DEFAULT_MAX_BYTES, crf_memory_bytes, largest_crf_size

__all__ = [
    "MAX_EXACT_PIXELS",
    "MAX_ITERATIONS",
    "DEFAULT_MAX_BYTES",
    "BilateralGrid",
    "PermutohedralLattice",
    "crf_features",
    "crf_memory_bytes",
    "dense_crf",
    "exact_gaussian_filter",
    "grid_gaussian_filter",
    "largest_crf_size",
    "lattice_gaussian_filter",
    "mean_field_step",
    "separable_gaussian_filter",
]
