"""Load Hugging Face CLIPSeg checkpoints (``CLIPSegForImageSegmentation``, e.g. CIDAS/clipseg-rd64-refined)
into seglab's ``CLIPSeg``.

- ``config_from_hf(config)``: a ``transformers.CLIPSegConfig`` (or its ``config.json`` as a dict) ->
  ``CLIPSegConfig``;
- ``convert_hf_clipseg_state_dict(state_dict)``: renames the keys (tensors are shared, not copied);
- ``load_hf_clipseg(folder)``: a ``save_pretrained`` / hub snapshot folder (``config.json`` and
  ``model.safetensors``, ``pytorch_model.bin`` or their sharded forms) -> a ``CLIPSeg`` in eval mode.

With internet, the published weights load like this (``huggingface_hub`` comes with ``transformers``)::

    from huggingface_hub import snapshot_download
    model = load_hf_clipseg(snapshot_download("CIDAS/clipseg-rd64-refined"))
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .model import CLIPSeg, CLIPSegConfig

__all__ = ["config_from_hf", "convert_hf_clipseg_state_dict", "load_hf_clipseg"]

_RENAMES = (  # Hugging Face key prefix (regex) -> ours; {0}: a layer index
    (r"clip\.text_model\.embeddings\.token_embedding\.", "text.token_embedding."),
    (r"clip\.text_model\.embeddings\.position_embedding\.weight$", "text.position_embedding"),
    (r"clip\.text_model\.encoder\.layers\.(\d+)\.", "text.blocks.{0}."),
    (r"clip\.text_model\.final_layer_norm\.", "text.final_norm."),
    (r"clip\.text_projection\.", "text.proj."),
    (r"clip\.vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"clip\.vision_model\.embeddings\.patch_embedding\.", "visual.patch_embed."),
    (r"clip\.vision_model\.embeddings\.position_embedding\.weight$", "visual.position_embedding"),
    (r"clip\.vision_model\.pre_layrnorm\.", "visual.pre_norm."),
    (r"clip\.vision_model\.encoder\.layers\.(\d+)\.", "visual.blocks.{0}."),
    (r"clip\.vision_model\.post_layernorm\.", "visual.post_norm."),
    (r"clip\.visual_projection\.", "visual.proj."),
    (r"decoder\.film_mul\.", "decoder.film.mul."),
    (r"decoder\.film_add\.", "decoder.film.add."),
    (r"decoder\.reduces\.(\d+)\.", "decoder.reduces.{0}."),
    (r"decoder\.layers\.(\d+)\.", "decoder.layers.{0}."),
    (r"decoder\.transposed_convolution\.(\d+)\.", "decoder.upsample.{0}."),
    (r"decoder\.transposed_convolution\.", "decoder.upsample.0."),  # the plain variant: one module
)
_LAYER_RENAMES = {"self_attn.": "attn.", "layer_norm1.": "norm1.", "layer_norm2.": "norm2.", "mlp.": "mlp."}
_DROPPED = re.compile(r"clip\.logit_scale$|.*\.position_ids$")  # CLIP's contrastive temperature; old buffers


def convert_hf_clipseg_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a Hugging Face ``CLIPSegForImageSegmentation`` state dict for ``CLIPSeg``.

    ``clip.text_model`` / ``clip.vision_model`` / ``clip.*_projection`` become ``text`` / ``visual`` (with
    their projections as ``proj``), ``film_mul`` / ``film_add`` ``film.mul`` / ``film.add``,
    ``transposed_convolution`` ``upsample``, inside a layer ``self_attn`` / ``layer_norm1`` / ``layer_norm2``
    ``attn`` / ``norm1`` / ``norm2``; the ``nn.Embedding`` position tables become plain parameters
    (``position_embedding.weight`` -> ``position_embedding``). ``clip.logit_scale`` (CLIP's contrastive
    temperature, unused for masks) and any ``position_ids`` buffers are dropped.

    Raises:
        ValueError: a key that is not part of a CLIPSeg image-segmentation state dict.
    """
    converted = {}
    for key, value in state_dict.items():
        if _DROPPED.match(key):
            continue
        for pattern, template in _RENAMES:
            match = re.match(pattern, key)
            if match:
                rest = key[match.end():]
                if ".blocks." in template or template.startswith("decoder.layers."):
                    for old, new in _LAYER_RENAMES.items():
                        if rest.startswith(old):
                            rest = new + rest[len(old):]
                            break
                    else:
                        raise ValueError(f"unexpected key {key!r} in a CLIPSeg transformer layer")
                converted[template.format(*match.groups()) + rest] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: expected a Hugging Face CLIPSegForImageSegmentation state dict")
    return converted


