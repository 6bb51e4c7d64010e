"""nnU-Net's 2-D plan: the rules that turn a dataset fingerprint into a training configuration.

Isensee, Jaeger, Kohl, Petersen & Maier-Hein, "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 18, 2021 (Fig. 2 and Online Methods, "Rule-based
parameters"). The rules below are re-implemented from the paper and from nnunetv2's
``ExperimentPlanner.get_plans_for_configuration`` and ``determine_*`` methods
(``experiment_planning/experiment_planners/default_experiment_planner.py``), whose 2-D configuration
this reproduces; every field's rule is in :data:`RULES` and printed by :meth:`Plan.describe`:

1. Target spacing: the per-axis median of the spacings; images are resampled to it (data: cubic spline,
   segmentations: linear on one-hot); shapes after resampling ``round(shape * spacing / target)``.
2. Patch size: start from a 2048^2-pixel patch with the aspect ratio of the target spacing, clipped to
   the median (resampled) image shape.
3. Topology (``seglab.planning.topology``): pool each axis while its map stays >= 8 pixels, pad the
   patch to a multiple of ``2 ** pools``; 3x3 kernels; 32 features doubled per stage, capped at 512;
   two convs per stage in encoder and decoder.
4. Memory (nnU-Net v2's reference-value rule, which replaced v1's VRAM estimate): count the network's
   activations for one patch (``feature_map_elements``); the reference is 85 000 000 activations x
   ``gpu_memory_gb / 8`` for a batch of 12. While a batch of 2 would exceed it, shrink the patch axis
   that is largest relative to the median shape by one divisor step and recompute the topology.
5. Batch size: ``round(12 * reference / activations)``, capped so one batch covers at most 5 % of the
   dataset's pixels, and at least 2.
6. Normalisation: CT channels are clipped to the foreground's 0.5-99.5 percentiles and z-scored with the
   foreground's mean and std; every other channel is z-scored per image (within the nonzero mask when
   cropping removed more than a quarter of the median image).

Differences from nnunetv2: only 2-D (the 3-D and cascade configurations, transposition and the
out-of-plane anisotropy rule for the target spacing are not implemented); the memory estimate counts K
output channels, nnunetv2 counts every entry of ``dataset.json``'s labels (the ignore label too), which
changes the count by one full-size map (0.3 % for CamVid) and neither plan checked here; the plan is a
frozen dataclass, not a JSON dict. Where seglab's U-Net trains on a plan it departs further (BatchNorm +
ReLU, max-pooling; notebook 05 says how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from seglab.planning.fingerprint import Fingerprint, normalization_scheme
from seglab.planning.topology import feature_map_elements, features_per_stage, pooling_topology

__all__ = ["Plan", "plan_2d", "RULES", "REFERENCE_ACTIVATIONS_2D", "REFERENCE_BATCH_2D", "REFERENCE_GPU_GB"]

#: nnU-Net v2's 2-D reference: 85e6 activations fit a batch of 12 in 8 GB (set to reproduce v1's plans).
REFERENCE_ACTIVATIONS_2D = 85_000_000
REFERENCE_BATCH_2D = 12
REFERENCE_GPU_GB = 8.0

#: The rule behind each field of a :class:`Plan` (what :meth:`Plan.describe` prints).
RULES: dict[str, str] = {
    "spacing": "median spacing per axis (1 for natural images)",
    "median_shape": "median image size after cropping and resampling to that spacing",
    "resampling": "none if every image has the target spacing; else data cubic (order 3), masks linear on one-hot",
    "patch_size": "median shape (a 2048^2 cap first), padded to 2^pools, shrunk until a batch of 2 fits the budget",
    "num_pool_per_axis": "halve an axis while its map stays >= 8 px (bottleneck >= 4 px)",
    "strides": "stage 0 keeps full size, each later stage halves the pooled axes",
    "conv_kernel_sizes": "3x3 where spacings are within 2x (all of them for 2-D natural images)",
    "features_per_stage": "32 doubled per stage, capped at 512",
    "feature_map_elements": "activations of one patch through the network (the memory proxy)",
    "batch_size": "12 x reference / activations, at most 5% of the dataset's pixels per batch, at least 2",
    "normalization": "CT: clip to foreground 0.5-99.5 percentiles, z-score with their mean/std; else per image",
    "use_mask_for_norm": "z-score inside the nonzero mask only if cropping kept < 3/4 of the median image",
}


@dataclass(frozen=True)
class Plan:
    """nnU-Net's 2-D configuration for one dataset (:func:`plan_2d`); sizes ``(H, W)`` in pixels."""

    spacing: tuple[float, float]  # target pixel spacing (H, W), physical units
    median_shape: tuple[float, float]  # median image size at that spacing, pixels
    resampling: str  # "none", or "cubic spline for images, linear on one-hot for masks"
    patch_size: tuple[int, int]  # training crop, a multiple of 2 ** num_pool_per_axis
    batch_size: int
    num_pool_per_axis: tuple[int, int]
    strides: tuple[tuple[int, int], ...]  # per stage; (1, 1) first
    conv_kernel_sizes: tuple[tuple[int, int], ...]  # per stage
    features_per_stage: tuple[int, ...]  # channels of each stage
    n_conv_per_stage: int  # convs per stage, encoder and decoder
    normalization: tuple[str, ...]  # "zscore" or "ct", one per channel
    use_mask_for_norm: tuple[bool, ...]  # one per channel
    feature_map_elements: int  # activations of one patch (the memory proxy)
    reference_elements: float  # the budget's reference (85e6 * gpu_memory_gb / 8) for a batch of 12
    gpu_memory_gb: float
    num_classes: int
    in_channels: int
    batch_dice: bool = True  # Dice computed over the whole batch (nnU-Net's 2-D setting)

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, int]:
        """What each patch side is a multiple of (the network's total stride per axis)."""
        return tuple(2**n for n in self.num_pool_per_axis)

    def describe(self) -> str:
        """One line per field: ``name  value  (rule)``."""
        lines = []
        for f in fields(self):
            rule = RULES.get(f.name, "")
            value = getattr(self, f.name)
            lines.append(f"{f.name:<22} {str(value):<40} {'(' + rule + ')' if rule else ''}".rstrip())
        return "\n".join(lines)


