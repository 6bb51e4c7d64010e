"""Training SAM with simulated clicks (Kirillov et al., "Segment Anything", ICCV 2023, Sec. 3 "Losses and
training" and Appendix A "Training algorithm"), scaled down to a CPU.

One step, for a batch of images and one target object per image (``sam_click_loss``):

1. encode the images once: ``(N, 3, S, S) -> (N, C, S/p, S/p)``;
2. round 1: a point uniform in the target (``sample_first_points``) or, with probability ``box_probability``, the
   target's noisy box; 3 masks when the prompt is one point (ambiguous), 1 otherwise;
3. rounds 2..``1 + click_rounds``: one more point uniform in the error of the previous mask (positive in a false
   negative, negative in a false positive; ``sample_error_points``), all earlier points kept, and the previous
   low-resolution logits (detached, unthresholded) as the mask prompt; 1 mask;
4. ``mask_rounds`` more rounds with no new point, only the previous logits fed back (the paper's refinement rounds);
5. loss of each round: ``focal_weight * focal + dice_weight * dice`` on the mask logits against the target (the
   paper's 20 : 1; seglab's default 1 : 1, see below), plus the MSE between the
   predicted IoU and the mask's actual IoU; with 3 masks only the mask of lowest mask loss is back-propagated
   (its IoU term included), the IoU head is trained on all 3. The step's loss is the mean over rounds.

``train_sam_clicks`` runs AdamW over a pool of ``(image, target)`` pairs in a plain loop, not seglab's engine: the
engine feeds ``(images, masks)`` batches of class maps to ``model(images, masks)``; here a step needs instance masks,
a random generator for the clicks and several decoder passes per image, so a wrapper model would carry all of it
and the engine's metrics (mIoU over classes) would not apply.

Differences from the paper: 1 + ``click_rounds`` + ``mask_rounds`` rounds (defaults 1 + 3 + 1 = 5) instead of 11
(1 + 8 sampled + 2 without new points, one of those at a random place); the box-or-point choice is made once per
batch, not per object; the mask fed back after 3 masks is the one of highest predicted IoU (as at inference); IoU is
measured on the low-resolution mask, which here is the image resolution (the 64-pixel nano-SAM, ``nano_sam_64``);
focal loss with gamma = 2 and no alpha weighting (the paper gives neither); focal 1 : dice 1 by default, not 20 : 1:
from scratch with 20 : 1 (alpha 0.25 or none) nano-SAM sat at the trivial "one big blob" answer (first-click IoU
about 0.07 on the synthetic shapes) for 120-200 steps of 16, most of a 5-minute CPU budget, while 1 : 1 (focal or
plain BCE) left it after about 50 steps (measured 2026-12-08, seed 0, batches of 16, first round only). No MAE
pretraining, no data engine, no layer-wise learning-rate decay, no drop path: trained from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import to_tensor
from ..models.sam import Sam, SamConfig, sam_config
from .clicks import sample_boxes, sample_error_points, sample_first_points

__all__ = ["ClickTrainingConfig", "nano_sam_64", "normalize_images", "sam_click_loss", "train_sam_clicks"]


def nano_sam_64() -> SamConfig:
    """The nano preset at 64-pixel inputs with 4-pixel patches: the same 16x16 embedding, masks at 64x64 = the image."""
    return sam_config("nano", image_size=64, patch_size=4)


@dataclass(frozen=True)
class ClickTrainingConfig:
    """The simulated-interaction recipe of one training step (see the module docstring)."""

    click_rounds: int = 3  # rounds with a new error point after the first prompt (paper: 8)
    mask_rounds: int = 1  # rounds with only the previous mask fed back (paper: 2)
    box_probability: float = 0.25  # chance the first prompt is the box (paper: 0.5)
    focal_weight: float = 1.0  # paper: 20 (see the module docstring: too slow to start from scratch on a CPU)
    focal_alpha: float | None = None  # weight of the positive pixels in the focal loss (None: no weighting)
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0


def normalize_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32, ImageNet mean/std normalised (as SAM's ``preprocess``):
    ``seglab.imaging.to_tensor`` per image.

    Raises:
        ValueError: ``images`` is not an ``(N, H, W, 3)`` uint8 array.
    """
    array = np.asarray(images)
    if array.ndim != 4 or len(array) == 0:
        raise ValueError(f"images must be (N, H, W, 3) uint8 with N >= 1; got shape {array.shape}")
    return torch.stack([to_tensor(image) for image in array])


