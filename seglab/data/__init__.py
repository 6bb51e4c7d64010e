"""Segmentation datasets: PASCAL VOC 2012, CamVid, ISBI 2012, Cityscapes, ADE20K, your own folders and synthetic
shapes.

Every dataset is a ``torch.utils.data.Dataset`` of ``(image, mask)`` pairs with attributes ``classes``
(K names), ``num_classes`` (K), ``colors`` (K RGB triples), ``ignore_index`` (255), ``split`` and
``root``. Without a transform, image ``(H, W, 3) uint8`` RGB and mask ``(H, W) int64`` in ``[0, K)``
or 255; with one of the ``seglab.transforms`` presets, image ``(3, H, W) float32`` (normalised) and
mask ``(H, W) int64`` tensors.

>>> from seglab.data import build_dataset
>>> ds = build_dataset("synthetic", "train", num_images=4)
>>> image, mask = ds[0]
>>> image.shape, mask.dtype.name, ds.classes
((64, 64, 3), 'int64', ('background', 'circle', 'square', 'triangle'))

Where data lives: ``resolve_root`` (explicit ``root=`` > ``$SEGLAB_DATA/<subfolder>`` >
``<repo>/data/<subfolder>``); see data/README.md for getting each dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import (
    DATA_ENV,
    BadImageError,
    SegmentationDataset,
    check_dataset,
    check_first_items,
    check_mask,
    check_same_size,
    pad_collate,
    read_image,
    read_mask,
    resolve_root,
)
from .ade20k import ADE20K
from .camvid import CamVid
from .cityscapes import Cityscapes
from .download import download as download_dataset
from .folder import ImageFolderDataset
from .isbi import ISBI2012
from .panoptic import ISBI2012Panoptic, PanopticTarget, SyntheticPanopticShapes, VOCPanoptic
from .synthetic import SyntheticShapes
from .voc import VOCSegmentation

__all__ = [
    "DATA_ENV",
    "SegmentationDataset",
    "VOCSegmentation",
    "CamVid",
    "ISBI2012",
    "Cityscapes",
    "ADE20K",
    "ImageFolderDataset",
    "SyntheticShapes",
    "PanopticTarget",
    "SyntheticPanopticShapes",
    "ISBI2012Panoptic",
    "VOCPanoptic",
    "build_dataset",
    "list_datasets",
    "pick_dataset",
    "resolve_root",
    "pad_collate",
    "download_dataset",
    "read_image",
    "read_mask",
    "check_mask",
    "check_same_size",
    "check_dataset",
    "check_first_items",
    "BadImageError",
]

_DATASETS = ("synthetic", "voc", "camvid", "isbi2012", "cityscapes", "ade20k", "folder")


def list_datasets() -> list[str]:
    """Names accepted by ``build_dataset``: synthetic, voc, camvid, isbi2012, cityscapes, ade20k, folder."""
    return list(_DATASETS)


def build_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    transform: Callable[..., dict[str, Any]] | None = None,
    download: bool = False,
    groups: Mapping[str, Sequence[str]] | None = None,
    **kwargs: Any,
) -> SegmentationDataset:
    """Build dataset ``name`` for ``split``.

    Args:
        name: one of ``list_datasets()``.
        split: a split of that dataset (synthetic: train/val/test; voc: train/val/trainval/trainaug;
            camvid: train/val/trainval/test; isbi2012, cityscapes, ade20k: train/val/trainval; folder: any
            name).
        root: data folder (default ``resolve_root(name)``); ignored by synthetic.
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        download: download missing data (VOC, and SBD for trainaug); CamVid, ISBI, Cityscapes (an account)
            and ADE20K cannot be downloaded automatically and raise an error saying where to get them.
        groups: ``{group name: class names}`` to merge the dataset's classes into coarser ones
            (``GroupedClasses``, e.g. ``seglab.data.grouped.CAMVID_GROUPS``): masks are relabelled before
            ``transform``. Through ``TrainConfig(dataset_kwargs={"groups": ...})`` the engine trains on them.
        kwargs: passed to the dataset class (e.g. synthetic ``num_images``, ``image_size``, ``seed``;
            voc ``mirrors``; folder ``classes`` (required), ``colors``, ``mask_mode``, and optionally
            ``images_dir`` / ``masks_dir``, default ``<root>/<split>/images`` and ``<root>/<split>/masks``).

    Raises:
        ValueError: unknown dataset name (the message lists the valid ones) or split.
        FileNotFoundError: dataset folder missing (the message says how to get it).
    """
    if groups is not None:
        from .grouped import GroupedClasses

        source = build_dataset(name, split, root=root, transform=None, download=download, **kwargs)
        return GroupedClasses(source, groups, transform=transform)
    if name == "synthetic":
        return SyntheticShapes(split, transform=transform, **kwargs)
    if name == "voc":
        return VOCSegmentation(split, root, transform=transform, download=download, **kwargs)
    if name == "camvid":
        return CamVid(split, root, transform=transform, download=download, **kwargs)
    if name == "isbi2012":
        return ISBI2012(split, root, transform=transform, download=download, **kwargs)
    if name == "cityscapes":
        return Cityscapes(split, root, transform=transform, download=download, **kwargs)
    if name == "ade20k":
        return ADE20K(split, root, transform=transform, download=download, **kwargs)
    if name == "folder":
        base = resolve_root("folder", root)
        if "classes" not in kwargs:
            raise ValueError("build_dataset('folder', ...) needs classes=[...] (the K class names)")
        images_dir = kwargs.pop("images_dir", base / split / "images")
        masks_dir = kwargs.pop("masks_dir", base / split / "masks")
        return ImageFolderDataset(images_dir, masks_dir, transform=transform, split=split, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; valid names: {list_datasets()}")


def pick_dataset(preferred: tuple[str, ...] = ("voc", "camvid", "synthetic"), *, split: str = "val",
                 verbose: bool = True) -> str:
    """The first dataset of ``preferred`` whose files are present (``"synthetic"`` always is).

    Notebooks use it so that one notebook runs on PASCAL VOC on a user's machine, on CamVid or
    ISBI from ``$SEGLAB_DATA`` in CI, and on the synthetic shapes when nothing else is there. Falling
    back is never silent: each dataset skipped is printed with the reason.

    Raises:
        FileNotFoundError: none of ``preferred`` is available (the message lists each reason).
    """
    reasons = []
    for name in preferred:
        try:
            build_dataset(name, split)
        except FileNotFoundError as error:
            reasons.append(f"{name}: {error}")
            continue
        if verbose and reasons:
            skipped = ", ".join(r.split(":")[0] for r in reasons)
            print(f"notice: using the {name!r} dataset because {skipped} is not available "
                  "(see data/README.md to get it)")
        return name
    raise FileNotFoundError("no dataset of " + repr(preferred) + " is available: " + "; ".join(reasons))
