"""seglab.models.sam: the same masks and IoUs as Hugging Face's SamModel (tiny and ViT-B sizes, random weights) for
point, box, point+box and mask prompts; the original facebookresearch code (segment_anything) loads seglab's state
dict as it is and agrees; pre/post-processing equal to SamProcessor's; a save_pretrained folder loads; bad input."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.models.sam import (
    Sam,
    convert_hf_sam_state_dict,
    load_hf_sam,
    postprocess_masks,
    preprocess,
    rescale_boxes,
    rescale_points,
    sam_config,
    sam_config_from_hf,
)

TINY = dict(  # a HF SamConfig at toy sizes: 64-pixel input, 8×8 embedding (3×3 windows: padded to 9×9), 32×32 masks
    vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                       window_size=3, global_attn_indexes=[1], output_channels=32, num_pos_feats=16),
    prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=8),
    mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                             iou_head_hidden_dim=32),
)


def hf_sam(config_kwargs: dict, std: float, seed: int = 0, attn_implementation: str | None = None,
           vision_std: float | None = None):
    """A random-weight HF SamModel in which every tensor is random (HF initialises the ViT at std 1e-10, the
    positions at 0 and the norms at 1, which would hide swapped or missing tensors): N(0, std²), the image
    encoder's N(0, vision_std²) (default std); the Fourier matrix N(0, 1), as in the released checkpoints."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    config = transformers.SamConfig(**config_kwargs)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    model = transformers.SamModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "positional_embedding" in name:
                param.copy_(noise)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_((std if vision_std is None or not name.startswith("vision_encoder") else vision_std) * noise)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(model.shared_image_embedding.positional_embedding)
    return model.eval()


def ours_from(reference) -> Sam:
    model = Sam(sam_config_from_hf(reference.config))
    model.load_state_dict(convert_hf_sam_state_dict(reference.state_dict()))  # strict
    return model.eval()


