"""seglab.models.mask2former: every decoder layer's class and mask logits equal Hugging Face's
Mask2FormerForUniversalSegmentation with the same weights (whole model, ResNet-18 backbone included); the
post-processing equals Mask2FormerImageProcessor's maps; the set loss equals HF's Mask2FormerLoss term by term
(same seed, so the same random points); the deterministic all-pixels loss and the matching equal hand-written
references; masked attention, deformable sampling, shapes, training, bad input."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _helpers import perturb_parameters

from seglab.models.mask2former import (Mask2Former, Mask2FormerCriterion, MaskedAttentionDecoderLayer,
                                       MaskedTransformerDecoder, convert_hf_mask2former_state_dict, hungarian_match,
                                       instance_inference, mask2former_options_from_hf_config,
                                       multi_scale_deformable_attention, panoptic_inference, semantic_inference,
                                       targets_from_semantic)

NO_TRANSFORMERS = "transformers (test oracle, in the test extra) is not installed"
SMALL = dict(feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, dim_feedforward=128,
             encoder_layers=2, decoder_layers=5, num_attention_heads=4, num_queries=8)


def hf_mask2former(num_labels: int = 5, seed: int = 0) -> nn.Module:
    """A small random HF Mask2Former on a ResNet-18 (built without downloads); every parameter perturbed and the
    BatchNorm statistics random, so that a swapped or missing tensor would change the outputs."""
    transformers = pytest.importorskip("transformers", reason=NO_TRANSFORMERS)
    pytest.importorskip("scipy")
    backbone = transformers.ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                                         layer_type="basic", out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(backbone_config=backbone, use_pretrained_backbone=False,
                                            num_labels=num_labels, **SMALL)
    torch.manual_seed(seed)
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    generator = perturb_parameters(model, seed, scale=0.05, is_norm_weight=lambda name, param: (
        name.endswith("weight") and param.ndim == 1 and "embed" not in name))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def hf_model():
    return hf_mask2former()


def test_every_decoder_layer_equals_hugging_face(hf_model):
    ours = Mask2Former(**mask2former_options_from_hf_config(hf_model.config.to_dict()))
    ours.load_state_dict(convert_hf_mask2former_state_dict(hf_model.state_dict()))  # strict
    ours.eval()
    x = torch.randn(2, 3, 100, 132)  # not multiples of 32: every stage is ceil(H / s)
    with torch.no_grad():
        expected = hf_model(pixel_values=x, output_auxiliary_logits=True)
        outputs = ours.forward_outputs(x)
    theirs = [(a["class_queries_logits"], a["masks_queries_logits"]) for a in expected.auxiliary_logits]
    theirs.append((expected.class_queries_logits, expected.masks_queries_logits))
    mine = [(a["pred_logits"], a["pred_masks"]) for a in outputs["aux_outputs"]]
    mine.append((outputs["pred_logits"], outputs["pred_masks"]))
    assert len(mine) == len(theirs) == 5  # HF's decoder_layers=5 is 4 layers + the prediction before them
    assert outputs["pred_masks"].shape == (2, 8, 25, 33) and outputs["pred_logits"].shape == (2, 8, 6)
    for (class_a, mask_a), (class_b, mask_b) in zip(mine, theirs):
        assert class_b.abs().max() > 0.5 and mask_b.std() > 0.2
        assert (class_a - class_b).abs().max() <= 1e-4
        assert (mask_a - mask_b).abs().max() <= 1e-4
    # the attention masks are neither empty nor full, so masked attention was exercised
    coverage = [m.float().mean().item() for m in outputs["attention_masks"]]
    assert all(0.05 < c < 0.95 for c in coverage), coverage
    with torch.no_grad():  # forward = the semantic inference of the last layer, as log scores
        scores = semantic_inference(expected.class_queries_logits, expected.masks_queries_logits, (100, 132))
        assert torch.allclose(ours(x), scores.clamp_min(1e-6).log(), atol=1e-4)


def test_save_pretrained_folder_converts(hf_model, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    ours = Mask2Former(**mask2former_options_from_hf_config(config))
    ours.load_state_dict(convert_hf_mask2former_state_dict(safetensors.load_file(tmp_path / "model.safetensors")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = hf_model(pixel_values=x)
        outputs = ours.eval().forward_outputs(x)
    assert (outputs["pred_masks"] - expected.masks_queries_logits).abs().max() <= 1e-4
    assert (outputs["pred_logits"] - expected.class_queries_logits).abs().max() <= 1e-4
    swin = dict(config, backbone_config={"model_type": "swin", "depths": [2, 2, 6, 2]})
    with pytest.raises(ValueError, match="backbone 'swin'.*no seglab equivalent.*your own backbone module"):
        mask2former_options_from_hf_config(swin)
    with pytest.raises(ValueError, match="unexpected key 'model.extra.weight'"):
        convert_hf_mask2former_state_dict({"model.extra.weight": torch.zeros(1)})


def _blobby_outputs(seed: int, n: int = 2, q: int = 10, k: int = 4, size: int = 384):
    """Outputs with confident classes and smooth, mostly disjoint blob masks (each cell of a 6×6 grid is won by
    one query), plus noise, so that the thresholds keep some segments and drop others."""
    generator = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(n, q, k + 1, generator=generator)
    owner = torch.randint(0, q, (n, 1, 6, 6), generator=generator)
    coarse = torch.where(torch.arange(q).view(1, q, 1, 1) == owner, 6.0, -6.0)
    coarse = coarse + 3 * torch.randn(n, q, 6, 6, generator=generator)
    return logits, F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_postprocessing_equals_hugging_face_image_processor(seed):
    transformers = pytest.importorskip("transformers", reason=NO_TRANSFORMERS)
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

    processor = transformers.Mask2FormerImageProcessor()
    logits, masks = _blobby_outputs(seed)  # masks at 384×384, the processor's working size
    hf_outputs = Mask2FormerForUniversalSegmentationOutput(class_queries_logits=logits, masks_queries_logits=masks)
    sizes = [(384, 384)] * 2

    expected = processor.post_process_semantic_segmentation(hf_outputs, target_sizes=sizes)
    semantic = semantic_inference(logits, masks, (384, 384)).argmax(1)
    assert all(torch.equal(semantic[i], expected[i]) for i in range(2))

    expected = processor.post_process_instance_segmentation(hf_outputs, threshold=0.3, target_sizes=sizes)
    ours = instance_inference(logits, masks, threshold=0.3, output_size=(384, 384))
    for mine, theirs in zip(ours, expected):
        assert torch.equal(mine["segmentation"], theirs["segmentation"].long())
        assert [(s["id"], s["label_id"]) for s in mine["segments_info"]] == [
            (s["id"], s["label_id"]) for s in theirs["segments_info"]]
        assert [round(s["score"], 6) for s in mine["segments_info"]] == pytest.approx(
            [s["score"] for s in theirs["segments_info"]], abs=2e-6)
    assert sum(len(r["segments_info"]) for r in ours) >= 2

    expected = processor.post_process_panoptic_segmentation(hf_outputs, threshold=0.5, label_ids_to_fuse=set(),
                                                            target_sizes=sizes)
    ours = panoptic_inference(logits, masks, threshold=0.5, output_size=(384, 384))
    for mine, theirs in zip(ours, expected):
        hf_map = theirs["segmentation"].long().clamp_min(0)  # HF: -1 when no segment at all; seglab: 0 = void
        assert torch.equal(mine["segmentation"], hf_map)
        assert [(s["id"], s["label_id"]) for s in mine["segments_info"]] == [
            (s["id"], s["label_id"]) for s in theirs["segments_info"]]
    assert sum(len(r["segments_info"]) for r in ours) >= 2


def test_panoptic_fuses_stuff_and_drops_covered_masks():
    logits = torch.full((1, 4, 3), -10.0)
    logits[0, 0, 0] = logits[0, 1, 0] = logits[0, 2, 1] = 10.0  # queries 0, 1: class 0 (stuff); 2: class 1
    logits[0, 3, 2] = 10.0  # query 3: "no object"
    masks = torch.full((1, 4, 4, 6), -10.0)
    masks[0, 0, :, :2] = masks[0, 1, :, 2:4] = masks[0, 2, :, 4:] = 10.0
    fused = panoptic_inference(logits, masks, label_ids_to_fuse={0})[0]
    assert fused["segmentation"].tolist() == [[1, 1, 1, 1, 2, 2]] * 4
    assert [(s["id"], s["label_id"], s["was_fused"]) for s in fused["segments_info"]] == [(1, 0, True), (2, 1, False)]
    separate = panoptic_inference(logits, masks)[0]
    assert separate["segmentation"].tolist() == [[1, 1, 2, 2, 3, 3]] * 4
    masks[0, 1] = masks[0, 0] - 1  # query 1 hides under query 0: it wins no pixel, so no segment
    assert [s["id"] for s in panoptic_inference(logits, masks)[0]["segments_info"]] == [1, 2]


def _semantic_batch(k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (2, 4, 3), generator=generator)
    sem = coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)  # (2, 64, 48) blocks
    sem[:, :5] = 255  # ignored rows
    return sem


def test_set_loss_equals_hugging_face_mask2former_loss():
    transformers = pytest.importorskip("transformers", reason=NO_TRANSFORMERS)
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    k, q = 4, 8
    hf_loss = Mask2FormerLoss(transformers.Mask2FormerConfig(num_labels=k, train_num_points=300),
                              {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    targets = targets_from_semantic(_semantic_batch(k, 0), k)
    generator = torch.Generator().manual_seed(1)
    layers = [{"pred_logits": torch.randn(2, q, k + 1, generator=generator),
               "pred_masks": torch.randn(2, q, 16, 12, generator=generator)} for _ in range(3)]
    criterion = Mask2FormerCriterion(k, num_points=300)
    torch.manual_seed(5)
    ours = criterion(dict(layers[-1], aux_outputs=layers[:-1]), targets)
    torch.manual_seed(5)  # the same draws in the same order: the same points
    theirs = hf_loss(layers[-1]["pred_masks"], layers[-1]["pred_logits"], [t["masks"].float() for t in targets],
                     [t["labels"] for t in targets],
                     [{"masks_queries_logits": x["pred_masks"], "class_queries_logits": x["pred_logits"]}
                      for x in layers[:-1]])
    names = {"loss_cross_entropy": "loss_class", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}
    assert len(theirs) == 9 and len(ours) == 10
    for key, value in theirs.items():
        base, suffix = (key.rsplit("_", 1)[0], "_" + key.rsplit("_", 1)[1]) if key[-1].isdigit() else (key, "")
        assert abs(ours[names[base] + suffix].item() - value.item()) <= 1e-6, key
    weighted = sum(2 * v if "cross" in key else 5 * v for key, v in theirs.items())
    assert ours["loss"].item() == pytest.approx(weighted.item(), rel=1e-6)
    torch.manual_seed(7)
    mine = hungarian_match(layers[0]["pred_logits"], layers[0]["pred_masks"], targets, num_points=300)
    torch.manual_seed(7)
    hf = hf_loss.matcher(layers[0]["pred_masks"], layers[0]["pred_logits"], [t["masks"].float() for t in targets],
                         [t["labels"] for t in targets])
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(mine, hf))


def test_all_pixels_mode_equals_hand_written_reference():
    k, q = 3, 4
    sem = _semantic_batch(k, 3)
    targets = targets_from_semantic(sem, k)
    generator = torch.Generator().manual_seed(2)
    logits, masks = torch.randn(2, q, k + 1, generator=generator), 3 * torch.randn(2, q, 16, 12, generator=generator)
    losses = Mask2FormerCriterion(k, num_points=None)({"pred_logits": logits, "pred_masks": masks}, targets)
    num_masks = sum(len(t["labels"]) for t in targets)
    ce_sum = ce_weight = bce = dice = 0.0
    for image, target in enumerate(targets):
        # every pixel centre of the 16×12 prediction: the targets resized to it (bilinear)
        small = F.interpolate(target["masks"][:, None].float(), size=(16, 12), mode="bilinear")[:, 0].flatten(1)
        pred = masks[image].flatten(1)
        probs = pred.sigmoid()
        pair_bce = torch.stack([F.binary_cross_entropy_with_logits(pred, t.expand_as(pred), reduction="none").mean(1)
                                for t in small], 1)  # (Q, M)
        pair_dice = 1 - (2 * probs @ small.T + 1) / (probs.sum(1)[:, None] + small.sum(1)[None] + 1)
        cost = 5 * pair_bce + 5 * pair_dice - 2 * logits[image].softmax(-1)[:, target["labels"]]
        best = min(itertools.permutations(range(q), len(target["labels"])),  # brute force over all assignments
                   key=lambda rows: sum(cost[r, m].item() for m, r in enumerate(rows)))
        classes = torch.full((q,), k)
        for m, r in enumerate(best):
            classes[r] = target["labels"][m]
            bce += pair_bce[r, m].item()
            dice += pair_dice[r, m].item()
        weights = torch.tensor([1.0] * k + [0.1])[classes]
        ce_sum += (weights * F.cross_entropy(logits[image], classes, reduction="none")).sum().item()
        ce_weight += weights.sum().item()
    assert losses["loss_class"].item() == pytest.approx(ce_sum / ce_weight, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(bce / num_masks, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice / num_masks, rel=1e-5)


def test_semantic_targets_one_segment_per_present_class():
    sem = torch.tensor([[[0, 0, 2], [255, 2, 2]]])
    (target,) = targets_from_semantic(sem, 3)
    assert target["labels"].tolist() == [0, 2]
    assert target["masks"].tolist() == [[[True, True, False], [False, False, False]],
                                        [[False, False, True], [False, True, True]]]  # ignored pixel: in no mask
    with pytest.raises(ValueError, match=r"class 3 outside \[0, 3\).*check num_classes"):
        targets_from_semantic(torch.tensor([[[0, 3]]]), 3)


def test_masked_attention_looks_only_inside_the_mask():
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(32, num_heads=4, feedforward_dim=64).eval()
    queries, query_pos = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    memory, memory_pos = torch.randn(1, 20, 32), torch.randn(1, 20, 32)
    blocked = torch.ones(1, 3, 20, dtype=torch.bool)
    blocked[0, 0, :5] = False  # query 0 may look at pixels 0-4 only
    blocked[0, 1, 10:] = False  # query 1 at 10-19
    blocked[0, 2] = False  # query 2 everywhere
    changed = memory.clone()
    changed[0, 5:10] += 5  # pixels no query but query 2 may look at
    # queries interact through self-attention, so compare the cross-attention alone
    out_a = layer.cross_attn(queries + query_pos, memory + memory_pos, memory, blocked)
    out_b = layer.cross_attn(queries + query_pos, changed + memory_pos, changed, blocked)
    assert torch.allclose(out_a[0, :2], out_b[0, :2], atol=1e-6) and not torch.allclose(out_a[0, 2], out_b[0, 2])
    # the decoder's rule: a query whose mask is empty attends everywhere (instead of a NaN softmax)
    decoder = MaskedTransformerDecoder(3, 32, num_queries=4, num_heads=4, num_layers=1, feedforward_dim=64).eval()
    with torch.no_grad():
        decoder.mask_embed.layers[-1].weight.zero_()
        decoder.mask_embed.layers[-1].bias.fill_(-1.0)  # every mask logit < 0: every mask empty
        maps = [torch.randn(1, 32, s, s) for s in (2, 4, 8)]
        out = decoder(maps, torch.ones(1, 32, 16, 16))
    assert out["attention_masks"][0].all() and torch.isfinite(out["pred_logits"][-1]).all()


def test_deformable_sampling_at_pixel_centres_reads_those_pixels():
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(1, 4 * 6 + 2 * 3, 2, 8)  # (N, S, heads, d)
    locations = torch.zeros(1, 1, 2, 2, 1, 2)  # one query, one point per head and level
    locations[..., 0, 0, :] = torch.tensor([(2 + 0.5) / 6, (1 + 0.5) / 4])  # level 0: column 2, row 1
    locations[..., 1, 0, :] = torch.tensor([(0 + 0.5) / 3, (1 + 0.5) / 2])  # level 1: column 0, row 1
    weights = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2, 1).expand(1, 1, 2, 2, 1)
    out = multi_scale_deformable_attention(value, shapes, locations, weights)  # (1, 1, 16)
    expected = 0.25 * value[0, 1 * 6 + 2] + 0.75 * value[0, 24 + 1 * 3 + 0]  # (heads, d)
    assert torch.allclose(out[0, 0], expected.flatten(), atol=1e-6)


def test_forward_shapes_log_scores_and_a_training_step():
    torch.manual_seed(0)
    model = Mask2Former(3, num_queries=6, hidden_dim=32, dec_layers=3, enc_layers=1, num_points=64)
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        features = model.eval().forward_features(x)
        logits = model(x)
    assert logits.shape == (2, 3, 70, 90) and logits.dtype == torch.float32
    assert torch.equal(logits, features["logits"])
    assert features["mask_features"].shape == (2, 32, 18, 23)
    assert [tuple(m.shape[-2:]) for m in features["multi_scale"]] == [(3, 3), (5, 6), (9, 12)]
    assert [tuple(m.shape[-2:]) for m in features["attention_masks"]] == [(3, 3), (5, 6), (9, 12)]  # round robin
    scores = logits.exp()  # log scores: argmax is the semantic map, exp gives Σ_q p_q(k) m_q back
    assert torch.all(scores <= 6 + 1e-4)
    model.train()
    masks = torch.randint(0, 3, (2, 70, 90))
    loss = model(x, masks)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.transformer_decoder.query_feat.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    instances = {"labels": torch.tensor([1]), "masks": torch.zeros(1, 70, 90, dtype=torch.bool)}
    assert torch.isfinite(model.loss(x, [instances, instances])["loss"])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the matching and the losses run in float32
        assert torch.isfinite(model(x, masks))


@pytest.mark.slow
def test_laptop_model_overfits_one_batch_of_synthetic_shapes():
    """The default (laptop) model learns 4 synthetic-shapes images in 30 AdamW steps (about 30 s on one thread)."""
    from seglab.data.synthetic import SyntheticShapes

    torch.manual_seed(0)
    dataset = SyntheticShapes("train", num_images=4, image_size=64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images = torch.stack([(torch.as_tensor(dataset[i][0]).permute(2, 0, 1) / 255 - mean) / std for i in range(4)])
    masks = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(4)]).long()
    model = Mask2Former(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(30):
        loss = model.train()(images, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1) == masks).float().mean()
    assert accuracy > 0.95, accuracy


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="unknown mask2former backbone 'vgg16'"):
        Mask2Former(3, backbone="vgg16")
    with pytest.raises(ValueError, match="multiple of 32"):
        Mask2Former(3, hidden_dim=48)
    with pytest.raises(ValueError, match="num_queries must be a positive int"):
        Mask2Former(3, num_queries=0)
    with pytest.raises(ValueError, match="num_classes must be a positive int; got 0"):
        Mask2Former(0)
    with pytest.raises(ValueError, match="weights_backbone is for a named ResNet"):
        Mask2Former(3, backbone=nn.Identity(), weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="num_points must be a positive int or None"):
        Mask2FormerCriterion(3, num_points=0)
    with pytest.raises(ValueError, match="expects images of shape"):
        Mask2Former(3, hidden_dim=32, dec_layers=1, enc_layers=1)(torch.randn(3, 64, 64))
    outputs = {"pred_logits": torch.randn(1, 2, 5), "pred_masks": torch.randn(1, 2, 4, 4)}
    with pytest.raises(ValueError, match="got 2 targets for a batch of 1 images"):
        Mask2FormerCriterion(4, num_points=None)(outputs, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="3 segments, more than num_queries=2: raise num_queries"):
        Mask2FormerCriterion(4, num_points=None)(outputs, torch.tensor([[[0, 1, 2, 2]]]))
