"""Load Hugging Face ``Mask2FormerForUniversalSegmentation`` weights into seglab's ``Mask2Former``.

``convert_hf_mask2former_state_dict(state_dict)`` renames the keys (and splits ``nn.MultiheadAttention``'s packed
``in_proj_weight`` into q/k/v); ``mask2former_options_from_hf_config(config)`` reads the sizes from the model's
``config.json`` (a dict), so a folder written by ``save_pretrained`` loads with::

    config = json.loads((folder / "config.json").read_text())
    state_dict = safetensors.torch.load_file(folder / "model.safetensors")
    model = Mask2Former(**mask2former_options_from_hf_config(config))
    model.load_state_dict(convert_hf_mask2former_state_dict(state_dict))

Supported: HF models whose backbone is a ``ResNetConfig`` (``layer_type`` "basic" → ResNet-18/34, "bottleneck" →
ResNet-50/101, ``downsample_in_bottleneck=False``), mapped exactly onto seglab's torchvision-style ResNet.
The published ``facebook/mask2former-swin-*`` checkpoints use a **Swin** backbone, which seglab does not have: a
learner needs a Swin module that returns ``{"layer1"…"layer4"}`` (strides 4…32) and has a ``channels`` dict (pass
it as ``Mask2Former(backbone=module)``), plus the renaming of the ``model.pixel_level_module.encoder.*`` keys onto
it (``backbone_prefix_map=``); everything after the backbone converts as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["convert_hf_mask2former_state_dict", "mask2former_options_from_hf_config"]

_BACKBONE = "model.pixel_level_module.encoder."
_PD, _TD = r"model\.pixel_level_module\.decoder\.", r"model\.transformer_module\."
_RENAMES = (  # HF key prefix (a regex) -> ours; \1: a layer index
    (_PD + r"input_projections\.(\d+)\.", r"pixel_decoder.input_proj.\1."),
    (_PD + r"level_embed$", r"pixel_decoder.level_embed"),
    (_PD + r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"pixel_decoder.encoder.\1.norm1."),
    (_PD + r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"pixel_decoder.encoder.\1.norm2."),
    (_PD + r"encoder\.layers\.(\d+)\.fc1\.", r"pixel_decoder.encoder.\1.linear1."),
    (_PD + r"encoder\.layers\.(\d+)\.fc2\.", r"pixel_decoder.encoder.\1.linear2."),
    (_PD + r"encoder\.layers\.(\d+)\.self_attn\.", r"pixel_decoder.encoder.\1.self_attn."),
    (_PD + r"mask_projection\.", r"pixel_decoder.mask_features."),
    (_PD + r"adapter_1\.", r"pixel_decoder.lateral_conv."),
    (_PD + r"layer_1\.", r"pixel_decoder.output_conv."),
    (_TD + r"queries_embedder\.", r"transformer_decoder.query_embed."),
    (_TD + r"queries_features\.", r"transformer_decoder.query_feat."),
    (_TD + r"level_embed\.", r"transformer_decoder.level_embed."),
    (_TD + r"decoder\.layernorm\.", r"transformer_decoder.decoder_norm."),
    (_TD + r"decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.", r"transformer_decoder.mask_embed.layers.\1."),
    (_TD + r"decoder\.layers\.(\d+)\.cross_attn_layer_norm\.", r"transformer_decoder.layers.\1.norm1."),
    (_TD + r"decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer_decoder.layers.\1.norm2."),
    (_TD + r"decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer_decoder.layers.\1.norm3."),
    (_TD + r"decoder\.layers\.(\d+)\.fc1\.", r"transformer_decoder.layers.\1.linear1."),
    (_TD + r"decoder\.layers\.(\d+)\.fc2\.", r"transformer_decoder.layers.\1.linear2."),
    (_TD + r"decoder\.layers\.(\d+)\.self_attn\.", r"transformer_decoder.layers.\1.self_attn."),
    (_TD + r"decoder\.layers\.(\d+)\.cross_attn\.out_proj\.", r"transformer_decoder.layers.\1.cross_attn.out_proj."),
    (r"class_predictor\.", r"transformer_decoder.class_embed."),
)
_RESNET_RENAMES = (  # HF ResNetBackbone (after the prefix) -> torchvision's ResNet names
    (r"embedder\.embedder\.convolution\.", r"conv1."),
    (r"embedder\.embedder\.normalization\.", r"bn1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", "layer{0}.{1}.downsample.0."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", "layer{0}.{1}.downsample.1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.", "layer{0}.{1}.conv{2}."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.", "layer{0}.{1}.bn{2}."),
)


def _backbone_key(rest: str) -> str:
    for pattern, template in _RESNET_RENAMES:
        match = re.match(pattern, rest)
        if match:
            groups = [int(g) for g in match.groups()]
            if len(groups) >= 1:  # stages count from 0 in HF, layer1… in torchvision; conv0 -> conv1
                groups[0] += 1
            if len(groups) == 3:
                groups[2] += 1
            return "backbone." + template.format(*groups) + rest[match.end():]
    raise ValueError(f"unexpected backbone key {_BACKBONE + rest!r}: only HF ResNet backbones convert "
                     "(see the module docstring)")


def convert_hf_mask2former_state_dict(state_dict: Mapping[str, torch.Tensor],
                                      backbone_prefix_map: Mapping[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``Mask2FormerForUniversalSegmentation`` state dict for seglab's ``Mask2Former``.

    Args:
        state_dict: HF's keys (``model.pixel_level_module…``, ``model.transformer_module…``,
            ``class_predictor…``); ``criterion.empty_weight`` is dropped (seglab's criterion rebuilds it).
        backbone_prefix_map: for a backbone that is not a HF ResNet: ``{hf_prefix: seglab_prefix}`` applied to the
            backbone keys (after ``model.pixel_level_module.encoder.``) instead of the ResNet renaming.

    Returns:
        the state dict for ``Mask2Former.load_state_dict`` (strict). Tensors are shared, except the cross-attention's
        ``in_proj_weight``/``in_proj_bias`` ``(3D, D)``, split into ``q_proj``/``k_proj``/``v_proj`` views.

    Raises:
        ValueError: a key that is not part of such a state dict.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "criterion.empty_weight":
            continue
        if key.startswith(_BACKBONE):
            rest = key[len(_BACKBONE):]
            if backbone_prefix_map is None:
                converted[_backbone_key(rest)] = value
                continue
            for old, new in backbone_prefix_map.items():
                if rest.startswith(old):
                    converted["backbone." + new + rest[len(old):]] = value
                    break
            else:
                raise ValueError(f"backbone key {key!r} matches no prefix of backbone_prefix_map")
            continue
        match = re.match(r"model\.transformer_module\.decoder\.layers\.(\d+)\.cross_attn\.in_proj_(weight|bias)$", key)
        if match:  # nn.MultiheadAttention packs q, k, v: rows [0, D), [D, 2D), [2D, 3D)
            layer, kind = match.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                converted[f"transformer_decoder.layers.{layer}.cross_attn.{name}.{kind}"] = part
            continue
        for pattern, template in _RENAMES:
            new, count = re.subn("^" + pattern, template, key)
            if count:
                converted[new] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: expected a Hugging Face Mask2FormerForUniversalSegmentation "
                             "state dict")
    return converted


_RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                  ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101"}


def mask2former_options_from_hf_config(config: Mapping) -> dict:
    """``Mask2Former`` keyword arguments (num_classes included) from a HF ``Mask2FormerConfig`` as a dict
    (``config.to_dict()`` or the ``config.json`` of ``save_pretrained``).

    HF's ``decoder_layers`` counts the predictions (layers + 1): ``dec_layers = decoder_layers - 1``.

    Raises:
        ValueError: a backbone other than a torchvision-shaped HF ResNet (Swin: see the module docstring), or
            ``feature_size``/``mask_feature_size`` different from ``hidden_dim`` (seglab uses one width).
    """
    backbone = dict(config.get("backbone_config") or {})
    kind = (backbone.get("layer_type"), tuple(backbone.get("depths", ())))
    if backbone.get("model_type") != "resnet" or kind not in _RESNET_DEPTHS:
        raise ValueError(f"backbone {backbone.get('model_type')!r} {kind} has no seglab equivalent: only HF "
                         "ResNet-18/34/50/101 convert; for Swin pass your own backbone module "
                         "(see seglab.models.mask2former.convert)")
    if backbone.get("downsample_in_bottleneck") or backbone.get("embedding_size", 64) != 64:
        raise ValueError("only the torchvision ResNet layout converts "
                         "(embedding_size 64, downsample_in_bottleneck False)")
    if not config["feature_size"] == config["mask_feature_size"] == config["hidden_dim"]:
        raise ValueError("seglab's Mask2Former uses one width: feature_size, mask_feature_size and hidden_dim must "
                         f"be equal; got {config['feature_size']}, {config['mask_feature_size']}, "
                         f"{config['hidden_dim']}")
    num_labels = config.get("num_labels") or len(config.get("id2label") or {})
    return {"num_classes": int(num_labels), "backbone": _RESNET_DEPTHS[kind], "num_queries": config["num_queries"],
            "hidden_dim": config["hidden_dim"], "dec_layers": config["decoder_layers"] - 1,
            "enc_layers": config["encoder_layers"], "num_heads": config["num_attention_heads"],
            "dim_feedforward": config["dim_feedforward"], "encoder_feedforward_dim": config["encoder_feedforward_dim"],
            "no_object_weight": config.get("no_object_weight", 0.1), "class_weight": config.get("class_weight", 2.0),
            "mask_weight": config.get("mask_weight", 5.0), "dice_weight": config.get("dice_weight", 5.0),
            "num_points": config.get("train_num_points", 12544)}