def prompts(size: int, masks_side: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Two images, three prompts each: two points (positive, negative) and a box per prompt, a mask per image."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 3, 2, 2, generator=generator) * size
    labels = torch.tensor([1, 0]).expand(2, 3, 2).clone()
    corners = torch.rand(2, 3, 2, 2, generator=generator) * size
    boxes = torch.cat([corners.min(2).values, corners.max(2).values], dim=-1)  # (2, 3, 4) x0 y0 x1 y1
    masks = torch.randn(2, 1, masks_side, masks_side, generator=generator)
    return {
        "points": dict(points=points, point_labels=labels),
        "box": dict(boxes=boxes),
        "points+box": dict(points=points, point_labels=labels, boxes=boxes),
        "mask": dict(mask_inputs=masks),
        "points+mask": dict(points=points, point_labels=labels, mask_inputs=masks),
    }


HF_NAMES = dict(points="input_points", point_labels="input_labels", boxes="input_boxes", mask_inputs="input_masks")


@pytest.fixture(scope="module")
def tiny_pair():
    reference = hf_sam(TINY, std=0.2)
    return reference, ours_from(reference)


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("prompt", ["points", "box", "points+box", "mask", "points+mask"])
def test_tiny_masks_and_ious_equal_hugging_face(tiny_pair, prompt, multimask_output):
    reference, ours = tiny_pair
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    given = prompts(64, 32)[prompt]
    with torch.no_grad():
        expected = reference(pixel_values=images, multimask_output=multimask_output,
                             **{HF_NAMES[k]: v for k, v in given.items()})
        masks, iou = ours(images, multimask_output=multimask_output, **given)
    m = 3 if multimask_output else 1
    p = 1 if prompt == "mask" else 3
    assert masks.shape == expected.pred_masks.shape == (2, p, m, 32, 32)
    assert iou.shape == expected.iou_scores.shape == (2, p, m)
    assert expected.pred_masks.abs().max() > 0.1 and expected.iou_scores.abs().max() > 0.01
    assert (masks - expected.pred_masks).abs().max() <= 1e-5
    assert (iou - expected.iou_scores).abs().max() <= 1e-5


def test_tiny_equals_hugging_face_eager_attention_too():
    """HF's eager attention (matmul, softmax) orders the arithmetic differently from SDPA: equal to float error."""
    reference = hf_sam(TINY, std=0.2, seed=3, attn_implementation="eager")
    ours = ours_from(reference)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    given = {k: v[:1] for k, v in prompts(64, 32, seed=2)["points+box"].items()}
    with torch.no_grad():
        expected = reference(pixel_values=images, **{HF_NAMES[k]: v for k, v in given.items()})
        masks, iou = ours(images, **given)
    assert (masks - expected.pred_masks).abs().max() <= 1e-4
    assert (iou - expected.iou_scores).abs().max() <= 1e-4


def test_original_segment_anything_loads_our_state_dict_and_agrees(tiny_pair):
    """seglab's keys are the original code's: its modules load our state dict strictly and give the same masks
    (with the original's LayerNorm eps 1e-5 in the two-way blocks)."""
    sa = pytest.importorskip("segment_anything.modeling", reason="segment-anything (test oracle) is not installed")
    _, tiny = tiny_pair
    ours = Sam(dataclasses.replace(tiny.config, decoder_norm_eps=1e-5))
    ours.load_state_dict(tiny.state_dict())
    ours.eval()
    c = ours.config
    original = sa.Sam(
        image_encoder=sa.ImageEncoderViT(
            img_size=c.image_size, patch_size=c.patch_size, embed_dim=c.encoder_embed_dim, depth=c.encoder_depth,
            num_heads=c.encoder_num_heads, mlp_ratio=c.mlp_ratio, out_chans=c.prompt_embed_dim, qkv_bias=True,
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6), use_rel_pos=True,
            global_attn_indexes=c.encoder_global_attn_indexes, window_size=c.window_size),
        prompt_encoder=sa.PromptEncoder(embed_dim=c.prompt_embed_dim, image_embedding_size=(8, 8),
                                        input_image_size=(64, 64), mask_in_chans=c.mask_in_chans),
        mask_decoder=sa.MaskDecoder(
            num_multimask_outputs=3, transformer_dim=c.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=32,
            transformer=sa.TwoWayTransformer(depth=2, embedding_dim=c.prompt_embed_dim, mlp_dim=c.decoder_mlp_dim,
                                             num_heads=c.decoder_num_heads)),
    )
    original.load_state_dict(ours.state_dict())  # strict: the same names and shapes
    original.eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for name, given in prompts(64, 32, seed=4).items():
        given = {k: v[0] for k, v in given.items()}  # one image; the original decodes one image's prompts at a time
        points = (given["points"], given["point_labels"]) if "points" in given else None
        masks_in = given["mask_inputs"][:, None] if "mask_inputs" in given else None  # (1, 1, 32, 32)
        with torch.no_grad():
            embedding = original.image_encoder(images)
            sparse, dense = original.prompt_encoder(points=points, boxes=given.get("boxes"), masks=masks_in)
            expected_masks, expected_iou = original.mask_decoder(embedding, original.prompt_encoder.get_dense_pe(),
                                                                 sparse, dense, multimask_output=True)
            masks, iou = ours(images, **{k: v[None] for k, v in given.items()})
        assert masks.shape[1:] == expected_masks.shape, name
        assert (masks[0] - expected_masks).abs().max() <= 1e-5, name
        assert (iou[0] - expected_iou).abs().max() <= 1e-5, name


