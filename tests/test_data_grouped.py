"""seglab.data.grouped: merged label sets, checked against a hand-built source and against real CamVid masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.data import build_dataset
from seglab.data.base import SegmentationDataset
from seglab.data.grouped import CAMVID_GROUPS, GroupedClasses
from seglab.transforms import eval_transform


class _Tiny(SegmentationDataset):
    classes = ("a", "b", "c", "d")
    colors = ((1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4))

    def __init__(self, transform=None):
        super().__init__(split="train", root=None, transform=transform)

    def __len__(self):
        return 1

    def load(self, index):
        mask = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.int64)
        return np.zeros((2, 3, 3), np.uint8), mask, "tiny"


def test_relabels_by_hand():
    ds = GroupedClasses(_Tiny(), {"ab": ("a", "b"), "d": ("d",)})  # "c" is in no group: ignored
    image, mask = ds[0]
    np.testing.assert_array_equal(mask, [[0, 0, 255], [1, 255, 0]])
    assert ds.classes == ("ab", "d") and ds.num_classes == 2 and ds.colors == ((1, 1, 1), (4, 4, 4))


@pytest.mark.parametrize("groups, match", [({"x": ("z",)}, "not a class"), ({"x": ("a",), "y": ("a",)}, "in groups"),
                                           ({"x": ()}, "no class")])
def test_bad_groups(groups, match):
    with pytest.raises(ValueError, match=match):
        GroupedClasses(_Tiny(), groups)


def test_source_with_a_transform_is_refused():
    with pytest.raises(ValueError, match="without a transform"):
        GroupedClasses(_Tiny(transform=lambda image, mask: {"image": image, "mask": mask}), {"a": ("a",)})


def test_camvid_groups_on_real_masks():
    try:
        camvid = build_dataset("camvid", "val")
    except FileNotFoundError as error:
        pytest.skip(f"CamVid not available: {error}")
    grouped = GroupedClasses(camvid, CAMVID_GROUPS)
    assert sorted(c for members in CAMVID_GROUPS.values() for c in members) == sorted(camvid.classes)  # all 11, once
    for i in (0, 50, 100):
        source = camvid[i][1]
        mask = grouped[i][1]
        counts = np.bincount(source[source != 255], minlength=11)
        expected = [sum(counts[camvid.classes.index(c)] for c in members) for members in CAMVID_GROUPS.values()]
        assert np.bincount(mask[mask != 255], minlength=5).tolist() == expected
        assert np.array_equal(mask == 255, source == 255)
    with_transform = GroupedClasses(camvid, CAMVID_GROUPS, transform=eval_transform(pad_multiple=32, max_size=240))
    image, mask = with_transform[0]
    assert tuple(image.shape) == (3, 192, 256) and set(mask.unique().tolist()) <= {0, 1, 2, 3, 4, 255}


def test_the_engine_trains_on_grouped_classes(tmp_path):
    # build_dataset(..., groups=) wraps the dataset in GroupedClasses before the transform, so TrainConfig's
    # dataset_kwargs carry a grouping into the engine's loaders, num_classes and class names
    from seglab.engine import TrainConfig, prepare, train_steps

    groups = {"background": ("background",), "shapes": ("circle", "square", "triangle")}
    grouped = build_dataset("synthetic", "val", groups=groups, num_images=4)
    plain = build_dataset("synthetic", "val", num_images=4)
    for i in range(4):
        np.testing.assert_array_equal(grouped[i][1], np.where(plain[i][1] == 255, 255, np.minimum(plain[i][1], 1)))
    config = TrainConfig(model="unet", base_channels=4, dataset="synthetic", dataset_kwargs={"groups": groups},
                         crop_size=32, batch_size=2, device="cpu", num_workers=0, progress=False, verbose=False,
                         out=str(tmp_path / "run"))
    state = prepare(config, total_steps=1)
    assert state.num_classes == 2 and state.classes == ["background", "shapes"]
    assert state.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    assert train_steps(state, 1)["step"] == 1
