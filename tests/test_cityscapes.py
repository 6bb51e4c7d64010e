"""Cityscapes (gtFine): the label-id -> train-id table, the reader on fixture trees in the real layout, errors.

Cityscapes needs an account, so no test reads the real data: each test writes a small tree with the zips'
layout (``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and the ``gtFine`` files next to it,
32x64 PNGs) in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab import cli
from seglab.data import Cityscapes, build_dataset, download_dataset, list_datasets, resolve_root
from seglab.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    CITYSCAPES_LABELS,
    label_ids_to_train_ids,
)
from seglab.data.download import DownloadError
from seglab.transforms import eval_transform

# An oracle written independently of the module's table: the label id of each of the 19 classes, in train-id
# order (the Cityscapes scripts' labels.py).
TRAIN_CLASS_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"]}


def label_ids_mask(rng: np.random.Generator) -> np.ndarray:
    """A 32x64 label-id mask holding every id 0-33 (top rows) and random ids elsewhere."""
    mask = rng.integers(0, 34, (32, 64), dtype=np.uint8)
    mask[:2, :34] = np.arange(34, dtype=np.uint8)
    return mask


def make_cityscapes(root: Path, *, seed: int = 0) -> dict[Path, np.ndarray]:
    """Write root/leftImg8bit and root/gtFine (with the zips' other files) for 2 train cities and 1 val city,
    two frames each; return {image path: label-id mask}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, cities in CITIES.items():
        for city in cities:
            for frame in ("000000_000019", "000001_000019"):
                stem = f"{city}_{frame}"
                image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
                labels = root / "gtFine" / split / city
                image.parent.mkdir(parents=True, exist_ok=True)
                labels.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(image)
                written[image] = label_ids_mask(rng)
                Image.fromarray(written[image], mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
                # the other files of gtFine_trainvaltest.zip, which must not be read as masks
                Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(labels / f"{stem}_gtFine_color.png")
                Image.fromarray(np.full((32, 64), 26001, np.uint16)).save(labels / f"{stem}_gtFine_instanceIds.png")
                (labels / f"{stem}_gtFine_polygons.json").write_text("{}")
    (root / "license.txt").write_text("The Cityscapes Dataset ...")
    return written


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> tuple[Path, dict[Path, np.ndarray]]:
    root = tmp_path / "cityscapes"
    return root, make_cityscapes(root)


def expected_train_ids(label_ids: np.ndarray) -> np.ndarray:
    out = np.full(label_ids.shape, 255, dtype=np.int64)
    for train_id, label_id in enumerate(TRAIN_CLASS_LABEL_IDS):
        out[label_ids == label_id] = train_id
    return out


# --- the label table ---------------------------------------------------------------------------------------------


def test_label_table_key_entries():
    by_name = {label.name: label for label in CITYSCAPES_LABELS}
    assert (by_name["road"].label_id, by_name["road"].train_id) == (7, 0)
    assert (by_name["sidewalk"].label_id, by_name["sidewalk"].train_id) == (8, 1)
    assert (by_name["car"].label_id, by_name["car"].train_id) == (26, 13)
    assert (by_name["bicycle"].label_id, by_name["bicycle"].train_id) == (33, 18)
    assert (by_name["license plate"].label_id, by_name["license plate"].train_id) == (-1, 255)
    for name in ("unlabeled", "ego vehicle", "parking", "rail track", "guard rail", "bridge", "tunnel", "polegroup",
                 "caravan", "trailer"):
        assert by_name[name].train_id == 255, name
    assert sorted(label.label_id for label in CITYSCAPES_LABELS) == list(range(-1, 34))
    assert [label.label_id for label in CITYSCAPES_LABELS if label.train_id != 255] == TRAIN_CLASS_LABEL_IDS
    assert [label.train_id for label in CITYSCAPES_LABELS if label.train_id != 255] == list(range(19))


def test_class_names_and_colours():
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_COLORS) == 19
    assert CITYSCAPES_CLASSES[:3] == ("road", "sidewalk", "building") and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert CITYSCAPES_CLASSES[11:14] == ("person", "rider", "car")
    assert CITYSCAPES_COLORS[0] == (128, 64, 128) and CITYSCAPES_COLORS[13] == (0, 0, 142)  # road, car
    assert CITYSCAPES_COLORS[10] == (70, 130, 180) and len(set(CITYSCAPES_COLORS)) == 19  # sky; all distinct


def test_label_ids_to_train_ids_maps_every_id():
    ids = np.arange(34).reshape(2, 17)
    mapped = label_ids_to_train_ids(ids)
    assert mapped.dtype == np.int64 and mapped.shape == (2, 17)
    np.testing.assert_array_equal(mapped, expected_train_ids(ids))
    assert label_ids_to_train_ids(np.array([[7, 8, 26, 255]], np.uint8)).tolist() == [[0, 1, 13, 255]]
    for bad in (34, 200, -1):
        with pytest.raises(ValueError, match=rf"m\.png: values \[{bad}\] \(1 pixels\) are no Cityscapes label ids"):
            label_ids_to_train_ids(np.array([[7, bad]]), "m.png")


# --- the reader -----------------------------------------------------------------------------------------------------


def test_items_shapes_dtypes_and_mapping(cityscapes_root):
    root, written = cityscapes_root
    ds = Cityscapes("train", root)
    assert len(ds) == 4 and ds.num_classes == 19 and ds.ignore_index == 255 and ds.root == root
    assert ds.classes == CITYSCAPES_CLASSES and ds.colors == CITYSCAPES_COLORS
    seen = set()
    for index, (image_path, mask_path) in enumerate(ds.samples):
        assert mask_path == root / "gtFine" / "train" / image_path.parent.name / image_path.name.replace(
            "_leftImg8bit.png", "_gtFine_labelIds.png")
        image, mask = ds[index]
        assert image.shape == (32, 64, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, np.asarray(Image.open(image_path)))
        assert mask.shape == (32, 64) and mask.dtype == np.int64
        np.testing.assert_array_equal(mask, expected_train_ids(written[image_path]))
        seen |= set(np.unique(mask).tolist())
    assert seen == set(range(19)) | {255}
    assert [p.parent.name for p, _ in ds.samples] == ["aachen"] * 2 + ["bochum"] * 2  # sorted by city, frame


def test_splits_roots_registry_and_transform(cityscapes_root, tmp_path, monkeypatch):
    root, _ = cityscapes_root
    assert len(Cityscapes("val", root)) == 2 and len(Cityscapes("trainval", root)) == 6
    assert Cityscapes("val", root.parent).samples == Cityscapes("val", root).samples  # the folder holding it
    assert "cityscapes" in list_datasets()
    assert build_dataset("cityscapes", "val", root=root).samples == Cityscapes("val", root).samples
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    assert resolve_root("cityscapes") == root and len(build_dataset("cityscapes", "train")) == 4
    ds = build_dataset("cityscapes", "val", transform=eval_transform(pad_multiple=32))
    image, mask = ds[0]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert download_dataset("cityscapes", root) == root


def test_check_data_command(cityscapes_root, capsys):
    root, _ = cityscapes_root
    assert cli.main(["check-data", "--dataset", "cityscapes", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cityscapes/train: 4 pairs checked, all good" in out and "cityscapes/val: 2 pairs checked, all good" in out
    bad = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((32, 64), 40, np.uint8), mode="L").save(bad)
    assert cli.main(["check-data", "--dataset", "cityscapes", "--data-root", str(root)]) == 2
    assert f"{bad}: values [40] (2048 pixels) are no Cityscapes label ids" in capsys.readouterr().err


# --- errors ---------------------------------------------------------------------------------------------------------


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Cityscapes("train", tmp_path / "nothing")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"Cityscapes not found at {tmp_path / 'nothing'} ")
    for needed in ("account", "cityscapes-dataset.com", "gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"):
        assert needed in message
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically"):
        build_dataset("cityscapes", "train", root=tmp_path, download=True)
    with pytest.raises(DownloadError, match=r"Cityscapes cannot be downloaded automatically \(its archives need an "
                                            r"account\)\. .*gtFine_trainvaltest\.zip"):
        download_dataset("cityscapes", tmp_path)


@pytest.mark.parametrize("present", ["leftImg8bit", "gtFine"])
def test_half_unzipped_dataset_names_the_missing_zip(tmp_path, present):
    make_cityscapes(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / ("gtFine" if present == "leftImg8bit" else "leftImg8bit"))
    missing = {"leftImg8bit": "gtFine_trainvaltest.zip", "gtFine": "leftImg8bit_trainvaltest.zip"}[present]
    with pytest.raises(FileNotFoundError, match=rf"Cityscapes at {tmp_path} is incomplete: .*Unzip {missing}"):
        Cityscapes("val", tmp_path)
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        download_dataset("cityscapes", tmp_path)


def test_missing_labels_split_folders_and_bad_splits(cityscapes_root):
    root, _ = cityscapes_root
    lost = root / "gtFine" / "train" / "bochum" / "bochum_000001_000019_gtFine_labelIds.png"
    lost.unlink()
    with pytest.raises(FileNotFoundError, match=rf"'train': 1 of the 4 images lack their label file; the first is "
                                                rf"{lost}\..*unzip gtFine_trainvaltest\.zip again"):
        Cityscapes("train", root)
    assert len(Cityscapes("val", root)) == 2  # the other split is still readable
    with pytest.raises(ValueError, match=r"split 'test' has no public labels.*split='val'"):
        Cityscapes("test", root)
    with pytest.raises(ValueError, match=r"unknown split 'training'; valid splits: \['train', 'val', 'trainval'\]"):
        Cityscapes("training", root)
    import shutil

    shutil.rmtree(root / "leftImg8bit" / "val")
    with pytest.raises(FileNotFoundError, match=r"split 'val': no folder .*leftImg8bit/val"):
        Cityscapes("val", root)


def test_colour_masks_are_refused(cityscapes_root):
    root, _ = cityscapes_root
    ds = Cityscapes("val", root)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(ds.samples[0][1])  # a _color.png saved as labelIds
    with pytest.raises(ValueError, match=r"a colour image, not a label-id mask"):
        ds[0]