@pytest.mark.slow
def test_vit_b_masks_and_ious_equal_hugging_face():
    """The released ViT-B sizes at 1024×1024 (93.7M parameters), random weights: two ViT-B encoders on one thread:
    30 s on the 2-core machine when quiet, 93 s under load (32 s of CPU time, 3.4 GB peak RSS); hence slow."""
    transformers = pytest.importorskip("transformers")
    vit_b = dict(vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                    global_attn_indexes=[2, 5, 8, 11]))
    reference = hf_sam(vit_b, std=0.1, vision_std=0.02)
    ours = ours_from(reference)
    assert ours.config == sam_config("vit_b", decoder_norm_eps=1e-6)
    assert isinstance(reference, transformers.SamModel)
    images = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    start = time.perf_counter()
    with torch.no_grad():
        expected_embedding = reference.get_image_embeddings(images)
        embedding = ours.encode_image(images)
        seconds = time.perf_counter() - start
        diffs = {"image_embedding": (embedding - expected_embedding).abs().max().item()}
        for name, given in prompts(1024, 256, seed=5).items():
            given = {k: v[:1] for k, v in given.items()}
            expected = reference(image_embeddings=expected_embedding, **{HF_NAMES[k]: v for k, v in given.items()})
            masks, iou = ours.decode(embedding, **given)
            diffs[f"{name} pred_masks"] = (masks - expected.pred_masks).abs().max().item()
            diffs[f"{name} iou_scores"] = (iou - expected.iou_scores).abs().max().item()
            assert masks.shape[-2:] == (256, 256)
            assert expected.pred_masks.abs().max() > 0.1 and expected.iou_scores.abs().max() > 0.01
    print(f"ViT-B: both encoders in {seconds:.1f} s;", ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert diffs["image_embedding"] <= 1e-4
    assert max(diffs.values()) <= 1e-4


def test_processing_equals_sam_processor():
    """Resize of the long side, normalisation, padding, coordinate rescaling and post_process_masks on a
    non-square image, against SamProcessor at the real 1024 size."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (97, 150, 3), dtype=np.uint8)  # H 97, W 150: long side 150 -> 1024, short -> 662
    points = [[[10.0, 20.0], [149.0, 96.0]]]
    boxes = [[[3.0, 4.0, 120.5, 90.25]]]
    processor = transformers.SamProcessor(transformers.SamImageProcessor())
    expected = processor(images=image, input_points=[points], input_labels=[[[1, 0]]], input_boxes=boxes, return_tensors="pt")
    pixel_values, original_sizes, input_sizes = preprocess(image)
    assert original_sizes == [tuple(expected["original_sizes"][0].tolist())] == [(97, 150)]
    assert input_sizes == [tuple(expected["reshaped_input_sizes"][0].tolist())] == [(662, 1024)]
    assert pixel_values.shape == expected["pixel_values"].shape == (1, 3, 1024, 1024)
    grey_level = 1 / (255 * 0.224)
    diff = (pixel_values - expected["pixel_values"]).abs()
    assert diff.max() <= grey_level + 1e-5  # PIL's bilinear (transformers < 5) may differ by one grey level
    if type(processor.image_processor).__name__ == "SamImageProcessor" and transformers.__version__ >= "5":
        assert diff.max() <= 1e-5  # the torchvision backend: the same resize
    assert (pixel_values[..., 662:, :] == 0).all()
    scaled_points = rescale_points(torch.tensor(points), original_sizes[0])
    scaled_boxes = rescale_boxes(torch.tensor(boxes), original_sizes[0])
    torch.testing.assert_close(scaled_points, expected["input_points"][0].float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(scaled_boxes, expected["input_boxes"].float(), atol=1e-4, rtol=0)
    logits = torch.randn(1, 2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    for binarize in (True, False):
        ours = postprocess_masks(logits, original_sizes, input_sizes, binarize=binarize)
        reference = processor.post_process_masks(logits, expected["original_sizes"], expected["reshaped_input_sizes"],
                                                 binarize=binarize)
        assert ours[0].shape == reference[0].shape == (2, 3, 97, 150)
        assert torch.equal(ours[0], reference[0])


def test_processing_at_a_small_encoder_size_and_pil_input():
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    from PIL import Image

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (200, 71, 3), dtype=np.uint8))  # portrait: H is the long side
    image_processor = transformers.SamImageProcessor(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})
    expected = image_processor(images=image, return_tensors="pt")
    pixel_values, original_sizes, input_sizes = preprocess(image, image_size=128)
    assert input_sizes == [tuple(expected["reshaped_input_sizes"][0].tolist())] == [(128, 45)]
    assert (pixel_values - expected["pixel_values"]).abs().max() <= 1 / (255 * 0.224) + 1e-5
    pil_processor = getattr(transformers, "SamImageProcessorPil", None)  # transformers >= 5: PIL's resize
    if pil_processor is not None:
        expected = pil_processor(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})(images=image,
                                                                                                     return_tensors="pt")
        diff = (pixel_values - expected["pixel_values"]).abs()
        assert diff.max() <= 1 / (255 * 0.224) + 1e-5  # PIL rounds in fixed point: at most one grey level apart
        assert diff[..., :128, :45].mean() <= 0.5 / (255 * 0.224)  # and mostly equal


@pytest.fixture(scope="module")
def saved_hf_folder(tmp_path_factory, tiny_pair):
    folder = tmp_path_factory.mktemp("sam-vit-tiny")
    tiny_pair[0].save_pretrained(folder)  # what snapshot_download("facebook/sam-vit-base") gives, at toy size
    return folder


def test_load_hf_sam_reads_a_save_pretrained_folder(tiny_pair, saved_hf_folder):
    reference, _ = tiny_pair
    assert (saved_hf_folder / "config.json").is_file() and (saved_hf_folder / "model.safetensors").is_file()
    loaded = load_hf_sam(saved_hf_folder)
    assert not loaded.training and loaded.config == sam_config_from_hf(reference.config)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    given = {k: v[:1] for k, v in prompts(64, 32, seed=6)["points+mask"].items()}
    with torch.no_grad():
        expected = reference(pixel_values=images, **{HF_NAMES[k]: v for k, v in given.items()})
        masks, iou = loaded(images, **given)
    assert (masks - expected.pred_masks).abs().max() <= 1e-5
    assert (iou - expected.iou_scores).abs().max() <= 1e-5


def test_parameter_counts_equal_hugging_face_and_the_paper():
    """ViT-B 93.7M, ViT-L 312M, ViT-H 641M (the original code's models); HF's ViT-B and ViT-H count the same."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    vit_h = dict(vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                    global_attn_indexes=[7, 15, 23, 31]))
    with torch.device("meta"):
        hf = {"vit_b": transformers.SamModel(transformers.SamConfig()),  # HF's default SamConfig is ViT-B
              "vit_h": transformers.SamModel(transformers.SamConfig(**vit_h))}
        ours = {name: Sam(name) for name in ("vit_b", "vit_l", "vit_h", "nano")}
    count = {name: sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers()) for name, m in ours.items()}
    for name, model in hf.items():
        assert count[name] == sum(p.numel() for p in model.parameters())  # HF's tied Fourier matrix counted once
    assert round(count["vit_b"] / 1e6, 1) == 93.7 and round(count["vit_l"] / 1e6) == 312 and round(count["vit_h"] / 1e6) == 641
    assert count["nano"] < 1.5e6


def test_padding_points_are_ignored_and_single_mask_is_token_zero(tiny_pair):
    _, ours = tiny_pair
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    points = torch.tensor([[[[20.0, 30.0], [0.0, 0.0]]]])
    with torch.no_grad():
        embedding = ours.encode_image(images)
        padded, _ = ours.decode(embedding, points, torch.tensor([[[1, -1]]]))
        moved, _ = ours.decode(embedding, points + torch.tensor([0.0, 0.0, 500.0, -9.0]).view(2, 2),
                               torch.tensor([[[1, -1]]]))  # a padding point may lie anywhere
        single, iou_single = ours.decode(embedding, points[:, :, :1], torch.tensor([[[1]]]), multimask_output=False)
        multi, iou_multi = ours.decode(embedding, points[:, :, :1], torch.tensor([[[1]]]))
        sparse, dense = ours.prompt_encoder(points[:, :, :1], torch.tensor([[[1]]]))
        all_masks = ours.mask_decoder(embedding, ours.prompt_encoder.get_dense_pe(), sparse, dense)
    torch.testing.assert_close(padded, moved)
    assert single.shape == (1, 1, 1, 32, 32) and multi.shape == (1, 1, 3, 32, 32)
    assert not torch.allclose(single, multi[:, :, :1])  # token 0 is its own output, not the first of the three
    torch.testing.assert_close(multi, all_masks[0])


def test_smaller_images_are_padded_like_preprocess(tiny_pair):
    """forward pads an (N, 3, H, W) batch with H, W < S itself; points are checked against H, W."""
    _, ours = tiny_pair
    images = torch.randn(1, 3, 40, 64, generator=torch.Generator().manual_seed(8))
    points, labels = torch.tensor([[[[30.0, 39.0]]]]), torch.ones(1, 1, 1, dtype=torch.long)
    with torch.no_grad():
        masks, _ = ours(images, points, labels)
        padded, _ = ours(F.pad(images, (0, 0, 0, 24)), points, labels)
    torch.testing.assert_close(masks, padded)


def test_nano_config_trains_and_its_speed():
    torch.manual_seed(0)
    model = Sam("nano").train()
    config = model.config
    assert (config.image_size, config.patch_size, config.prompt_embed_dim) == (128, 8, 64)
    images = torch.randn(4, 3, 128, 128)
    points = torch.rand(4, 2, 3, 2) * 128
    labels = torch.randint(0, 2, (4, 2, 3))
    boxes = torch.tensor([10.0, 20.0, 90.0, 100.0]).expand(4, 2, 4)
    masks, iou = model(images, points, labels, boxes=boxes)
    assert masks.shape == (4, 2, 3, 64, 64) and iou.shape == (4, 2, 3)
    (masks.square().mean() + iou.square().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # a prompt with a box gets no "not a point" token; no mask prompt leaves the mask downscaler unused
    assert all(n.startswith(("prompt_encoder.mask_downscaling", "prompt_encoder.not_a_point_embed")) for n in no_grad)
    model.eval()
    with torch.no_grad():
        model(images, points, labels)  # warm-up
        start = time.perf_counter()
        model(images, points, labels)
        seconds = time.perf_counter() - start
    print(f"nano-SAM forward, batch 4 × 2 prompts, {torch.get_num_threads()} thread(s): {seconds * 1000:.0f} ms")
    assert seconds < 5


def test_bad_input_is_explained(tiny_pair):
    _, ours = tiny_pair
    images = torch.zeros(1, 3, 64, 64)
    points, labels = torch.tensor([[[[10.0, 10.0]]]]), torch.ones(1, 1, 1, dtype=torch.long)
    mask_side = 32
    with pytest.raises(ValueError, match=r"^empty prompt: give points \(with point_labels\), boxes or mask_inputs$"):
        ours(images)
    with pytest.raises(ValueError, match=r"^points must lie inside the 64×64 image .*got \(x, y\) = \(70, 10\)"):
        ours(images, torch.tensor([[[[70.0, 10.0]]]]), labels)
    with pytest.raises(ValueError, match=r"^points must lie inside the 64×40 image .*\(x, y\) = \(10, 50\)"):
        ours(torch.zeros(1, 3, 40, 64), torch.tensor([[[[10.0, 50.0]]]]), labels)
    with pytest.raises(ValueError, match=r"^boxes must be \(x0, y0, x1, y1\) with x1 >= x0 and y1 >= y0; got \[30.0, 5.0, 20.0, 9.0\]"):
        ours(images, boxes=torch.tensor([[[30.0, 5.0, 20.0, 9.0]]]))
    with pytest.raises(ValueError, match=r"^boxes must be .* y1 >= y0"):
        ours(images, boxes=torch.tensor([[[3.0, 15.0, 20.0, 9.0]]]))
    with pytest.raises(ValueError, match=r"^boxes must lie inside the 64×64 image"):
        ours(images, boxes=torch.tensor([[[3.0, 5.0, 80.0, 9.0]]]))
    with pytest.raises(ValueError, match=r"^mask_inputs must be \(N, P or 1, 32, 32\) .*got \(1, 1, 64, 64\)"):
        ours(images, mask_inputs=torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"^mask_inputs must be"):
        ours(images, points, labels, mask_inputs=torch.zeros(1, 2, mask_side, mask_side))  # P = 2 for 1 point prompt
    with pytest.raises(ValueError, match=r"^point_labels must have shape \(N, P, K\) = \(1, 1, 1\) to match points; got \(1, 1, 2\)"):
        ours(images, points, torch.ones(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^point_labels is missing"):
        ours(images, points)
    with pytest.raises(ValueError, match=r"^point_labels must be 1 \(positive\), 0 \(negative\) or -1 \(padding\)"):
        ours(images, points, torch.full((1, 1, 1), 2))
    with pytest.raises(ValueError, match=r"^points must be \(N, P, K, 2\)"):
        ours(images, points[0], labels[0])
    with pytest.raises(ValueError, match=r"^boxes must have one box per point prompt"):
        ours(images, points, labels, boxes=torch.tensor([[[1.0, 2, 3, 4], [1, 2, 3, 4]]]))
    with pytest.raises(ValueError, match=r"^images must be at most 64×64; got 65×64"):
        ours(torch.zeros(1, 3, 65, 64), points, labels)
    with pytest.raises(ValueError, match=r"^image_embeddings must be \(N, 32, 8, 8\) from encode_image; got \(1, 32, 4, 4\)"):
        ours.decode(torch.zeros(1, 32, 4, 4), points, labels)
    with pytest.raises(ValueError, match="unknown SAM config 'vit_s'"):
        Sam("vit_s")
    with pytest.raises(ValueError, match=r"unexpected key 'sam.head.weight'.*SamModel"):
        convert_hf_sam_state_dict({"sam.head.weight": torch.zeros(1)})
    with pytest.raises(TypeError, match="image must hold uint8 values"):
        preprocess(torch.zeros(3, 10, 10))
