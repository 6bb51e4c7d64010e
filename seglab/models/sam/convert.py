"""Load published SAM weights into ``Sam``: Hugging Face ``SamModel`` checkpoints and the original ``.pth`` files.

**Hugging Face** (``facebook/sam-vit-base``, ``-large``, ``-huge``: a folder with ``config.json`` and
``model.safetensors``, e.g. ``huggingface_hub.snapshot_download("facebook/sam-vit-base")`` or
``SamModel.save_pretrained(folder)``)::

    model = load_hf_sam(folder)  # Sam with the checkpoint's sizes and weights, in eval mode

or by hand: ``Sam(sam_config_from_hf(config_dict)).load_state_dict(convert_hf_sam_state_dict(state_dict))``.

**Original** (``facebookresearch/segment-anything``'s ``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``): seglab's ``Sam`` uses the original module names, so those files load with no
renaming at all (their ``pixel_mean``/``pixel_std`` are not in the state dict; ``preprocess`` normalises)::

    model = Sam("vit_b")
    model.load_state_dict(torch.load("sam_vit_b_01ec64.pth", map_location="cpu"))  # strict

The one numerical difference between the two sources: HF's two-way blocks use LayerNorm eps 1e-6
(``mask_decoder_config.layer_norm_eps``), the original 1e-5; ``sam_config_from_hf`` keeps HF's.

Hugging Face name -> seglab (= original) name:

====================================================  =====================================================
``shared_image_embedding.positional_embedding``         ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``
``vision_encoder.patch_embed.projection``              ``image_encoder.patch_embed.proj``
``vision_encoder.layers.<i>.layer_norm1/2``            ``image_encoder.blocks.<i>.norm1/2`` (``attn``, ``mlp`` as they are)
``vision_encoder.neck.conv1/layer_norm1/conv2/…2``     ``image_encoder.neck.0/1/2/3``
``prompt_encoder.mask_embed.conv1/layer_norm1/conv2/    ``prompt_encoder.mask_downscaling.0/1/3/4/6``
layer_norm2/conv3``
``prompt_encoder.point_embed.<i>``                     ``prompt_encoder.point_embeddings.<i>``
``mask_decoder.transformer.layers.<i>.layer_norm<j>``  ``mask_decoder.transformer.layers.<i>.norm<j>``
``mask_decoder.transformer.layer_norm_final_attn``     ``mask_decoder.transformer.norm_final_attn``
``mask_decoder.upscale_conv1/upscale_layer_norm/…2``   ``mask_decoder.output_upscaling.0/1/3``
``….proj_in / layers.<j> / proj_out`` (3 MLPs)         ``….layers.0 / layers.<j+1> / layers.<depth-1>``
====================================================  =====================================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .model import Sam, SamConfig

__all__ = ["convert_hf_sam_state_dict", "load_hf_sam", "sam_config_from_hf"]

_RENAMES = (  # HF pattern -> seglab template; {0}, {1}: the pattern's groups
    (r"shared_image_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"prompt_encoder\.shared_embedding\.positional_embedding$",
     "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"vision_encoder\.patch_embed\.projection\.(\w+)$", "image_encoder.patch_embed.proj.{0}"),
    (r"vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.(\w+)$", "image_encoder.blocks.{0}.norm{1}.{2}"),
    (r"vision_encoder\.layers\.(\d+)\.(attn\.(?:qkv|proj)\.\w+|attn\.rel_pos_[hw]|mlp\.lin[12]\.\w+)$",
     "image_encoder.blocks.{0}.{1}"),
    (r"vision_encoder\.neck\.conv1\.(\w+)$", "image_encoder.neck.0.{0}"),
    (r"vision_encoder\.neck\.layer_norm1\.(\w+)$", "image_encoder.neck.1.{0}"),
    (r"vision_encoder\.neck\.conv2\.(\w+)$", "image_encoder.neck.2.{0}"),
    (r"vision_encoder\.neck\.layer_norm2\.(\w+)$", "image_encoder.neck.3.{0}"),
    (r"prompt_encoder\.mask_embed\.conv1\.(\w+)$", "prompt_encoder.mask_downscaling.0.{0}"),
    (r"prompt_encoder\.mask_embed\.layer_norm1\.(\w+)$", "prompt_encoder.mask_downscaling.1.{0}"),
    (r"prompt_encoder\.mask_embed\.conv2\.(\w+)$", "prompt_encoder.mask_downscaling.3.{0}"),
    (r"prompt_encoder\.mask_embed\.layer_norm2\.(\w+)$", "prompt_encoder.mask_downscaling.4.{0}"),
    (r"prompt_encoder\.mask_embed\.conv3\.(\w+)$", "prompt_encoder.mask_downscaling.6.{0}"),
    (r"prompt_encoder\.point_embed\.(\d+)\.weight$", "prompt_encoder.point_embeddings.{0}.weight"),
    (r"prompt_encoder\.(no_mask_embed|not_a_point_embed)\.weight$", "prompt_encoder.{0}.weight"),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight$", "mask_decoder.{0}.weight"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.(\w+)$", "mask_decoder.transformer.layers.{0}.norm{1}.{2}"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.((?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
     r"\.(?:q_proj|k_proj|v_proj|out_proj)\.\w+|mlp\.lin[12]\.\w+)$", "mask_decoder.transformer.layers.{0}.{1}"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.(\w+\.\w+)$",
     "mask_decoder.transformer.final_attn_token_to_image.{0}"),
    (r"mask_decoder\.transformer\.layer_norm_final_attn\.(\w+)$", "mask_decoder.transformer.norm_final_attn.{0}"),
    (r"mask_decoder\.upscale_conv1\.(\w+)$", "mask_decoder.output_upscaling.0.{0}"),
    (r"mask_decoder\.upscale_layer_norm\.(\w+)$", "mask_decoder.output_upscaling.1.{0}"),
    (r"mask_decoder\.upscale_conv2\.(\w+)$", "mask_decoder.output_upscaling.3.{0}"),
)
# HF's SamFeedForward (proj_in, layers.<j>, proj_out) -> the original MLP (layers.0 … layers.<depth-1>)
_MLP = re.compile(r"(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|layers\.(\d+)|proj_out)\.(\w+)$")


def convert_hf_sam_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``SamModel`` state dict (transformers 4.x and 5 names) for seglab's ``Sam``.

    Tensors are shared, not copied; HF's two copies of the Fourier matrix (``shared_image_embedding`` and
    ``prompt_encoder.shared_embedding``, tied) become one.

    Raises:
        ValueError: a key that is not part of a ``SamModel`` state dict, or two different Fourier matrices.
    """
    converted: dict[str, torch.Tensor] = {}
    mlp_depth: dict[str, int] = {}  # MLP prefix -> number of hidden ``layers.<j>`` + 2
    for key in state_dict:
        match = _MLP.match(key)
        if match and match.group(3) is not None:
            mlp_depth[match.group(1)] = max(mlp_depth.get(match.group(1), 2), int(match.group(3)) + 3)
    for key, value in state_dict.items():
        match = _MLP.match(key)
        if match:
            prefix, part, hidden, name = match.groups()
            index = 0 if part == "proj_in" else mlp_depth.get(prefix, 2) - 1 if part == "proj_out" else int(hidden) + 1
            new_key = f"{prefix}.layers.{index}.{name}"
        else:
            for pattern, template in _RENAMES:
                found = re.match(pattern, key)
                if found:
                    new_key = template.format(*found.groups())
                    break
            else:
                raise ValueError(f"unexpected key {key!r}: expected a Hugging Face SamModel state dict")
        if new_key in converted and not torch.equal(converted[new_key], value):
            raise ValueError(f"{key!r} differs from the tensor already read for {new_key!r}: the tied Fourier "
                             "matrices of a SamModel must be equal")
        converted[new_key] = value
    return converted


