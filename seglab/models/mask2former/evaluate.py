"""Score a Mask2Former on a panoptic dataset: mIoU, PQ / SQ / RQ (things and stuff) and mask AP from one forward pass.

Cheng et al., CVPR 2022, Sec. 4: one set of Q (class, mask) predictions gives all three tasks. Each batch goes
through ``model.forward_outputs`` once; then

- **mIoU**: ``semantic_inference`` argmax against the target's class mask (``panoptic_to_semantic``; void pixels
  ignored), accumulated in a ``seglab.metrics.ConfusionMatrix`` over the set;
- **PQ**: ``panoptic_inference`` (stuff classes fused, the authors' ``object_mask_threshold`` 0.8 by default)
  against the target map, ``seglab.metrics.panoptic.PanopticQuality`` (COCO's void rules);
- **mask AP**: ``instance_inference`` with no score threshold (the Q best (query, class) pairs, as the authors
  score COCO AP), thing classes only, against the thing segments, ``seglab.metrics.instance_ap.InstanceAP``.

Differences from the paper's evaluation: no ``iscrowd`` regions and no area ranges (see the two metric modules);
AP candidates of stuff classes are dropped before scoring (the authors' instance head is trained on things only).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Sequence

import torch
from torch import nn

from seglab.data.panoptic.format import PanopticTarget, check_panoptic, panoptic_to_instances, panoptic_to_semantic
from seglab.metrics.confusion import ConfusionMatrix
from seglab.metrics.instance_ap import InstanceAP
from seglab.metrics.panoptic import PanopticQuality

from .postprocess import instance_inference, panoptic_inference, semantic_inference

__all__ = ["evaluate_panoptic"]


def _batches(items: Sequence, batch_size: int):
    for start in range(0, len(items), batch_size):
        chunk = [items[i] for i in range(start, min(start + batch_size, len(items)))]
        images, targets = zip(*chunk)
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) != 1 or not all(isinstance(image, torch.Tensor) for image in images):
            raise ValueError(f"dataset items must be (image (3, H, W) float tensor, PanopticTarget) of one size per "
                             f"batch; got sizes {sorted(sizes)[:3]}: use a transform (eval_transform) or batch_size=1")
        yield torch.stack(images), [check_panoptic(t) for t in targets]


@torch.no_grad()
def evaluate_panoptic(model: nn.Module, dataset: Sequence, *, things: Collection[int], stuffs: Collection[int],
                      batch_size: int = 16, device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                      threshold: float = 0.8, overlap_threshold: float = 0.8,
                      max_images: int | None = None) -> dict[str, float]:
    """mIoU, PQ / SQ / RQ (overall, things, stuff) and mask AP of a Mask2Former on ``dataset``.

    Args:
        model: a ``Mask2Former`` (anything with ``forward_outputs(x) -> {"pred_logits", "pred_masks"}``).
        dataset: a sequence of ``(image (3, H, W) float32 normalised, PanopticTarget)`` items, e.g. a
            ``seglab.data.panoptic`` dataset built with ``transform=eval_transform(pad_multiple=None,
            ignore_index=0)`` (0 = void segment id), or a list of such pairs.
        things, stuffs: class ids (e.g. ``dataset.things`` / ``dataset.stuffs``).
        batch_size: images per forward pass (one image size per batch).
        device, amp_dtype: where and in which autocast precision (None = float32) the model runs; the
            post-processing is always float32.
        threshold: ``panoptic_inference``'s score threshold (the authors' 0.8); overlap_threshold: its area test.
        max_images: score only the first images.

    Returns:
        ``{"mIoU", "PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things", "PQ_stuff", "SQ_stuff", "RQ_stuff",
        "AP", "AP50", "AP75", "images"}``: fractions in [0, 1] (``nan`` where undefined, e.g. AP without thing
        segments), ``images`` the count scored.

    Raises:
        ValueError: ``batch_size`` < 1, an item that is not a (tensor, panoptic target) pair, images of different
            sizes within a batch, or a metric's refusal (e.g. a class id outside things | stuffs).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    things, stuffs = frozenset(int(t) for t in things), frozenset(int(s) for s in stuffs)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    num_classes = max(things | stuffs) + 1
    confusion = ConfusionMatrix(num_classes, ignore_index=255)
    quality = PanopticQuality(things=things, stuffs=stuffs)
    average_precision = InstanceAP()
    was_training = model.training
    model.eval()
    device = torch.device(device)
    thing_ids = torch.tensor(sorted(things), dtype=torch.int64)
    try:
        for images, targets in _batches(_Prefix(dataset, count), batch_size):
            autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                        else contextlib.nullcontext())  # fmt: skip
            with autocast:
                outputs = model.forward_outputs(images.to(device))
            logits, masks = outputs["pred_logits"].float().cpu(), outputs["pred_masks"].float().cpu()
            size = tuple(images.shape[-2:])
            semantic = semantic_inference(logits, masks, size).argmax(1)  # (N, H, W)
            confusion.update(semantic, panoptic_to_semantic(targets))
            panoptic = panoptic_inference(logits, masks, threshold=threshold, overlap_threshold=overlap_threshold,
                                          label_ids_to_fuse=stuffs, output_size=size)
            quality.update([PanopticTarget(p["segmentation"],
                                           torch.tensor([s["label_id"] for s in p["segments_info"]], dtype=torch.int64))
                            for p in panoptic], targets)  # fmt: skip
            instances = instance_inference(logits, masks, threshold=0.0, output_size=size)
            preds = []
            for found in instances:
                keep = torch.isin(found["labels"], thing_ids)
                preds.append({"masks": found["masks"][keep], "scores": found["scores"][keep].float(),
                              "labels": found["labels"][keep]})
            average_precision.update(preds, [panoptic_to_instances(t, things=things) for t in targets])
    finally:
        model.train(was_training)
    pq, ap = quality.compute(), average_precision.compute()
    miou = float(confusion.compute()["mIoU"]) if count else math.nan
    return {"mIoU": miou, "PQ": pq.pq, "SQ": pq.sq, "RQ": pq.rq, "PQ_things": pq.pq_things, "SQ_things": pq.sq_things,
            "RQ_things": pq.rq_things, "PQ_stuff": pq.pq_stuff, "SQ_stuff": pq.sq_stuff, "RQ_stuff": pq.rq_stuff,
            "AP": ap.ap, "AP50": ap.ap50, "AP75": ap.ap75, "images": count}


class _Prefix:
    """The first ``count`` items of a sequence."""

    def __init__(self, items: Sequence, count: int) -> None:
        self.items, self.count = items, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.items[index]
