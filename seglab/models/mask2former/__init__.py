"""Mask2Former (Cheng, Misra, Schwing, Kirillov & Girdhar, CVPR 2022): universal segmentation by mask classification.

One module per block of the paper's Figure 1:

- ``pixel_decoder``: multi-scale deformable-attention encoder over the 1/32, 1/16, 1/8 backbone maps + the FPN-style
  1/4 mask features (``MSDeformAttnPixelDecoder``, ``multi_scale_deformable_attention`` with ``grid_sample``);
- ``transformer_decoder``: learnable queries, masked attention, round robin over the scales, per-layer predictions;
- ``model``: ``Mask2Former`` (ResNet backbone + the two decoders; ``forward`` gives semantic log scores);
- ``criterion``: Hungarian matching and the class / mask BCE / dice set loss with point sampling;
- ``postprocess``: semantic, instance and panoptic maps from the same outputs;
- ``evaluate``: ``evaluate_panoptic``, mIoU + PQ / SQ / RQ + mask AP of a model on a panoptic dataset;
- ``convert``: Hugging Face ``Mask2FormerForUniversalSegmentation`` weights -> seglab.

Example::

    model = Mask2Former(num_classes=4)                    # resnet18, D=64, 6 decoder layers, 16 queries
    model = Mask2Former(4, thing_classes=[1, 2, 3])       # panoptic training: things split into connected parts
    logits = model(images)                                # (N, 4, H, W): argmax = semantic map
    loss = model(images, masks)                           # training: the set loss of every decoder layer
    outputs = model.forward_outputs(images)               # pred_logits (N, 16, 5), pred_masks (N, 16, H/4, W/4)
    panoptic = panoptic_inference(outputs["pred_logits"], outputs["pred_masks"], output_size=images.shape[-2:])
"""

from .convert import convert_hf_mask2former_state_dict, mask2former_options_from_hf_config
from .criterion import Mask2FormerCriterion, hungarian_match, targets_from_semantic
from .evaluate import evaluate_panoptic
from .model import Mask2Former
from .pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, multi_scale_deformable_attention
from .postprocess import instance_inference, panoptic_inference, semantic_inference
from .transformer_decoder import MaskedAttentionDecoderLayer, MaskedTransformerDecoder

__all__ = [
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "Mask2Former",
    "Mask2FormerCriterion",
    "MaskedAttentionDecoderLayer",
    "MaskedTransformerDecoder",
    "convert_hf_mask2former_state_dict",
    "evaluate_panoptic",
    "hungarian_match",
    "instance_inference",
    "mask2former_options_from_hf_config",
    "multi_scale_deformable_attention",
    "panoptic_inference",
    "semantic_inference",
    "targets_from_semantic",
]
