"""Write random-weight stand-ins for the pretrained files the notebooks' ``full`` settings load, offline.

CI has no internet, so the ImageNet backbones and torchvision's whole-model weights cannot be downloaded.
This saves a *randomly initialised* torchvision model's state dict (the published file's keys and shapes)
under torchvision's own file name, taken from the weights enum's URL, in ``<TORCH_HOME>/hub/checkpoints/``
-- exactly as tests/test_pretrained.py does. The notebooks then read them through the real loading code
(hub cache lookup, enum resolution, key conversion, strict loading). The weights are random: nothing
trained with them means anything, which is why only ``full-dry`` (2 steps, a few images) should use them.

Usage::

    python tools/fake_hub_cache.py "$scratch/torch-home"   # then: export TORCH_HOME="$scratch/torch-home"

Existing files are left alone (never overwritten): a real cache is never touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

#: (torchvision builder, weights member): what the notebooks' full settings ask for.
WEIGHTS = (
    ("resnet18", "IMAGENET1K_V1"),  # 06: the DeepLab comparison
    ("resnet50", "IMAGENET1K_V1"),  # 07 benchmark, 08 DeepLabV3 / V3+
    ("resnet101", "IMAGENET1K_V1"),  # 07: the VOC recipe (DeepLabV3+ on ResNet-101)
    ("vgg16", "IMAGENET1K_V1"),  # 08: FCN-8s
    ("deeplabv3_resnet50", "COCO_WITH_VOC_LABELS_V1"),  # 00: torchvision's whole-model weights
)


def file_name(builder: str, member: str) -> str:
    """torchvision's file name for ``builder``'s weights ``member``, e.g. ``resnet50-0676ba61.pth``."""
    return torchvision.models.get_model_weights(builder)[member].url.rsplit("/", 1)[-1]


def random_state_dict(builder: str) -> dict[str, torch.Tensor]:
    """The state dict of a randomly initialised ``builder``, with the published file's keys and shapes."""
    if builder in torchvision.models.list_models(torchvision.models.segmentation):  # published files hold the aux head
        kwargs = dict(weights=None, weights_backbone=None, num_classes=21, aux_loss=not builder.startswith("lraspp"))
    else:
        kwargs = dict(weights=None)
    return torchvision.models.get_model(builder, **kwargs).state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("torch_home", type=Path, help="the folder to use as TORCH_HOME (created if missing)")
    args = parser.parse_args(argv)
    checkpoints = args.torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for builder, member in WEIGHTS:
        path = checkpoints / file_name(builder, member)
        if path.exists():
            print(f"kept    {path} (already there)")
            continue
        partial = path.with_suffix(".partial")
        torch.save(random_state_dict(builder), partial)
        partial.rename(path)  # never a half-written file under the real name
        print(f"wrote   {path} (random weights for {builder} {member}, {path.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
