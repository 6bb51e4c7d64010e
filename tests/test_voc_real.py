"""PASCAL VOC 2012 on genuine files: the subset in ``$SEGLAB_DATA/voc-samples`` (330 train + 30 val pairs,
byte-for-byte copies of the VOC 2012 release; see its PROVENANCE.md).

Oracles independent of seglab's reader: Pillow's own palette rendering (``.convert("RGB")``) mapped back
through a colour table written here, NumPy ``bincount`` of the raw PNG bytes, pixel counts published by
other projects, and the class-coverage table of PROVENANCE.md. Skipped, with the path, when the data
folder is absent.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data import VOCSegmentation, build_dataset, pick_dataset
from seglab.data.palettes import VOC_CLASSES
from seglab.data.voc import VOC_SPLIT_SIZES, read_split_ids

# Independent transcription of the VOC devkit colours (VOClabelcolormap.m) for indices 0-20 and 255.
DEVKIT_COLOURS = {
    (0, 0, 0): 0, (128, 0, 0): 1, (0, 128, 0): 2, (128, 128, 0): 3, (0, 0, 128): 4, (128, 0, 128): 5,
    (0, 128, 128): 6, (128, 128, 128): 7, (64, 0, 0): 8, (192, 0, 0): 9, (64, 128, 0): 10, (192, 128, 0): 11,
    (64, 0, 128): 12, (192, 0, 128): 13, (64, 128, 128): 14, (192, 128, 128): 15, (0, 64, 0): 16,
    (128, 64, 0): 17, (0, 192, 0): 18, (128, 192, 0): 19, (0, 64, 128): 20, (224, 224, 192): 255,
}  # fmt: skip

# Published pixel counts: keras-cv's segmentation_test.py (2007_000032) and a third-party unit test
# quoted in PROVENANCE.md (2007_000033, 2007_001420). Class index -> pixels; 255 = void.
PUBLISHED_COUNTS = {
    "2007_000032": {1: 4734, 15: 866},
    "2007_000033": {0: 143868, 1: 30937, 255: 8195},
    "2007_001420": {0: 137802, 13: 10990, 15: 5706, 16: 3913, 255: 7589},
}


@pytest.fixture(scope="module")
def voc_subset(shared_data: Path) -> Path:
    root = shared_data / "voc-samples"
    if not (root / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"genuine VOC subset not found at {root}/VOCdevkit/VOC2012")
    return root


@pytest.fixture(scope="module")
def decoded(voc_subset: Path) -> dict[str, dict]:
    """Every genuine pair of train and val, read once through ``VOCSegmentation`` (no transform)."""
    out = {}
    for split in ("train", "val"):
        ds = VOCSegmentation(split, voc_subset)
        for i, (jpg, png) in enumerate(ds.samples):
            image, mask = ds[i]
            out[jpg.stem] = {"split": split, "image": image, "mask": mask, "png": png, "jpg": jpg}
    return out


def coverage_table(voc_subset: Path) -> dict[int, tuple[int, int]]:
    """PROVENANCE.md's table: class index -> (train images, val images) containing the class."""
    text = (voc_subset / "PROVENANCE.md").read_text()
    section = text.split("## Class coverage", 1)[1]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", section, re.M)
    return {int(k): (int(tr), int(va)) for k, name, tr, va in rows if VOC_CLASSES[int(k)] == name}


# --- every genuine file -------------------------------------------------------------------------------------


