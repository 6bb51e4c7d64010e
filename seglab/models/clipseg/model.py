"""CLIPSeg: Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022.

A frozen CLIP (``clip.py``) and a small decoder (``decoder.py``) segment whatever a prompt names: the prompt
is a phrase ("a cat") or a visual prompt (an image of the thing), both mapped by CLIP into the same
P-dimensional embedding that conditions the decoder through FiLM. The query image goes through the CLIP ViT
once; the decoder reads its layers ``extract_layers`` (3, 6 and 9 of 12) and upsamples to a mask::

    image (N, 3, H, W) ─ CLIP ViT ─ layers 3, 6, 9 ─┐
    phrase (N, T) ─ CLIP text ─ embedding (N, P) ───┴─ decoder (FiLM, 3 layers, ×p) ─ logits (N, H, W)

``CLIPSEG_CONFIGS`` holds the published sizes (``"rd64-refined"``, ``"rd64"``, ``"rd16"``: ViT-B/16 and
CLIP's 512-wide text transformer) and ``"nano"``, a laptop-sized model to train from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import check_images
from .clip import CLIPTextTransformer, CLIPVisionTransformer
from .decoder import CLIPSegDecoder

__all__ = ["CLIPSEG_CONFIGS", "CLIPSeg", "CLIPSegConfig"]


@dataclass(frozen=True)
class CLIPSegConfig:
    """Every size of a CLIPSeg model; the defaults are CIDAS/clipseg-rd64-refined's (ViT-B/16 CLIP).

    Raises:
        ValueError: ``extract_layers`` outside ``[0, vision_layers)``, ``conditional_layer`` outside the extracted
            layers, ``complex_transposed_conv`` with a ``patch_size`` not divisible by 4.
    """

    image_size: int = 224  # side the ViT's position embeddings were learned at (others interpolate them)
    patch_size: int = 16  # p: ViT patch side in pixels = the decoder's upsampling factor
    vision_width: int = 768  # ViT width
    vision_layers: int = 12  # ViT depth
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    vocab_size: int = 49408  # CLIP's BPE vocabulary (CLIPTokenizer); a WordTokenizer's vocab_size for a small one
    context_length: int = 77  # most tokens per phrase, start and end included
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp_dim: int = 2048
    projection_dim: int = 512  # P: the joint image-text embedding that conditions the decoder
    extract_layers: tuple[int, ...] = (3, 6, 9)  # 0-based ViT layers whose outputs the decoder reads
    reduce_dim: int = 64  # D: the decoder's width ("rd64")
    decoder_heads: int = 4
    decoder_mlp_dim: int = 2048
    conditional_layer: int = 0  # FiLM acts before this decoder layer, counted from the deepest
    complex_transposed_conv: bool = True  # the "refined" upsampling (conv + two transposed convs)
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "extract_layers", tuple(self.extract_layers))
        if not self.extract_layers or not all(0 <= i < self.vision_layers for i in self.extract_layers):
            raise ValueError(f"extract_layers must be indices in [0, {self.vision_layers}) (vision_layers); "
                             f"got {self.extract_layers}")
        if not 0 <= self.conditional_layer < len(self.extract_layers):
            raise ValueError(f"conditional_layer must be in [0, {len(self.extract_layers)}) (one per extracted "
                             f"layer); got {self.conditional_layer}")
        if self.complex_transposed_conv and self.patch_size % 4:
            raise ValueError(f"complex_transposed_conv needs a patch_size divisible by 4; got {self.patch_size}")


CLIPSEG_CONFIGS = {
    "rd64-refined": CLIPSegConfig(),  # CIDAS/clipseg-rd64-refined
    "rd64": CLIPSegConfig(complex_transposed_conv=False),  # CIDAS/clipseg-rd64 (the paper's model)
    "rd16": CLIPSegConfig(reduce_dim=16, complex_transposed_conv=False),  # CIDAS/clipseg-rd16
    # a laptop model trained from scratch on synthetic shapes: 64×64 images (8×8 patches of 8 pixels), a text
    # encoder over a WordTokenizer's words (replace vocab_size with the tokenizer's); ~0.6M parameters
    "nano": CLIPSegConfig(image_size=64, patch_size=8, vision_width=96, vision_layers=4, vision_heads=4,
                          vision_mlp_dim=384, vocab_size=64, context_length=8, text_width=64, text_layers=2,
                          text_heads=4, text_mlp_dim=256, projection_dim=64, extract_layers=(1, 2, 3),
                          reduce_dim=32, decoder_heads=4, decoder_mlp_dim=128, complex_transposed_conv=False),
}


class CLIPSeg(nn.Module):
    """CLIPSeg (Lüddecke & Ecker 2022): a phrase or a visual prompt -> a binary mask's logits.

    Args:
        config: a ``CLIPSegConfig`` or the name of a preset in ``CLIPSEG_CONFIGS`` (default
            ``"rd64-refined"``). ``dataclasses.replace(CLIPSEG_CONFIGS["nano"], vocab_size=tokenizer.vocab_size)``
            gives the nano model a ``WordTokenizer``'s vocabulary; with ``vocab_size=49408, context_length=77``
            it reads ``CLIPTokenizer``'s ids instead.

    Shapes: ``forward(images, input_ids)``: images ``(N, 3, H, W)`` float32 (``processing.preprocess``: 352×352,
    ImageNet mean/std), H, W ≥ p; ``input_ids`` ``(N, T)`` int64 from ``CLIPTokenizer`` / ``WordTokenizer``
    (T ≤ context_length) -> logits ``(N, H, W)`` float32 (sigmoid for the mask's probability). Instead of
    ``input_ids``: ``conditional_images`` ``(N, 3, H', W')`` (visual prompts, Sec. 3) or
    ``conditional_embeddings`` ``(N, P)``. The decoder predicts ``(N, h*p, w*p)`` (h = H // p); where that
    differs from (H, W) it is resized bilinearly. Parameters: 150,747,745 for rd64-refined (Hugging Face's
    count less ``logit_scale``).

    Training: the paper trains the decoder only (``model.visual.requires_grad_(False)``,
    ``model.text.requires_grad_(False)``: CLIP stays frozen) with binary cross-entropy on the logits; a
    nano model trained from scratch trains everything.

    Raises:
        ValueError / TypeError: images not ``(N, 3, H, W)`` float or smaller than a patch; ``input_ids`` not
        ``(N, T)`` integer, longer than ``context_length`` or out of the vocabulary; a batch size that differs
        from the images'; not exactly one of ``input_ids``, ``conditional_images``, ``conditional_embeddings``.

    Differences from the paper: the paper's visual prompt engineering (Sec. 3: darkening and blurring the
    background of the support image, cropping to the object) is the caller's job: ``conditional_images``
    are encoded as given (as Hugging Face does). Logits are resized to (H, W) where the patch grid does not
    cover the image (Hugging Face and the original code return ``(h*p, w*p)``); non-square images work (both
    references assume a square patch grid).
    """

    def __init__(self, config: CLIPSegConfig | str = "rd64-refined") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in CLIPSEG_CONFIGS:
                raise ValueError(f"unknown CLIPSeg config {config!r}; valid: {', '.join(CLIPSEG_CONFIGS)}")
            config = CLIPSEG_CONFIGS[config]
        self.config = c = config
        self.visual = CLIPVisionTransformer(c.image_size, c.patch_size, c.vision_width, c.vision_layers,
                                            c.vision_heads, c.vision_mlp_dim, c.projection_dim, c.layer_norm_eps)
        self.text = CLIPTextTransformer(c.vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads,
                                        c.text_mlp_dim, c.projection_dim, c.layer_norm_eps)
        self.decoder = CLIPSegDecoder(c.vision_width, len(c.extract_layers), c.projection_dim, c.reduce_dim,
                                      c.decoder_heads, c.decoder_mlp_dim, c.patch_size, c.conditional_layer,
                                      c.complex_transposed_conv, c.layer_norm_eps)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` int64 token ids -> text embeddings ``(N, P)`` float32."""
        self._check_ids(input_ids)
        return self.text(input_ids)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 -> image embeddings ``(N, P)`` float32 (a visual prompt's conditioning)."""
        self._check_images(images, "conditional_images")
        return self.visual(images)

    def conditional_embeddings(self, input_ids: torch.Tensor | None = None, *,
                               conditional_images: torch.Tensor | None = None,
                               conditional_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(N, P)`` embedding that conditions the decoder, from exactly one of the three prompts."""
        given = [p is not None for p in (input_ids, conditional_images, conditional_embeddings)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of input_ids, conditional_images, conditional_embeddings; "
                             f"got {sum(given)}")
        if input_ids is not None:
            return self.encode_text(input_ids)
        if conditional_images is not None:
            return self.encode_image(conditional_images)
        p = self.config.projection_dim
        if not isinstance(conditional_embeddings, torch.Tensor) or conditional_embeddings.ndim != 2 \
                or conditional_embeddings.shape[1] != p:
            shape = tuple(getattr(conditional_embeddings, "shape", ()))
            raise ValueError(f"conditional_embeddings must be (N, {p}) (projection_dim); got {shape}")
        return conditional_embeddings

    def forward_features(self, images: torch.Tensor, input_ids: torch.Tensor | None = None, *,
                         conditional_images: torch.Tensor | None = None,
                         conditional_embeddings: torch.Tensor | None = None,
                         all_layers: bool = True) -> dict[str, torch.Tensor]:
        """``"activations"`` (the extracted ViT layers, ``(N, 1 + h*w, vision_width)`` each, stacked on dim 0:
        ``(L, N, 1 + h*w, vision_width)``), ``"conditional_embeddings"`` ``(N, P)``, ``"image_embeddings"``
        ``(N, P)`` (the query image's CLIP embedding; only with ``all_layers=True``, which runs the ViT to
        its last layer) and ``"logits"`` ``(N, H, W)``."""
        self._check_images(images, "images")
        conditional = self.conditional_embeddings(input_ids, conditional_images=conditional_images,
                                                  conditional_embeddings=conditional_embeddings)
        if conditional.shape[0] != images.shape[0]:
            raise ValueError(f"the prompts' batch size {conditional.shape[0]} differs from the images' "
                             f"{images.shape[0]}: pass one prompt per image (repeat the image for several prompts)")
        extract = self.config.extract_layers
        states = self.visual.forward_layers(images, None if all_layers else max(extract) + 1)
        activations = [states[i] for i in extract]  # (N, 1 + h*w, vision_width) each
        p = self.config.patch_size
        grid = (images.shape[2] // p, images.shape[3] // p)
        logits = self.decoder(activations, conditional, grid)  # (N, h*p, w*p)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits[:, None], size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)[:, 0]  # (N, H, W)
        features = {"activations": torch.stack(activations), "conditional_embeddings": conditional,
                    "logits": logits}
        if all_layers:
            features["image_embeddings"] = self.visual.pool(states[-1])
        return features

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor | None = None, *,
                conditional_images: torch.Tensor | None = None,
                conditional_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 and one prompt per image -> logits ``(N, H, W)`` float32 (no sigmoid).

        Runs the ViT only up to the deepest extracted layer (layers 10–12 of ViT-B are not needed for masks).
        """
        return self.forward_features(images, input_ids, conditional_images=conditional_images,
                                     conditional_embeddings=conditional_embeddings, all_layers=False)["logits"]

    def _check_images(self, images: torch.Tensor, name: str) -> None:
        check_images(images, 3, "CLIPSeg")
        p = self.config.patch_size
        if min(images.shape[-2:]) < p:
            raise ValueError(f"{name} must be at least {p}×{p} pixels (one patch); got {tuple(images.shape[-2:])}: "
                             "resize them (seglab.models.clipseg.preprocess resizes to 352×352)")

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        c = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            shape = tuple(getattr(input_ids, "shape", ())) or type(input_ids).__name__
            raise ValueError(f"input_ids must be a (N, T) int64 tensor from the tokenizer; got {shape}")
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be int64 token ids; got dtype {input_ids.dtype}")
        if not 1 < input_ids.shape[1] <= c.context_length:
            raise ValueError(f"input_ids has {input_ids.shape[1]} tokens per phrase; this model takes 2 to "
                             f"{c.context_length} (context_length): shorten the phrase")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= c.vocab_size):
            raise ValueError(f"input_ids holds ids outside [0, {c.vocab_size}) (vocab_size): "
                             "use the tokenizer the model was built for")
