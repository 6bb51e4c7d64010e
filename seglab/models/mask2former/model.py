"""The Mask2Former model: backbone -> pixel decoder -> masked-attention transformer decoder -> Q (class, mask) pairs.

Cheng, Misra, Schwing, Kirillov & Girdhar, "Masked-attention Mask Transformer for Universal Image Segmentation",
CVPR 2022. Instead of a class per pixel, the model predicts Q segments, each a class distribution over K + 1
("no object") and a mask; one set of predictions gives semantic, instance and panoptic maps (``postprocess``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..backbones import RESNETS, build_backbone
from ..blocks import check_images
from .criterion import Mask2FormerCriterion
from .pixel_decoder import MSDeformAttnPixelDecoder
from .postprocess import semantic_inference
from .transformer_decoder import MaskedTransformerDecoder

__all__ = ["Mask2Former"]

SCORE_FLOOR = 1e-6  # forward() returns log(max(score, SCORE_FLOOR))


class Mask2Former(nn.Module):
    """Mask2Former (Cheng et al. 2022) with a ResNet backbone, sized for a laptop by default.

    Args:
        num_classes: K (the class head has K + 1 outputs, the last "no object").
        backbone: a name in ``RESNETS`` (default ``"resnet18"``), or an ``nn.Module`` whose ``forward(x)`` returns a
            dict with ``"layer1"``…``"layer4"`` at strides 4, 8, 16, 32 and that has a ``channels`` dict with the
            same keys (e.g. a Swin wrapper; see ``seglab.models.mask2former.convert``).
        weights_backbone: ImageNet weights for a named ResNet (see ``seglab.models.backbones``).
        num_queries: Q (paper: 100).
        hidden_dim: width D of the pixel decoder, the queries and the mask embeddings (paper: 256); a multiple of 32.
        dec_layers: masked-attention layers (paper: 9); ``dec_layers + 1`` predictions are supervised.
        enc_layers: deformable-attention encoder layers of the pixel decoder (paper: 6).
        num_heads: attention heads, encoder and decoder (paper: 8).
        dim_feedforward: decoder FFN width (paper: 2048); ``encoder_feedforward_dim``: encoder FFN (paper: 1024).
        criterion options (used by ``forward(x, masks)`` and ``loss``): ``num_points`` (points per mask in the
            loss, default 1024 = 32²; paper 12544 = 112²; None = every pixel of the 1/4 mask, deterministic),
            ``class_weight`` 2, ``mask_weight`` 5, ``dice_weight`` 5, ``no_object_weight`` 0.1, ``ignore_index`` 255.
        thing_classes: class ids trained as instances: ``forward(x, masks)`` splits each thing class of the
            semantic masks into its 4-connected components, one target segment each (``targets_from_semantic``);
            the other classes are stuff (one segment per class). None (default): semantic training, one segment
            per class present. Kept as ``model.thing_classes`` (a frozenset or None) for panoptic inference.

    Shapes:
        ``forward(x)``: ``(N, 3, H, W)`` float32 -> ``(N, K, H, W)`` float32 **log semantic scores**
        ``log(max(s, 1e-6))`` with ``s_k = Σ_q softmax(class_q)_k · sigmoid(mask_q)`` (paper Sec. 4, semantic
        inference; masks upsampled to H×W before the sigmoid). ``argmax`` over K is the semantic map, and
        ``softmax`` over K gives ``s / Σ_k s_k``, so ``evaluate``/``predict``/TTA treat it like any model's logits.
        ``forward(x, masks)`` in training: masks ``(N, H, W)`` int64 (255 ignored) -> the scalar set loss over
        every decoder layer (see ``loss``). H and W need not be multiples of 32 (each stage is ceil(H/s)).
        ``forward_outputs(x)``: dict ``pred_logits`` ``(N, Q, K+1)``, ``pred_masks`` ``(N, Q, H/4, W/4)``,
        ``aux_outputs`` (``dec_layers`` dicts of the same, layer 0 = before any decoder layer) and
        ``attention_masks`` (``dec_layers`` ``(N, Q, h_l, w_l)`` bool: where each layer's queries could look).

    Parameters (K=4, the defaults): 11,797,733 = ResNet-18 11,176,512 + pixel decoder 205,536 + transformer decoder
    415,685; the forward pass of a 2×3×128×128 batch takes about 0.27 s on one CPU thread.

    Differences from the paper: a ResNet-18 backbone and D=64, 2 encoder / 6 decoder layers, 4 heads, Q=16 by
    default (paper: ResNet-50/Swin, D=256, 6/9 layers, 8 heads, Q=100; all are arguments); 1024 loss points per
    mask instead of 12544 (laptop images have few pixels at 1/4); no dropout (the paper's is 0.0 too);
    ``forward`` returns log scores instead of the scores themselves; the set loss is not averaged over DDP
    workers' target counts (each worker normalises by its own count); with ``thing_classes`` the instance targets
    are connected components of the semantic masks (the paper reads annotated instances), so they are right only
    where instances of a class never touch.

    Raises:
        ValueError: ``num_classes`` or a size argument not a positive int, ``weights_backbone`` with a backbone
            module, an unknown backbone name (the message lists the valid ones), ``thing_classes`` not class ids
            in ``[0, K)``.
    """

    computes_own_loss = True  # the engine calls model(images, masks) for the training loss (see forward)

    def __init__(self, num_classes: int, *, backbone: str | nn.Module = "resnet18", weights_backbone: object = None,
                 num_queries: int = 16, hidden_dim: int = 64, dec_layers: int = 6, enc_layers: int = 2,
                 num_heads: int = 4, dim_feedforward: int = 256, encoder_feedforward_dim: int = 256,
                 num_points: int | None = 1024, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, ignore_index: int = 255,
                 thing_classes: Iterable[int] | None = None) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
        for name, value in (("num_queries", num_queries), ("dec_layers", dec_layers), ("enc_layers", enc_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "enc_layers" else 1):
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if isinstance(backbone, nn.Module):
            if weights_backbone is not None:
                raise ValueError("weights_backbone is for a named ResNet; load your backbone module's weights yourself")
            self.backbone = backbone
        elif backbone in RESNETS:
            self.backbone = build_backbone(backbone, weights=weights_backbone)
        else:
            raise ValueError(f"unknown mask2former backbone {backbone!r}; valid: {', '.join(RESNETS)} or an nn.Module")
        channels = tuple(self.backbone.channels[f"layer{i}"] for i in range(1, 5))
        self.num_classes, self.num_queries, self.in_channels, self.output_stride = num_classes, num_queries, 3, 4
        self.pixel_decoder = MSDeformAttnPixelDecoder(channels, hidden_dim, num_heads=num_heads, num_layers=enc_layers,
                                                      feedforward_dim=encoder_feedforward_dim)
        self.transformer_decoder = MaskedTransformerDecoder(num_classes, hidden_dim, num_queries=num_queries,
                                                            num_heads=num_heads, num_layers=dec_layers,
                                                            feedforward_dim=dim_feedforward)
        self.criterion = Mask2FormerCriterion(num_classes, num_points=num_points, class_weight=class_weight,
                                              mask_weight=mask_weight, dice_weight=dice_weight,
                                              no_object_weight=no_object_weight, ignore_index=ignore_index,
                                              thing_classes=thing_classes)
        self.thing_classes = self.criterion.thing_classes  # frozenset or None (checked there)

    def forward_features(self, x: torch.Tensor) -> dict:
        """Backbone ``"layer1"``…``"layer4"``, pixel decoder ``"mask_features"`` ``(N, D, H/4, W/4)`` and
        ``"multi_scale"`` (``[1/32, 1/16, 1/8]`` maps), the decoder's per-layer lists ``"pred_logits"``,
        ``"pred_masks"``, ``"attention_masks"``, and ``"logits"`` ``(N, K, H, W)`` (as ``forward``)."""
        check_images(x, 3, "Mask2Former")
        features = dict(self.backbone(x))  # layer1..layer4: (N, C_i, H/2^(i+1), W/2^(i+1))
        features["mask_features"], features["multi_scale"] = self.pixel_decoder(features)
        features.update(self.transformer_decoder(features["multi_scale"], features["mask_features"]))
        scores = semantic_inference(features["pred_logits"][-1], features["pred_masks"][-1], x.shape[-2:])
        features["logits"] = scores.clamp_min(SCORE_FLOOR).log()  # (N, K, H, W)
        return features

    def forward_outputs(self, x: torch.Tensor) -> dict:
        """The set predictions (see the class docstring): last layer, then ``aux_outputs`` for the earlier ones."""
        check_images(x, 3, "Mask2Former")
        features = dict(self.backbone(x))
        mask_features, maps = self.pixel_decoder(features)  # (N, D, H/4, W/4), [1/32, 1/16, 1/8]
        decoded = self.transformer_decoder(maps, mask_features)
        pairs = list(zip(decoded["pred_logits"], decoded["pred_masks"]))
        return {"pred_logits": pairs[-1][0], "pred_masks": pairs[-1][1],
                "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in pairs[:-1]],
                "attention_masks": decoded["attention_masks"]}

    def loss(self, x: torch.Tensor, targets: torch.Tensor | list[dict]) -> dict[str, torch.Tensor]:
        """The set loss of every layer (``Mask2FormerCriterion``): a dict with ``"loss"`` (weighted total) and terms.

        ``targets``: semantic masks ``(N, H, W)`` int64 (255 ignored; one segment per class present) or a list of
        N ``{"labels": (M,) int64, "masks": (M, H, W) bool}``.
        """
        return self.criterion(self.forward_outputs(x), targets)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, K, H, W)`` log semantic scores; with ``masks`` ``(N, H, W)``: the scalar loss."""
        if masks is not None:
            return self.loss(x, masks)["loss"]
        outputs = self.forward_outputs(x)
        scores = semantic_inference(outputs["pred_logits"], outputs["pred_masks"], x.shape[-2:])  # (N, K, H, W)
        return scores.clamp_min(SCORE_FLOOR).log()
