"""seglab.models.clipseg: identical outputs to Hugging Face's CLIPSegForImageSegmentation with the same weights
(tiny sizes here, rd64-refined's real size marked slow), the converter on a checkpoint written with
save_pretrained, the tokenizer equal to open_clip's on a few hundred phrases, pre-processing equal to
ViTImageProcessor's, the nano preset, and bad input."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import perturb_parameters

from seglab.models.clipseg import (CLIPSEG_CONFIGS, CLIPSeg, CLIPSegConfig, CLIPTokenizer, FiLM, WordTokenizer,
                                   config_from_hf, convert_hf_clipseg_state_dict, load_hf_clipseg, postprocess,
                                   preprocess)
from seglab.models.clipseg import tokenizer as tokenizer_module

TINY_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16, bos_token_id=97, eos_token_id=98, pad_token_id=0)


def hf_clipseg(complex_conv: bool = True, patch_size: int = 16, seed: int = 0, **sizes) -> nn.Module:
    """A random HF CLIPSegForImageSegmentation whose every parameter is perturbed (no LayerNorm left at 1/0, no
    zero bias), so that a swapped or missing tensor changes the outputs."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    config = transformers.CLIPSegConfig(
        text_config=sizes.get("text", TINY_TEXT),
        vision_config=sizes.get("vision", dict(hidden_size=32, intermediate_size=37, num_hidden_layers=4,
                                               num_attention_heads=4, image_size=64, patch_size=patch_size)),
        projection_dim=sizes.get("projection_dim", 24), extract_layers=sizes.get("extract_layers", [0, 1, 3]),
        reduce_dim=sizes.get("reduce_dim", 16), decoder_num_attention_heads=sizes.get("decoder_heads", 2),
        decoder_intermediate_size=sizes.get("decoder_mlp", 20), use_complex_transposed_convolution=complex_conv)
    torch.manual_seed(seed)
    model = transformers.CLIPSegForImageSegmentation(config)
    perturb_parameters(model, seed)
    return model.eval()


def ours_from(reference: nn.Module) -> CLIPSeg:
    model = CLIPSeg(config_from_hf(reference.config))
    model.load_state_dict(convert_hf_clipseg_state_dict(reference.state_dict()))  # strict
    return model.eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 2e-6) -> float:
    """Max abs difference, which must be ≤ rtol × the reference's largest magnitude (and the reference not 0)."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert scale > 0.1 and diff <= rtol * max(scale, 1.0), (diff, scale)
    return diff


def text_ids(n: int, length: int, vocab_size: int, context: int, seed: int = 0) -> torch.Tensor:
    """Start token, random word ids, end token (the largest id), zero padding: what the tokenizers return."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, context, dtype=torch.long)
    for row in range(n):
        words = torch.randint(1, vocab_size - 2, (length - row,), generator=generator)
        ids[row, :len(words) + 2] = torch.cat([torch.tensor([vocab_size - 2]), words, torch.tensor([vocab_size - 1])])
    return ids


@pytest.mark.parametrize("complex_conv, patch_size, size", [(True, 16, 64), (True, 16, 80), (False, 8, 40)])
def test_outputs_equal_hugging_face_clipseg(complex_conv, patch_size, size):
    """Text prompts, visual prompts and given embeddings; the pretraining grid (64 px) and an interpolated one."""
    reference = hf_clipseg(complex_conv, patch_size)
    ours = ours_from(reference)
    images, prompts = torch.randn(2, 3, size, size), torch.randn(2, 3, 48, 48)
    ids = text_ids(2, 5, 99, 9)
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=images, output_hidden_states=True)
        features = ours.forward_features(images, ids)
        visual = reference(pixel_values=images, conditional_pixel_values=prompts).logits
        given = reference(pixel_values=images, conditional_embeddings=expected.conditional_embeddings).logits
        assert_close(ours(images, ids), expected.logits)  # forward stops the ViT at the deepest extracted layer
        assert_close(ours(images, conditional_images=prompts), visual)
        assert_close(ours(images, conditional_embeddings=expected.conditional_embeddings), given)
    assert features["logits"].shape == (2, size, size)
    assert_close(features["logits"], expected.logits)
    assert_close(features["conditional_embeddings"], expected.conditional_embeddings)
    assert_close(features["image_embeddings"], expected.pooled_output)
    hidden = expected.vision_model_output.hidden_states
    assert_close(features["activations"], torch.stack([hidden[i + 1] for i in (0, 1, 3)]))


