"""Pretrained weights, offline: torchvision's whole-model weights into seglab's classes, ImageNet backbones.

No weights can be downloaded here. Each test saves a *randomly initialised* torchvision model's state dict
under torchvision's own file name in a temporary ``$TORCH_HOME/hub/checkpoints/`` and blocks the network, so
the real loading code (torch hub cache lookup, enum resolution, key conversion, strict loading) runs exactly
as it would with the published file. The oracle is torchvision itself: its builder, given the same weights
name, reads the same cached file, and both models must give the same logits. For ``seglab.models.hub_cache``
(which cached ImageNet files are genuine) the oracle is torch hub's own hash check, run on a file:// URL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision

from seglab.engine import TrainConfig
from seglab.engine.build import build_model_for
from seglab.models import (LRASPP, DeepLabV3, DilatedFCN, build_model, convert_torchvision_state_dict, list_pretrained,
                           load_backbone_weights)
from seglab.models import hub_cache
from seglab.models.hub_cache import (HASH_PATTERN, describe_backbone_start, find_genuine_weights, hash_prefix,
                                     imagenet_weights_files, is_genuine)
from seglab.models.pretrained import PRETRAINED, published_metrics, resolve_weights
from _helpers import randomize_batch_norm

COMBINATIONS = list(PRETRAINED)  # (model, backbone)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A torch hub cache in tmp_path (``.dir``); a download attempt is recorded in ``.calls`` and fails as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return SimpleNamespace(dir=checkpoints, calls=calls)


def cache_random_weights(checkpoints, model: str, backbone: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a random torchvision model (same keys and shapes as the published file) under its file name."""
    builder = PRETRAINED[(model, backbone)]
    member = torchvision.models.get_model_weights(builder).COCO_WITH_VOC_LABELS_V1
    torch.manual_seed(seed)
    aux = {} if model == "lraspp" else {"aux_loss": True}  # torchvision's published files hold the aux head
    reference = getattr(torchvision.models.segmentation, builder)(weights=None, weights_backbone=None, num_classes=21, **aux)
    state_dict = randomize_batch_norm(reference, seed).state_dict()
    torch.save(state_dict, checkpoints / member.url.rsplit("/", 1)[-1])
    return state_dict


