"""tools/set_repository.py: one repository URL, written into every notebook's Colab badge and install cell."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("set_repository", ROOT / "tools" / "set_repository.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


@pytest.fixture()
def copy(tmp_path):
    """The repository's pyproject.toml and every notebook, copied to a scratch root."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def _notebooks(root):
    return sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("notebooks/solutions/*.ipynb"))


def test_every_notebook_and_pyproject_point_at_the_one_url(copy):
    assert tool.main(["https://github.com/my-course/seglab-fork", "--root", str(copy)]) == 0
    assert tool.declared_repository(copy) == "https://github.com/my-course/seglab-fork"
    notebooks = _notebooks(copy)
    assert len(notebooks) >= 26
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(copy).as_posix()
        title = next(c for c in nb.cells if c.cell_type == "markdown")
        assert title.source.startswith("#")
        badges = re.findall(r"colab\.research\.google\.com/github/([^)]*)\)", title.source)
        assert badges == [f"my-course/seglab-fork/blob/main/{rel}"], rel
        installs = [c.source for c in nb.cells if c.cell_type == "code" and "%pip install" in c.source]
        assert installs and all('git+https://github.com/my-course/seglab-fork.git@main"' in s for s in installs), rel
        text = path.read_text()
        assert "github.com/seglab/seglab" not in text, f"{rel}: the old placeholder URL is still there"
    # The table is valid TOML and sits in [project.urls].
    import tomllib
    assert tomllib.loads((copy / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == \
        "https://github.com/my-course/seglab-fork"


def test_idempotent_and_check_mode(copy, capsys):
    url = "https://github.com/o/r.git"
    assert tool.main([url, "--branch", "fall-2027", "--root", str(copy)]) == 0
    before = {p: p.read_bytes() for p in _notebooks(copy)}
    assert tool.main(["--check", "--branch", "fall-2027", "--root", str(copy)]) == 0  # the declared URL, unchanged
    assert tool.main([url, "--branch", "fall-2027", "--root", str(copy)]) == 0
    assert {p: p.read_bytes() for p in _notebooks(copy)} == before
    assert "0 file(s)" in capsys.readouterr().out
    # A different branch drifts from every notebook: --check says so and writes nothing.
    assert tool.main(["--check", "--root", str(copy)]) == 1
    assert {p: p.read_bytes() for p in _notebooks(copy)} == before


@pytest.mark.parametrize("url", ["http://github.com/o/r", "https://gitlab.com/o/r", "https://github.com/o",
                                 "https://github.com/o/r/tree/main", "github.com/o/r", "https://github.com/o/.."])
def test_bad_url_is_one_line_error_and_writes_nothing(copy, capsys, url):
    before = {p: p.read_bytes() for p in [copy / "pyproject.toml", *_notebooks(copy)]}
    assert tool.main([url, "--root", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "https://github.com/OWNER/REPO" in err
    assert {p: p.read_bytes() for p in before} == before


def test_bad_branch_and_missing_install_cell(copy, capsys):
    assert tool.main(["https://github.com/o/r", "--branch", "a b", "--root", str(copy)]) == 2
    assert "--branch" in capsys.readouterr().err
    victim = copy / "notebooks" / "02_metrics_and_losses.ipynb"
    nb = nbformat.read(victim, as_version=4)
    nb.cells = [c for c in nb.cells if "%pip install" not in c.source]
    nbformat.write(nb, victim)
    pyproject = (copy / "pyproject.toml").read_bytes()
    assert tool.main(["https://github.com/o/r", "--root", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "02_metrics_and_losses.ipynb: no install cell" in err
    assert (copy / "pyproject.toml").read_bytes() == pyproject  # nothing written when one file cannot be done


def test_no_declared_url_is_a_clear_error(copy, capsys):
    if tool.declared_repository(copy) is not None:
        (copy / "pyproject.toml").write_text(tool.URLS_RE.sub("", (copy / "pyproject.toml").read_text()))
    assert tool.main(["--root", str(copy)]) == 2
    assert "declares no [project.urls] Repository" in capsys.readouterr().err
