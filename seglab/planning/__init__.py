"""nnU-Net's self-configuration for 2-D data: a dataset fingerprint, and the rules that turn it into a plan.

Isensee, Jaeger, Kohl, Petersen & Maier-Hein, "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 18, 2021. One idea per module:

- ``fingerprint``:  ``dataset_fingerprint`` -- image sizes, spacings, foreground intensity statistics,
                    class frequencies (``Fingerprint``, ``IntensityStats``)
- ``topology``:     pooling steps per axis, kernel sizes, widths, and the activation count that stands for
                    GPU memory (``pooling_topology``, ``feature_map_elements``)
- ``plan``:         ``plan_2d`` -- target spacing, patch size, batch size under a memory budget,
                    normalisation (``Plan``, ``RULES``)
- ``normalize``:    ``normalize_image`` -- the plan's z-score or CT normalisation of one image
- ``network``:      ``PlainUNet`` -- the U-Net a plan describes (nnU-Net's template: strided convs,
                    instance norm, leaky ReLU)
- ``nnunet_raw``:   ``write_nnunet_raw`` -- a dataset in nnU-Net's raw format, to compare with nnunetv2

Usage::

    from seglab.data import ISBI2012
    from seglab.planning import dataset_fingerprint, plan_2d
    plan = plan_2d(dataset_fingerprint(ISBI2012("trainval")))
    print(plan.describe())        # patch (512, 512), batch 2, 7 pools per axis, z-score, and the rule of each
"""

from seglab.planning.fingerprint import Fingerprint, IntensityStats, dataset_fingerprint, normalization_scheme
from seglab.planning.network import ConvNormAct, PlainUNet
from seglab.planning.nnunet_raw import write_nnunet_raw
from seglab.planning.normalize import normalize_image
from seglab.planning.plan import RULES, Plan, plan_2d
from seglab.planning.topology import Topology, feature_map_elements, features_per_stage, pooling_topology

__all__ = [
    "dataset_fingerprint",
    "Fingerprint",
    "IntensityStats",
    "normalization_scheme",
    "plan_2d",
    "Plan",
    "RULES",
    "pooling_topology",
    "Topology",
    "features_per_stage",
    "feature_map_elements",
    "normalize_image",
    "PlainUNet",
    "ConvNormAct",
    "write_nnunet_raw",
]