@pytest.mark.slow
def test_outputs_equal_hugging_face_at_rd64_refined_size():
    """CIDAS/clipseg-rd64-refined's configuration (ViT-B/16, 512-wide text, rd64, refined upsampling), random
    weights, CLIPSeg's 352×352 input; the ViT's 224-pixel position grid is interpolated as in the checkpoint."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    config = transformers.CLIPSegConfig(vision_config=dict(patch_size=16), use_complex_transposed_convolution=True)
    torch.manual_seed(0)
    reference = transformers.CLIPSegForImageSegmentation(config).eval()
    ours = ours_from(reference)
    assert ours.config == CLIPSEG_CONFIGS["rd64-refined"]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters()) - 1
    images, ids, prompts = torch.randn(1, 3, 352, 352), text_ids(1, 6, 49408, 77), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=images)
        features = ours.forward_features(images, ids)
        assert_close(ours(images, conditional_images=prompts),
                     reference(pixel_values=images, conditional_pixel_values=prompts).logits, rtol=1e-5)
    assert_close(features["logits"], expected.logits, rtol=1e-5)
    assert_close(features["conditional_embeddings"], expected.conditional_embeddings, rtol=1e-5)
    assert_close(features["image_embeddings"], expected.pooled_output, rtol=1e-5)


def test_converter_reads_a_save_pretrained_checkpoint(tmp_path):
    reference = hf_clipseg(seed=3)
    reference.save_pretrained(tmp_path)
    ours = load_hf_clipseg(tmp_path)
    assert not ours.training and ours.config.complex_transposed_conv and ours.config.extract_layers == (0, 1, 3)
    images, ids = torch.randn(2, 3, 64, 64), text_ids(2, 4, 99, 16, seed=1)
    with torch.no_grad():
        assert_close(ours(images, ids), reference(input_ids=ids, pixel_values=images).logits)
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        load_hf_clipseg(tmp_path / "missing")
    with pytest.raises(ValueError, match="unexpected key 'decoder.extra.weight'"):
        convert_hf_clipseg_state_dict({"decoder.extra.weight": torch.zeros(1)})


def test_converter_names_and_config():
    keys = {"clip.vision_model.encoder.layers.3.self_attn.q_proj.weight": "visual.blocks.3.attn.q_proj.weight",
            "clip.text_model.encoder.layers.0.layer_norm2.bias": "text.blocks.0.norm2.bias",
            "clip.vision_model.embeddings.position_embedding.weight": "visual.position_embedding",
            "clip.visual_projection.weight": "visual.proj.weight",
            "decoder.film_mul.weight": "decoder.film.mul.weight",
            "decoder.layers.2.mlp.fc1.bias": "decoder.layers.2.mlp.fc1.bias",
            "decoder.transposed_convolution.4.weight": "decoder.upsample.4.weight",
            "decoder.transposed_convolution.weight": "decoder.upsample.0.weight"}
    converted = convert_hf_clipseg_state_dict({k: torch.zeros(1) for k in [*keys, "clip.logit_scale"]})
    assert list(converted) == list(keys.values())  # logit_scale (contrastive temperature) dropped
    plain = config_from_hf({"vision_config": {"patch_size": 16}, "reduce_dim": 16})
    assert plain == CLIPSEG_CONFIGS["rd16"]
    with pytest.raises(ValueError, match="eos_token_id=5 is not the vocabulary's largest id"):
        config_from_hf({"text_config": {"eos_token_id": 5}})


def clip_tokenizers():
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer", reason="open_clip_torch (clip extra) is not installed")
    return CLIPTokenizer(), open_clip_tokenizer.SimpleTokenizer()


def test_tokenizer_equals_open_clip_on_varied_phrases():
    ours, reference = clip_tokenizers()
    phrases = ["a photo of a cat", "A Photo OF a CAT!!", "don't stop, it's fine", "it's 2024: 3.14 & 100%",
               "café naïve résumé", "日本語のテキスト", "emoji 🐈‍⬛ 👍🏽", "  many   spaces\tand\nnewlines ",
               "&amp; &lt;b&gt; html entities", "ﬁne ligature", "Ⅻ ½ ² numbers", "hyphen-ated co-op",
               "mojibake: Ã©", "Ελληνικά και русский", "'ll 've 're 'd 'm", "x" * 200, "pick up the blue cup"]
    vocabulary = ("the red blue green circle square triangle on left right of a an big small photo cat dog 42 7 "
                  "! ? , . ; : ( ) - _ / @ # $ % ^ * é ü ß ø 中 文 🙂 I'm you'll We're THEY'VE Ünïcödé 1000000 "
                  "segmentation CLIPSeg").split()
    rng = random.Random(0)
    phrases += [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 30))) for _ in range(300)]
    expected = reference(phrases, context_length=77)
    assert torch.equal(ours(phrases, truncate=True), expected)  # open_clip truncates over-long phrases
    assert expected[-10:].count_nonzero(dim=1).max() > 12  # the random phrases reach past a dozen tokens
    assert ours.decode(ours("Hello, World! café")[0]) == "hello , world ! café"
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (49408, 49406, 49407)


def test_tokenizer_bad_input_and_missing_extra(monkeypatch):
    ours, _ = clip_tokenizers()
    with pytest.raises(ValueError, match=r"phrases\[1\] needs 202 tokens, more than context_length=77: "
                                         r"shorten it or pass truncate=True"):
        ours(["a cat", "x " * 200])
    with pytest.raises(ValueError, match=r"phrases\[0\] = ' ' is empty"):
        ours([" ", "a cat"])
    with pytest.raises(TypeError, match="phrases must be a str or a list of str"):
        ours([3])
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r'open_clip_torch, which is not installed: pip install "seglab\[clip\]"'):
        CLIPTokenizer()


def test_word_tokenizer_and_nano_preset():
    words = "the a red green blue circle square triangle on left right top bottom".split()
    tokenizer = WordTokenizer(words)
    ids = tokenizer(["the red circle", "Blue square on the left"])
    assert ids.dtype == torch.int64 and ids.shape == (2, 8)
    assert ids[0, :5].tolist() == [14, 1, 3, 6, 15] and ids.max() == tokenizer.vocab_size - 1 == 15
    assert tokenizer.decode(ids[1]) == "blue square on the left"
    with pytest.raises(ValueError, match=r"words outside the vocabulary: \['purple'\]; known words: the, a, red"):
        tokenizer("the purple circle")
    with pytest.raises(ValueError, match=r"phrases\[0\] needs 9 tokens, more than context_length=8"):
        tokenizer("the red circle on the left top")
    config = dataclasses.replace(CLIPSEG_CONFIGS["nano"], vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = CLIPSeg(config).train()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    logits = model(torch.randn(2, 3, 64, 64), ids)
    assert logits.shape == (2, 64, 64)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.rand(2, 64, 64).round()).backward()
    unused = ("visual.post_norm.", "visual.proj.")  # only the image embedding (visual prompts) needs them
    for name, param in model.named_parameters():
        assert (param.grad is None) == name.startswith(unused), name
    with torch.no_grad():  # another size: position embeddings interpolated, a 9×12 patch grid
        assert model.eval()(torch.randn(1, 3, 72, 100), ids[:1]).shape == (1, 72, 100)


def test_nano_learns_to_follow_the_phrase():
    """One image holding a red circle and a blue square, two phrases: after 100 Adam steps each phrase's mask
    covers its own shape and not the other, so the text reaches the mask (through FiLM)."""
    tokenizer = WordTokenizer("red blue circle square".split())
    torch.manual_seed(0)
    model = CLIPSeg(dataclasses.replace(CLIPSEG_CONFIGS["nano"], vocab_size=tokenizer.vocab_size)).train()
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    circle = (yy - 32) ** 2 + (xx - 16) ** 2 < 100
    square = ((yy - 32).abs() < 9) & ((xx - 48).abs() < 9)
    image = torch.zeros(3, 64, 64)
    image[0], image[2] = circle * 2.0, square * 2.0
    images, ids = image.expand(2, -1, -1, -1), tokenizer(["red circle", "blue square"])
    target = torch.stack([circle, square]).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(100):
        loss = nn.functional.binary_cross_entropy_with_logits(model(images, ids), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probabilities = model.eval()(images, ids).sigmoid()
    masks = probabilities > 0.5
    iou = (masks & target.bool()).sum((1, 2)) / (masks | target.bool()).sum((1, 2))
    assert iou.min() > 0.6, iou  # measured 0.79 and 0.89
    assert probabilities[0][square].mean() < 0.2 and probabilities[1][circle].mean() < 0.2  # measured 0.06


def test_film_and_decoder_order():
    film = FiLM(3, 4)
    x, c = torch.randn(2, 5, 4), torch.randn(2, 3)
    expected = (c @ film.mul.weight.T + film.mul.bias)[:, None] * x + (c @ film.add.weight.T + film.add.bias)[:, None]
    torch.testing.assert_close(film(x, c), expected)
    model = CLIPSeg(CLIPSEG_CONFIGS["nano"]).eval()
    seen = []
    for i, reduce in enumerate(model.decoder.reduces):
        reduce.register_forward_hook(lambda module, args, out, i=i: seen.append((i, args[0].data_ptr())))
    model.visual.blocks[1].register_forward_hook(lambda m, a, out: seen.append(("layer1", out.data_ptr())))
    model.visual.blocks[3].register_forward_hook(lambda m, a, out: seen.append(("layer3", out.data_ptr())))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), conditional_embeddings=torch.randn(1, 64))
    pointers = dict(seen)
    assert pointers[0] == pointers["layer3"] and pointers[2] == pointers["layer1"]  # reduces[0]: the deepest


def test_preprocess_equals_vit_image_processor():
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    from PIL import Image

    processor = transformers.ViTImageProcessor(size={"height": 352, "width": 352}, image_mean=[0.485, 0.456, 0.406],
                                               image_std=[0.229, 0.224, 0.225])
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((240, 320), (500, 375), (352, 352))]
    expected = processor(images=photos, return_tensors="pt")["pixel_values"]
    batch = preprocess(photos)
    assert batch.shape == (3, 3, 352, 352) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(preprocess(Image.fromarray(photos[0])), batch[:1])
    probabilities = postprocess(torch.zeros(2, 352, 352), (240, 320))
    assert probabilities.shape == (2, 240, 320) and torch.all(probabilities == 0.5)
    with pytest.raises(ValueError, match=r"images\[0\] must be RGB \(H, W, 3\); got shape \(8, 8\)"):
        preprocess(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match=r"images\[0\] must hold uint8 values 0–255; got torch.float32"):
        preprocess(torch.rand(3, 8, 8))


def test_bad_input_is_explained():
    model = CLIPSeg(CLIPSEG_CONFIGS["nano"]).eval()
    images, ids = torch.randn(2, 3, 64, 64), WordTokenizer(["red", "circle"])(["red circle", "circle"])
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, H, W\); got \(3, 64, 64\): add a batch"):
        model(images[0], ids)
    with pytest.raises(ValueError, match=r"images must be at least 8×8 pixels \(one patch\); got \(4, 64\)"):
        model(torch.randn(2, 3, 4, 64), ids)
    with pytest.raises(ValueError, match=r"input_ids has 9 tokens per phrase; this model takes 2 to 8 "
                                         r"\(context_length\): shorten the phrase"):
        model(images, torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids must be int64 token ids; got dtype torch.float32"):
        model(images, ids.float())
    with pytest.raises(ValueError, match=r"input_ids holds ids outside \[0, 64\) \(vocab_size\)"):
        model(images, ids + 100)
    with pytest.raises(ValueError, match="the prompts' batch size 1 differs from the images' 2: pass one prompt"):
        model(images, ids[:1])
    with pytest.raises(ValueError, match="pass exactly one of input_ids, conditional_images, conditional_embeddings"):
        model(images, ids, conditional_embeddings=torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"conditional_embeddings must be \(N, 64\) \(projection_dim\); got \(2, 5\)"):
        model(images, conditional_embeddings=torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"extract_layers must be indices in \[0, 4\) \(vision_layers\); got \(1, 4\)"):
        dataclasses.replace(CLIPSEG_CONFIGS["nano"], extract_layers=(1, 4))
    with pytest.raises(ValueError, match="unknown CLIPSeg config 'rd32'; valid: rd64-refined, rd64, rd16, nano"):
        CLIPSeg("rd32")
    with pytest.raises(ValueError, match="conditional_layer must be in"):
        dataclasses.replace(CLIPSEG_CONFIGS["nano"], conditional_layer=len(CLIPSEG_CONFIGS["nano"].extract_layers))
    with pytest.raises(ValueError, match=r"logits must be \(N, h, w\) as CLIPSeg returns them; got shape \(8, 8\)"):
        postprocess(torch.zeros(8, 8), (16, 16))
    assert isinstance(CLIPSEG_CONFIGS["rd64"], CLIPSegConfig)