@pytest.mark.slow
@pytest.mark.parametrize(("model", "backbone"), COMBINATIONS, ids=[f"{m}-{b}" for m, b in COMBINATIONS])
def test_whole_model_weights_give_torchvision_outputs(offline_hub, model, backbone):
    saved = cache_random_weights(offline_hub.dir, model, backbone)
    ours = build_model(model, 21, backbone=backbone, weights="COCO_WITH_VOC_LABELS_V1").eval()
    builder = getattr(torchvision.models.segmentation, PRETRAINED[(model, backbone)])
    reference = builder(weights="COCO_WITH_VOC_LABELS_V1").eval()  # torchvision reads the same cached file
    assert offline_hub.calls == []  # nothing was downloaded: both came from the cache

    assert isinstance(ours, {"deeplabv3": DeepLabV3, "fcn_dilated": DilatedFCN, "lraspp": LRASPP}[model])
    assert ours.output_stride == (16 if model == "lraspp" else 8)  # torchvision's setting for these weights
    converted = convert_torchvision_state_dict(saved, model)
    own = ours.state_dict()
    assert set(own) == set(converted)
    for key, value in own.items():  # every tensor landed where it belongs, bit for bit
        assert torch.equal(value, converted[key]), key

    x = torch.randn(1, 3, 75, 97, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        logits, aux = ours.forward_with_aux(x) if model != "lraspp" else (ours(x), None)
    difference = (logits - expected["out"]).abs().max().item()
    print(f"{model}/{backbone}: max |seglab - torchvision| = {difference:.3g}")
    assert torch.equal(logits, expected["out"])
    if aux is not None:
        assert torch.equal(aux, expected["aux"])
    assert logits.shape == (1, 21, 75, 97) and logits.std() > 0.1  # not a degenerate, constant output


def test_weights_from_a_file_and_without_aux_head(offline_hub, tmp_path):
    saved = cache_random_weights(offline_hub.dir, "deeplabv3", "resnet50", seed=3)
    path = tmp_path / "mine.pth"
    torch.save(saved, path)
    from_file = build_model("deeplabv3", 21, backbone="resnet50", weights=path, aux_loss=False).eval()
    from_cache = build_model("deeplabv3", 21, weights="DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1").eval()
    assert from_file.aux_classifier is None and from_cache.aux_classifier is not None
    assert not any(k.startswith("aux_classifier.") for k in from_file.state_dict())
    x = torch.randn(1, 3, 41, 57)
    with torch.no_grad():
        assert torch.equal(from_file(x), from_cache(x))
    # output stride 16 with the same weights (DeepLab's training stride): loads, different dilation, same keys
    os16 = build_model("deeplabv3", 21, weights="DEFAULT", output_stride=16)
    assert os16.output_stride == 16 and os16.backbone.dilations == {"layer3": 1, "layer4": 2}


def test_registry_and_published_figures():
    pairs = list_pretrained()
    assert set(pairs) == {("deeplabv3", "resnet50"), ("deeplabv3", "resnet101"), ("fcn_dilated", "resnet50"),
                          ("fcn_dilated", "resnet101"), ("lraspp", "mobilenet_v3_large")}
    assert all(names == ["COCO_WITH_VOC_LABELS_V1", "DEFAULT"] for names in pairs.values())
    # the figures torchvision publishes, read from its enum: COCO val2017 with VOC labels, not VOC val
    assert published_metrics("deeplabv3", "resnet50") == {"COCO-val2017-VOC-labels": {"miou": 66.4, "pixel_acc": 92.4}}
    assert published_metrics("fcn_dilated", "resnet101")["COCO-val2017-VOC-labels"]["miou"] == 63.7
    assert published_metrics("lraspp", "mobilenet_v3_large")["COCO-val2017-VOC-labels"]["miou"] == 57.9
    member = resolve_weights("deeplabv3", "resnet50", "DEFAULT")
    assert member is torchvision.models.segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
    assert member.url.endswith("/deeplabv3_resnet50_coco-cd0a2569.pth")


# ---------------------------------------------------------------- what bad input gets


def test_weights_for_a_combination_without_them_list_the_valid_ones():
    for model, backbone in [("deeplabv3plus", "resnet50"), ("deeplabv3", "resnet18"), ("unet", None)]:
        with pytest.raises(ValueError, match=r"no pretrained whole-model weights.*Valid: model='deeplabv3' "
                                             r"backbone='resnet50': COCO_WITH_VOC_LABELS_V1.*fcn_dilated.*resnet101"):
            build_model(model, 21, backbone=backbone, weights="COCO_WITH_VOC_LABELS_V1")
    with pytest.raises(ValueError, match=r"weights are for its dilated FCN: use model 'fcn_dilated'"):
        build_model("fcn8s", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")
    with pytest.raises(ValueError, match=r"'COCO_V2' is not a DeepLabV3_ResNet50_Weights member.*COCO_WITH_VOC_LABELS_V1"):
        build_model("deeplabv3", 21, weights="COCO_V2")
    with pytest.raises(ValueError, match=r"weights_backbone="):
        build_model("deeplabv3", 21, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"predict 21 classes.*use num_classes=21"):
        build_model("deeplabv3", 3, weights="COCO_WITH_VOC_LABELS_V1")
    with pytest.raises(ValueError, match="not both"):
        build_model("deeplabv3", 21, weights="DEFAULT", weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"\['atrous_rates'\] cannot be set"):
        build_model("deeplabv3", 21, weights="DEFAULT", atrous_rates=(1, 2, 3))
    with pytest.raises(ValueError, match=r"\['output_stride'\] cannot be set"):
        build_model("lraspp", 21, weights="DEFAULT", output_stride=8)


def test_offline_without_the_file_says_where_to_put_it(offline_hub):
    with pytest.raises(RuntimeError) as info:
        build_model("deeplabv3", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")
    message = str(info.value)
    assert "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth" in message
    assert "needs internet access" in message and str(offline_hub.dir) in message
    assert "weights='/path/to/deeplabv3_resnet50_coco-cd0a2569.pth'" in message


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x02not a pickle"], ids=["empty", "zip", "pickle"])
def test_corrupted_cached_file_is_named_with_delete_advice(offline_hub, content):
    cached = offline_hub.dir / "fcn_resnet50_coco-1167a1af.pth"
    cached.write_bytes(content)
    with pytest.raises(RuntimeError) as info:
        build_model("fcn_dilated", 21, backbone="resnet50", weights="COCO_WITH_VOC_LABELS_V1")
    message = str(info.value)
    assert f"the cached weights file {cached} is corrupt" in message and f"rm '{cached}'" in message
    assert cached.read_bytes() == content  # reported, never deleted or overwritten behind the user's back
    assert offline_hub.calls == []


def test_corrupted_cached_backbone_file_is_named_too(offline_hub):
    cached = offline_hub.dir / "resnet50-0676ba61.pth"
    cached.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=r"resnet50-0676ba61\.pth is corrupt.*Delete it"):
        build_model("deeplabv3", 21, backbone="resnet50", weights_backbone="IMAGENET1K_V1")


def test_wrong_file_for_the_model_is_explained(offline_hub, tmp_path):
    deeplab = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None).state_dict()
    with pytest.raises(ValueError, match=r"unexpected key 'classifier\.0\.convs.*fcn_resnet50/101 state dict"):
        convert_torchvision_state_dict(deeplab, "fcn_dilated")
    with pytest.raises(ValueError, match=r"no torchvision state dict converter for model 'unet'"):
        convert_torchvision_state_dict(deeplab, "unet")
    path = tmp_path / "fcn.pth"
    torch.save(cache_random_weights(offline_hub.dir, "fcn_dilated", "resnet50"), path)
    with pytest.raises(ValueError, match=rf"weights from {re.escape(str(path))} are not torchvision's "
                                         r"deeplabv3_resnet50: unexpected key 'classifier\.0\.weight'"):
        build_model("deeplabv3", 21, backbone="resnet50", weights=path)  # an FCN file given to DeepLab
    torch.save(cache_random_weights(offline_hub.dir, "deeplabv3", "resnet101"), path)
    with pytest.raises(RuntimeError, match=r"do not fit deeplabv3 on resnet50 with 21 classes \(expected torchvision's deeplabv3_resnet50 state dict\): "
                                           r"\d+ unexpected keys \(e\.g\. backbone\.layer3\.6\.conv1\.weight"):
        build_model("deeplabv3", 21, backbone="resnet50", weights=path)  # right model, wrong depth


# ---------------------------------------------------------------- ImageNet backbone weights from the hub cache


@pytest.mark.slow
def test_imagenet_backbone_weights_from_the_hub_cache(offline_hub):
    """``weights_backbone="IMAGENET1K_V1"`` offline: the file in the cache lands in the backbone, tensor by tensor."""
    torch.manual_seed(4)
    resnet = randomize_batch_norm(torchvision.models.resnet50(), seed=4)
    state_dict = resnet.state_dict()
    torch.save(state_dict, offline_hub.dir / "resnet50-0676ba61.pth")  # torchvision's ResNet50 IMAGENET1K_V1 file
    for name in ("deeplabv3", "deeplabv3plus", "fcn_dilated"):
        model = build_model(name, 21, backbone="resnet50", weights_backbone="IMAGENET1K_V1")
        own = model.backbone.state_dict()
        assert set(own) == {k for k in state_dict if not k.startswith("fc.")}
        assert all(torch.equal(v, state_dict[k]) for k, v in own.items())
    assert offline_hub.calls == []


# ---------------------------------------------------------------- the command line


def test_cli_evaluate_with_torchvision_weights(offline_hub, shared_data, monkeypatch, capsys, tmp_path):
    """``python -m seglab evaluate --weights NAME --model --backbone --dataset voc`` on the genuine VOC subset."""
    from seglab.cli import main

    if not (shared_data / "voc-samples" / "VOCdevkit").is_dir():
        pytest.skip(f"genuine VOC subset not found at {shared_data / 'voc-samples'}")
    monkeypatch.setenv("SEGLAB_DATA", str(shared_data))
    cache_random_weights(offline_hub.dir, "lraspp", "mobilenet_v3_large")  # the smallest model, for a fast test
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--weights", "COCO_WITH_VOC_LABELS_V1", "--model", "lraspp", "--backbone",
                 "mobilenet_v3_large", "--dataset", "voc", "--max-batches", "2", "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "published figures for these weights (COCO-val2017-VOC-labels, not VOC val; not measured by seglab): " \
           "miou 57.9, pixel_acc 91.2" in printed.out
    assert "lraspp/mobilenet_v3_large weights=COCO_WITH_VOC_LABELS_V1 on voc/val (30 images" in printed.out
    assert "voc-samples" in printed.out and "tvmonitor" in printed.out
    assert out.is_file() and len(__import__("json").loads(out.read_text())["iou_per_class"]) == 21

    code = main(["evaluate", "--weights", "COCO_WITH_VOC_LABELS_V1", "--model", "deeplabv3plus", "--dataset", "voc"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no pretrained whole-model weights for model='deeplabv3plus'")
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert main(["evaluate"]) == 2 and "needs a checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------- genuine ImageNet weights in the hub cache (notebooks)

_fake_spec = importlib.util.spec_from_file_location("fake_hub_cache", Path(__file__).parents[1] / "tools" / "fake_hub_cache.py")
fake_hub_cache = importlib.util.module_from_spec(_fake_spec)
_fake_spec.loader.exec_module(fake_hub_cache)


_DOWNLOAD = torch.hub.download_url_to_file  # the real one (offline_hub blocks it for the network)


def torch_hub_accepts(path: Path, tmp_path: Path) -> bool:
    """The oracle: torch hub's own check_hash, downloading ``path`` through a file:// URL under its own name."""
    destination = tmp_path / f"download-{len(list(tmp_path.glob('download-*')))}"
    try:
        with pytest.MonkeyPatch.context() as patch:  # a file:// URL reaches no network
            patch.setattr(torch.hub, "download_url_to_file", _DOWNLOAD)
            torch.hub.load_state_dict_from_url(path.as_uri(), model_dir=str(destination), check_hash=True,
                                               progress=False, weights_only=True)
    except RuntimeError as error:
        assert "invalid hash value" in str(error)
        return False
    return True


def save_with_own_hash(state_dict: dict, folder: Path, stem: str = "resnet18") -> Path:
    """Save ``state_dict`` and rename it ``<stem>-<first 8 hex digits of its SHA-256>.pth``: a genuine-looking file."""
    partial = folder / f"{stem}.partial"
    torch.save(state_dict, partial)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    return partial.rename(folder / f"{stem}-{digest[:8]}.pth")


def test_hash_rule_is_torch_hubs():
    assert HASH_PATTERN.pattern == torch.hub.HASH_REGEX.pattern  # the same pattern, searched the same way
    for name, expected in [("resnet18-f37072fd.pth", "f37072fd"), ("deeplabv3_resnet50_coco-cd0a2569.pth", "cd0a2569"),
                           ("vgg16_features-amdegroot-88682ab5.pth", "88682ab5"), ("mine.pth", None),
                           ("resnet18-f3707.pth", None), ("resnet18-F37072FD.pth", None)]:
        assert hash_prefix(name) == expected, name
        match = torch.hub.HASH_REGEX.search(name)
        if expected is not None:  # where ours finds a prefix, it is the one torch hub checks
            assert match.group(1) == expected
    # every file name torchvision publishes for seglab's backbones carries an 8-digit prefix
    for backbone in ("vgg16", "resnet18", "resnet34", "resnet50", "resnet101"):
        files = imagenet_weights_files(backbone)
        assert files and all(len(hash_prefix(name)) == 8 for name in files)
    resnet50 = torchvision.models.ResNet50_Weights
    assert list(imagenet_weights_files("resnet50").items()) == [  # DEFAULT (V2) first
        (resnet50.IMAGENET1K_V2.url.rsplit("/", 1)[-1], "ResNet50_Weights.IMAGENET1K_V2"),
        (resnet50.IMAGENET1K_V1.url.rsplit("/", 1)[-1], "ResNet50_Weights.IMAGENET1K_V1")]
    assert list(imagenet_weights_files("vgg16").values()) == ["VGG16_Weights.IMAGENET1K_V1"]  # not the features-only file
    with pytest.raises(ValueError, match=r"backbone='resnet19' has no torchvision weights.*'resnet18'"):
        find_genuine_weights("resnet19")
    with pytest.raises(ValueError, match=r"backbone='raft_small' has no ImageNet-1K classification weights.*C_T_V1"):
        describe_backbone_start("raft_small")  # torchvision has weights for it, but optical-flow ones


def test_fake_hub_cache_stand_ins_are_not_genuine(offline_hub, monkeypatch, tmp_path):
    """tools/fake_hub_cache.py's random stand-ins carry torchvision's names, so their hash cannot match."""
    monkeypatch.setattr(fake_hub_cache, "WEIGHTS", (("resnet18", "IMAGENET1K_V1"), ("resnet34", "IMAGENET1K_V1")))
    assert fake_hub_cache.main([str(offline_hub.dir.parents[1])]) == 0
    stand_in = offline_hub.dir / "resnet18-f37072fd.pth"
    assert stand_in.is_file() and (offline_hub.dir / "resnet34-b627a593.pth").is_file()
    assert not is_genuine(stand_in) and not torch_hub_accepts(stand_in, tmp_path)  # torch hub rejects it too
    assert find_genuine_weights("resnet18") is None and find_genuine_weights("resnet34") is None
    assert find_genuine_weights("resnet50") is None  # no file at all
    message = describe_backbone_start("resnet18")
    assert message.startswith(f"training from scratch: no genuine ImageNet weights for resnet18 in {offline_hub.dir} ")
    assert "resnet18-f37072fd.pth is there but fails the hash check" in message and "delete it first" in message
    assert "weights='DEFAULT'" in message
    assert "is there" not in describe_backbone_start("resnet50")
    # the stand-ins still load as weights (the full-dry runs read them): only the genuineness check tells them apart
    assert set(load_backbone_weights("resnet18", "IMAGENET1K_V1")) == set(torchvision.models.resnet18().state_dict())
    assert offline_hub.calls == []


def test_a_file_named_with_its_own_hash_is_genuine(offline_hub, monkeypatch, tmp_path):
    torch.manual_seed(5)
    state_dict = randomize_batch_norm(torchvision.models.resnet18(), seed=5).state_dict()
    genuine = save_with_own_hash(state_dict, offline_hub.dir)
    assert is_genuine(genuine) and torch_hub_accepts(genuine, tmp_path)  # the oracle agrees
    # found under a name torchvision would publish (the real names' hashes cannot be forged, so the list is patched)
    monkeypatch.setattr(hub_cache, "imagenet_weights_files", lambda backbone: {genuine.name: "ResNet18_Weights.TEST"})
    assert find_genuine_weights("resnet18") == genuine
    message = describe_backbone_start("resnet18")
    assert message == (f"fine-tuning from ImageNet weights found in the hub cache: {genuine} (ResNet18_Weights.TEST, "
                       f"SHA-256 matches the {genuine.name[9:17]} in its name)")
    # the path goes into TrainConfig.weights_backbone, and the engine's model starts from exactly those tensors
    config = TrainConfig(model="fcn32s", backbone="resnet18", weights_backbone=str(find_genuine_weights("resnet18")))
    backbone = build_model_for(config, 4).backbone.state_dict()
    assert backbone and all(torch.equal(value, state_dict[key]) for key, value in backbone.items())

    damaged = genuine.with_name("resnet18-00000000.pth")  # a byte changed: same name rule, wrong contents
    data = bytearray(genuine.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    genuine.rename(genuine.with_name("elsewhere.pth"))
    damaged.rename(genuine)
    assert not is_genuine(genuine) and not torch_hub_accepts(genuine, tmp_path)
    assert find_genuine_weights("resnet18") is None
    assert describe_backbone_start("resnet18").startswith("training from scratch")
    assert offline_hub.calls == []
