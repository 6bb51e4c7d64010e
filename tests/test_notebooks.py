"""The notebooks as files: normalised, checked cells present, exercises with solutions, house rules.

nbval (run by the same ``pytest`` command) executes every notebook and compares the cells marked
``# NBVAL_CHECK_OUTPUT`` with their stored outputs. This file checks what nbval cannot see:

- a committed notebook is exactly what ``tools/normalize_notebooks.py`` produces from it, so it stores
  outputs only on checked cells. Together with nbval's comparison of those cells this means that
  re-executing and normalising a notebook reproduces the committed file;
- checked cells really have stored outputs and an execution count (nbval silently skips them
  otherwise);
- each notebook has exercises and a solutions notebook, the Colab install cell, the run profile,
  and no ``%run`` or star imports (nothing is shared between notebooks except through seglab).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((REPO / "notebooks" / "solutions").glob("*.ipynb"))
ALL = NOTEBOOKS + SOLUTIONS

_spec = importlib.util.spec_from_file_location("normalize_notebooks", REPO / "tools" / "normalize_notebooks.py")
normalize_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(normalize_notebooks)


def _ids(paths):
    return [str(p.relative_to(REPO / "notebooks")) for p in paths]


def test_the_sequence_is_complete():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(14)], numbers  # 00 setup ... 11 transformers, 12 landscape, 13 universal


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_notebook_is_normalised(path):
    text = path.read_text()
    nb = nbformat.reads(text, as_version=4)
    assert normalize_notebooks.dumps(normalize_notebooks.normalize(nb)) == text, (
        f"{path.name} is not normalised: run python tools/normalize_notebooks.py --execute {path.relative_to(REPO)}"
    )


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_checked_cells_have_outputs_and_counts(path):
    nb = nbformat.read(path, as_version=4)
    checked = [c for c in nb.cells if normalize_notebooks.is_checked(c)]
    if path in NOTEBOOKS:
        assert len(checked) >= 2, f"{path.name}: fewer than 2 '# NBVAL_CHECK_OUTPUT' cells"
    for cell in checked:
        assert cell.execution_count is not None and cell.outputs, (
            f"{path.name}: checked cell without stored output (nbval would skip it):\n{cell.source[:200]}"
        )
    for cell in nb.cells:
        if cell.cell_type == "code" and not normalize_notebooks.is_checked(cell):
            assert not cell.outputs, f"{path.name}: unchecked cell stores output"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_house_rules(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "%run" not in code, f"{path.name}: %run shares code between notebooks; put it in seglab"
    assert not re.search(r"^\s*from\s+\S+\s+import\s+\*", code, re.M), f"{path.name}: star import"
    assert "PROFILE = select_profile()" in code, f"{path.name}: no run profile (seglab.profiles.select_profile)"
    assert "except ImportError" in code and "%pip install" in code, f"{path.name}: no Colab install cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_exercises_and_solutions(path):
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"^#+\s*Exercises", markdown, re.M), f"{path.name}: no Exercises section"
    solution = REPO / "notebooks" / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solution.is_file(), f"missing {solution.relative_to(REPO)}"
    claims = sum(c.source.count("assert ") for c in nb.cells if c.cell_type == "code")
    assert claims >= 3, f"{path.name}: only {claims} asserts; every claim should be checked"


# A 16-bit autocast dtype written into a notebook: `AMP_DTYPE = torch.bfloat16 ...`, `amp_dtype=torch.float16`.
_FORCED_PRECISION = re.compile(r"\b(amp_dtype|AMP_DTYPE)\s*=\s*torch\.(bfloat16|float16|half)\b")


def _trains(code: str) -> bool:
    return bool(re.search(r"\btrain_one_epoch\(|\bfit\(|\btrain_steps\(", code))


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_precision_is_the_engines_choice(path):
    # Emulated bf16 on a CPU without a native bf16 path made a training step 14-20x slower (issue 18): the
    # precision comes from seglab.engine.resolve_amp_dtype("auto", device), never from the notebook.
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            match = _FORCED_PRECISION.search(cell.source)
            assert match is None, f"{path.name}: `{match.group(0)}` forces the precision; use resolve_amp_dtype('auto', device)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_training_notebooks_say_which_cpu_they_found(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    if not _trains("\n".join(code)):
        return
    setup = next(source for source in code if "PROFILE = select_profile()" in source)
    assert re.search(r"print\(.*cpu_has_fast_bf16\(\)", setup, re.S), (
        f"{path.name} trains, but its setup cell does not print whether the CPU has native bf16 (cpu_has_fast_bf16())"
    )


def test_pytest_runs_the_notebooks_without_data(tmp_path):
    # the fresh-clone path (no SEGLAB_DATA: the synthetic shapes) is what nbval runs, so its asserts cannot rot:
    # the root conftest hides SEGLAB_DATA from each notebook's kernel, and CI does not run the smoke notebooks twice
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('import os\nassert "SEGLAB_DATA" not in os.environ, os.environ["SEGLAB_DATA"]')]
    nbformat.write(nb, tmp_path / "probe.ipynb")
    (tmp_path / "test_probe.py").write_text("import os\n\ndef test_tests_still_see_it():\n"
                                            "    assert os.environ['SEGLAB_DATA'] == '/somewhere'\n")
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    env = {**os.environ, "SEGLAB_DATA": "/somewhere"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval-lax",
                           "--nbval-current-env", "-q", "test_probe.py", "probe.ipynb"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr
    assert "pytest notebooks" not in (REPO / ".ci" / "run").read_text()


def _run_notebooks_tool():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "tools" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_notebooks_save_dir_never_overwrites(tmp_path, capsys):
    tool = _run_notebooks_tool()
    notebook = tmp_path / "nb" / "00_x.ipynb"
    notebook.parent.mkdir()
    notebook.write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "00_x.ipynb").write_text("a user's file")
    cases = {  # --save-dir -> what the one-line error must name
        tmp_path / "missing": "is not an existing folder",
        notebook.parent: "holds the notebooks themselves",
        tmp_path / "out": "00_x.ipynb would be overwritten",
    }
    for save_dir, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            tool.main(["--save-dir", str(save_dir), str(notebook)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "out" / "00_x.ipynb").read_text() == "a user's file" and notebook.read_text() == "{}"
