"""seglab: a workbook that teaches semantic segmentation by building it.

The package is the single source of truth behind the notebooks. Each submodule can be
imported (and copied out) on its own:

- ``seglab.data``            datasets (VOC 2012, CamVid, ISBI 2012, image folders, synthetic shapes)
- ``seglab.transforms``      paired image + mask augmentation presets (albumentations)
- ``seglab.models``          FCN-32s/16s/8s, U-Net, DeepLabV3 / V3+
- ``seglab.losses``          cross-entropy, Dice, Focal (logits in, ``ignore_index`` honoured)
- ``seglab.metrics``         confusion matrix, IoU, mIoU, pixel accuracy, ...
- ``seglab.engine``          ``TrainConfig``, ``fit``, ``evaluate``, checkpoints, history
- ``seglab.receptive_field`` theoretical, exact and effective receptive fields
- ``seglab.viz``             matplotlib figures; ``seglab.widgets`` ipywidgets over them

Importing ``seglab`` imports nothing heavy and runs nothing.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
