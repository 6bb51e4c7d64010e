"""CLIPSeg: Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022.

Segment what a phrase ("a red cup") or an example image names: a frozen CLIP encodes the image and the
prompt, a small decoder conditioned on the prompt by FiLM turns CLIP's intermediate layers into a mask.
One idea per module; every public name is re-exported here:

- :mod:`.clip`: CLIP's encoders (Radford et al. 2021): ``CLIPVisionTransformer`` (ViT, intermediate layers
  readable) and ``CLIPTextTransformer`` (causal, pooled at the end token), ``quick_gelu``;
- :mod:`.decoder`: ``CLIPSegDecoder`` (reduce, ``FiLM``, post-norm ``DecoderLayer``s, transposed convs);
- :mod:`.model`: ``CLIPSeg``, ``CLIPSegConfig`` and the presets ``CLIPSEG_CONFIGS`` (rd64-refined, rd64,
  rd16, nano);
- :mod:`.tokenizer`: ``CLIPTokenizer`` (CLIP's byte-level BPE; the ``clip`` extra) and ``WordTokenizer``
  (a closed word list for small models trained from scratch);
- :mod:`.processing`: ``preprocess`` (352×352, ImageNet mean/std, as ``CLIPSegProcessor``) and ``postprocess``;
- :mod:`.convert`: ``load_hf_clipseg`` / ``convert_hf_clipseg_state_dict`` / ``config_from_hf`` for Hugging
  Face checkpoints such as CIDAS/clipseg-rd64-refined.

Example (with the published weights downloaded)::

    model = load_hf_clipseg(snapshot_download("CIDAS/clipseg-rd64-refined"))
    logits = model(preprocess([photo, photo]), CLIPTokenizer()(["a cup", "a table"]))  # (2, 352, 352)
    masks = postprocess(logits, photo.size[::-1]) > 0.5
"""

from .clip import CLIPTextTransformer, CLIPVisionTransformer, quick_gelu
from .convert import config_from_hf, convert_hf_clipseg_state_dict, load_hf_clipseg
from .decoder import CLIPSegDecoder, DecoderLayer, FiLM
from .model import CLIPSEG_CONFIGS, CLIPSeg, CLIPSegConfig
from .processing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, postprocess, preprocess
from .tokenizer import CLIPTokenizer, WordTokenizer

__all__ = [
    "CLIPSEG_CONFIGS",
    "CLIPSeg",
    "CLIPSegConfig",
    "CLIPSegDecoder",
    "CLIPTextTransformer",
    "CLIPTokenizer",
    "CLIPVisionTransformer",
    "CLIP_MEAN",
    "CLIP_STD",
    "DecoderLayer",
    "FiLM",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WordTokenizer",
    "config_from_hf",
    "convert_hf_clipseg_state_dict",
    "load_hf_clipseg",
    "postprocess",
    "preprocess",
    "quick_gelu",
]
