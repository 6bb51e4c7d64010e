"""Panoptic quality and instance mask AP: hand-counted cases, and the oracles torchmetrics' ``PanopticQuality``
(random maps, per class and averaged) and ``MeanAveragePrecision(iou_type="segm")`` (pycocotools), plus
pycocotools' ``COCOeval`` called directly where torchmetrics departs from COCO."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from seglab.metrics.instance_ap import (
    COCO_IOU_THRESHOLDS, COCO_RECALL_THRESHOLDS, InstanceAP, instance_average_precision, mask_iou,
)
from seglab.metrics.panoptic import PanopticQuality, panoptic_quality

THINGS, STUFFS = {1, 2, 4}, {0, 3}


def _map(rows: list[str]) -> torch.Tensor:
    """A segment map from strings of digits: ``["1120", ...]`` -> (H, W) int64 (0 = void)."""
    return torch.tensor([[int(c) for c in row] for row in rows], dtype=torch.int64)


# ------------------------------------------------------------------------------------------------
# Panoptic quality: hand-counted cases
# ------------------------------------------------------------------------------------------------


def test_pq_hand_counted_things_stuff_and_void():
    # 4x6 target: segment 1 = stuff class 0 (left 2 columns), 2 = thing 1 (top right 2x4), 3 = thing 1 (bottom
    # right, 1x4), 0 = void (row 2, right part).
    target = (_map(["112222",
                    "112222",
                    "110000",
                    "113333"]), torch.tensor([0, 1, 1]))  # fmt: skip
    # prediction: stuff (segment 2) exact; thing segment 1 covers target 2's 8 pixels + 2 void pixels; segment 3
    # (thing 1) covers 2 pixels of target 3 and 2 void pixels; segment 4 = class 2 on the rest of target 3.
    pred = (_map(["221111",
                  "221111",
                  "221133",
                  "223344"]), torch.tensor([1, 0, 1, 2]))  # fmt: skip
    result = panoptic_quality(pred, target, things={1, 2}, stuffs={0})
    # class 0: pred 2 vs target 1: 8 / 8 -> TP, IoU 1
    # class 1: pred 1 (10 px, 2 on void) vs target 2 (8 px): inter 8, union 10 + 8 - 8 - 2 = 8 -> IoU 1, TP
    #          pred 3 (4 px, 2 on void) vs target 3 (4 px): inter 2, union 4 + 4 - 2 - 2 = 4 -> 0.5: no match
    #          target 3 unmatched -> FN; pred 3 has 2 / 4 = 0.5 on void (not > 0.5) -> FP
    # class 2: pred 4 (2 px) on target 3 (class 1) -> FP
    assert result.tp.tolist() == [1, 1, 0] and result.fp.tolist() == [0, 1, 1] and result.fn.tolist() == [0, 1, 0]
    torch.testing.assert_close(result.pq_per_class, torch.tensor([1.0, 1 / 2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(result.sq_per_class, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(result.rq_per_class, torch.tensor([1.0, 1 / 2, 0.0], dtype=torch.float64))
    assert math.isclose(result.pq, 0.5) and math.isclose(result.sq, 2 / 3) and math.isclose(result.rq, 0.5)
    assert math.isclose(result.pq_things, 0.25) and math.isclose(result.pq_stuff, 1.0)
    assert math.isclose(result.sq_things, 0.5) and math.isclose(result.rq_stuff, 1.0)


def test_pq_prediction_mostly_on_void_is_no_false_positive_and_stuff_segments_merge():
    target = (_map(["1100",
                    "1100"]), torch.tensor([0]))  # fmt: skip
    # stuff class 0 predicted as two segments (1 and 2): merged into one, IoU 4 / 4 -> TP. Thing segment 3 lies
    # on void (4 of its 4 pixels) -> not a false positive.
    pred = (_map(["1233",
                  "2133"]), torch.tensor([0, 0, 1]))  # fmt: skip
    result = panoptic_quality(pred, target, things={1}, stuffs={0})
    assert result.tp.tolist() == [1, 0] and result.fp.tolist() == [0, 0] and result.fn.tolist() == [0, 0]
    assert result.pq == 1.0 and math.isnan(result.pq_things) and result.pq_per_class[1].isnan()


def test_pq_predicted_void_coco_versus_torchmetrics_rule():
    # target: one thing segment of 4 pixels; the prediction covers 1 of them, the rest is predicted void (id 0).
    target = (_map(["11", "11"]), torch.tensor([1]))
    pred = (_map(["10", "00"]), torch.tensor([1]))
    coco = panoptic_quality(pred, target, things={1}, stuffs={0})
    # COCO: IoU = 1 / (1 + 4 - 1) = 0.25 -> no match: FN 1, FP 1 (the prediction is not on target void)
    assert (coco.tp[1], coco.fp[1], coco.fn[1]) == (0, 1, 1) and coco.pq == 0.0
    # torchmetrics: predicted void leaves the target too: IoU = 1 / (1 + 4 - 3 - 1) = 1 -> TP
    symmetric = panoptic_quality(pred, target, things={1}, stuffs={0}, symmetric_void=True)
    assert (symmetric.tp[1], symmetric.fp[1], symmetric.fn[1]) == (1, 0, 0) and symmetric.pq == 1.0
    tm = pytest.importorskip("torchmetrics.detection")
    oracle = tm.PanopticQuality(things={1}, stuffs={0}, allow_unknown_preds_category=True)
    assert float(oracle(_to_torchmetrics([pred], 9), _to_torchmetrics([target], 9))) == 1.0


def test_pq_accumulates_over_images_not_per_image_means():
    one = (_map(["11"]), torch.tensor([1]))
    miss = (_map(["01"]), torch.tensor([1]))  # IoU 1/2, not > 0.5: FN + FP
    metric = PanopticQuality(things={1}, stuffs={0})
    metric.update(one, one)
    metric.update([miss], [one])
    result = metric.compute()
    assert (int(result.tp[1]), int(result.fp[1]), int(result.fn[1])) == (1, 1, 1)
    assert math.isclose(result.pq, 1 / (1 + 1)) and math.isclose(result.rq, 0.5) and result.sq == 1.0
    metric.reset()
    assert int(metric.compute().tp.sum()) == 0 and math.isnan(metric.compute().pq)


@pytest.mark.parametrize(
    "kwargs, pred, target, match",
    [
        (dict(things={1}, stuffs={1}), None, None, "things and stuffs share classes"),
        (dict(things=[], stuffs=[]), None, None, "both empty"),
        (dict(things={1}, stuffs={0}), (_map(["12"]), torch.tensor([1])), (_map(["11"]), torch.tensor([1])),
         r"preds segment ids must lie in \[0, 1\]"),
        (dict(things={1}, stuffs={0}), (_map(["11"]), torch.tensor([7])), (_map(["11"]), torch.tensor([1])),
         r"preds labels \[7\] are neither things nor stuffs"),
        (dict(things={1}, stuffs={0}), (_map(["11"]), torch.tensor([1])), (_map(["1", "1"]), torch.tensor([1])),
         "differ in size"),
        (dict(things={1}, stuffs={0}), _map(["11"]), _map(["11"]), "must be a pair"),
    ],
)
def test_pq_bad_input_one_line_errors(kwargs, pred, target, match):
    with pytest.raises(ValueError, match=match) as error:
        panoptic_quality(pred, target, **kwargs)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------
# Panoptic quality against torchmetrics
# ------------------------------------------------------------------------------------------------


def _to_torchmetrics(maps, void_category: int) -> torch.Tensor:
    """(segments, labels) maps -> torchmetrics' (N, H, W, 2) (category, instance); void -> an unknown category."""
    out = []
    for segments, labels in maps:
        category = torch.cat([torch.tensor([void_category]), labels])[segments]
        out.append(torch.stack([category, segments], -1))
    return torch.stack(out)


