"""Engine parts: precision choice, schedules, per-sample augmentation seeds, accumulation, resized evaluation."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from seglab.engine import (
    TrainConfig, build_loaders, evaluate, forward_resized, resolve_amp_dtype, resolve_channels_last, train_one_epoch,
)
from seglab.engine import device as device_module
from seglab.engine.build import lr_factor
from seglab.engine.loaders import SeededDataset, sample_seed
from seglab.losses import cross_entropy


def test_amp_auto_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_amp_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_amp_dtype("auto", cpu) is None
    assert resolve_amp_dtype("on", cpu) == torch.bfloat16 and resolve_amp_dtype("off", cpu) is None
    assert resolve_amp_dtype(False, cpu) is None  # older configs stored booleans
    assert not resolve_channels_last("auto", cpu) and resolve_channels_last("on", cpu)
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_channels_last("auto", cpu) and not resolve_channels_last("off", cpu)


def test_old_boolean_configs_still_load():
    config = TrainConfig(amp=True, channels_last=False)
    assert (config.amp, config.channels_last) == ("auto", "off")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fast")


def test_lr_factor_warmup_then_cosine_and_poly():
    assert lr_factor("cosine", 0, 100, warmup_iters=10) == pytest.approx(0.01)
    assert lr_factor("cosine", 5, 100, warmup_iters=10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor("cosine", 10, 100, warmup_iters=10) == pytest.approx(1.0)
    assert lr_factor("cosine", 55, 100, warmup_iters=10) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100, warmup_iters=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("poly", 50, 100) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0, 10)


@pytest.mark.parametrize("weight", [None, torch.tensor([0.5, 2.0, 1.0])])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_equals_pytorch_and_is_zero_when_all_ignored(weight, smoothing):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, :2] = 255
    ours = cross_entropy(logits, target, weight, 255, smoothing)
    theirs = F.cross_entropy(logits, target, weight=weight, ignore_index=255, label_smoothing=smoothing)
    torch.testing.assert_close(ours, theirs)
    ignored = cross_entropy(logits, torch.full_like(target, 255), weight, 255, smoothing)
    ignored.backward()
    assert float(ignored.detach()) == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_each_sample_draws_its_own_augmentation_whatever_the_workers():
    config = TrainConfig(dataset="synthetic", crop_size=48, batch_size=4, scale_min=0.5, scale_max=2.0,
                         num_workers=0, device="cpu")
    serial, _ = build_loaders(config)
    parallel, _ = build_loaders(dataclasses.replace(config, num_workers=2))
    batches = []
    for loader in (serial, parallel):
        loader.sampler.set_epoch(7)
        batches.append(next(iter(loader)))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    seeded = serial.dataset
    assert isinstance(seeded, SeededDataset)
    again = seeded[(7, 3)][0]
    assert torch.equal(again, seeded[(7, 3)][0])  # the same key draws the same augmentation
    assert not torch.equal(again, seeded[(8, 3)][0])  # another epoch draws another
    assert len({sample_seed(7, i) for i in range(1000)}) == 1000


def test_accumulated_steps_equal_one_big_batch():
    torch.manual_seed(0)
    images, masks = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))

    def trained(batches, accumulate):
        torch.manual_seed(1)
        model = torch.nn.Conv2d(3, 3, 3, padding=1)  # no BatchNorm: batch composition does not matter
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        result = train_one_epoch(model, batches, cross_entropy, optimizer, accumulate_steps=accumulate)
        return model.weight.detach(), result["steps"]

    big, big_steps = trained([(images, masks)], 1)
    small, small_steps = trained([(images[:2], masks[:2]), (images[2:], masks[2:])], 2)
    torch.testing.assert_close(small, big)
    assert big_steps == small_steps == 1


def test_a_nan_loss_stops_training_with_a_clear_message():
    model = torch.nn.Conv2d(3, 2, 1)
    images = torch.full((1, 3, 4, 4), float("nan"))
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train_one_epoch(model, [(images, masks)] * 3, cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1))


def test_forward_resized_scores_at_full_size():
    model = torch.nn.Conv2d(3, 2, 1)
    images = torch.randn(1, 3, 90, 120)
    full = forward_resized(model, images, None)
    torch.testing.assert_close(full, model(images))  # no resize: only the pad, cropped away again
    small = forward_resized(model, images, 60)
    assert small.shape == (1, 2, 90, 120)
    masks = torch.randint(0, 2, (1, 90, 120))
    result = evaluate(model, [(images, masks)], 2, input_max_size=60)
    assert int(result["confusion_matrix"].sum()) == 90 * 120
