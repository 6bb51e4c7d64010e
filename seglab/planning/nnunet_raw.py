"""Write a segmentation training set in nnU-Net's raw format, so that nnunetv2 can plan the same data.

The layout nnunetv2 reads (its ``documentation/dataset_format.md``)::

    <folder>/Dataset<ID>_<Name>/dataset.json
    <folder>/Dataset<ID>_<Name>/imagesTr/case_0000_0000.png    one PNG per case: gray, or RGB in one file
    <folder>/Dataset<ID>_<Name>/labelsTr/case_0000.png         uint8 class indices; background = 0

``dataset.json`` holds ``channel_names`` (``{"0": "gray"}`` or ``{"0": "R", "1": "G", "2": "B"}``; a
name "CT" selects CT normalisation), ``labels`` (class name -> index; nnU-Net requires class 0 to be
called "background", so seglab's first class is renamed; the ignore label, if any pixel has it, becomes
``"ignore": K``, the highest index, as nnU-Net requires), ``numTraining`` and ``file_ending``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.planning.fingerprint import iter_pairs

__all__ = ["write_nnunet_raw"]


def write_nnunet_raw(data, folder: str | os.PathLike, dataset_id: int, name: str, *,
                     class_names: list[str] | None = None, ignore_index: int | None = None,
                     channel_names: list[str] | None = None, max_images: int | None = None) -> Path:
    """Write ``data`` (a seglab dataset or ``(image (H, W[, 3]) uint8, mask (H, W) int)`` pairs) for nnunetv2.

    Args:
        folder: the ``nnUNet_raw`` folder; ``Dataset<dataset_id:03d>_<name>`` is created in it.
        dataset_id: 1-999; name: letters, digits, ``-`` (nnunetv2 matches ``Dataset###_Name``).
        class_names: K names (default ``data.classes``); the first is written as "background".
        ignore_index: the ignore value in masks (default ``data.ignore_index`` or 255), written as K.
        channel_names: default ("gray",) when every image's channels are equal, else ("R", "G", "B").
        max_images: write only the first this-many pairs.

    Returns:
        The dataset folder.

    Raises:
        ValueError: a bad id or name, an existing dataset folder, no pairs, images that are not uint8,
            or a gray/RGB mix (nnunetv2 needs every case to have the same channels).
    """
    if not (isinstance(dataset_id, int) and 1 <= dataset_id <= 999) or not name.replace("-", "").isalnum():
        raise ValueError(f"dataset_id must be 1-999 and name letters/digits/'-' (nnunetv2's Dataset###_Name); "
                         f"got {dataset_id!r}, {name!r}")
    root = Path(folder) / f"Dataset{dataset_id:03d}_{name}"
    if root.exists():
        raise ValueError(f"{root} exists already: remove it or choose another dataset_id/name")
    names = list(class_names if class_names is not None else getattr(data, "classes", []))
    ignore = int(getattr(data, "ignore_index", 255) if ignore_index is None else ignore_index)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    gray, count, has_ignore, top = None, 0, False, 0
    for index, (image, mask) in enumerate(iter_pairs(data)):
        if max_images is not None and index >= max_images:
            break
        image, mask = np.asarray(image), np.asarray(mask).astype(np.int64)
        if image.dtype != np.uint8:
            raise ValueError(f"image {index}: nnU-Net's PNG reader needs uint8 images, got {image.dtype}")
        is_gray = image.ndim == 2 or all(np.array_equal(image[..., 0], image[..., c]) for c in range(image.shape[2]))
        gray = is_gray if gray is None else gray
        if gray and not is_gray:
            raise ValueError(f"image {index} is colour but the first images were gray: nnunetv2 needs one mode")
        picture = image if image.ndim == 2 else (image[..., 0] if gray else image[..., :3])
        has_ignore = has_ignore or bool((mask == ignore).any())
        top = max(top, int(mask[mask != ignore].max(initial=0)))
        Image.fromarray(picture).save(root / "imagesTr" / f"case_{index:04d}_0000.png")
        count += 1
        labels = np.where(mask == ignore, -1, mask)  # -1: the ignore label, numbered once K is known
        np.save(root / "labelsTr" / f"case_{index:04d}.npy", labels)
    if count == 0:
        raise ValueError("write_nnunet_raw: no (image, mask) pairs in data")
    k = max(len(names), top + 1)
    names = (names + [f"class_{i}" for i in range(len(names), k)])[:k]
    for path in sorted((root / "labelsTr").glob("*.npy")):  # now K is known: ignore -> K, uint8 PNG
        labels = np.load(path)
        Image.fromarray(np.where(labels < 0, k, labels).astype(np.uint8)).save(path.with_suffix(".png"))
        path.unlink()
    label_map = {"background": 0, **{n: i for i, n in enumerate(names) if i > 0}}
    if has_ignore:
        label_map["ignore"] = k
    channels = channel_names or (["gray"] if gray else ["R", "G", "B"])
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": label_map,
            "numTraining": count, "file_ending": ".png", "name": name}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
