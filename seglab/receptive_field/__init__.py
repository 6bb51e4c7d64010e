"""Receptive fields of CNNs: analytic, exact and effective.

Which input pixels can change one output pixel? Three answers, from cheap to real:

1. **Analytic (theoretical) RF of a chain of layers** -- the recurrence of Araujo, Norris & Sim (2019),
   "Computing Receptive Fields of Convolutional Neural Networks", Distill. Walking the chain from the
   input, with jump ``j`` (input pixels between two neighbouring features) and RF size ``r``::

       r <- r + (k - 1) * d * j        j <- j * s        start <- start - p * j

   for a convolution or pooling with kernel ``k``, stride ``s``, dilation ``d`` and padding ``p``
   (``start`` = first input pixel seen by output pixel 0; negative = it lies in the padding).
   Upsampling divides the jump (``j <- j / s``); then the RF size can depend on the output pixel's
   phase, so :func:`analytic_receptive_field` tracks the RF interval of every phase exactly and
   reports the largest. See :func:`analytic_receptive_field`.

2. **Exact theoretical RF of any model** (skips, ASPP branches, concatenations): the set of input
   pixels joined to the output pixel by a path in the network. It is the non-zero set of the input
   gradient of a *linearised* copy: activations -> identity, max-pool -> average-pool, every
   convolution / linear weight -> a positive constant, biases -> 0, normalisation -> identity,
   dropout off (module replacement on a ``copy.deepcopy``, plus a torch function mode for functional
   calls such as ``F.relu`` inside ``forward``). With positive weights and activations nothing
   cancels, so the gradient is ``> 0`` exactly on the support; float64 keeps the smallest path
   weights far from underflow. It shows the holes dilation leaves ("gridding", Wang et al. 2018,
   "Understanding Convolution for Semantic Segmentation"). See :class:`ReceptiveField` and
   :func:`exact_receptive_field`.

3. **Effective RF** (Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective Receptive Field in
   Deep Convolutional Neural Networks"): the mean absolute input gradient of one output pixel of the
   *real* model over real images. It is roughly Gaussian and much smaller than the theoretical RF.
   See :func:`effective_receptive_field`, :func:`erf_radius`, :func:`erf_rms_radius`.

Coordinates are ``(y, x)`` = (row, column) in pixels; boxes are ``(top, left, bottom, right)``
with both ends included. Theoretical RFs ignore the image border (the analytic ones may start in
the padding); exact RFs are clipped to the image because they are computed on it.

How they relate: for a chain of conv / pool / upsampling layers the analytic box equals the bounding
box of the exact support of an interior pixel (the tests check this on random chains); the exact
support may still have holes inside that box (dilation) and also covers models with branches;
the ERF is non-zero only inside the exact support, and its mass concentrates near the centre.

Layout, one idea per module; every public name is re-exported here, so ``from seglab.receptive_field
import ReceptiveField`` works:

- :mod:`.layers`: one layer as the recurrence sees it (``LayerSpec``, ``layer_spec``);
- :mod:`.analytic` (1): the recurrence over a chain (``analytic_receptive_field``, ``format_rf_table``);
- :mod:`.positive_ops`: the positive operations of a linearised network (average pooling over max-pool
  windows, one-channel convolutions handed back as broadcast views);
- :mod:`.linearised_modules` (``linearise``) and :mod:`.linearised_functions` (``LinearisedFunctions``):
  the linearised copy, by module replacement and by a torch function mode;
- :mod:`.layer_output`: the output (model or layer) and the pixel a question is about;
- :mod:`.exact` (2): ``ReceptiveField``, ``exact_receptive_field`` and the support measures;
- :mod:`.effective` (3): ``effective_receptive_field``, ``erf_radius``, ``erf_rms_radius``.
"""

from .analytic import LayerRF, LayerSpec, analytic_receptive_field, format_rf_table, layer_spec
from .effective import effective_receptive_field, erf_radius, erf_rms_radius
from .exact import (
    LinearisedFunctions,
    ReceptiveField,
    exact_receptive_field,
    linearise,
    support_box,
    support_holes,
    support_size,
)

__all__ = [
    "LayerSpec",
    "LayerRF",
    "layer_spec",
    "analytic_receptive_field",
    "format_rf_table",
    "linearise",
    "LinearisedFunctions",
    "ReceptiveField",
    "exact_receptive_field",
    "support_box",
    "support_size",
    "support_holes",
    "effective_receptive_field",
    "erf_radius",
    "erf_rms_radius",
]
