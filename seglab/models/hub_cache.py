"""Genuine ImageNet backbone weights in the torch hub cache: find them, check them, say what a run starts from.

A learner with internet has torchvision's ImageNet files in the torch hub cache
(``<torch.hub.get_dir()>/checkpoints/``, i.e. ``$TORCH_HOME/hub/checkpoints/``, by default
``~/.cache/torch/hub/checkpoints/``) once any torchvision model was built with ``weights=...``. A notebook
fine-tunes from them when they are there and *genuine*, and trains from scratch otherwise::

    weights = find_genuine_weights("resnet18")  # Path of resnet18-f37072fd.pth, or None
    print(describe_backbone_start("resnet18"))  # "fine-tuning from ImageNet weights ..." / "training from scratch: ..."
    config = TrainConfig(..., backbone="resnet18", weights_backbone=str(weights) if weights else None)

**Genuine** means torch hub's ``check_hash`` rule (``torch.hub.load_state_dict_from_url``): torchvision names
each published file ``<name>-<hash prefix>.<ext>``; the prefix is the first match of the regular expression
``-([a-f0-9]*)\\.`` searched in the file name (``torch.hub.HASH_REGEX``), and the file is accepted when the
hex SHA-256 of its bytes starts with it. Two departures, both stricter: torch applies the rule only while it
*downloads* (a file already in the cache is read as it is, unchecked), whereas this module checks the cached
file itself; and a name without a hash prefix, or with one shorter than 8 hex digits (the length torch hub
documents), counts as not genuine (torch would check nothing, or only those few digits). Random stand-ins written under torchvision's names
(``tools/fake_hub_cache.py``, for offline CI) fail the check, as does a truncated download.

The files looked for are those of the backbone's torchvision ImageNet-1K weights (``IMAGENET1K_V1``,
``IMAGENET1K_V2``, ...: e.g. ``resnet50-0676ba61.pth`` and ``resnet50-11ad3fa6.pth``), ``DEFAULT`` first.
Nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
import torchvision

__all__ = ["HASH_PATTERN", "describe_backbone_start", "find_genuine_weights", "hash_prefix", "imagenet_weights_files",
           "is_genuine"]

#: torch hub's pattern for the hash prefix in a weights file name (``torch.hub.HASH_REGEX``), used with ``search``.
HASH_PATTERN = re.compile(r"-([a-f0-9]*)\.")
_MIN_PREFIX = 8  # torch hub: "the first eight or more digits of the SHA256 hash of the contents of the file"
_CHUNK = 128 * 1024  # bytes read at a time (torch hub's READ_DATA_CHUNK)


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix written in ``file_name`` (``"resnet18-f37072fd.pth"`` -> ``"f37072fd"``), or None.

    The first match of ``HASH_PATTERN`` (as torch hub finds it); None when there is none, or when it has fewer
    than 8 hex digits (then nothing would be checked).
    """
    match = HASH_PATTERN.search(file_name)
    if match is None or len(match.group(1)) < _MIN_PREFIX:
        return None
    return match.group(1)


def _sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes (read in chunks; about a second per GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_genuine(path: str | Path) -> bool:
    """Whether the file at ``path`` passes torch hub's hash check: its SHA-256 starts with the prefix in its name.

    False for a missing file, a name without a prefix of 8 or more hex digits, or contents that do not match.
    """
    path = Path(path)
    prefix = hash_prefix(path.name)
    if prefix is None or not path.is_file():
        return False
    return _sha256(path)[: len(prefix)] == prefix


def imagenet_weights_files(backbone: str) -> dict[str, str]:
    """``{file name: "<Enum>.<member>"}`` of torchvision's ImageNet-1K weights for ``backbone``, ``DEFAULT`` first.

    E.g. ``imagenet_weights_files("resnet50") == {"resnet50-11ad3fa6.pth": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet50-0676ba61.pth": "ResNet50_Weights.IMAGENET1K_V1"}``. Only the ``IMAGENET1K_V<n>`` members: they
    hold the whole classifier (VGG16's ``IMAGENET1K_FEATURES`` leaves fc6/fc7 unset, so it does not count).

    Raises:
        ValueError: torchvision has no weights enum named for ``backbone`` (e.g. a typo), or no ImageNet-1K
            classification weights in it (e.g. an optical-flow model).
    """
    try:
        enum_class = torchvision.models.get_model_weights(backbone)
    except (KeyError, ValueError):
        raise ValueError(
            f"backbone={backbone!r} has no torchvision weights; use a torchvision classifier name such as "
            "'resnet18', 'resnet50' or 'vgg16' (seglab's backbones)"
        ) from None
    default = enum_class.DEFAULT if "DEFAULT" in enum_class.__members__ else None
    members = [m for m in enum_class if re.fullmatch(r"IMAGENET1K_V\d+", m.name)]
    if not members:
        raise ValueError(f"backbone={backbone!r} has no ImageNet-1K classification weights in torchvision "
                         f"({', '.join(enum_class.__members__)}); use a classifier such as 'resnet18' or 'vgg16'")
    members.sort(key=lambda member: member is not default)  # stable: DEFAULT first, then the enum's order
    return {member.url.rsplit("/", 1)[-1]: f"{enum_class.__name__}.{member.name}" for member in members}


def _checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_genuine_weights(backbone: str) -> Path | None:
    """The genuine torchvision ImageNet weights file for ``backbone`` in the torch hub cache, or None.

    Looks in ``<torch.hub.get_dir()>/checkpoints/`` for each file of ``imagenet_weights_files(backbone)``
    (``DEFAULT`` first) and returns the first that ``is_genuine``; files that fail the check are ignored (and
    neither changed nor deleted). The path can be given as ``TrainConfig(weights_backbone=str(path))`` or
    ``build_model(..., weights_backbone=path)``, which load it with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: torchvision has no weights for ``backbone``.
    """
    checkpoints = _checkpoints_dir()
    for name in imagenet_weights_files(backbone):
        if is_genuine(checkpoints / name):
            return checkpoints / name
    return None


def describe_backbone_start(backbone: str) -> str:
    """One line for a notebook's output: what a ``backbone`` run starts from, and why.

    ``"fine-tuning from ImageNet weights found in the hub cache: <path> (ResNet18_Weights.IMAGENET1K_V1,
    SHA-256 matches the f37072fd in its name)"``, or ``"training from scratch: no genuine ImageNet weights for
    resnet18 in <dir> ..."``, naming any file there that failed the check and how to download the real one.

    Raises:
        ValueError: torchvision has no weights for ``backbone``.
    """
    files = imagenet_weights_files(backbone)
    found = find_genuine_weights(backbone)
    if found is not None:
        return (f"fine-tuning from ImageNet weights found in the hub cache: {found} ({files[found.name]}, "
                f"SHA-256 matches the {hash_prefix(found.name)} in its name)")
    checkpoints = _checkpoints_dir()
    failed = [name for name in files if (checkpoints / name).is_file()]
    one = len(failed) == 1
    why = (f"; {', '.join(failed)} {'is' if one else 'are'} there but fail{'s' if one else ''} the hash check "
           f"(a stand-in or a damaged download), so {'it is' if one else 'they are'} ignored: delete "
           f"{'it' if one else 'them'} first") if failed else ""
    return (f"training from scratch: no genuine ImageNet weights for {backbone} in {checkpoints} "
            f"(looked for {', '.join(files)}){why}. With internet, `python -c \"import torchvision; "
            f"torchvision.models.get_model('{backbone}', weights='DEFAULT')\"` downloads them there (hash-checked)")
