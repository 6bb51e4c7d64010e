"""Point the workbook at its repository: one URL, written everywhere a learner's click or install reads it.

The URL lives in one place, ``[project.urls] Repository`` in ``pyproject.toml``. This tool writes it there and
derives from it, in every notebook (solutions included):

* the "Open in Colab" badge under the notebook's title
  (``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/notebooks/NAME.ipynb``);
* the install cell's ``%pip install -q "seglab @ git+https://github.com/OWNER/REPO.git@BRANCH"``.

A course that teaches from its own fork runs it once with the fork's URL::

    python tools/set_repository.py https://github.com/my-course/seglab            # branch main
    python tools/set_repository.py https://github.com/my-course/seglab --branch fall-2027
    python tools/set_repository.py --check                                         # exit 1 where anything drifted

Only GitHub URLs are accepted: Colab opens notebooks from GitHub by that address form. Nothing is written
until every file has been read and rewritten in memory, and each file is replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
URL_RE = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<repo>[A-Za-z0-9._-]{1,100}?)(?:\.git)?/?$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
INSTALL_RE = re.compile(r'%pip install -q "seglab @ git\+[^"]*"')
URLS_RE = re.compile(r"^\[project\.urls\]\n(?:[^\[\n].*\n)*", re.M)

__all__ = ["parse_repository", "badge", "install_line", "rewrite_notebook", "rewrite_pyproject", "main"]


def parse_repository(url: str) -> tuple[str, str]:
    """``https://github.com/OWNER/REPO`` → ``(OWNER, REPO)``; ``ValueError`` naming the expected form otherwise."""
    match = URL_RE.match(url.strip())
    if not match or match["repo"] in (".", ".."):
        raise ValueError(f"repository URL must look like https://github.com/OWNER/REPO, got {url!r}")
    return match["owner"], match["repo"]


def badge(owner: str, repo: str, branch: str, notebook: str) -> str:
    """The Markdown "Open in Colab" badge for ``notebook`` (a path relative to the repository root)."""
    return f"[![Open In Colab]({BADGE_IMG})](https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{notebook})"


def install_line(owner: str, repo: str, branch: str) -> str:
    """The install cell's pip line: the package straight from the repository's branch."""
    return f'%pip install -q "seglab @ git+https://github.com/{owner}/{repo}.git@{branch}"'


def rewrite_notebook(nb: nbformat.NotebookNode, owner: str, repo: str, branch: str, relpath: str) -> None:
    """Set the badge (second line of the title cell) and the install line, in place.

    Raises ``ValueError`` when the notebook has no Markdown title cell or no install cell (``%pip install``
    inside ``except ImportError``): the tool never guesses where they should go.
    """
    title = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if title is None or not title.source.lstrip().startswith("#"):
        raise ValueError(f"{relpath}: the first Markdown cell is not a title ('# ...')")
    mark = badge(owner, repo, branch, relpath)
    if BADGE_RE.search(title.source):
        title.source = BADGE_RE.sub(lambda _: mark, title.source, count=1)
    else:
        head, _, rest = title.source.partition("\n")
        title.source = f"{head}\n\n{mark}\n{rest}" if rest else f"{head}\n\n{mark}"
    installs = [c for c in nb.cells if c.cell_type == "code" and INSTALL_RE.search(c.source)]
    if not installs:
        raise ValueError(f"{relpath}: no install cell (%pip install -q \"seglab @ git+...\")")
    for cell in installs:
        cell.source = INSTALL_RE.sub(lambda _: install_line(owner, repo, branch), cell.source)


def rewrite_pyproject(text: str, url: str) -> str:
    """``pyproject.toml``'s text with ``[project.urls] Repository = url`` (the table added or replaced)."""
    table = f'[project.urls]\nRepository = "{url}"\n'
    if URLS_RE.search(text):
        return URLS_RE.sub(lambda _: table, text, count=1)
    anchor = text.find("\n[project.optional-dependencies]")
    if anchor < 0:
        raise ValueError("pyproject.toml has no [project.optional-dependencies] table to place [project.urls] before")
    return text[: anchor + 1] + table + "\n" + text[anchor + 1:]


def declared_repository(root: Path) -> str | None:
    """The ``Repository`` URL ``pyproject.toml`` declares, or ``None``."""
    match = re.search(r'^\[project\.urls\]\n(?:(?!\[).*\n)*?Repository = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    return match[1] if match else None


def _notebooks(root: Path) -> list[Path]:
    return sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("notebooks/solutions/*.ipynb"))


def _replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plan(root: Path, url: str, branch: str) -> dict[Path, str]:
    """Every file's new text (only those that change), computed before anything is written."""
    owner, repo = parse_repository(url)
    if not BRANCH_RE.match(branch) or ".." in branch:
        raise ValueError(f"--branch must be a plain git branch name, got {branch!r}")
    canonical = f"https://github.com/{owner}/{repo}"
    changes: dict[Path, str] = {}
    pyproject = root / "pyproject.toml"
    new = rewrite_pyproject(pyproject.read_text(), canonical)
    if new != pyproject.read_text():
        changes[pyproject] = new
    for path in _notebooks(root):
        old = path.read_text(encoding="utf-8")
        nb = nbformat.reads(old, as_version=4)
        rewrite_notebook(nb, owner, repo, branch, path.relative_to(root).as_posix())
        text = nbformat.writes(nb, version=4)
        text = text if text.endswith("\n") else text + "\n"
        if text != old:
            changes[path] = text
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="https://github.com/OWNER/REPO (default: the one pyproject.toml declares)")
    parser.add_argument("--branch", default="main", help="the branch Colab opens and pip installs from (default main)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file differs")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    url = args.url or declared_repository(args.root)
    if url is None:
        print("error: pyproject.toml declares no [project.urls] Repository; give the URL: "
              "python tools/set_repository.py https://github.com/OWNER/REPO", file=sys.stderr)
        return 2
    try:
        changes = plan(args.root, url, args.branch)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        for path in changes:
            print(f"differs from {url} ({args.branch}): {path.relative_to(args.root)}")
        return 1 if changes else 0
    for path, text in changes.items():
        _replace(path, text)
    print(f"{len(changes)} file(s) now point at {url} (branch {args.branch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
