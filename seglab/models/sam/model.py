"""``Sam``: image encoder + prompt encoder + mask decoder, its configurations, and the checks on its prompts.

Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 (Fig. 4): a heavy image encoder runs once per image;
a light prompt encoder and mask decoder run once per prompt (about 50 ms in a browser in the paper), so a user
can click, see the masks, and click again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import check_images
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .prompt_encoder import PromptEncoder

__all__ = ["SAM_CONFIGS", "Sam", "SamConfig", "check_prompts", "sam_config"]


@dataclass(frozen=True)
class SamConfig:
    """Sizes of a SAM model; ``sam_config(name)`` gives the presets (``SAM_CONFIGS``)."""

    image_size: int = 1024  # S: side of the square encoder input, pixels (the long side is resized to it, then padded)
    patch_size: int = 16  # p: the image embedding is (S/p)×(S/p); masks come out at 4S/p (256 for ViT-B)
    encoder_embed_dim: int = 768  # ViT width
    encoder_depth: int = 12  # ViT blocks
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)  # blocks with global attention; the rest windowed
    window_size: int = 14  # side of the attention windows, in patches
    mlp_ratio: float = 4.0  # ViT MLP width / embed dim
    prompt_embed_dim: int = 256  # C: image-embedding channels = prompt-token width = decoder width
    mask_in_chans: int = 16  # hidden channels of the mask-prompt downscaler
    decoder_depth: int = 2  # two-way blocks
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048  # MLP width in the two-way blocks
    attention_downsample_rate: int = 2  # cross-attentions work at C / rate
    num_multimask_outputs: int = 3  # M: masks for an ambiguous prompt (whole, part, subpart)
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    decoder_norm_eps: float = 1e-5  # LayerNorm eps in the two-way blocks: 1e-5 in the original code, 1e-6 in HF's


SAM_CONFIGS = {
    # the released models (Kirillov et al. 2023, Appendix A; build_sam.py of the original code)
    "vit_b": SamConfig(),  # 93.7M parameters, 89.7M of them the encoder
    "vit_l": SamConfig(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                       encoder_global_attn_indexes=(5, 11, 17, 23)),  # 312M
    "vit_h": SamConfig(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                       encoder_global_attn_indexes=(7, 15, 23, 31)),  # 641M
    # nano-SAM: seglab's CPU-trainable size (1.09M parameters); 128-pixel inputs, a 16×16 embedding, 64×64 masks
    "nano": SamConfig(image_size=128, patch_size=8, encoder_embed_dim=128, encoder_depth=4, encoder_num_heads=4,
                      encoder_global_attn_indexes=(1, 3), window_size=4, prompt_embed_dim=64, decoder_num_heads=4,
                      decoder_mlp_dim=256, iou_head_hidden_dim=64),
}


def sam_config(name: str, **overrides) -> SamConfig:
    """The preset ``name`` (``"nano"``, ``"vit_b"``, ``"vit_l"``, ``"vit_h"``) with ``overrides`` replacing fields.

    Raises:
        ValueError: an unknown name or field.
    """
    if name not in SAM_CONFIGS:
        raise ValueError(f"unknown SAM config {name!r}; valid: {', '.join(SAM_CONFIGS)}")
    valid = {f.name for f in fields(SamConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown SamConfig field(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return SamConfig(**{**SAM_CONFIGS[name].__dict__, **overrides})


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_prompts(points: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                  mask_inputs: torch.Tensor | None, *, batch_size: int, image_size: tuple[int, int],
                  mask_input_size: tuple[int, int]) -> None:
    """Raise a one-line ``ValueError`` naming the argument unless the prompts are what ``Sam.forward`` takes.

    Checks: at least one prompt; shapes ``(N, P, K, 2)``, ``(N, P, K)``, ``(N, P, 4)``, ``(N, P or 1, *mask_input_size)``
    agreeing on N and P; labels in {-1, 0, 1}; points (other than label -1 padding) and box corners inside
    ``[0, W] × [0, H]`` of ``image_size = (H, W)``; ``x1 >= x0`` and ``y1 >= y0``.
    """
    if points is None and boxes is None and mask_inputs is None:
        raise ValueError("empty prompt: give points (with point_labels), boxes or mask_inputs")
    height, width = image_size
    prompts = None  # P
    if points is not None:
        if points.ndim != 4 or points.shape[-1] != 2 or points.shape[0] != batch_size:
            raise ValueError(f"points must be (N, P, K, 2) = ({batch_size}, P, K, 2) (x, y) pixels; got {_shape(points)}: "
                             "for one point per image use points[:, None, None]")
        if point_labels is None:
            raise ValueError("point_labels is missing: give (N, P, K) ints with points, 1 positive, 0 negative, -1 padding")
        if _shape(point_labels) != _shape(points)[:3]:
            raise ValueError(f"point_labels must have shape (N, P, K) = {_shape(points)[:3]} to match points; "
                             f"got {_shape(point_labels)}")
        if not ((point_labels == -1) | (point_labels == 0) | (point_labels == 1)).all():
            raise ValueError(f"point_labels must be 1 (positive), 0 (negative) or -1 (padding); got values "
                             f"{sorted(set(point_labels.unique().tolist()))}")
        real = (point_labels != -1)[..., None].expand_as(points)
        limits = points.new_tensor([width, height])
        outside = real & ((points < 0) | (points > limits))
        if outside.any():
            x, y = points[outside.any(-1)][0].tolist()
            raise ValueError(f"points must lie inside the {width}×{height} image (0 <= x <= {width}, 0 <= y <= {height});"
                             f" got (x, y) = ({x:g}, {y:g}): coordinates are (x, y) pixels of the input image")
        prompts = points.shape[1]
    if point_labels is not None and points is None:
        raise ValueError("point_labels given without points: give both, or neither")
    if boxes is not None:
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != batch_size:
            raise ValueError(f"boxes must be (N, P, 4) = ({batch_size}, P, 4) as (x0, y0, x1, y1) pixels; got {_shape(boxes)}")
        if prompts is not None and boxes.shape[1] != prompts:
            raise ValueError(f"boxes must have one box per point prompt: (N, P, 4) with P = {prompts}; got {_shape(boxes)}")
        x0, y0, x1, y1 = boxes.unbind(-1)
        if ((x1 < x0) | (y1 < y0)).any():
            bad = boxes[(x1 < x0) | (y1 < y0)][0].tolist()
            raise ValueError(f"boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; got {[round(v, 2) for v in bad]}")
        corners = boxes.reshape(*boxes.shape[:2], 2, 2)
        if ((corners < 0) | (corners > boxes.new_tensor([width, height]))).any():
            raise ValueError(f"boxes must lie inside the {width}×{height} image (0 <= x <= {width}, 0 <= y <= {height}); "
                             f"got corners outside: clip them to the image")
        prompts = boxes.shape[1]
    if mask_inputs is not None:
        expected = f"(N, P or 1, {mask_input_size[0]}, {mask_input_size[1]})"
        if (mask_inputs.ndim != 4 or mask_inputs.shape[0] != batch_size
                or tuple(mask_inputs.shape[2:]) != tuple(mask_input_size)
                or (prompts is not None and mask_inputs.shape[1] not in (1, prompts))):
            raise ValueError(f"mask_inputs must be {expected} low-resolution logits (4× the image embedding); got "
                             f"{_shape(mask_inputs)}: resize a mask with F.interpolate(mask, {tuple(mask_input_size)})")


class Sam(nn.Module):
    """Segment Anything (Kirillov et al., ICCV 2023): masks from point, box and mask prompts.

    Args:
        config: a ``SamConfig`` or a preset name: ``"nano"``, ``"vit_b"`` (default), ``"vit_l"``, ``"vit_h"``.

    ``forward(images, points=None, point_labels=None, boxes=None, mask_inputs=None, multimask_output=True)``:

    - ``images``: ``(N, 3, H, W)`` float32, normalised with the ImageNet mean/std, ``H, W <= S`` (``config.image_size``);
      smaller images are zero-padded on the bottom/right to ``S × S``. ``seglab.models.sam.preprocess`` makes them
      from an image of any size (long side resized to S).
    - ``points``: ``(N, P, K, 2)`` float, (x, y) in pixels of ``images`` (x to the right, y down, ``0 <= x <= W``):
      P prompts per image, K points per prompt; ``point_labels`` ``(N, P, K)`` int: 1 positive, 0 negative,
      -1 padding (ignored; lets prompts with fewer points share a tensor).
    - ``boxes``: ``(N, P, 4)`` float ``(x0, y0, x1, y1)`` pixels, one box per prompt (with points: the same P).
    - ``mask_inputs``: ``(N, P or 1, 4S/p, 4S/p)`` float logits (e.g. a previous prediction's; 256×256 for ViT-B).
    - ``multimask_output``: True -> M = 3 masks per prompt (whole/part/subpart), False -> 1.

    Returns ``(masks, iou_predictions)``: low-resolution mask logits ``(N, P, M, 4S/p, 4S/p)`` float32 (over the
    padded ``S × S`` frame; ``postprocess_masks`` crops and resizes them to the original image) and predicted IoUs
    ``(N, P, M)`` float32. A mask prompt alone gives ``P`` = its second dimension.

    ``encode_image`` and ``decode`` split the two halves: encode once, decode every new click.

    Raises:
        ValueError: a one-line message naming the argument: no prompt at all, shapes that disagree, points or
            boxes outside the image, a box with ``x1 < x0`` or ``y1 < y0``, labels other than -1/0/1, a mask prompt
            of the wrong size, images larger than ``S``.

    Differences from the paper: none in the architecture (released checkpoints load as they are). The two-way
    blocks' LayerNorm eps is a config field because Hugging Face's port uses 1e-6 where the original uses 1e-5;
    attention is computed with ``F.scaled_dot_product_attention``; the mask prompt may differ per prompt
    (``P``) or be shared by the image's prompts (``1``); the automatic "segment everything" grid generator and
    the training-time prompt simulation are not part of this class.
    """

    def __init__(self, config: SamConfig | str = "vit_b") -> None:
        super().__init__()
        config = sam_config(config) if isinstance(config, str) else config
        self.config = config
        grid = config.image_size // config.patch_size
        self.image_encoder = ImageEncoderViT(
            config.image_size, config.patch_size, config.encoder_embed_dim, config.encoder_depth,
            config.encoder_num_heads, config.mlp_ratio, config.prompt_embed_dim, config.window_size,
            config.encoder_global_attn_indexes,
        )
        self.prompt_encoder = PromptEncoder(config.prompt_embed_dim, (grid, grid), (config.image_size, config.image_size),
                                            config.mask_in_chans)
        transformer = TwoWayTransformer(config.decoder_depth, config.prompt_embed_dim, config.decoder_num_heads,
                                        config.decoder_mlp_dim, config.attention_downsample_rate, config.decoder_norm_eps)
        self.mask_decoder = MaskDecoder(config.prompt_embed_dim, transformer, config.num_multimask_outputs,
                                        config.iou_head_depth, config.iou_head_hidden_dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised float, ``H, W <= S`` -> image embeddings ``(N, C, S/p, S/p)``."""
        check_images(images, 3, "Sam")
        size = self.config.image_size
        height, width = images.shape[-2:]
        if height > size or width > size:
            raise ValueError(f"images must be at most {size}×{size}; got {height}×{width}: resize the long side to "
                             f"{size} with seglab.models.sam.preprocess")
        return self.image_encoder(F.pad(images, (0, size - width, 0, size - height)))  # (N, C, S/p, S/p)

    def decode(self, image_embeddings: torch.Tensor, points: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None, multimask_output: bool = True,
               image_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts on ``image_embeddings`` ``(N, C, S/p, S/p)`` -> ``(masks, iou_predictions)`` as ``forward``.

        ``image_size = (H, W)`` is the extent prompts must lie in (default ``(S, S)``, the padded frame).
        """
        frame, width = self.config.image_size, self.config.prompt_embed_dim
        grid = frame // self.config.patch_size
        if image_embeddings.ndim != 4 or tuple(image_embeddings.shape[1:]) != (width, grid, grid):
            raise ValueError(f"image_embeddings must be (N, {width}, {grid}, {grid}) from encode_image; "
                             f"got {_shape(image_embeddings)}")
        check_prompts(points, point_labels, boxes, mask_inputs, batch_size=image_embeddings.shape[0],
                      image_size=image_size or (frame, frame), mask_input_size=self.prompt_encoder.mask_input_size)
        return self._decode(image_embeddings, points, point_labels, boxes, mask_inputs, multimask_output)

    def _decode(self, image_embeddings: torch.Tensor, points: torch.Tensor | None, point_labels: torch.Tensor | None,
                boxes: torch.Tensor | None, mask_inputs: torch.Tensor | None,
                multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points, point_labels, boxes, mask_inputs)  # (N, P, T, C), (N, P', C, h, w)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)

    def forward(self, images: torch.Tensor, points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None, mask_inputs: torch.Tensor | None = None,
                multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring: -> mask logits ``(N, P, M, 4S/p, 4S/p)``, IoU predictions ``(N, P, M)``."""
        check_images(images, 3, "Sam")
        check_prompts(points, point_labels, boxes, mask_inputs, batch_size=images.shape[0],
                      image_size=tuple(images.shape[-2:]), mask_input_size=self.prompt_encoder.mask_input_size)
        embeddings = self.encode_image(images)  # (N, C, S/p, S/p); prompts checked before this heavy step
        return self._decode(embeddings, points, point_labels, boxes, mask_inputs, multimask_output)
