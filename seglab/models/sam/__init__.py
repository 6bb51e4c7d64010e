"""SAM, Segment Anything: Kirillov, Mintun, Ravi, Mao, Rolland, Gustafson, Xiao, Whitehead, Berg, Lo, Dollár &
Girshick, "Segment Anything", ICCV 2023.

A promptable segmenter: given an image and a prompt (points marked positive or negative, a box, a rough mask),
it returns masks of the object the prompt points at, with a predicted IoU per mask. Not a ``(N, K, H, W)``
semantic model: there are no classes, and it is not in ``build_model``. Three boxes (Fig. 4)::

    image (N, 3, 1024, 1024) ─ image encoder (ViT) ─ embedding (N, 256, 64, 64) ───────┐
    points, boxes ─ prompt encoder (Fourier code + type) ─ tokens (N, P, T, 256) ──────┼─ mask decoder ─┬ masks (N, P, 3, 256, 256)
    mask (N, P, 256, 256) ─ prompt encoder (convs) ─ (N, P, 256, 64, 64), added ───────┘                └ IoUs (N, P, 3)

One idea per module; every public name is re-exported here:

- :mod:`.image_encoder`: ``ImageEncoderViT`` (windowed + global attention, decomposed relative positions, neck);
- :mod:`.prompt_encoder`: ``PromptEncoder``, ``PositionEmbeddingRandom`` (random Fourier features);
- :mod:`.mask_decoder`: ``MaskDecoder``, ``TwoWayTransformer`` (tokens ↔ image attention, hypernetwork masks);
- :mod:`.model`: ``Sam``, ``SamConfig``, ``sam_config`` (presets ``"nano"``, ``"vit_b"``, ``"vit_l"``, ``"vit_h"``);
- :mod:`.processing`: ``preprocess``, ``rescale_points``, ``rescale_boxes``, ``postprocess_masks``;
- :mod:`.convert`: ``load_hf_sam``, ``convert_hf_sam_state_dict``, ``sam_config_from_hf`` (the original
  ``sam_vit_*.pth`` files load into ``Sam`` as they are).

Coordinates are ``(x, y)`` pixels (x the column, y the row) of the image the model sees; sizes ``(height, width)``.

Typical use::

    pixel_values, original_sizes, input_sizes = preprocess(image)               # (1, 3, 1024, 1024)
    points = rescale_points(torch.tensor([[[[500.0, 375.0]]]]), original_sizes[0])  # (N=1, P=1, K=1, 2)
    masks, iou = model(pixel_values, points, torch.ones(1, 1, 1, dtype=torch.long))
    mask = postprocess_masks(masks, original_sizes, input_sizes)[0][0, iou[0, 0].argmax()]  # (H, W) bool
"""

from .convert import convert_hf_sam_state_dict, load_hf_sam, sam_config_from_hf
from .image_encoder import ImageEncoderViT, LayerNorm2d
from .mask_decoder import MaskDecoder, TwoWayAttentionBlock, TwoWayTransformer
from .model import SAM_CONFIGS, Sam, SamConfig, check_prompts, sam_config
from .processing import (postprocess_masks, preprocess, preprocess_shape, rescale_boxes, rescale_points,
                         resize_longest_side)
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder

__all__ = [
    "Sam",
    "SamConfig",
    "SAM_CONFIGS",
    "sam_config",
    "check_prompts",
    "ImageEncoderViT",
    "LayerNorm2d",
    "PromptEncoder",
    "PositionEmbeddingRandom",
    "MaskDecoder",
    "TwoWayTransformer",
    "TwoWayAttentionBlock",
    "preprocess",
    "preprocess_shape",
    "resize_longest_side",
    "rescale_points",
    "rescale_boxes",
    "postprocess_masks",
    "convert_hf_sam_state_dict",
    "load_hf_sam",
    "sam_config_from_hf",
]