def _random_pair(gen: torch.Generator, size: int, pred_void: bool):
    """A blocky random target (with void) and a prediction that copies it with noise, relabels and splits."""
    classes = torch.tensor(sorted(THINGS | STUFFS))
    num_true = int(torch.randint(1, 9, (1,), generator=gen))
    coarse = torch.randint(0, num_true + 1, (size // 2, size // 2), generator=gen)
    segments = coarse.repeat_interleave(2, 0).repeat_interleave(2, 1)
    labels = classes[torch.randint(len(classes), (num_true,), generator=gen)]
    # prediction: the target's ids, some pixels replaced by new segments, some segments relabelled
    extra = int(torch.randint(0, 4, (1,), generator=gen))
    pred = segments.clone()
    noise = torch.rand(size, size, generator=gen) < float(torch.rand(1, generator=gen)) * 0.5
    pred[noise] = torch.randint(0 if pred_void else 1, num_true + extra + 1, (int(noise.sum()),), generator=gen)
    if not pred_void:
        pred[pred == 0] = torch.randint(1, num_true + extra + 1, (int((pred == 0).sum()),), generator=gen)
    pred_labels = torch.cat([labels, classes[torch.randint(len(classes), (extra,), generator=gen)]])
    flip = torch.rand(len(pred_labels), generator=gen) < 0.2
    pred_labels[flip] = classes[torch.randint(len(classes), (int(flip.sum()),), generator=gen)]
    return (pred, pred_labels), (segments, labels)


@pytest.mark.parametrize("pred_void", [False, True])
def test_pq_equals_torchmetrics_on_random_maps(pred_void):
    tm = pytest.importorskip("torchmetrics.detection")
    gen = torch.Generator().manual_seed(19 + pred_void)
    continuous = sorted(THINGS) + sorted(STUFFS)  # torchmetrics' per-class order
    worst, cases = 0.0, 60
    for case in range(cases):
        batch = [_random_pair(gen, 16, pred_void) for _ in range(1 + case % 3)]
        preds, targets = [p for p, _ in batch], [t for _, t in batch]
        # predicted void: torchmetrics follows its own (symmetric) rule, which seglab offers as symmetric_void
        ours = panoptic_quality(preds, targets, things=THINGS, stuffs=STUFFS, symmetric_void=pred_void)
        oracle = tm.PanopticQuality(things=THINGS, stuffs=STUFFS, return_sq_and_rq=True, return_per_class=True,
                                    allow_unknown_preds_category=pred_void)  # fmt: skip
        per_class = oracle(_to_torchmetrics(preds, 99), _to_torchmetrics(targets, 99)).double()  # (K', 3)
        mine = torch.stack([ours.pq_per_class, ours.sq_per_class, ours.rq_per_class], -1)[continuous]
        present = ~mine[:, 0].isnan()
        assert (per_class[~present] == 0).all()  # torchmetrics writes 0 where seglab writes nan
        averaged = tm.PanopticQuality(things=THINGS, stuffs=STUFFS, return_sq_and_rq=True,
                                      allow_unknown_preds_category=pred_void)  # fmt: skip
        for p, t in zip(preds, targets):  # accumulated image by image
            averaged.update(_to_torchmetrics([p], 99), _to_torchmetrics([t], 99))
        means = averaged.compute().double()
        diffs = [(mine[present] - per_class[present]).abs().max(),
                 (torch.tensor([ours.pq, ours.sq, ours.rq], dtype=torch.float64) - means).abs().max()]  # fmt: skip
        # the things / stuff split, from torchmetrics' per-class values
        for group, value in ((THINGS, ours.pq_things), (STUFFS, ours.pq_stuff)):
            chosen = [i for i, c in enumerate(continuous) if c in group and present[i]]
            if chosen:
                diffs.append(torch.tensor(abs(value - float(per_class[chosen, 0].mean()))))
        worst = max(worst, float(max(diffs)))
    assert worst < 1e-6, f"max |seglab - torchmetrics| over {cases} cases: {worst}"


def test_pq_equals_torchmetrics_on_synthetic_panoptic_shapes():
    # the real use: a target from the synthetic dataset, a prediction that shifts every segment by one pixel
    tm = pytest.importorskip("torchmetrics.detection")
    from seglab.data.panoptic import SyntheticPanopticShapes

    ds = SyntheticPanopticShapes("val", num_images=6)
    targets = [ds[i][1] for i in range(len(ds))]
    preds = [(torch.roll(t.segments, shifts=(1, 2), dims=(0, 1)), t.labels) for t in targets]
    ours = panoptic_quality(preds, targets, things=ds.things, stuffs=ds.stuffs)
    oracle = tm.PanopticQuality(things=set(ds.things), stuffs=set(ds.stuffs), return_sq_and_rq=True)
    expected = oracle(_to_torchmetrics(preds, 9), _to_torchmetrics(targets, 9)).double()
    torch.testing.assert_close(torch.tensor([ours.pq, ours.sq, ours.rq], dtype=torch.float64), expected,
                               atol=1e-6, rtol=0)  # fmt: skip
    assert 0.3 < ours.pq < 1.0


# ------------------------------------------------------------------------------------------------
# Instance AP: hand-counted cases
# ------------------------------------------------------------------------------------------------


def _box(size: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:top + height, left:left + width] = True
    return mask


def test_mask_iou_hand_counted():
    a = torch.stack([_box(4, 0, 0, 2, 2), torch.zeros(4, 4, dtype=torch.bool)])
    b = torch.stack([_box(4, 0, 1, 2, 2), _box(4, 0, 0, 4, 4)])
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([[2 / 6, 4 / 16], [0.0, 0.0]], dtype=torch.float64))


def test_ap_hand_counted_one_class():
    # two true squares; three detections: 0.9 on square A (IoU 1), 0.8 a false positive, 0.7 on square B (IoU 0.6)
    size = 10
    true = torch.stack([_box(size, 0, 0, 4, 4), _box(size, 5, 5, 5, 5)])
    det_b = _box(size, 5, 5, 5, 3)  # 15 of B's 25 pixels: IoU 15 / 25 = 0.6
    dets = torch.stack([_box(size, 0, 0, 4, 4), _box(size, 0, 6, 2, 2), det_b])
    preds = [{"masks": dets, "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}]
    targets = [{"masks": true, "labels": torch.tensor([0, 0])}]
    result = instance_average_precision(preds, targets)
    # thresholds <= 0.6 (0.5, 0.55, 0.6): TP FP TP -> recall .5 .5 1, precision 1 .5 .667; envelope 1 .667 .667:
    #   recall points 0..0.5 (51 points) read 1, 0.51..1 (50 points) read 2/3 -> (51 + 50 * 2/3) / 101
    # thresholds > 0.6 (7 of them): TP FP FP -> points 0..0.5 read 1, the rest 0 -> 51 / 101
    high, low = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert math.isclose(result.ap50, high)
    assert math.isclose(result.ap75, low)
    assert math.isclose(result.ap, (3 * high + 7 * low) / 10)
    assert result.precision.shape == (10, 101, 1)


def test_ap_greedy_matching_by_score_and_classes_without_truth_are_left_out():
    size = 8
    true = torch.stack([_box(size, 0, 0, 4, 4)])
    # the lower-scored detection is the perfect one; the higher-scored one (IoU 8/16 = 0.5) takes the instance at
    # threshold 0.5 first, so the perfect detection is a false positive there
    dets = torch.stack([_box(size, 0, 0, 4, 4), _box(size, 0, 0, 2, 4), _box(size, 6, 6, 2, 2)])
    preds = [{"masks": dets, "scores": torch.tensor([0.5, 0.9, 0.3]), "labels": torch.tensor([1, 1, 3])}]
    targets = [{"masks": true, "labels": torch.tensor([1])}]
    result = instance_average_precision(preds, targets)
    assert result.ap50_per_class[1] == 1.0  # TP (0.5 >= 0.5), then FP: precision 1 at recall 1
    assert math.isclose(float(result.precision[1, :, 1].mean()), 0.5)  # 0.55: FP then TP
    assert result.ap_per_class[0].isnan() and result.ap_per_class[3].isnan()  # no true instance: left out
    assert result.ap50 == 1.0


def test_ap_false_positives_on_an_image_without_instances_count():
    # COCO evaluates every image; torchmetrics' segm path drops images without true masks (so it would say 1.0)
    true = [{"masks": _box(6, 0, 0, 3, 3)[None], "labels": torch.tensor([0])},
            {"masks": torch.zeros(0, 6, 6, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.int64)}]  # fmt: skip
    preds = [{"masks": _box(6, 0, 0, 3, 3)[None], "scores": torch.tensor([0.5]), "labels": torch.tensor([0])},
             {"masks": _box(6, 2, 2, 3, 3)[None], "scores": torch.tensor([0.9]), "labels": torch.tensor([0])},
             ]  # fmt: skip
    result = instance_average_precision(preds, true)
    # FP (0.9) then TP (0.5): recall 0, 1 with precision 0, 0.5 -> envelope 0.5 everywhere
    assert math.isclose(result.ap, 0.5) and math.isclose(result.ap50, 0.5)
    assert math.isclose(_coco_eval(preds, true)[0], 0.5)


def test_ap_streaming_equals_one_call_and_bad_input():
    gen = torch.Generator().manual_seed(3)
    preds, targets = _random_instances(gen, 4, with_empty=True)
    metric = InstanceAP()
    for p, t in zip(preds, targets):
        metric.update([p], [t])
    assert torch.equal(metric.compute().precision, instance_average_precision(preds, targets).precision)
    with pytest.raises(ValueError, match=r"preds\[0\]\['masks'\] must be bool"):
        instance_average_precision([{**preds[0], "masks": preds[0]["masks"].float()}], targets[:1])
    with pytest.raises(ValueError, match=r"targets\[0\] must be a dict of tensors with keys \['masks', 'labels'\]"):
        instance_average_precision(preds[:1], [{"masks": targets[0]["masks"]}])
    with pytest.raises(ValueError, match=r"preds\[0\]\['scores'\] must be float"):
        instance_average_precision([{**preds[0], "scores": preds[0]["labels"]}], targets[:1])
    with pytest.raises(ValueError, match="same length"):
        instance_average_precision(preds, targets[:1])
    with pytest.raises(ValueError, match="max_detections must be an integer >= 1"):
        InstanceAP(max_detections=0)


# ------------------------------------------------------------------------------------------------
# Instance AP against torchmetrics and pycocotools
# ------------------------------------------------------------------------------------------------


def _blob(gen: torch.Generator, size: int) -> torch.Tensor:
    top, left = torch.randint(0, size - 3, (2,), generator=gen).tolist()
    height, width = torch.randint(2, 9, (2,), generator=gen).tolist()
    return _box(size, top, left, height, width)


def _random_instances(gen: torch.Generator, num_images: int, *, with_empty: bool, size: int = 20):
    """Random true rectangles of 3 classes; detections that copy them (shifted by up to a pixel, a few pixels
    flipped, the class kept 4 times in 5), or land anywhere with any class."""
    preds, targets = [], []
    for _ in range(num_images):
        num_true = int(torch.randint(0 if with_empty else 1, 5, (1,), generator=gen))
        true = torch.zeros(0, size, size, dtype=torch.bool)
        if num_true:
            true = torch.stack([_blob(gen, size) for _ in range(num_true)])
        true_labels = torch.randint(0, 3, (num_true,), generator=gen)
        dets, labels = [], []
        for _ in range(int(torch.randint(0, 7, (1,), generator=gen))):
            label = int(torch.randint(0, 3, (1,), generator=gen))
            if num_true and float(torch.rand(1, generator=gen)) < 0.7:
                k = int(torch.randint(num_true, (1,), generator=gen))
                shift = torch.randint(-1, 2, (2,), generator=gen) * (torch.rand(2, generator=gen) < 0.5)
                copy = torch.roll(true[k], shifts=tuple(shift.tolist()), dims=(0, 1))  # IoU 1 down to about 1/3
                dets.append(copy ^ (torch.rand(size, size, generator=gen) < 0.005))
                label = int(true_labels[k]) if float(torch.rand(1, generator=gen)) < 0.8 else label
            else:
                dets.append(_blob(gen, size))
            labels.append(label)
        masks = torch.stack(dets) if dets else torch.zeros(0, size, size, dtype=torch.bool)
        preds.append({"masks": masks, "scores": torch.rand(len(dets), generator=gen),
                      "labels": torch.tensor(labels, dtype=torch.int64)})  # fmt: skip
        targets.append({"masks": true, "labels": true_labels})
    return preds, targets


def _coco_eval(preds, targets) -> tuple[float, float]:
    """AP and AP50 from pycocotools' COCOeval itself, every image listed (also those without instances)."""
    mask_utils = pytest.importorskip("pycocotools.mask")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        return encoded

    images, annotations, results = [], [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets)):
        height, width = target["masks"].shape[1:] if len(target["masks"]) else pred["masks"].shape[1:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for mask, label in zip(target["masks"], target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label, "iscrowd": 0,
                                "segmentation": rle(mask), "area": float(mask.sum())})  # fmt: skip
        for mask, label, score in zip(pred["masks"], pred["labels"].tolist(), pred["scores"].tolist()):
            results.append({"image_id": image_id, "category_id": label, "score": score, "segmentation": rle(mask)})
    categories = sorted({a["category_id"] for a in annotations} | {r["category_id"] for r in results})
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in categories]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            truth.createIndex()
            detections = truth.loadRes(results) if results else COCO()
            evaluator = COCOeval(truth, detections, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def test_ap_equals_torchmetrics_mean_average_precision_segm():
    tm = pytest.importorskip("torchmetrics.detection")
    pytest.importorskip("pycocotools")
    gen = torch.Generator().manual_seed(7)
    worst, cases = 0.0, 25
    for _ in range(cases):
        # torchmetrics' segm path drops images without true masks, and rounds its default thresholds to float32
        # (0.55 -> 0.550000011920929): give it images with instances and COCO's IoU and recall thresholds
        preds, targets = _random_instances(gen, 3, with_empty=False)
        ours = instance_average_precision(preds, targets)
        oracle = tm.MeanAveragePrecision(iou_type="segm", class_metrics=True, iou_thresholds=list(COCO_IOU_THRESHOLDS),
                                         rec_thresholds=list(COCO_RECALL_THRESHOLDS))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oracle.update(preds, targets)
            out = oracle.compute()
        diffs = [abs(ours.ap - float(out["map"])), abs(ours.ap50 - float(out["map_50"])),
                 abs(ours.ap75 - float(out["map_75"]))]  # fmt: skip
        per_class = ours.ap_per_class[out["classes"].long()]
        expected = out["map_per_class"].double()
        assert torch.equal(per_class.isnan(), expected == -1)  # torchmetrics writes -1 where seglab writes nan
        diffs.append(float((per_class - expected).nan_to_num().abs().max()))
        worst = max(worst, *diffs)
    assert worst < 1e-6, f"max |seglab - torchmetrics| over {cases} cases: {worst}"


def test_ap_equals_pycocotools_cocoeval_with_images_without_instances():
    gen = torch.Generator().manual_seed(11)
    worst, cases = 0.0, 15
    for _ in range(cases):
        preds, targets = _random_instances(gen, 4, with_empty=True)
        if not any(len(t["labels"]) for t in targets):
            continue
        ours = instance_average_precision(preds, targets)
        ap, ap50 = _coco_eval(preds, targets)
        worst = max(worst, abs(ours.ap - ap), abs(ours.ap50 - ap50))
    assert worst < 1e-6, f"max |seglab - COCOeval| over {cases} cases: {worst}"
