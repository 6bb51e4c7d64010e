"""seglab/__init__.py: the package map in its docstring is true, and importing seglab stays light."""

from __future__ import annotations

import importlib.util
import pkgutil
import re
import subprocess
import sys

import seglab


def _mapped() -> list[str]:
    """The names the map lists: lines ``- ``seglab.<name>`` ...``."""
    return re.findall(r"^- ``seglab\.([a-z_]+)``", seglab.__doc__, flags=re.MULTILINE)


def test_map_lists_every_top_level_module_and_subpackage_once():
    listed = _mapped()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(n for n in listed if listed.count(n) > 1)}"
    present = {m.name for m in pkgutil.iter_modules(seglab.__path__)} - {"__main__"}
    assert set(listed) == present, (f"in the tree but not in the map: {sorted(present - set(listed))}; "
                                    f"in the map but not in the tree: {sorted(set(listed) - present)}")
    for name in listed:
        assert importlib.util.find_spec(f"seglab.{name}") is not None, name


def test_map_counts_every_model():
    from seglab.models import list_models

    counted = re.search(r"``build_model`` over (\d+) models", seglab.__doc__)
    assert counted and int(counted.group(1)) == len(list_models())


def test_import_seglab_runs_nothing_heavy():
    code = "import sys, seglab; heavy = [m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules]; " \
           "assert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], check=True)