def config_from_hf(config: Any) -> CLIPSegConfig:
    """A ``transformers.CLIPSegConfig`` or its ``config.json`` dict -> ``CLIPSegConfig``.

    Raises:
        ValueError: a text ``eos_token_id`` other than the vocabulary's largest id (or the legacy 2, which
        Hugging Face also pools at ``argmax``): seglab pools the text at ``input_ids.argmax(-1)``.
    """
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    vision, text = dict(raw.get("vision_config") or {}), dict(raw.get("text_config") or {})
    vocab_size = text.get("vocab_size", 49408)
    if text.get("eos_token_id", 49407) not in (2, vocab_size - 1):
        raise ValueError(f"text_config.eos_token_id={text['eos_token_id']} is not the vocabulary's largest id "
                         f"({vocab_size - 1}); seglab's CLIPSeg pools the end token at input_ids.argmax(-1)")
    if vision.get("layer_norm_eps", 1e-5) != text.get("layer_norm_eps", 1e-5):
        raise ValueError("vision_config and text_config use different layer_norm_eps; seglab's CLIPSeg uses one")
    return CLIPSegConfig(
        image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 32),
        vision_width=vision.get("hidden_size", 768), vision_layers=vision.get("num_hidden_layers", 12),
        vision_heads=vision.get("num_attention_heads", 12), vision_mlp_dim=vision.get("intermediate_size", 3072),
        vocab_size=vocab_size, context_length=text.get("max_position_embeddings", 77),
        text_width=text.get("hidden_size", 512), text_layers=text.get("num_hidden_layers", 12),
        text_heads=text.get("num_attention_heads", 8), text_mlp_dim=text.get("intermediate_size", 2048),
        projection_dim=raw.get("projection_dim", 512), extract_layers=tuple(raw.get("extract_layers", (3, 6, 9))),
        reduce_dim=raw.get("reduce_dim", 64), decoder_heads=raw.get("decoder_num_attention_heads", 4),
        decoder_mlp_dim=raw.get("decoder_intermediate_size", 2048),
        conditional_layer=raw.get("conditional_layer", 0),
        complex_transposed_conv=bool(raw.get("use_complex_transposed_convolution", False)),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
    )


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for index_name, loader in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "torch")):
        files = [folder / index_name]
        index = folder / f"{index_name}.index.json"
        if index.is_file():  # a sharded checkpoint
            files = [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        if all(f.is_file() for f in files):
            state = {}
            for f in files:
                if loader == "safetensors":
                    from safetensors.torch import load_file  # comes with transformers / huggingface_hub

                    state.update(load_file(f))
                else:
                    state.update(torch.load(f, map_location="cpu", weights_only=True))
            return state
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}: pass the folder that "
                            "save_pretrained wrote (or huggingface_hub.snapshot_download's)")


def load_hf_clipseg(folder: str | Path) -> CLIPSeg:
    """A Hugging Face CLIPSeg checkpoint folder -> ``CLIPSeg`` with its weights, in eval mode (strict load).

    Raises:
        FileNotFoundError: no ``config.json`` or no weights file in ``folder``.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {folder}: pass the folder that save_pretrained wrote "
                                "(or huggingface_hub.snapshot_download's)")
    model = CLIPSeg(config_from_hf(json.loads((folder / "config.json").read_text())))
    model.load_state_dict(convert_hf_clipseg_state_dict(_read_weights(folder)))
    return model.eval()
