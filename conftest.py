"""Root pytest configuration: the notebooks run in FAST mode under pytest (nbval inherits this env), on a fresh
clone's data path."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("SEGLAB_FAST", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# A relative SEGLAB_DATA (e.g. ../shared/data) means relative to where pytest was started; notebooks
# run with notebooks/ as their working directory, so hand them the absolute path.
if os.environ.get("SEGLAB_DATA") and not Path(os.environ["SEGLAB_DATA"]).is_absolute():
    os.environ["SEGLAB_DATA"] = str(Path(os.environ["SEGLAB_DATA"]).resolve())

# `pytest` runs two xdist workers (pyproject's addopts: -n 2 --dist loadfile) on a 2-core CPU: one math thread
# each, for the tests and for the notebook kernels they start (torch's threads collapse when oversubscribed).
def pytest_configure(config):
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER"):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        import sys

        if "torch" in sys.modules:  # imported before this hook ran: set its pool directly
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# Under pytest every notebook runs as on a fresh clone: SEGLAB_DATA is hidden from its kernel, so each notebook falls
# back to the synthetic shapes and every assert must hold there too. Real data is what the laptop and full-dry
# profiles run (.ci/run), so the smoke run need not repeat it. nbval starts a notebook's kernel (inheriting this
# process's environment) while it sets up the notebook's first cell.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    hidden = os.environ.pop("SEGLAB_DATA", None) if item.path.suffix == ".ipynb" else None
    try:
        yield
    finally:
        if hidden is not None:
            os.environ["SEGLAB_DATA"] = hidden