def _mask_losses(logits: torch.Tensor, target: torch.Tensor, alpha: float | None, gamma: float):
    """Per-mask focal and dice losses: logits ``(N, M, H, W)``, target ``(N, 1, H, W)`` float -> two ``(N, M)``."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = (1 - p_t) ** gamma * ce
    if alpha is not None:
        focal = (alpha * target + (1 - alpha) * (1 - target)) * focal
    focal = focal.flatten(2).mean(-1)
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    return focal, dice


def _actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with the target: ``(N, M, H, W)``, ``(N, 1, H, W)`` -> ``(N, M)``, no gradient."""
    pred = logits.detach() > 0
    target = target.bool().expand_as(pred)
    inter = (pred & target).flatten(2).sum(-1).float()
    union = (pred | target).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def sam_click_loss(model: Sam, images: torch.Tensor, targets: torch.Tensor,
                   config: ClickTrainingConfig = ClickTrainingConfig(),
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One simulated interaction: the loss of ``model`` on ``images`` ``(N, 3, S, S)`` (normalised) with one target
    each, ``targets`` ``(N, S, S)`` bool (non-empty; masks at the input resolution, ``patch_size`` 4).

    Returns the scalar loss (mean over rounds) and floats: ``"focal"``, ``"dice"``, ``"iou_mse"`` (means over
    rounds), ``"first_iou"`` and ``"last_iou"`` (mean actual IoU of the kept mask after the first and last round).

    Raises:
        ValueError: targets not ``(N, S, S)`` matching the images, or an empty target.
    """
    n, _, height, width = images.shape
    if targets.shape != (n, height, width):
        raise ValueError(f"targets must be (N, H, W) = {(n, height, width)} bool masks; got {tuple(targets.shape)}")
    if not bool(targets.flatten(1).any(1).all()):
        raise ValueError("targets must all be non-empty: drop objects without pixels")
    target = targets.bool()
    target_f = target[:, None].float()  # (N, 1, H, W)
    embeddings = model.encode_image(images)  # (N, C, S/p, S/p)
    use_box = config.box_probability > 0 and torch.rand((), generator=generator).item() < config.box_probability
    boxes = sample_boxes(target, generator) if use_box else None
    points, labels = (None, None) if use_box else sample_first_points(target, generator)
    logits = None
    rounds = 1 + config.click_rounds + config.mask_rounds
    total = images.new_zeros(())
    parts = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
    for r in range(rounds):
        if 1 <= r <= config.click_rounds:
            new_points, new_labels = sample_error_points(logits[:, 0] > 0, target, generator)
            points = new_points if points is None else torch.cat([points, new_points], 2)
            labels = new_labels if labels is None else torch.cat([labels, new_labels], 2)
        multimask = r == 0 and not use_box
        masks, iou_pred = model.decode(embeddings, points, labels, boxes,
                                       mask_inputs=None if logits is None else logits.detach(),
                                       multimask_output=multimask)  # (N, 1, M, S, S), (N, 1, M)
        masks, iou_pred = masks[:, 0, :, :height, :width], iou_pred[:, 0]  # (N, M, H, W), (N, M)
        focal, dice = _mask_losses(masks.float(), target_f, config.focal_alpha, config.focal_gamma)
        mask_loss = config.focal_weight * focal + config.dice_weight * dice  # (N, M)
        iou_true = _actual_iou(masks, target_f)
        iou_mse = (iou_pred.float() - iou_true) ** 2  # (N, M)
        chosen = mask_loss.detach().argmin(1, keepdim=True)  # (N, 1): the mask trained (min loss over the 3)
        loss = mask_loss.gather(1, chosen).mean() + config.iou_weight * iou_mse.mean()
        total = total + loss / rounds
        parts["focal"] += focal.gather(1, chosen).mean().item() / rounds
        parts["dice"] += dice.gather(1, chosen).mean().item() / rounds
        parts["iou_mse"] += iou_mse.mean().item() / rounds
        kept = iou_pred.detach().argmax(1)  # (N,): fed back, as at inference
        logits = masks.detach()[torch.arange(n), kept][:, None]  # (N, 1, H, W)
        if logits.shape[-2:] != model.prompt_encoder.mask_input_size:
            raise ValueError("sam_click_loss needs masks at the input resolution: use patch_size 4 (nano_sam_64)")
        kept_iou = iou_true[torch.arange(n), kept].mean().item()
        if r == 0:
            parts["first_iou"] = kept_iou
    parts["last_iou"] = kept_iou
    return total, parts


def train_sam_clicks(model: Sam, images: np.ndarray, targets: np.ndarray, *, steps: int, batch_size: int = 16,
                     lr: float = 1e-3, weight_decay: float = 0.1, seed: int = 0,
                     config: ClickTrainingConfig = ClickTrainingConfig(), bf16: bool = False,
                     log_every: int = 0) -> list[dict[str, float]]:
    """Train ``model`` in place with AdamW on ``(image, target)`` pairs drawn at random (with replacement).

    Args:
        images: ``(P, S, S, 3)`` uint8; targets: ``(P, S, S)`` bool, one object per pair.
        steps, batch_size, lr, weight_decay: AdamW with a linear warm-up over the first 5 % of steps, then cosine
            decay to 0.
        seed: seeds the batches and the clicks (not the model's initialisation: seed torch before building it).
        bf16: run forward passes under ``torch.autocast("cpu", torch.bfloat16)`` (weights and optimizer in float32).
        log_every: print a line every this many steps (0: silent).

    Returns one dict per step: the parts of ``sam_click_loss`` plus ``"loss"`` and ``"cpu_s"`` (cumulative
    ``time.process_time()`` of the loop).

    Raises:
        ValueError: ``steps < 1``, ``batch_size < 1``, images and targets that do not pair up.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; got steps={steps}, batch_size={batch_size}")
    if images.ndim != 4 or targets.shape != images.shape[:3]:
        raise ValueError(f"images (P, S, S, 3) and targets (P, S, S) must pair up; got {images.shape}, {targets.shape}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:  # linear warm-up, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    history, start = [], time.process_time()
    for step in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=generator).numpy()
        x = normalize_images(images[index])
        t = torch.from_numpy(targets[index].astype(bool))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, parts = sam_click_loss(model, x, t, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append({**parts, "loss": loss.item(), "cpu_s": time.process_time() - start})
        if log_every and (step + 1) % log_every == 0:
            h = history[-1]
            print(f"step {step + 1}/{steps} loss {h['loss']:.4f} first IoU {h['first_iou']:.3f} "
                  f"last IoU {h['last_iou']:.3f} cpu {h['cpu_s']:.0f}s", flush=True)
    return history