def sam_config_from_hf(config: Mapping) -> SamConfig:
    """A ``SamConfig`` from a Hugging Face ``SamConfig`` (its ``config.json`` as a dict, or ``config.to_dict()``).

    Raises:
        ValueError: a configuration seglab's ``Sam`` cannot express (no relative or absolute positions, an
            MLP size that is not ``mlp_ratio * hidden_size``, a prompt width different from the image embedding's).
    """
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    vision, prompt, decoder = (config.get(k) or {} for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config"))
    hidden = vision.get("hidden_size", 768)
    mlp_ratio = vision.get("mlp_ratio", 4.0)
    if vision.get("mlp_dim") not in (None, int(hidden * mlp_ratio)):
        raise ValueError(f"vision_config.mlp_dim {vision['mlp_dim']} != mlp_ratio * hidden_size: not supported")
    if not vision.get("use_rel_pos", True) or not vision.get("use_abs_pos", True) or not vision.get("qkv_bias", True):
        raise ValueError("vision_config without use_rel_pos, use_abs_pos or qkv_bias is not supported")
    width = decoder.get("hidden_size", 256)
    if {vision.get("output_channels", 256), prompt.get("hidden_size", 256), 2 * vision.get("num_pos_feats", 128)} != {width}:
        raise ValueError("vision_config.output_channels, 2 * num_pos_feats, prompt_encoder_config.hidden_size and "
                         "mask_decoder_config.hidden_size must be equal")
    return SamConfig(
        image_size=vision.get("image_size", 1024), patch_size=vision.get("patch_size", 16), encoder_embed_dim=hidden,
        encoder_depth=vision.get("num_hidden_layers", 12), encoder_num_heads=vision.get("num_attention_heads", 12),
        encoder_global_attn_indexes=tuple(vision.get("global_attn_indexes", (2, 5, 8, 11))),
        window_size=vision.get("window_size", 14), mlp_ratio=mlp_ratio, prompt_embed_dim=width,
        mask_in_chans=prompt.get("mask_input_channels", 16), decoder_depth=decoder.get("num_hidden_layers", 2),
        decoder_num_heads=decoder.get("num_attention_heads", 8), decoder_mlp_dim=decoder.get("mlp_dim", 2048),
        attention_downsample_rate=decoder.get("attention_downsample_rate", 2),
        num_multimask_outputs=decoder.get("num_multimask_outputs", 3), iou_head_depth=decoder.get("iou_head_depth", 3),
        iou_head_hidden_dim=decoder.get("iou_head_hidden_dim", 256), decoder_norm_eps=decoder.get("layer_norm_eps", 1e-6),
    )


def load_hf_sam(folder: str | Path) -> Sam:
    """``Sam`` (eval mode) from a Hugging Face SAM folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``).

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or the weights file.
        ImportError: ``model.safetensors`` without the ``safetensors`` package (``pip install safetensors``).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'} not found: expected a Hugging Face SAM folder "
                                "(huggingface_hub.snapshot_download('facebook/sam-vit-base'))")
    config = json.loads((folder / "config.json").read_text())
    if (folder / "model.safetensors").is_file():
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError("reading model.safetensors needs the safetensors package: pip install safetensors") from error
        state_dict = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        state_dict = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")
    model = Sam(sam_config_from_hf(config))
    model.load_state_dict(convert_hf_sam_state_dict(state_dict))
    return model.eval()
