"""Mask2Former's set loss: Hungarian matching of Q predictions to the M target segments, then class + mask losses.

Cheng et al., CVPR 2022, Sec. 3.3 and 4 (after DETR, Carion et al. 2020, and MaskFormer, Cheng et al. 2021):

1. **Matching** (per image, per decoder layer): cost ``C[q, m] = 2 · (−p_q(c_m)) + 5 · BCE(mask_q, target_m)
   + 5 · dice(mask_q, target_m)``; ``scipy.optimize.linear_sum_assignment`` picks the one-to-one assignment of
   least total cost. Unmatched queries must predict "no object" (class K).
2. **Losses**: cross-entropy over K + 1 classes for all Q queries (the "no object" class weighted 0.1);
   sigmoid BCE + dice between each matched mask and its target, averaged over the number of target masks.
3. The masks are compared at **sampled points** (PointRend): for the matching, ``num_points`` uniform random
   points shared by all masks of the image; for the loss, importance sampling — ``3 × num_points`` random points,
   keep the ``0.75 × num_points`` where the prediction is least certain (``|logit|`` smallest), plus
   ``0.25 × num_points`` uniform ones. ``num_points=None`` is a deterministic mode: every pixel centre of the
   ``H/4 × W/4`` prediction (targets bilinearly sampled there, i.e. resized to the prediction's grid).
4. Every decoder layer's prediction gets its own matching and losses (deep supervision); all are summed.

Targets: semantic masks ``(N, H, W)`` int64 become one segment per class present (ignore_index removed; ignored
pixels count as background of every segment, as in the authors' semantic setting), or a list of per-image
``{"labels": (M,) int64, "masks": (M, H, W) bool}``. With ``thing_classes``, each thing class present is split
into its **4-connected components** (``scipy.ndimage.label``'s default cross), one segment each, while every
other (stuff) class stays one segment: instance targets from a semantic mask, valid where instances never touch
(the synthetic shapes are 2 px apart, ISBI 2012 cells are separated by membrane). Difference from the paper: its
panoptic/instance training reads annotated instances (COCO's segments), not connected components; two touching
instances of a class become one target, and one instance cut in two (occlusion, a crop) two targets.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["Mask2FormerCriterion", "hungarian_match", "point_coordinates", "sample_points", "targets_from_semantic"]


def targets_from_semantic(masks: torch.Tensor, num_classes: int, ignore_index: int = 255,
                          thing_classes: frozenset[int] | None = None) -> list[dict]:
    """``(N, H, W)`` int64 class maps -> per image ``{"labels": (M,), "masks": (M, H, W) bool}``.

    Without ``thing_classes``: one segment per class present, in ascending class order. With it: each class
    present in ascending order, a stuff class as one segment, a thing class as one segment per 4-connected
    component (in ``scipy.ndimage.label``'s raster order; ignored pixels belong to no component).

    Raises:
        ValueError: not an integer ``(N, H, W)`` tensor, or a value outside ``[0, K)`` that is not ``ignore_index``.
    """
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or masks.is_floating_point():
        raise ValueError(f"masks must be an int64 tensor (N, H, W); got {getattr(masks, 'shape', type(masks))}")
    targets = []
    for mask in masks:
        labels = mask.unique()
        labels = labels[labels != ignore_index]
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"masks hold class {int(labels.max() if labels.max() >= num_classes else labels.min())} "
                             f"outside [0, {num_classes}) (and not ignore_index={ignore_index}): check num_classes")
        segments = mask[None] == labels[:, None, None]  # (M, H, W): one per class present
        if thing_classes:
            segments, labels = _split_things(segments, labels, thing_classes)
        targets.append({"labels": labels.long(), "masks": segments})
    return targets


def _split_things(segments: torch.Tensor, labels: torch.Tensor, thing_classes: frozenset[int]) -> tuple:
    """Per-class masks ``(M, H, W)`` bool -> the same with each thing class's mask split into 4-connected parts."""
    masks, kept = [], []
    for mask, label in zip(segments, labels.tolist()):
        if label not in thing_classes:
            masks.append(mask)
            kept.append(label)
            continue
        components, count = ndimage.label(mask.cpu().numpy())  # 4-connectivity: the default cross
        parts = torch.from_numpy(components).to(mask.device)
        masks.extend(parts == i for i in range(1, count + 1))
        kept.extend([label] * count)
    if not masks:
        return segments, labels
    return torch.stack(masks), torch.tensor(kept, dtype=torch.int64, device=labels.device)


def point_coordinates(size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Every pixel centre of an ``h × w`` grid as ``(x, y)`` in ``[0, 1]``: ``(h*w, 2)``, row-major."""
    h, w = size
    y, x = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h, (torch.arange(w, device=device) + 0.5) / w,
                          indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), -1)


def sample_points(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` ``(R, h, w)`` at ``coords`` ``(R, P, 2)`` (``(x, y)`` in ``[0, 1]``): ``(R, P)``."""
    grid = 2 * coords[:, :, None] - 1  # (R, P, 1, 2) in [-1, 1]
    return F.grid_sample(maps[:, None].float(), grid, mode="bilinear", align_corners=False)[:, 0, :, 0]


def _pairwise_costs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE and dice of every prediction ``(Q, P)`` logits against every target ``(M, P)`` in [0, 1]: ``(Q, M)``."""
    points = logits.shape[1]
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (positive / points) @ targets.T + (negative / points) @ (1 - targets).T
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
    return bce, dice


def _check_thing_classes(thing_classes: Iterable[int] | None, num_classes: int) -> frozenset[int] | None:
    if thing_classes is None:
        return None
    if isinstance(thing_classes, (str, bytes)) or not isinstance(thing_classes, Iterable):
        raise ValueError(f"thing_classes must be class ids such as [1, 2, 3] (or None); got {thing_classes!r}")
    ids = list(thing_classes)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_classes for i in ids):
        raise ValueError(f"thing_classes must be class ids in [0, {num_classes}); got {ids!r}")
    return frozenset(ids)


@torch.no_grad()
def hungarian_match(pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict], *,
                    num_points: int | None = 12544, class_weight: float = 2.0, mask_weight: float = 5.0,
                    dice_weight: float = 5.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The least-cost one-to-one assignment of queries to target segments, per image.

    Args:
        pred_logits: ``(N, Q, K+1)``; pred_masks: ``(N, Q, h, w)`` logits; targets: per image ``labels``/``masks``.
        num_points: uniform random points per image (one ``torch.rand(1, P, 2)`` draw per image), or None for
            every pixel centre of the ``h × w`` prediction.

    Returns:
        per image ``(query_indices, target_indices)`` int64, ``min(Q, M)`` long, query indices increasing.
    """
    indices = []
    for logits, masks, target in zip(pred_logits, pred_masks, targets):
        cost_class = -logits.softmax(-1)[:, target["labels"]]  # (Q, M)
        if num_points is None:
            coords = point_coordinates(masks.shape[-2:], masks.device)[None]
        else:
            coords = torch.rand(1, num_points, 2, device=masks.device)
        target_points = sample_points(target["masks"], coords.expand(len(target["masks"]), -1, -1))  # (M, P)
        pred_points = sample_points(masks, coords.expand(len(masks), -1, -1))  # (Q, P)
        cost_mask, cost_dice = _pairwise_costs(pred_points, target_points)
        cost = mask_weight * cost_mask + class_weight * cost_class + dice_weight * cost_dice
        largest = torch.finfo(cost.dtype).max  # a NaN/inf cost is taken only when nothing else is left
        cost = torch.nan_to_num(cost, nan=largest, posinf=largest, neginf=largest)
        rows, cols = linear_sum_assignment(cost.cpu())
        indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return indices


def importance_points(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                      importance_sample_ratio: float) -> torch.Tensor:
    """PointRend's training points for ``(R, h, w)`` mask logits: ``(R, num_points, 2)``.

    Draws ``int(num_points * oversample_ratio)`` uniform points, keeps the ``int(importance_sample_ratio *
    num_points)`` with the smallest ``|logit|`` (the most uncertain), then adds uniform points up to num_points.
    """
    count = len(logits)
    candidates = torch.rand(count, int(num_points * oversample_ratio), 2, device=logits.device)
    uncertainty = -sample_points(logits, candidates).abs()  # (R, 3P)
    num_uncertain = int(importance_sample_ratio * num_points)
    keep = uncertainty.topk(num_uncertain, dim=1).indices  # (R, 0.75P)
    chosen = torch.gather(candidates, 1, keep[..., None].expand(-1, -1, 2))
    if num_points > num_uncertain:
        chosen = torch.cat([chosen, torch.rand(count, num_points - num_uncertain, 2, device=logits.device)], 1)
    return chosen


class Mask2FormerCriterion(nn.Module):
    """The set loss of every decoder layer: ``criterion(outputs, targets) -> dict`` of scalar tensors.

    Args:
        num_classes: K. class_weight, mask_weight, dice_weight: 2, 5, 5 (the paper's λ's; also the matching costs).
        no_object_weight: weight of class K in the cross-entropy (0.1).
        num_points: points per mask (12544 = 112²) or None (every pixel of the 1/4 prediction, deterministic).
        oversample_ratio, importance_sample_ratio: 3 and 0.75 (PointRend importance sampling).
        ignore_index: removed from semantic targets (255).
        thing_classes: class ids whose semantic-mask regions are split into 4-connected components, one target
            segment each (``targets_from_semantic``); None (default): one segment per class present.

    ``outputs``: ``pred_logits`` ``(N, Q, K+1)``, ``pred_masks`` ``(N, Q, h, w)`` and ``aux_outputs`` (a list of
    such dicts, one per earlier layer); ``targets``: see the module docstring. Returns ``"loss_class"``,
    ``"loss_mask"``, ``"loss_dice"`` (last layer, unweighted), ``"loss_class_<i>"``… for ``aux_outputs[i]``, and
    ``"loss"`` = Σ over layers of ``2·class + 5·mask + 5·dice``. Random draws follow the order: last layer
    (matching, then mask points), then aux layers 0, 1, … (as Hugging Face's ``Mask2FormerLoss``).

    Differences from the paper: the target count that normalises the mask losses is not averaged over DDP workers.

    Raises:
        ValueError: ``num_points`` neither a positive int nor None; ``targets`` not one per image, an instance target
            whose ``masks`` and ``labels`` disagree in M, or more segments than the model's queries.
    """

    def __init__(self, num_classes: int, *, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, num_points: int | None = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, ignore_index: int = 255,
                 thing_classes: Iterable[int] | None = None) -> None:
        super().__init__()
        self.thing_classes = _check_thing_classes(thing_classes, num_classes)
        bad = isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1
        if num_points is not None and bad:
            raise ValueError(f"num_points must be a positive int or None (every pixel); got {num_points!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.weights = {"class": class_weight, "mask": mask_weight, "dice": dice_weight}
        self.num_points, self.oversample_ratio, self.importance_sample_ratio = (num_points, oversample_ratio,
                                                                                importance_sample_ratio)
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def match(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict]) -> list:
        """``hungarian_match`` with this criterion's weights and points."""
        return hungarian_match(pred_logits, pred_masks, targets, num_points=self.num_points,
                               class_weight=self.weights["class"], mask_weight=self.weights["mask"],
                               dice_weight=self.weights["dice"])

    def layer_losses(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict],
                     num_masks: float) -> dict[str, torch.Tensor]:
        """Matching + the three unweighted losses of one layer's predictions."""
        indices = self.match(pred_logits, pred_masks, targets)
        n, q, _ = pred_logits.shape
        target_classes = torch.full((n, q), self.num_classes, dtype=torch.int64, device=pred_logits.device)
        for image, (rows, cols) in enumerate(indices):
            target_classes[image, rows.to(pred_logits.device)] = targets[image]["labels"][cols.to(pred_logits.device)]
        loss_class = F.cross_entropy(pred_logits.transpose(1, 2), target_classes, weight=self.class_weights)
        matched = torch.cat([pred_masks[image, rows] for image, (rows, _) in enumerate(indices)])  # (R, h, w)
        wanted = torch.cat([targets[image]["masks"][cols].float() for image, (_, cols) in enumerate(indices)])
        if self.num_points is None:
            coords = point_coordinates(matched.shape[-2:], matched.device)[None].expand(len(matched), -1, -1)
        else:
            with torch.no_grad():
                coords = importance_points(matched.detach(), self.num_points, self.oversample_ratio,
                                           self.importance_sample_ratio)
        with torch.no_grad():
            labels = sample_points(wanted, coords)  # (R, P)
        logits = sample_points(matched, coords)  # (R, P)
        loss_mask = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
        return {"class": loss_class, "mask": loss_mask, "dice": dice.sum() / num_masks}

    def forward(self, outputs: dict, targets: torch.Tensor | list[dict]) -> dict[str, torch.Tensor]:
        device_type = outputs["pred_logits"].device.type
        with torch.autocast(device_type, enabled=False):  # float32 costs and losses, also under mixed precision
            return self._forward(outputs, targets)

    def _forward(self, outputs: dict, targets: torch.Tensor | list[dict]) -> dict[str, torch.Tensor]:
        if isinstance(targets, torch.Tensor):
            targets = targets_from_semantic(targets, self.num_classes, self.ignore_index, self.thing_classes)
        if len(targets) != len(outputs["pred_logits"]):
            raise ValueError(f"got {len(targets)} targets for a batch of {len(outputs['pred_logits'])} images")
        for target in targets:  # target masks may have any size: both sides are sampled at normalised points
            if target["masks"].ndim != 3 or len(target["masks"]) != len(target["labels"]):
                raise ValueError("each target needs masks (M, H, W) and labels (M,) with the same M")
            if len(target["labels"]) > outputs["pred_logits"].shape[1]:
                raise ValueError(f"an image has {len(target['labels'])} segments, more than num_queries="
                                 f"{outputs['pred_logits'].shape[1]}: raise num_queries")
        num_masks = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        layers = [outputs, *outputs.get("aux_outputs", [])]
        losses: dict[str, torch.Tensor] = {}
        total = outputs["pred_logits"].new_zeros(())
        for index, layer in enumerate(layers):
            terms = self.layer_losses(layer["pred_logits"].float(), layer["pred_masks"].float(), targets, num_masks)
            suffix = "" if index == 0 else f"_{index - 1}"
            for name, value in terms.items():
                losses[f"loss_{name}{suffix}"] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses
