"""Shared pytest fixtures.

Real datasets come from the folder named by ``SEGLAB_DATA`` (CI sets ``SEGLAB_DATA=../shared/data``);
when the variable is unset, ``../shared/data`` next to the repository is tried. A test that needs a
dataset that is not there is skipped with a reason naming the path it looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("SEGLAB_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding the real datasets (``camvid/``, ``isbi2012/``)."""
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"real data folder not found at {path}: set SEGLAB_DATA to the folder holding camvid/ and isbi2012/")
    return path


@pytest.fixture(scope="session")
def camvid_root(shared_data: Path) -> Path:
    path = shared_data / "camvid"
    if not (path / "train").is_dir():
        pytest.skip(f"CamVid not found at {path}")
    return path


@pytest.fixture(scope="session")
def isbi_root(shared_data: Path) -> Path:
    path = shared_data / "isbi2012"
    if not (path / "train" / "image").is_dir():
        pytest.skip(f"ISBI 2012 not found at {path}")
    return path


def _hypothesis_profile() -> None:
    from hypothesis import settings

    # CI runs the same examples every time (a red run can be reproduced); locally they vary.
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profile()