def _resampled_median_shape(fingerprint: Fingerprint, target: tuple[float, float]) -> tuple[float, float]:
    shapes = [tuple(int(round(n * s / t)) for n, s, t in zip(shape, spacing, target))
              for shape, spacing in zip(fingerprint.shapes, fingerprint.spacings)]
    return tuple(float(v) for v in np.median(np.array(shapes, dtype=np.float64), axis=0))


def plan_2d(fingerprint: Fingerprint, *, gpu_memory_gb: float = REFERENCE_GPU_GB, base_features: int = 32,
            max_features: int = 512, min_batch_size: int = 2, max_dataset_fraction: float = 0.05,
            min_edge: int = 4) -> Plan:
    """nnU-Net's 2-D plan for ``fingerprint`` under a GPU memory budget (rules 1-6 of the module docstring).

    Args:
        fingerprint: from :func:`seglab.planning.dataset_fingerprint`.
        gpu_memory_gb: the memory budget; the reference activations scale linearly with it
            (nnU-Net's default target: 8 GB). A small one (notebook 05: 0.02, base_features 8) plans for a CPU.
        base_features, max_features: width of stage 0 and the cap (nnU-Net 2-D: 32, 512).
        min_batch_size: the smallest batch a plan may have (2).
        max_dataset_fraction: at most this fraction of the dataset's pixels in one batch (0.05).
        min_edge: smallest bottleneck edge in pixels (4).

    Returns:
        A frozen :class:`Plan`.

    Raises:
        ValueError: a non-positive budget or fraction, ``min_batch_size < 1``, or a patch that cannot
            shrink further and still exceeds the budget (raise ``gpu_memory_gb`` or lower ``base_features``).
    """
    if not (gpu_memory_gb > 0 and 0 < max_dataset_fraction <= 1 and min_batch_size >= 1):
        raise ValueError(f"need gpu_memory_gb > 0, 0 < max_dataset_fraction <= 1, min_batch_size >= 1; got "
                         f"{gpu_memory_gb}, {max_dataset_fraction}, {min_batch_size}")
    target = fingerprint.median_spacing  # rule 1
    median = _resampled_median_shape(fingerprint, target)
    same = all(tuple(s) == tuple(target) for s in fingerprint.spacings)
    inverse = [1 / s for s in target]  # rule 2: a 2048^2 patch with the spacing's aspect ratio, clipped
    scale = math.sqrt(2048**2 / math.prod(inverse))
    patch = [min(round(v * scale), m) for v, m in zip(inverse, median)]
    topology = pooling_topology(target, patch, min_edge)  # rule 3
    reference = REFERENCE_ACTIVATIONS_2D * gpu_memory_gb / REFERENCE_GPU_GB  # rule 4

    def activations(top):
        widths = features_per_stage(top.num_stages, base_features, max_features)
        return feature_map_elements(top.patch_size, top.strides, widths, fingerprint.num_classes)

    elements = activations(topology)
    while elements / REFERENCE_BATCH_2D * min_batch_size > reference:
        ratios = [p / m for p, m in zip(topology.patch_size, median)]
        axis = max(range(len(ratios)), key=lambda a: (ratios[a], a))  # ties: the last axis, as nnunetv2
        trial = list(topology.patch_size)
        trial[axis] -= topology.divisor[axis]  # one step down, then the step of the smaller patch (no size skipped)
        shrunk = list(topology.patch_size)
        if trial[axis] >= 1:
            shrunk[axis] -= pooling_topology(target, trial, min_edge).divisor[axis]
        if trial[axis] < 1 or shrunk[axis] < 1:
            raise ValueError(f"no patch fits gpu_memory_gb={gpu_memory_gb} with base_features={base_features}: "
                             "raise the budget or lower base_features")
        topology = pooling_topology(target, shrunk, min_edge)
        elements = activations(topology)
    batch = round(reference / elements * REFERENCE_BATCH_2D)  # rule 5
    dataset_pixels = math.prod(median) * fingerprint.num_cases
    batch = max(min(batch, round(dataset_pixels * max_dataset_fraction / math.prod(topology.patch_size))),
                min_batch_size)
    schemes = tuple(normalization_scheme(name) for name in fingerprint.channel_names)  # rule 6
    cropped_a_lot = fingerprint.median_relative_size_after_crop < 3 / 4
    return Plan(
        spacing=tuple(target), median_shape=median,
        resampling="none" if same else "cubic spline for images, linear on one-hot for masks",
        patch_size=tuple(topology.patch_size), batch_size=int(batch),
        num_pool_per_axis=tuple(topology.num_pool_per_axis), strides=topology.strides,
        conv_kernel_sizes=topology.kernel_sizes,
        features_per_stage=features_per_stage(topology.num_stages, base_features, max_features),
        n_conv_per_stage=2, normalization=schemes,
        use_mask_for_norm=tuple(cropped_a_lot and s == "zscore" for s in schemes),
        feature_map_elements=int(elements), reference_elements=float(reference), gpu_memory_gb=float(gpu_memory_gb),
        num_classes=fingerprint.num_classes, in_channels=fingerprint.num_channels,
    )