def test_every_genuine_pair_decodes_to_palette_indices_with_255_borders(decoded):
    assert len(decoded) == 360 and sum(d["split"] == "val" for d in decoded.values()) == 30
    for image_id, item in decoded.items():
        image, mask, png = item["image"], item["mask"], item["png"]
        with Image.open(png) as im:
            assert im.mode == "P", png
            shown = np.asarray(im.convert("RGB"))  # Pillow applies the file's palette: what a viewer shows
            raw = np.asarray(im)
        # oracle: the displayed colours mapped back through the devkit table give our indices
        packed = (shown[..., 0].astype(np.int64) << 16) | (shown[..., 1].astype(np.int64) << 8) | shown[..., 2]
        codes, inverse = np.unique(packed, return_inverse=True)
        table = np.array([DEVKIT_COLOURS[(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255)] for c in codes])
        np.testing.assert_array_equal(mask, table[inverse].reshape(mask.shape), err_msg=image_id)
        np.testing.assert_array_equal(mask, raw)  # palette index = class index, untouched
        assert mask.dtype == np.int64 and image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
        assert (mask == 255).any(), f"{image_id}: a VOC ground truth has 255 borders"
        assert set(np.unique(mask)) <= set(range(21)) | {255} and ((mask > 0) & (mask < 255)).any()
        assert max(mask.shape) <= 500 and min(mask.shape) >= 100, (image_id, mask.shape)  # VOC: at most 500 px


def test_the_255_band_outlines_the_objects(decoded):
    """Void pixels sit on object outlines: nearly every void pixel has an object or background pixel within
    5 px, and every object (class > 0) region touches void (VOC draws a band around every outline)."""
    item = decoded["2007_000032"]
    mask = item["mask"]
    void = mask == 255
    padded = np.pad(mask, 5, constant_values=255)
    near_label = np.zeros_like(void)
    for dy in range(-5, 6):
        for dx in range(-5, 6):
            window = padded[5 + dy : 5 + dy + mask.shape[0], 5 + dx : 5 + dx + mask.shape[1]]
            near_label |= window != 255
    assert near_label[void].mean() > 0.99
    for k in np.unique(mask[(mask > 0) & (mask < 255)]):
        obj = np.pad(mask == k, 1)
        grown = obj[:-2, 1:-1] | obj[2:, 1:-1] | obj[1:-1, :-2] | obj[1:-1, 2:]
        assert (grown & void).any(), f"class {k} has no void border"


def test_image_sizes(decoded):
    sizes = np.array([d["mask"].shape for d in decoded.values()])
    assert sizes.max() == 500  # VOC images are at most 500 px on a side ...
    assert (sizes.max(axis=1) == 500).mean() > 0.9  # ... and nearly all have a 500 px side
    assert len({tuple(s) for s in sizes}) > 10  # images keep their own sizes (nothing resized)
    for d in decoded.values():
        with Image.open(d["jpg"]) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == d["mask"].shape[::-1]


def test_class_coverage_matches_provenance(decoded, voc_subset):
    counts = {split: np.zeros(21, int) for split in ("train", "val")}
    for d in decoded.values():
        present = np.unique(d["mask"][d["mask"] != 255])
        counts[d["split"]][present] += 1
    table = coverage_table(voc_subset)
    assert sorted(table) == list(range(1, 21))
    print("\nclass         train  val")
    for k in range(1, 21):
        print(f"{k:2d} {VOC_CLASSES[k]:<11s} {counts['train'][k]:5d} {counts['val'][k]:4d}")
        assert (counts["train"][k], counts["val"][k]) == table[k], VOC_CLASSES[k]
        assert counts["train"][k] >= 14 and counts["val"][k] >= 1  # every class occurs in both parts


@pytest.mark.parametrize("image_id", list(PUBLISHED_COUNTS))
def test_pixel_counts_of_known_images(decoded, image_id):
    mask, png = decoded[image_id]["mask"], decoded[image_id]["png"]
    independent = np.bincount(np.asarray(Image.open(png)).ravel(), minlength=256)  # Pillow + NumPy only
    ours = np.bincount(mask.ravel(), minlength=256)
    np.testing.assert_array_equal(ours, independent)
    for index, pixels in PUBLISHED_COUNTS[image_id].items():
        assert ours[index] == pixels, (image_id, index)
    assert ours.sum() == mask.size


# --- split lists ----------------------------------------------------------------------------------------------


