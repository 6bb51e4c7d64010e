"""ADE20K SceneParse150: class names and colours, the reader on fixture trees in the real layout, errors.

No test downloads the 923 MB zip: each test writes a small ``ADEChallengeData2016/`` tree (JPEG images,
8-bit annotation PNGs with values 0-150, 32x64) in tmp_path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab import cli
from seglab.data import ADE20K, build_dataset, download_dataset, list_datasets, resolve_root
from seglab.data.download import DownloadError
from seglab.data.palettes import ADE20K_CLASSES, ADE20K_COLORS, voc_colormap
from seglab.transforms import eval_transform

SPLITS = {"training": ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"],
          "validation": ["ADE_val_00000001", "ADE_val_00000002"]}  # fmt: skip


def make_ade20k(parent: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Write parent/ADEChallengeData2016 as the zip extracts it; return {image stem: annotation}."""
    rng = np.random.default_rng(seed)
    root = parent / "ADEChallengeData2016"
    annotations = {}
    for folder, stems in SPLITS.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for stem in stems:
            image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / folder / f"{stem}.jpg")
            annotation = rng.integers(0, 151, (32, 64), dtype=np.uint8)
            annotation[0, :3] = (0, 1, 150)  # "other", the first class, the last class
            annotations[stem] = annotation
            Image.fromarray(annotation, mode="L").save(root / "annotations" / folder / f"{stem}.png")
    (root / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    (root / "sceneCategories.txt").write_text("ADE_train_00000001 airport_terminal\n")
    return annotations


@pytest.fixture
def ade_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path / "ADEChallengeData2016", make_ade20k(tmp_path)


def test_class_names_and_colours():
    assert len(ADE20K_CLASSES) == len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[:4] == ("wall", "building", "sky", "floor") and ADE20K_CLASSES[-1] == "flag"
    assert (ADE20K_CLASSES[12], ADE20K_CLASSES[20], ADE20K_CLASSES[44]) == ("person", "car", "chest of drawers")
    assert all(name == name.strip() for name in ADE20K_CLASSES)
    # the documented rule: rows 1, 2, ... of the VOC colormap at least 180 RGB units from magenta
    rows = [tuple(int(v) for v in row) for row in voc_colormap(512)[1:]
            if np.linalg.norm(row.astype(float) - (255, 0, 255)) >= 180]  # fmt: skip
    assert ADE20K_COLORS == tuple(rows[:150]) and len(set(ADE20K_COLORS)) == 150


def test_items_shapes_dtypes_and_the_zero_label(ade_root):
    root, annotations = ade_root
    ds = ADE20K("train", root)
    assert len(ds) == 3 and ds.num_classes == 150 and ds.ignore_index == 255 and ds.root == root
    assert ds.classes == ADE20K_CLASSES and ds.colors == ADE20K_COLORS
    for index, (image_path, mask_path) in enumerate(ds.samples):
        assert mask_path == root / "annotations" / "training" / f"{image_path.stem}.png"
        image, mask = ds[index]
        assert image.shape == (32, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 64) and mask.dtype == np.int64
        raw = annotations[image_path.stem].astype(np.int64)
        np.testing.assert_array_equal(mask == 255, raw == 0)  # "other objects" -> ignore
        np.testing.assert_array_equal(mask[raw > 0], raw[raw > 0] - 1)  # 1-150 -> 0-149
        assert mask[0, :3].tolist() == [255, 0, 149]


def test_splits_roots_registry_and_transform(ade_root, tmp_path, monkeypatch):
    root, _ = ade_root
    assert [p.stem for p, _ in ADE20K("val", root).samples] == SPLITS["validation"]
    assert len(ADE20K("trainval", root)) == 5
    assert ADE20K("val", tmp_path).samples == ADE20K("val", root).samples  # the folder holding it
    assert "ade20k" in list_datasets()
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    assert resolve_root("ade20k") == root and len(build_dataset("ade20k", "train")) == 3
    image, mask = build_dataset("ade20k", "val", transform=eval_transform(pad_multiple=32))[0]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert download_dataset("ade20k", root) == root and download_dataset("ade20k") == root


def test_check_data_command(ade_root, capsys):
    root, _ = ade_root
    assert cli.main(["check-data", "--dataset", "ade20k", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ade20k/train: 3 pairs checked, all good" in out and "ade20k/val: 2 pairs checked, all good" in out
    bad = root / "annotations" / "validation" / "ADE_val_00000002.png"
    annotation = np.zeros((32, 64), np.uint8)
    annotation[0, 0] = 151
    Image.fromarray(annotation, mode="L").save(bad)
    assert cli.main(["check-data", "--dataset", "ade20k", "--data-root", str(root), "--splits", "val"]) == 2
    assert f"{bad}: annotation values [151] (1 pixels) outside 0-150" in capsys.readouterr().err


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ADE20K("train", tmp_path / "nothing")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"ADE20K SceneParse150 not found at {tmp_path / 'nothing'} ")
    for needed in ("ADEChallengeData2016.zip", "923 MB", "sceneparsing.csail.mit.edu",
                   f"unzip it into {tmp_path / 'nothing'} "):
        assert needed in message
    # a default root named ADEChallengeData2016: the zip goes into its parent
    with pytest.raises(FileNotFoundError, match=rf"unzip it into {tmp_path} \(it creates ADEChallengeData2016/"):
        ADE20K("train", tmp_path / "ADEChallengeData2016")
    with pytest.raises(FileNotFoundError, match="not downloaded automatically"):
        build_dataset("ade20k", "train", root=tmp_path, download=True)
    with pytest.raises(DownloadError, match=r"ADE20K cannot be downloaded automatically \(no published MD5"):
        download_dataset("ade20k", tmp_path)


def test_partial_folders_missing_annotations_and_bad_splits(ade_root):
    root, _ = ade_root
    lost = root / "annotations" / "training" / "ADE_train_00000002.png"
    lost.unlink()
    with pytest.raises(FileNotFoundError, match=rf"training: 1 of the 3 images lack their annotation; the first is "
                                                rf"{lost}\."):
        ADE20K("train", root)
    assert len(ADE20K("val", root)) == 2
    with pytest.raises(ValueError, match=r"split 'test' has no public labels"):
        ADE20K("test", root)
    with pytest.raises(ValueError, match=r"unknown split 'validation'; valid splits: \['train', 'val', 'trainval'\]"):
        ADE20K("validation", root)
    shutil.rmtree(root / "annotations")
    with pytest.raises(FileNotFoundError, match=rf"ADE20K at {root} is incomplete: no annotations/ folder"):
        ADE20K("val", root)
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        download_dataset("ade20k", root)


def test_rgb_annotations_are_refused(ade_root):
    root, _ = ade_root
    ds = ADE20K("val", root)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(ds.samples[0][1])
    with pytest.raises(ValueError, match="an RGB image, not an ADE20K annotation"):
        ds[0]
