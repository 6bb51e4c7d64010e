"""seglab: a workbook that teaches semantic segmentation by building it.

The package is the single source of truth behind the notebooks. Each submodule can be
imported (and copied out) on its own. The map (``tests/test_package.py`` checks that it lists every
top-level module and subpackage, and only those):

Data and its pictures
- ``seglab.data``            datasets (VOC 2012 (+ SBD), CamVid, ISBI 2012, Cityscapes, ADE20K, image folders,
                             synthetic shapes); downloads that survive dead mirrors (``fetch``), safe extraction
- ``seglab.imaging``         the ImageNet statistics and the image <-> tensor pair (``to_tensor``, ``to_image``)
- ``seglab.transforms``      paired image + mask augmentation presets (albumentations)

Models and what they are scored with
- ``seglab.models``          ``build_model`` over 17 models: FCN-32s / 16s / 8s, U-Net, DeepLabV3, DeepLabV3+,
                             FCN (dilated ResNet), PSPNet, DeepLab v1 / v2, LR-ASPP, HRNetV2, SegFormer,
                             DDRNet-23-slim / 23, FastFCN (JPU), Mask2Former; deformable convolution (DCNv2, DCNv3)
                             as blocks; the promptable SAM and the text-prompted CLIPSeg in their own subpackages
- ``seglab.losses``          cross-entropy, Dice, Focal (logits in, ``ignore_index`` honoured)
- ``seglab.metrics``         confusion matrix, IoU, mIoU, pixel accuracy; trimap IoU, boundary F-score, Boundary IoU;
                             panoptic quality (PQ, SQ, RQ) and instance mask AP

Training and using a model
- ``seglab.engine``          ``TrainConfig``, ``prepare`` + ``train_steps`` (step-budgeted training with fit's recipe),
                             ``fit``, ``evaluate``, checkpoints, resume rules, history, distributed training
- ``seglab.inference``       ``infer_logits``: resize, test-time augmentation, sliding windows, the CRF hook
- ``seglab.crf``             fully connected CRF (mean field; exact, bilateral-grid and permutohedral-lattice
                             message passing)
- ``seglab.predict``         full-size predictions for files, folders and globs
- ``seglab.export``          ONNX export and the onnxruntime check
- ``seglab.files``           the one safe writer of every file a command writes, the run-folder lock
- ``seglab.cli``             ``python -m seglab {train,evaluate,predict,download,check-data,export}``
- ``seglab.profiles``        the notebooks' smoke / laptop / full run profiles
- ``seglab.interactive``     interactive segmentation: SAM's simulated clicks, nano-SAM's training loop, the
                             evaluation clicker, NoC@85/90 and IoU@k, a flood-fill baseline
- ``seglab.planning``        nnU-Net's self-configuration for 2-D data: ``dataset_fingerprint``, ``plan_2d`` (patch,
                             batch under a memory budget, topology, normalisation), the plan's ``PlainUNet``

Looking inside
- ``seglab.receptive_field`` analytic, exact and effective receptive fields
- ``seglab.viz``             matplotlib figures, one module per topic
- ``seglab.widgets``         ipywidgets explorers over ``seglab.viz``

Importing ``seglab`` imports nothing heavy and runs nothing.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