def test_subset_split_lists(voc_subset):
    sets = voc_subset / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    full = voc_subset / "full-splits" / "ImageSets" / "Segmentation"
    lists = {s: read_split_ids(sets / f"{s}.txt") for s in ("train", "val", "trainval")}
    assert [len(lists[s]) for s in lists] == [330, 30, 360]
    assert lists["trainval"] == sorted(lists["train"] + lists["val"]) and not set(lists["train"]) & set(lists["val"])
    for split in ("train", "val"):
        official = read_split_ids(full / f"{split}.txt")
        assert len(official) == VOC_SPLIT_SIZES[split]
        assert lists[split] == [i for i in official if i in set(lists[split])]  # a filtered list, official order
        ds = VOCSegmentation(split, voc_subset)
        assert [p[0].stem for p in ds.samples] == lists[split]
    assert len(VOCSegmentation("trainval", voc_subset)) == 360 < VOC_SPLIT_SIZES["trainval"]


def _tree_with(tmp_path: Path, voc_subset: Path, lists: dict[str, Path]) -> Path:
    """A VOC2012 folder whose images and masks are the genuine ones (symlinked) and whose lists are ``lists``."""
    genuine = voc_subset / "VOCdevkit" / "VOC2012"
    voc2012 = tmp_path / "VOCdevkit" / "VOC2012"
    (voc2012 / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (voc2012 / sub).symlink_to(genuine / sub, target_is_directory=True)
    for split, source in lists.items():
        shutil.copy(source, voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt")
    return tmp_path


@pytest.mark.parametrize("split", ["train", "val"])
def test_full_lists_on_the_subset_name_the_first_missing_id(tmp_path, voc_subset, split):
    full = voc_subset / "full-splits" / "ImageSets" / "Segmentation" / f"{split}.txt"
    root = _tree_with(tmp_path, voc_subset, {split: full})
    present = {p.stem for p in (voc_subset / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg")}
    official = read_split_ids(full)
    first_missing = next(i for i in official if i not in present)
    missing = sum(i not in present for i in official)
    with pytest.raises(FileNotFoundError) as info:
        VOCSegmentation(split, root)
    message = str(info.value)
    assert f"{missing} of the {len(official)} ids" in message and f"the first is {first_missing}" in message
    assert f"JPEGImages/{first_missing}.jpg and SegmentationClass/{first_missing}.png" in message
    assert "list only the ids you have" in message


def test_jpeg_without_png_names_the_id_and_the_missing_mask(tmp_path, voc_subset):
    genuine = voc_subset / "VOCdevkit" / "VOC2012"
    voc2012 = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc2012 / sub).mkdir(parents=True)
    ids = ["2007_000032", "2007_000039"]
    for i in ids:
        shutil.copy(genuine / "JPEGImages" / f"{i}.jpg", voc2012 / "JPEGImages")
    shutil.copy(genuine / "SegmentationClass" / "2007_000032.png", voc2012 / "SegmentationClass")
    (voc2012 / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 ids.*the first is 2007_000039 \(no "
                                                r"SegmentationClass/2007_000039\.png in "):
        VOCSegmentation("train", tmp_path)


def test_missing_imagesets(tmp_path, voc_subset):
    root = _tree_with(tmp_path, voc_subset, {"train": voc_subset / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"})
    with pytest.raises(FileNotFoundError, match=r"split list .*val\.txt not found \(present: \['train\.txt'\]\).*"
                                                r"one image id per line"):
        VOCSegmentation("val", root)
    shutil.rmtree(root / "VOCdevkit" / "VOC2012" / "ImageSets")
    with pytest.raises(FileNotFoundError, match=r"has JPEGImages/ but no ImageSets/Segmentation/.*download voc"):
        VOCSegmentation("train", root)


def test_trainaug_without_sbd_says_how_to_get_it(voc_subset):
    with pytest.raises(FileNotFoundError, match=r"'trainaug' needs SBD labels in .*SegmentationClassAug.*"
                                                r"python -m seglab download sbd --data-root .*voc-samples"):
        VOCSegmentation("trainaug", voc_subset)


# --- re-saved masks: the common mistakes, on a genuine mask ------------------------------------------------------


@pytest.fixture
def one_pair(tmp_path, voc_subset) -> tuple[Path, Path]:
    """A VOC tree in tmp_path holding one genuine pair (2007_000032); returns (root, its mask path)."""
    genuine = voc_subset / "VOCdevkit" / "VOC2012"
    voc2012 = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc2012 / sub).mkdir(parents=True)
    shutil.copy(genuine / "JPEGImages" / "2007_000032.jpg", voc2012 / "JPEGImages")
    shutil.copy(genuine / "SegmentationClass" / "2007_000032.png", voc2012 / "SegmentationClass")
    (voc2012 / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    return tmp_path, voc2012 / "SegmentationClass" / "2007_000032.png"


def test_rgb_resaved_mask_is_refused_with_the_fix(one_pair):
    root, png = one_pair
    assert VOCSegmentation("train", root)[0][1].max() == 255  # the genuine file reads
    Image.open(png).convert("RGB").save(png)  # what an image editor does
    before = png.read_bytes()
    with pytest.raises(ValueError) as info:
        VOCSegmentation("train", root)[0]
    message = str(info.value)
    assert str(png) in message and "an RGB image, not a VOC mask" in message and "palette PNG" in message
    assert "VOCtrainval_11-May-2012.tar" in message and "rgb_to_index" in message
    assert png.read_bytes() == before  # nothing rewritten


def test_grayscale_converted_mask_is_refused(one_pair):
    root, png = one_pair
    Image.open(png).convert("L").save(png)  # the classic bug: colours become brightness values
    with pytest.raises(ValueError, match=rf"{re.escape(str(png))}: mask holds values \[.*outside the 21 VOC class "
                                         r"indices \[0, 21\) and the ignore value 255.*convert\('L'\)"):
        VOCSegmentation("train", root)[0]


def test_palette_values_above_20_are_refused(one_pair):
    root, png = one_pair
    with Image.open(png) as im:
        values = np.array(im)
        palette = im.getpalette()
    values[0, :3] = (21, 40, 254)
    bad = Image.fromarray(values, mode="P")
    bad.putpalette(palette)
    bad.save(png)
    with pytest.raises(ValueError, match=r"values \[21, 40, 254\] \(3 pixels\) outside the 21 VOC class indices"):
        VOCSegmentation("train", root)[0]


# --- where the data is found ------------------------------------------------------------------------------------


def test_pick_dataset_finds_the_subset_through_seglab_data(shared_data, voc_subset, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SEGLAB_DATA", str(shared_data))
    assert not (shared_data / "VOCdevkit").exists()  # no full VOC there: the subset is used
    assert pick_dataset(("voc", "camvid", "synthetic")) == "voc"
    assert "notice" not in capsys.readouterr().out  # nothing was skipped
    val = build_dataset("voc", "val")
    assert val.root == voc_subset / "VOCdevkit" / "VOC2012" and len(val) == 30
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path))}/voc-samples/VOCdevkit/VOC2012"):
        VOCSegmentation("val")  # the error lists the subset folder it looked at too


def test_full_voc_in_seglab_data_wins_over_the_subset(tmp_path, voc_subset, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(voc_subset, data / "voc-samples", target_is_directory=True)
    full = data / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (full / sub).mkdir(parents=True)
    genuine = voc_subset / "VOCdevkit" / "VOC2012"
    shutil.copy(genuine / "JPEGImages" / "2007_000033.jpg", full / "JPEGImages")
    shutil.copy(genuine / "SegmentationClass" / "2007_000033.png", full / "SegmentationClass")
    (full / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    monkeypatch.setenv("SEGLAB_DATA", str(data))
    assert VOCSegmentation("val").root == full and len(VOCSegmentation("val")) == 1
    assert len(VOCSegmentation("val", data / "voc-samples")) == 30  # an explicit root still reaches the subset
