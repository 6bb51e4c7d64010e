"""prepare + train_steps: the recipe of fit, one step at a time (seglab.engine.state)."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from seglab.engine import RunState, TrainConfig, evaluate, fit, load_checkpoint, prepare, train_one_epoch, train_steps
from seglab.engine.state import epoch_seed, evaluate_state


def _tiny(tmp_path, **changes) -> TrainConfig:
    config = TrainConfig(
        model="unet", base_channels=4, dataset="synthetic", crop_size=32, batch_size=4, epochs=2,
        max_train_batches=3, max_val_batches=2, out=str(tmp_path / "run"), progress=False, verbose=False,
        device="cpu", num_workers=0, seed=5,
    )
    return dataclasses.replace(config, **changes)


def _by_hand(state: RunState, epochs: int) -> list[float]:
    """The loop of fit before prepare existed: per epoch reseed as fit does, then train_one_epoch."""
    config, losses = state.config, []
    for epoch in range(1, epochs + 1):
        seed = epoch_seed(config.seed, epoch)
        state.train_loader.sampler.set_epoch(seed)
        torch.manual_seed(seed)  # rank 0
        losses += train_one_epoch(state.train_model, state.train_loader, state.criterion, state.optimizer,
                                  state.scheduler, device=state.device, amp_dtype=state.amp_dtype,
                                  channels_last=state.channels_last, max_batches=config.max_train_batches,
                                  accumulate_steps=config.accumulate_steps)["losses"]
    return losses


@pytest.mark.parametrize("accumulate_steps", [1, 2])  # 2: three batches make steps of 2 + 1 batches
def test_train_steps_equals_the_epoch_loop_step_by_step(tmp_path, accumulate_steps):
    config = _tiny(tmp_path, accumulate_steps=accumulate_steps)
    state = prepare(config)
    assert state.steps_per_epoch == (3 if accumulate_steps == 1 else 2)
    result = train_steps(state, 2 * state.steps_per_epoch)  # two epochs, crossing the boundary
    reference = prepare(config)
    expected = _by_hand(reference, 2)
    assert len(result["losses"]) == 2 * state.steps_per_epoch
    assert result["losses"] == expected  # the same floats, step by step
    assert len(set(result["losses"])) == len(expected)  # distinct steps: the comparison can fail
    for name, value in reference.model.state_dict().items():
        assert torch.equal(state.model.state_dict()[name], value), name
    assert result["step"] == state.step == 2 * state.steps_per_epoch and result["epoch"] == state.epoch == 2
    assert repr(state).startswith("RunState(unet on synthetic, cpu, ") and f"step {result['step']}/" in repr(state)
    assert result["images"] == 2 * 3 * 4 and result["images_per_s"] > 0 and result["seconds"] > 0


def test_train_steps_equals_fit(tmp_path):
    config = _tiny(tmp_path)
    history = fit(config)
    state = prepare(config)
    result = train_steps(state, config.epochs * state.steps_per_epoch)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    for name, value in state.model.state_dict().items():
        assert torch.equal(saved[name], value), name
    per_epoch = [sum(result["losses"][i:i + 3]) / 3 for i in (0, 3)]  # 3 steps of one batch per epoch
    assert per_epoch == pytest.approx([r["train_loss"] for r in history], rel=1e-6)
    assert result["lr"] == history[-1]["lr"]
    val = evaluate_state(state)
    assert val["mIoU"] == history[-1]["val_mIoU"] and val["loss"] == pytest.approx(history[-1]["val_loss"])


class _Dropout(nn.Module):
    """A small model whose every step draws from torch's random stream (dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.5), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.body(x)


def test_two_calls_continue_one_call_exactly(tmp_path):
    config = _tiny(tmp_path, epochs=3)
    torch.manual_seed(0)
    one = prepare(config, model=_Dropout())
    whole = train_steps(one, 7)  # 3 steps per epoch: crosses two epoch boundaries
    torch.manual_seed(0)
    two = prepare(config, model=_Dropout())
    first = train_steps(two, 2)
    torch.randn(100)  # a notebook cell drawing random numbers between the calls
    second = train_steps(two, 5)
    assert first["losses"] + second["losses"] == whole["losses"]
    assert first["step"] == 2 and second["step"] == 7 == two.step
    for name, value in one.model.state_dict().items():
        assert torch.equal(two.model.state_dict()[name], value), name
    assert two.epoch == 2


def test_a_given_model_and_loaders_are_used(tmp_path):
    config = _tiny(tmp_path)
    built = prepare(config)
    model = _Dropout()
    state = prepare(config, model=model, train_loader=built.train_loader, val_loader=built.val_loader,
                    total_steps=4)
    assert state.model is model and state.train_loader is built.train_loader and state.total_steps == 4
    train_steps(state, 4)
    with pytest.raises(ValueError, match="past the schedule's 4 steps.*total_steps"):
        train_steps(state, 1)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero at step 4
    result = evaluate_state(state, max_batches=1)
    direct = evaluate(model, built.val_loader, state.num_classes, max_batches=1, criterion=state.criterion,
                      amp_dtype=state.amp_dtype, channels_last=state.channels_last)  # the state's precision
    assert result["mIoU"] == direct["mIoU"] and torch.equal(result["confusion_matrix"], direct["confusion_matrix"])


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "3"])
def test_bad_step_counts_are_refused(tmp_path, n):
    state = prepare(_tiny(tmp_path))
    with pytest.raises(ValueError, match=r"train_steps\(n=\.\.\.\) must be an integer >= 1"):
        train_steps(state, n)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        prepare(_tiny(tmp_path), total_steps=0)


def test_the_engine_trains_a_model_that_computes_its_own_loss(tmp_path):
    # Mask2Former (computes_own_loss): run_steps takes model(images, masks), the set-prediction loss, instead of
    # criterion(model(images), masks); its first step equals that loss by hand, and evaluation scores its log
    # semantic scores like any model's logits
    config = _tiny(tmp_path, model="mask2former", backbone="resnet18", crop_size=64, batch_size=2, max_train_batches=2,
                   amp="off", channels_last="off")  # the loss by hand runs outside autocast: the same precision for both
    state, reference = prepare(config), prepare(config)
    for run in (state, reference):
        run.model.criterion.num_points = None  # every pixel: no random points, so the two losses can be equal
    state.train_loader.sampler.set_epoch(epoch_seed(config.seed, 1))
    images, masks = next(iter(state.train_loader))
    expected = float(reference.train_model(images, masks).detach())
    result = train_steps(state, 2)
    assert result["losses"][0] == pytest.approx(expected, rel=1e-5)
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    scores = evaluate_state(state)
    assert 0.0 <= scores["mIoU"] <= 1.0 and len(scores["iou_per_class"]) == state.num_classes
