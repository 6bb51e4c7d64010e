"""seglab.models.segformer: identical logits to Hugging Face's SegformerForSemanticSegmentation (B0 sizes) with
the same weights, parameter counts against the paper (Xie et al. 2021, Table 2), the blocks, shapes, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import perturb_parameters

from seglab.models import SegFormer, build_model
from seglab.models.segformer import EfficientSelfAttention, MixFFN, OverlapPatchEmbed, convert_hf_segformer_state_dict

B0 = dict(num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
          hidden_sizes=[32, 64, 160, 256], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
          num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=256)


def hf_segformer_b0(num_labels: int, seed: int = 0) -> nn.Module:
    """A random-weight HF SegFormer-B0 whose every parameter and BN statistic is random (no LayerNorm left at
    weight 1 / bias 0), so that swapped or missing tensors would change the logits."""
    transformers = pytest.importorskip("transformers", reason="transformers (test oracle, in the test extra) is not installed")
    config = transformers.SegformerConfig(num_labels=num_labels, **B0)
    model = transformers.SegformerForSemanticSegmentation(config)
    generator = perturb_parameters(model, seed)
    with torch.no_grad():
        model.decode_head.batch_norm.running_mean.copy_(torch.randn(256, generator=generator) * 0.1)
        model.decode_head.batch_norm.running_var.copy_(torch.rand(256, generator=generator) + 0.5)
    return model.eval()


def test_logits_equal_hugging_face_segformer_b0():
    reference = hf_segformer_b0(num_labels=19)
    ours = SegFormer(19, variant="b0")
    ours.load_state_dict(convert_hf_segformer_state_dict(reference.state_dict()))  # strict
    ours.eval()
    x = torch.randn(2, 3, 97, 131)  # odd sizes: every stage is ceil(H / s)
    with torch.no_grad():
        expected = reference(pixel_values=x).logits  # (2, 19, 25, 33): HF returns stride-4 logits
        features = ours.forward_features(x)
    assert expected.abs().max() > 0.1
    assert features["scores"].shape == expected.shape == (2, 19, 25, 33)
    assert (features["scores"] - expected).abs().max() <= 1e-5
    upsampled = nn.functional.interpolate(expected, size=(97, 131), mode="bilinear", align_corners=False)
    assert (features["logits"] - upsampled).abs().max() <= 1e-5
    assert [features[f"stage{i}"].shape[1:] for i in range(1, 5)] == [
        (32, 25, 33), (64, 13, 17), (160, 7, 9), (256, 4, 5)]


def test_hub_checkpoint_key_names_convert_too():
    """The hub's checkpoints (transformers < 5 names) map to the same keys as transformers >= 5 names."""
    old_and_new = {
        "segformer.encoder.patch_embeddings.0.proj.weight": "segformer.stages.0.patch_embeddings.proj.weight",
        "segformer.encoder.patch_embeddings.2.layer_norm.bias": "segformer.stages.2.patch_embeddings.layer_norm.bias",
        "segformer.encoder.block.1.0.attention.self.query.weight": "segformer.stages.1.blocks.0.attention.q_proj.weight",
        "segformer.encoder.block.0.1.attention.self.sr.weight":
            "segformer.stages.0.blocks.1.attention.sequence_reduction.sequence_reduction.weight",
        "segformer.encoder.block.0.1.attention.self.layer_norm.bias":
            "segformer.stages.0.blocks.1.attention.sequence_reduction.layer_norm.bias",
        "segformer.encoder.block.3.1.attention.output.dense.bias": "segformer.stages.3.blocks.1.attention.o_proj.bias",
        "segformer.encoder.block.2.0.layer_norm_2.weight": "segformer.stages.2.blocks.0.layernorm_after.weight",
        "segformer.encoder.block.2.0.mlp.dense1.weight": "segformer.stages.2.blocks.0.mlp.fc1.weight",
        "segformer.encoder.block.2.0.mlp.dwconv.dwconv.weight": "segformer.stages.2.blocks.0.mlp.dwconv.dwconv.weight",
        "segformer.encoder.layer_norm.3.weight": "segformer.stages.3.layer_norm.weight",
        "decode_head.linear_c.1.proj.weight": "decode_head.linear_projections.1.proj.weight",
    }
    old = convert_hf_segformer_state_dict({k: torch.zeros(1) for k in old_and_new})
    new = convert_hf_segformer_state_dict({k: torch.zeros(1) for k in old_and_new.values()})
    assert list(old) == list(new)
    assert set(old) <= set(SegFormer(3).state_dict())


@pytest.mark.parametrize("variant, millions", [("b0", 3.8), ("b1", 13.7), ("b2", 27.5), ("b5", 84.7)])
def test_parameter_counts_equal_the_paper(variant, millions):
    with torch.device("meta"):
        model = build_model("segformer", 150, backbone=f"mit_{variant}")  # ADE20K's 150 classes
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_efficient_attention_reduces_keys_by_r_squared():
    attention = EfficientSelfAttention(32, num_heads=1, reduction_ratio=8)
    seen = []
    attention.key.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    x = torch.randn(2, 32 * 48, 32)  # tokens of a 32×48 map
    assert attention(x, 32, 48).shape == (2, 32 * 48, 32)
    assert seen == [(2, 4 * 6, 32)]  # keys from the 4×6 map: hw / R²
    plain = EfficientSelfAttention(32, num_heads=2, reduction_ratio=1)
    assert not hasattr(plain, "sr")


def test_overlapping_patches_and_mix_ffn():
    embed = OverlapPatchEmbed(3, 32, patch_size=7, stride=4)
    assert embed.proj.padding == (3, 3)  # 7×7 patches every 4 pixels: neighbours overlap by 3
    tokens, h, w = embed(torch.randn(1, 3, 97, 131))
    assert (h, w) == (25, 33) and tokens.shape == (1, 25 * 33, 32)
    ffn = MixFFN(32, 128)
    assert ffn.dwconv.groups == 128 and ffn.dwconv.kernel_size == (3, 3)  # depthwise 3×3: position from padding
    assert ffn(tokens, h, w).shape == tokens.shape


def test_train_step_and_sizes():
    torch.manual_seed(0)
    model = SegFormer(4).train()
    logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 4, 64, 96)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 29, 33)).shape == (1, 4, 29, 33)  # the smallest size it takes


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"at least 29×29 pixels; got \(28, 64\): pad or resize"):
        SegFormer(3)(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match="unknown segformer backbone 'mit_b7'.*mit_b0.*mit_b5"):
        build_model("segformer", 3, backbone="mit_b7")
    with pytest.raises(ValueError, match="segformer takes no weights_backbone"):
        build_model("segformer", 3, weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="unexpected key 'head.weight'.*SegformerForSemanticSegmentation"):
        convert_hf_segformer_state_dict({"head.weight": torch.zeros(1)})
