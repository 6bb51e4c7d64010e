"""From Mask2Former's Q (class, mask) predictions to semantic, instance and panoptic maps.

Cheng et al., CVPR 2022, Sec. 4 ("inference"), as the authors' ``MaskFormer`` meta-architecture and Hugging Face's
``Mask2FormerImageProcessor.post_process_*`` do it. All three start from the same outputs: ``pred_logits``
``(N, Q, K+1)`` (class K = "no object") and ``pred_masks`` ``(N, Q, h, w)`` mask logits; with ``output_size`` the
mask logits are first resized (bilinear) to it, as the authors' code does before any of the three.

- **semantic**: ``s_k(x) = Σ_q softmax(class_q)_k · sigmoid(mask_q(x))`` for k < K; the map is ``argmax_k``.
- **instance**: every (query, class) pair is a candidate scored ``p_q(k)``; the Q best are kept, their masks
  binarised at logit 0 and each score multiplied by the mean probability inside its mask; candidates with score ≥
  ``threshold`` are painted in turn (a later one wins where masks overlap).
- **panoptic**: each query keeps its best class; queries predicting "no object" or scoring ≤ ``threshold`` are
  dropped; every pixel goes to the query with the largest ``score × probability``; a query keeps its pixels only
  if they are more than ``overlap_threshold`` of its own mask (probability ≥ ``mask_threshold``), so fragments
  are dropped. Classes in ``label_ids_to_fuse`` (stuff) give one segment per class.

Differences from the authors' code (the same as Hugging Face's, which is the test oracle): the panoptic area test
uses the score-weighted probability and a strict ``>``; instance candidates keep ``topk(sorted=False)``'s order.
Difference from Hugging Face: panoptic fusion never reuses a segment id for a new segment (HF's processor can), a
panoptic map without segments is all 0 (HF: -1), and masks are resized once, to ``output_size`` (HF first resizes
to 384×384, its preprocessing size).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = ["instance_inference", "panoptic_inference", "semantic_inference"]


def _resized(pred_masks: torch.Tensor, output_size: tuple[int, int] | None) -> torch.Tensor:
    if output_size is None or tuple(pred_masks.shape[-2:]) == tuple(output_size):
        return pred_masks
    return F.interpolate(pred_masks, size=tuple(output_size), mode="bilinear", align_corners=False)


def _check(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> None:
    if pred_logits.ndim != 3 or pred_masks.ndim != 4 or pred_logits.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(f"expected pred_logits (N, Q, K+1) and pred_masks (N, Q, h, w) with the same N, Q; got "
                         f"{tuple(pred_logits.shape)} and {tuple(pred_masks.shape)}")


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                       output_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Semantic scores ``(N, K, H, W)`` float in ``[0, Q]``: ``Σ_q softmax(class_q)[:K] · sigmoid(mask_q)``."""
    _check(pred_logits, pred_masks)
    classes = pred_logits.softmax(-1)[..., :-1]  # (N, Q, K): "no object" dropped
    probs = _resized(pred_masks, output_size).sigmoid()  # (N, Q, H, W)
    return torch.einsum("nqk,nqhw->nkhw", classes, probs)


def instance_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor, *, threshold: float = 0.5,
                       output_size: tuple[int, int] | None = None) -> list[dict]:
    """Instances per image: a list of N dicts with

    - ``"segmentation"`` ``(H, W)`` int64: instance id 0, 1, … or -1 (no instance);
    - ``"segments_info"``: ``[{"id", "label_id", "score"}]`` in id order;
    - ``"masks"`` ``(M, H, W)`` bool, ``"scores"`` ``(M,)`` float, ``"labels"`` ``(M,)`` int64 (for mask AP; masks
      may overlap there, unlike in the map).
    """
    _check(pred_logits, pred_masks)
    num_queries, num_classes = pred_logits.shape[1], pred_logits.shape[2] - 1
    pred_masks = _resized(pred_masks, output_size)
    results = []
    for logits, masks in zip(pred_logits, pred_masks):
        scores = logits.softmax(-1)[:, :-1]  # (Q, K)
        top_scores, top = scores.flatten().topk(num_queries, sorted=False)  # the Q best (query, class) pairs
        labels, queries = top % num_classes, torch.div(top, num_classes, rounding_mode="floor")
        binary = (masks[queries] > 0).float()  # (Q, H, W)
        inside = (masks[queries].sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        final = top_scores * inside  # class score × mean mask probability inside the mask
        segmentation = torch.full(masks.shape[-2:], -1, dtype=torch.int64, device=masks.device)
        kept = [j for j in range(num_queries) if final[j].item() >= threshold and binary[j].any()]
        for new_id, j in enumerate(kept):
            segmentation[binary[j] == 1] = new_id
        results.append({
            "segmentation": segmentation,
            "segments_info": [{"id": i, "label_id": int(labels[j]), "score": float(final[j])}
                              for i, j in enumerate(kept)],
            "masks": binary[kept].bool(), "scores": final[kept], "labels": labels[kept],
        })
    return results


def panoptic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor, *, threshold: float = 0.5,
                       mask_threshold: float = 0.5, overlap_threshold: float = 0.8,
                       label_ids_to_fuse: Iterable[int] = (), output_size: tuple[int, int] | None = None) -> list[dict]:
    """Panoptic maps per image: a list of N dicts with ``"segmentation"`` ``(H, W)`` int64 (segment id 1, 2, …;
    0 = void, no segment) and ``"segments_info"`` ``[{"id", "label_id", "was_fused", "score"}]``.

    The authors' panoptic setting uses ``threshold=0.8`` (their ``object_mask_threshold``); 0.5 is HF's default.
    """
    _check(pred_logits, pred_masks)
    num_classes, fuse = pred_logits.shape[2] - 1, set(label_ids_to_fuse)
    pred_masks = _resized(pred_masks, output_size)
    scores, labels = pred_logits.softmax(-1).max(-1)  # (N, Q): each query's best class, "no object" included
    results = []
    for image in range(len(pred_logits)):
        keep = (labels[image] != num_classes) & (scores[image] > threshold)
        weighted = pred_masks[image, keep].sigmoid() * scores[image, keep][:, None, None]  # (M, H, W)
        segmentation = torch.zeros(pred_masks.shape[-2:], dtype=torch.int64, device=pred_masks.device)
        segments: list[dict] = []
        if len(weighted):
            owner = weighted.argmax(0)  # (H, W): which kept query wins each pixel
            fused_ids: dict[int, int] = {}
            for k, (label, score) in enumerate(zip(labels[image, keep].tolist(), scores[image, keep].tolist())):
                pixels = owner == k
                area, own_area = pixels.sum().item(), (weighted[k] >= mask_threshold).sum().item()
                if area == 0 or own_area == 0 or not area / own_area > overlap_threshold:
                    continue  # an empty or mostly covered mask: no segment
                if label in fused_ids:
                    segmentation[pixels] = fused_ids[label]
                    continue
                segment_id = len(segments) + 1
                segmentation[pixels] = segment_id
                segments.append({"id": segment_id, "label_id": label, "was_fused": label in fuse, "score": score})
                if label in fuse:
                    fused_ids[label] = segment_id
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results
