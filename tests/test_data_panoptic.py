"""Panoptic targets: the format's checks, conversions to semantic masks and instance lists, connected components,
and the datasets with instances (synthetic shapes, ISBI 2012 cells on the real files, VOC's SegmentationObject on
the genuine subset and on a tree the test writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from seglab.data import ISBI2012, SyntheticShapes
from seglab.data.palettes import voc_colormap
from seglab.data.panoptic import (
    ISBI2012Panoptic,
    PanopticTarget,
    VOCPanoptic,
    check_panoptic,
    compact_panoptic,
    panoptic_collate,
    panoptic_from_masks,
    panoptic_from_segments_info,
    panoptic_from_semantic,
    panoptic_to_instances,
    panoptic_to_semantic,
    voc_panoptic,
)
from seglab.data.panoptic import SyntheticPanopticShapes
from seglab.transforms import train_transform


def _masks(*rows_per_mask: list[str]) -> torch.Tensor:
    return torch.tensor([[[c == "#" for c in row] for row in rows] for rows in rows_per_mask])


# --- the format ----------------------------------------------------------------------------------------------


def test_from_masks_to_semantic_and_instances_round_trip():
    masks = _masks(["##..", "##.."], ["..#.", "...."], ["....", "..##"])
    target = panoptic_from_masks(masks, torch.tensor([0, 2, 2]))
    assert isinstance(target, PanopticTarget) and target.segments.dtype == torch.int64
    assert target.segments.tolist() == [[1, 1, 2, 0], [1, 1, 3, 3]]  # the uncovered pixel is void (0)
    assert panoptic_to_semantic(target).tolist() == [[0, 0, 2, 255], [0, 0, 2, 2]]
    instances = panoptic_to_instances(target)
    assert instances["labels"].tolist() == [0, 2, 2] and torch.equal(instances["masks"], masks)
    things = panoptic_to_instances(target, things={2})
    assert things["labels"].tolist() == [2, 2] and torch.equal(things["masks"], masks[1:])
    batch = panoptic_to_semantic([target, target])
    assert batch.shape == (2, 2, 4) and batch.dtype == torch.int64


def test_from_masks_refuses_overlaps_empty_masks_and_too_many_segments():
    with pytest.raises(ValueError, match=r"masks 0 and 2 overlap \(1 pixels claimed twice, first at y=0, x=1\)"):
        panoptic_from_masks(_masks(["##."], ["..#"], [".#."]), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match=r"masks \[1\] are empty"):
        panoptic_from_masks(_masks(["#."], [".."]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="has 2 segments but the model has num_queries=1"):
        panoptic_from_masks(_masks(["#."], [".#"]), torch.tensor([1, 1]), num_queries=1)
    with pytest.raises(ValueError, match=r"labels \[5\] outside the 3 classes"):
        panoptic_from_masks(_masks(["#."]), torch.tensor([5]), num_classes=3)


def test_check_panoptic_errors_are_one_line():
    cases = [
        ((torch.tensor([[0, 3]]), torch.tensor([1, 1])), r"segment ids 0..3 outside \[0, 2\]"),
        ((torch.tensor([[0, 255]]), torch.tensor([1])), "build the transform with ignore_index=0"),
        ((torch.tensor([[0.0, 1.0]]), torch.tensor([1])), "must hold integer segments"),
        (torch.tensor([[0, 1]]), "must be a pair"),
    ]
    for target, match in cases:
        with pytest.raises(ValueError, match=match) as error:
            check_panoptic(target)
        assert "\n" not in str(error.value)


def test_from_segments_info_hugging_face_style():
    # HF's post_process_panoptic_segmentation: ids 1..M, 0 = no segment; its empty case is all -1
    segmentation = torch.tensor([[0, 2, 2], [1, 1, -1]], dtype=torch.int32)
    info = [{"id": 2, "label_id": 7, "was_fused": False, "score": 0.9}, {"id": 1, "label_id": 3}]
    target = panoptic_from_segments_info(segmentation, info)
    assert target.segments.tolist() == [[0, 1, 1], [2, 2, 0]] and target.labels.tolist() == [7, 3]
    coco = panoptic_from_segments_info(segmentation, [{"id": 1, "category_id": 5}], label_key="category_id")
    assert coco.segments.tolist() == [[0, 0, 0], [1, 1, 0]] and coco.labels.tolist() == [5]
    with pytest.raises(ValueError, match='with "id" and "label_id"'):
        panoptic_from_segments_info(segmentation, [{"id": 1}])


def test_compact_drops_empty_segments_and_renumbers():
    target = PanopticTarget(torch.tensor([[0, 3, 3], [1, 1, 0]]), torch.tensor([7, 8, 9]))
    compact = compact_panoptic(target)
    assert compact.segments.tolist() == [[0, 2, 2], [1, 1, 0]] and compact.labels.tolist() == [7, 9]


def test_from_semantic_stuff_once_things_by_component_and_connectivity():
    # class 1 = thing: two blobs touching at a corner; class 0 = stuff in two places; 255 = void
    semantic = np.array([[1, 1, 0, 0],
                         [1, 1, 0, 0],
                         [0, 0, 1, 255],
                         [0, 0, 0, 0]])  # fmt: skip
    four = panoptic_from_semantic(semantic, things={1})
    assert four.labels.tolist() == [0, 1, 1]  # stuff first, then the two 4-connected blobs
    assert four.segments.tolist() == [[2, 2, 1, 1], [2, 2, 1, 1], [1, 1, 3, 0], [1, 1, 1, 1]]
    eight = panoptic_from_semantic(semantic, things={1}, connectivity=8)
    assert eight.labels.tolist() == [0, 1] and (eight.segments[2, 2] == eight.segments[0, 0]).item()
    small = panoptic_from_semantic(semantic, things={1}, min_area=2)
    assert small.labels.tolist() == [0, 1] and small.segments[2, 2] == 0  # the 1-pixel blob became void
    np.testing.assert_array_equal(panoptic_to_semantic(four).numpy(), semantic)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        panoptic_from_semantic(semantic, things={1}, connectivity=6)


# --- synthetic shapes -----------------------------------------------------------------------------------------


def test_synthetic_panoptic_equals_synthetic_shapes_and_its_components():
    panoptic = SyntheticPanopticShapes("val", num_images=40, image_size=64, seed=3)
    plain = SyntheticShapes("val", num_images=40, image_size=64, seed=3)
    assert panoptic.things == {1, 2, 3} and panoptic.stuffs == {0} and panoptic.num_classes == 4
    for i in range(len(panoptic)):
        image, target = panoptic[i]
        plain_image, mask = plain[i]
        np.testing.assert_array_equal(image, plain_image)
        np.testing.assert_array_equal(panoptic_to_semantic(target).numpy(), mask)
        assert target.labels[0] == 0 and len(target.labels) == 1 + len(plain.describe(i)["shapes"])
        # an independent split into instances: the 8-connected components of the shapes
        components, count = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        assert count == len(target.labels) - 1
        for component in range(1, count + 1):
            ids = np.unique(target.segments.numpy()[components == component])
            assert len(ids) == 1 and (target.segments.numpy() == ids[0]).sum() == (components == component).sum()


def test_synthetic_panoptic_is_deterministic_and_splits_differ():
    a = SyntheticPanopticShapes("train", num_images=3, seed=5)
    b = SyntheticPanopticShapes("train", num_images=3, seed=5)
    for i in range(3):
        assert torch.equal(a[i][1].segments, b[i][1].segments) and torch.equal(a[i][1].labels, b[i][1].labels)
    assert not np.array_equal(a[0][0], SyntheticPanopticShapes("val", num_images=3, seed=5)[0][0])


def test_synthetic_panoptic_with_transform_pads_void_and_checks_num_queries():
    ds = SyntheticPanopticShapes("train", num_images=8, image_size=32, transform=train_transform(48, ignore_index=0))
    image, target = ds[0]
    assert image.shape == (3, 48, 48) and target.segments.shape == (48, 48)
    assert int(target.segments.max()) == len(target.labels)  # compacted: every listed segment has pixels
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=panoptic_collate)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 48, 48) and len(targets) == 4 and isinstance(targets[0], PanopticTarget)
    # the default preset pads masks with 255: refused, saying what to do
    bad = SyntheticPanopticShapes("train", num_images=8, image_size=32, transform=train_transform(64, scale=(1.0, 1.0)))
    with pytest.raises(ValueError, match="build the transform with ignore_index=0"):
        bad[0]
    crowded = next(i for i in range(50) if len(SyntheticShapes("train", 50).describe(i)["shapes"]) == 3)
    with pytest.raises(ValueError, match="has 4 segments but the model has num_queries=3"):
        SyntheticPanopticShapes("train", num_images=50, num_queries=3)[crowded]


# --- ISBI 2012 cells ---------------------------------------------------------------------------------------------


def test_isbi_cells_are_4_connected_components(isbi_root: Path):
    ds = ISBI2012Panoptic("val", isbi_root)
    plain = ISBI2012("val", isbi_root)
    assert len(ds) == 6 and ds.things == {1} and ds.stuffs == {0}
    image, target = ds[0]
    _, mask = plain[0]
    np.testing.assert_array_equal(panoptic_to_semantic(target).numpy(), mask)  # no void: every pixel has a segment
    assert target.labels[0] == 0 and (target.labels[1:] == 1).all()
    components, count = ndimage.label(mask == 1)  # scipy's default structure: 4-connectivity
    assert count == len(target.labels) - 1 and 80 < count < 200
    cells = target.segments.numpy()
    pairs = np.unique(np.stack([components[mask == 1], cells[mask == 1]]), axis=1)
    assert pairs.shape[1] == count  # the components and the cell segments are the same partition
    assert len(ISBI2012Panoptic("val", isbi_root, min_area=50)[0][1].labels) < len(target.labels)


# --- VOC SegmentationObject ------------------------------------------------------------------------------------


def test_voc_panoptic_on_the_genuine_subset(shared_data: Path):
    root = shared_data / "voc-samples"
    if not (root / "VOCdevkit" / "VOC2012" / "SegmentationObject").is_dir():
        pytest.skip(f"no VOC SegmentationObject folder under {root}")
    ds = VOCPanoptic("train", root)
    assert [Path(jpg).stem for jpg, _ in ds.base.samples] == ["2007_000063"]  # the one instance mask there
    image, target = ds[0]
    assert target.labels.tolist() == [0, 12, 9]  # background, then objects 1 (dog) and 2 (chair)
    objects = np.array(Image.open(root / "VOCdevkit/VOC2012/SegmentationObject/2007_000063.png"))
    classes = np.array(Image.open(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000063.png"))
    np.testing.assert_array_equal(panoptic_to_semantic(target).numpy(), classes)
    np.testing.assert_array_equal(target.segments.numpy() == 0, objects == 255)
    with pytest.raises(FileNotFoundError, match="no image has an instance mask"):
        VOCPanoptic("val", root)


def _save_palette(path: Path, values: np.ndarray) -> None:
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    image.putpalette(voc_colormap().flatten().tolist())
    image.save(path)


def test_voc_panoptic_on_a_tree_with_some_object_masks(tmp_path: Path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    classes = np.zeros((6, 8), dtype=np.uint8)
    classes[1:3, 1:3], classes[1:4, 5:7], classes[3, 1:3] = 15, 15, 255  # two people, a border
    objects = np.zeros_like(classes)
    objects[1:3, 1:3], objects[1:4, 5:7], objects[3, 1:3] = 1, 2, 255
    for image_id in ("a", "b"):
        Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        _save_palette(voc / "SegmentationClass" / f"{image_id}.png", classes)
    _save_palette(voc / "SegmentationObject" / "b.png", objects)  # only b has instances
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    ds = VOCPanoptic("train", tmp_path)
    assert len(ds) == 1
    _, target = ds[0]
    assert target.labels.tolist() == [0, 15, 15]
    instances = panoptic_to_instances(target, things=ds.things)
    assert instances["masks"].sum((1, 2)).tolist() == [4, 6]
    # files that do not belong together
    with pytest.raises(ValueError, match="object 1 covers classes"):
        voc_panoptic(np.where(objects == 1, 0, classes), objects)
    with pytest.raises(ValueError, match="belong to no object"):
        voc_panoptic(classes, np.where(objects == 2, 0, objects))
