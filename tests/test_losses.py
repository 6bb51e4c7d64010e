"""Losses: agreement with PyTorch, ignore_index honoured (zero gradient), clear errors."""

import pytest
import torch
import torch.nn.functional as F

from seglab.losses import build_loss, cross_entropy, dice_loss, focal_loss


def _batch(seed=0, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 6, 7, generator=g, requires_grad=True)
    target = torch.randint(0, k, (2, 6, 7), generator=g)
    target[0, :2] = 255
    target[1, :, :3] = 255
    return logits, target


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal"])
def test_ignored_pixels_get_zero_gradient_and_do_not_change_the_value(name):
    logits, target = _batch()
    loss = build_loss(name)(logits, target)
    loss.backward()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert torch.isfinite(loss)
    assert (logits.grad[ignored] == 0).all()
    assert (logits.grad[~ignored] != 0).any()
    # changing logits at ignored pixels changes nothing
    other = logits.detach().clone()
    other[ignored] = 1e3
    torch.testing.assert_close(build_loss(name)(other, target), loss.detach())


def test_cross_entropy_matches_pytorch_and_weights():
    logits, target = _batch()
    torch.testing.assert_close(cross_entropy(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    w = torch.tensor([0.2, 1.0, 3.0, 0.5])
    torch.testing.assert_close(
        cross_entropy(logits, target, weight=w), F.cross_entropy(logits, target, weight=w, ignore_index=255)
    )


def test_focal_reduces_to_cross_entropy_at_gamma_zero_and_downweights_easy_pixels():
    logits, target = _batch()
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target))
    assert focal_loss(logits, target, gamma=2.0) < cross_entropy(logits, target)


def test_dice_is_zero_for_a_confident_perfect_prediction_and_high_for_a_wrong_one():
    target = torch.randint(0, 3, (1, 8, 8))
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, target) < 1e-3
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(wrong, target) > 0.9


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal"])
def test_all_ignored_gives_zero_not_nan(name):
    # every pixel ignored: the loss is exactly 0 (not nan, not a rounding residue) with an exactly zero gradient
    logits = (torch.randn(2, 3, 4, 5) * 50).requires_grad_()
    target = torch.full((2, 4, 5), 255)
    loss = build_loss(name)(logits, target)
    assert loss.item() == 0.0 and loss.dim() == 0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    if name == "cross_entropy":  # with class weights and label smoothing too
        weighted = build_loss(name, weight=torch.tensor([0.5, 1.0, 4.0]), label_smoothing=0.1)(logits, target)
        assert weighted.item() == 0.0


def test_errors():
    logits, target = _batch()
    with pytest.raises(ValueError, match="upsample"):
        cross_entropy(logits, target[:, :3])
    bad = target.clone()
    bad[0, 5, 5] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        dice_loss(logits, bad)
    with pytest.raises(ValueError, match="int64"):
        focal_loss(logits, target.int())
    with pytest.raises(ValueError, match="valid"):
        build_loss("lovasz")
