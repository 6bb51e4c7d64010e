"""Where PASCAL VOC 2012 lives on disk: find the ``VOC2012`` folder, where to extract the tar, split lists.

Shared by the dataset (``seglab.data.voc``) and the downloader (``seglab.data.download``), so that
neither imports the other's internals and the two stay free of an import circle.
Standard library only: this module copies out alone.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_voc2012", "voc_extract_dir", "read_split_ids"]


def find_voc2012(root: str | os.PathLike) -> Path | None:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root``), or None.

    A folder counts when it has ``JPEGImages/`` and ``ImageSets/Segmentation/``.
    """
    root = Path(root)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    return None


def voc_extract_dir(root: str | os.PathLike) -> Path:
    """Folder to extract ``VOCtrainval_11-May-2012.tar`` into so that ``find_voc2012(root)`` finds it.

    The archive holds ``VOCdevkit/VOC2012/...``: a root named ``VOCdevkit`` gets its parent, a root
    ``.../VOCdevkit/VOC2012`` its grandparent, any other root is used as is.
    """
    root = Path(root)
    if root.name == "VOC2012" and root.parent.name == "VOCdevkit":
        return root.parent.parent
    if root.name == "VOCdevkit":
        return root.parent
    return root


def read_split_ids(path: Path) -> list[str]:
    """Image ids listed one per line in an ``ImageSets`` file (blank lines skipped)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
