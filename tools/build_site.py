"""Build the course site: a static HTML site of the executed notebooks, with the README as its landing page.

Usage::

    python tools/run_notebooks.py --profile laptop --save-dir _build/notebooks notebooks/*.ipynb notebooks/solutions/*.ipynb
    python tools/build_site.py --notebooks _build/notebooks --out _site     # then open _site/index.html

The site is Sphinx + MyST-NB + sphinx-book-theme (``pip install -e ".[site]"``; configuration in ``site/``):
the README as the landing page, one page per notebook in order (00 → 13), a Solutions section with a page
per solutions notebook, linked from the end of its notebook's page, math typeset by MathJax 3, a sidebar,
and full-text search. Everything a page loads is inside the site (no CDN), so it also works offline.

Nothing is executed here. ``--notebooks DIR`` holds already-executed copies of the notebooks, found by
file name anywhere under DIR (``tools/run_notebooks.py --save-dir`` writes them); every code cell of each
must have run, and none may hold an error. Every notebook of ``notebooks/`` and ``notebooks/solutions/``
must be there, unless ``--partial``, which builds the pages of those that are.

The site is built in a temporary folder beside ``--out`` and moved into place only when the build
succeeds. ``--out`` must be new, empty, or a site this tool built before (it holds ``.seglab-site``);
anything else is refused, never overwritten. Errors print as one line ``error: ...`` (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["MARKER", "build_site", "find_executed", "main", "stage_sources"]

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = ".seglab-site"
"""A file at the top of every site this tool builds: ``--out`` may be replaced only when it holds one."""

_CODE_OR_LINK = re.compile(
    r"(?P<code>```[\s\S]*?```|`[^`\n]*`)"  # fenced code and code spans: left alone
    r"|(?P<bang>!?)\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)"
    r"|(?P<tag><(?:img|a)\b[^>]*?\b(?:src|href)=\")(?P<url>[^\"]+)\"")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def _repository() -> tuple[str | None, str]:
    """``(repository URL from [project.urls] or None, version)`` read from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the backport (the site extra installs it there)
        import tomli as tomllib
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    urls = {key.lower(): value for key, value in project.get("urls", {}).items()}
    url = next((urls[k] for k in ("repository", "source", "source code", "homepage") if k in urls), None)
    return (url.rstrip("/") if url else None), project.get("version", "")


def _title(nb: dict, path: Path) -> str:
    """The notebook's first level-1 heading (its page title)."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            match = re.search(r"^# (.+)$", "".join(cell["source"]), re.MULTILINE)
            if match:
                return match.group(1).strip()
    raise ValueError(f"--notebooks: {path} has no '# title' heading in a markdown cell; a site page needs one")


def _short(title: str) -> str:
    """``"04 · Receptive fields: which pixels ..."`` -> ``"04 · Receptive fields"`` (the sidebar's entry)."""
    return re.split(r":\s| — | - ", title, maxsplit=1)[0].strip()


def find_executed(notebooks_dir: Path, *, partial: bool = False) -> dict[str, Path]:
    """Map each notebook of the repository (``"notebooks/NN_x.ipynb"``, ``"notebooks/solutions/..."``) to its
    executed copy under ``notebooks_dir``, found by file name.

    Raises:
        NotADirectoryError: ``notebooks_dir`` is not a folder.
        ValueError: a name found twice; a notebook missing (without ``partial``), or none at all.
    """
    if not notebooks_dir.is_dir():
        raise NotADirectoryError(f"--notebooks {notebooks_dir}: not a folder; give the folder of executed notebooks "
                                 "(python tools/run_notebooks.py --save-dir DIR ... writes one)")
    wanted = [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
              + sorted((REPO_ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))]
    by_name: dict[str, Path] = {}
    for path in sorted(notebooks_dir.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        if path.name in by_name:
            raise ValueError(f"--notebooks {notebooks_dir}: {path.name} found twice ({by_name[path.name]} and {path}); "
                             "keep one executed copy of each notebook")
        by_name[path.name] = path
    found = {rel: by_name[Path(rel).name] for rel in wanted if Path(rel).name in by_name}
    missing = [Path(rel).name for rel in wanted if rel not in found]
    if not found or (missing and not partial):
        raise ValueError(f"--notebooks {notebooks_dir}: {len(missing)} of {len(wanted)} notebooks missing "
                         f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); execute them into this folder "
                         "(python tools/run_notebooks.py --save-dir)"
                         + ("" if not found else ", or pass --partial to build the pages of the others"))
    return found


def _read_executed(path: Path) -> dict:
    """The notebook as JSON, checked: every code cell ran, and none raised."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--notebooks: {path} is not a readable notebook ({type(exc).__name__}: {exc})") from exc
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code" and "".join(c.get("source", "")).strip()]
    not_run = [i for i in code if cells[i].get("execution_count") is None]
    if not_run:
        raise ValueError(f"--notebooks: {path} was not executed ({len(not_run)} of {len(code)} code cells never ran, "
                         f"the first is cell {not_run[0]}); this tool executes nothing: run it with "
                         "python tools/run_notebooks.py --save-dir DIR and build from DIR")
    errors = [i for i, c in enumerate(cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        raise ValueError(f"--notebooks: {path} holds an error output in cell {errors[0]}; a page would show the "
                         "traceback: fix the notebook and execute it again")
    _title(nb, path)  # a page needs a title
    return nb


class _Rewriter:
    """Rewrites the links and images of one markdown text from a repository file for the staged site."""

    def __init__(self, source: str, pages: dict[str, str], staging: Path, repo_url: str | None) -> None:
        self.source, self.pages, self.staging, self.repo_url = source, pages, staging, repo_url
        self.staged_dir = Path(pages[source]).parent

    def _resolve(self, target: str) -> tuple[str, str]:
        """``(repository-relative path, "#fragment" or "")`` of a relative link; ValueError outside the repo or missing."""
        path, _, fragment = target.partition("#")
        full = (REPO_ROOT / Path(self.source).parent / path).resolve()
        if not full.is_relative_to(REPO_ROOT) or not full.exists():
            raise ValueError(f"{self.source}: the link {target!r} points at nothing in the repository; fix the link")
        return full.relative_to(REPO_ROOT).as_posix(), ("#" + fragment if fragment else "")

    def _relative(self, staged: str) -> str:
        return Path(os.path.relpath(staged, self.staged_dir)).as_posix()

    def image(self, url: str) -> str:
        if url.startswith("data:"):
            return url
        if _EXTERNAL.match(url):
            if url.split("?")[0].endswith("colab-badge.svg"):  # the "Open in Colab" badge: a local copy
                return self._relative("_static/colab-badge.svg")
            raise ValueError(f"{self.source}: the image {url} is on another host; the site must work offline: save it "
                             "in the repository and link it by a relative path")
        rel, _ = self._resolve(url)
        (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, self.staging / rel)  # staged pages keep the repository's layout
        return self._relative(rel)

    def link(self, url: str) -> str | None:
        """The new target, or None when the link must become plain text (a repository file, no repository URL)."""
        if _EXTERNAL.match(url) or url.startswith("#"):
            return url
        rel, fragment = self._resolve(url)
        if rel in self.pages:
            return self._relative(self.pages[rel]) + fragment
        if self.repo_url:
            kind = "tree" if (REPO_ROOT / rel).is_dir() else "blob"
            return f"{self.repo_url}/{kind}/main/{rel}{fragment}"
        return None

    def __call__(self, text: str) -> str:
        def one(match: re.Match) -> str:
            if match["code"]:
                return match["code"]
            if match["tag"]:
                new = self.image(match["url"]) if match["tag"].startswith("<img") else self.link(match["url"])
                return f'{match["tag"]}{new if new is not None else "#"}"'
            inner = _CODE_OR_LINK.sub(one, match["text"])  # a badge: an image inside a link
            if match["bang"]:
                return f'![{inner}]({self.image(match["target"])}{match["title"] or ""})'
            new = self.link(match["target"])
            return inner if new is None else f'[{inner}]({new}{match["title"] or ""})'

        return _CODE_OR_LINK.sub(one, text)


def _cross_link(rel: str, notebooks: dict[str, dict], titles: dict[str, str]) -> str | None:
    """The markdown added at the end of a page: a notebook's link to its solutions, or the way back."""
    name = Path(rel).name
    if "/solutions/" in rel:
        parent = f"notebooks/{name.replace('_solutions.ipynb', '.ipynb')}"
        return f"Back to the notebook: [{titles[parent]}](../{Path(parent).name})" if parent in notebooks else None
    solutions = f"notebooks/solutions/{name.replace('.ipynb', '_solutions.ipynb')}"
    return (":::{admonition} Solutions\n:class: seglab-solutions\nWorked solutions to this notebook's exercises: "
            f"[{titles[solutions]}](solutions/{Path(solutions).name})\n:::") if solutions in notebooks else None


def stage_sources(executed: dict[str, Path], staging: Path, notebooks: dict[str, dict] | None = None) -> dict:
    """Write the Sphinx source folder: site/'s configuration, index.md (the README and the toctrees), every
    executed notebook at its repository path (links rewritten, the solutions link added, widget state dropped),
    and the markdown files the README links. ``notebooks`` holds them already read (``rel -> JSON``), else they
    are read and checked here. Returns ``{"notebooks": [...], "solutions": [...], "other": [...]}``.

    Raises:
        ValueError: a notebook not executed or holding an error; a link to nothing; an image on another host.
    """
    repo_url, version = _repository()
    shutil.copytree(REPO_ROOT / "site", staging, dirs_exist_ok=True)
    (staging / "site.json").write_text(json.dumps({"version": version, "repository_url": repo_url}), encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    targets = {m["target"].partition("#")[0] for m in _CODE_OR_LINK.finditer(readme) if m["target"] and not m["bang"]}
    linked = sorted(t for t in targets if t.endswith(".md") and not _EXTERNAL.match(t) and (REPO_ROOT / t).is_file())
    pages = {"README.md": "index.md", **{rel: rel for rel in executed}, **{rel: rel for rel in linked}}
    notebooks = notebooks if notebooks is not None else {rel: _read_executed(p) for rel, p in executed.items()}
    titles = {rel: _title(nb, executed[rel]) for rel, nb in notebooks.items()}
    for rel, nb in notebooks.items():
        rewrite = _Rewriter(rel, pages, staging, repo_url)
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = rewrite("".join(cell["source"]))
        if (extra := _cross_link(rel, notebooks, titles)) is not None:
            nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": extra})
        nb.get("metadata", {}).pop("widgets", None)  # saved widget state: nothing can draw it without a kernel
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    for rel in linked:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        text = _Rewriter(rel, pages, staging, repo_url)((REPO_ROOT / rel).read_text(encoding="utf-8"))
        (staging / rel).write_text(text, encoding="utf-8")
    groups = {"notebooks": [r for r in executed if "/solutions/" not in r],
              "solutions": [r for r in executed if "/solutions/" in r], "other": linked}
    toctrees = "".join(
        f"\n\n```{{toctree}}\n:hidden:\n:caption: {caption}\n\n"
        + "".join(f"{_short(titles[r])} <{r.rsplit('.', 1)[0]}>\n" if r in titles else f"{r.rsplit('.', 1)[0]}\n"
                  for r in groups[key]) + "```"
        for caption, key in (("Notebooks", "notebooks"), ("Solutions", "solutions"), ("More", "other")) if groups[key])
    (staging / "index.md").write_text(_Rewriter("README.md", pages, staging, repo_url)(readme) + toctrees, encoding="utf-8")
    return groups


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _prepare_out(out: Path) -> None:
    """Refuse an ``--out`` that is not new, empty, or a site this tool built."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FileExistsError(f"--out {out}: exists and is not a folder; choose a new folder for the site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"--out {out}: a folder that holds files and no {MARKER} (not a site built by this tool); "
                              "choose a new or empty folder, or remove it yourself")


def build_site(notebooks_dir: Path, out: Path, *, partial: bool = False, quiet: bool = True) -> dict:
    """Build the site from executed notebooks into ``out`` (replaced only when the build succeeds).

    Returns:
        ``{"pages": number of HTML pages, "bytes": total size, "seconds": wall time, "notebooks": [...],
        "solutions": [...], "other": [...]}``.

    Raises:
        NotADirectoryError, FileExistsError, ValueError: bad ``--notebooks`` or ``--out`` (messages name the flag).
        ModuleNotFoundError: the site extra is not installed.
        RuntimeError: Sphinx reported a warning or an error (every warning fails the build).
    """
    start = time.perf_counter()
    out = out.absolute()
    _prepare_out(out)
    missing = [name for name in ("sphinx", "myst-nb", "sphinx-book-theme", "sphinx-mathjax-offline")
               if not _installed(name)]
    if missing:
        raise ModuleNotFoundError(f"the site needs {', '.join(missing)}: pip install -e '.[site]'")
    executed = find_executed(notebooks_dir, partial=partial)
    notebooks = {rel: _read_executed(path) for rel, path in executed.items()}  # every input checked before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as work:
        staging, html = Path(work) / "src", Path(work) / "html"
        groups = stage_sources(executed, staging, notebooks)
        # Sphinx in its own process: its logging, docutils state and deprecation warnings stay out of the caller
        args = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-d", str(Path(work) / "doctrees")]
        if subprocess.run(args + (["-q"] if quiet else []) + [str(staging), str(html)]).returncode != 0:
            raise RuntimeError("sphinx-build failed or warned (its messages are above); fix the source it names")
        (html / ".buildinfo").unlink(missing_ok=True)
        if (html / "_sources").is_dir() and not any((html / "_sources").iterdir()):
            (html / "_sources").rmdir()  # left empty by html_copy_source = False
        for source_map in (html / "_static").rglob("*.map"):  # the theme's source maps (3 MB), for its developers
            source_map.unlink()
        (html / MARKER).write_text("built by tools/build_site.py; --out may replace this folder\n", encoding="utf-8")
        if out.exists():
            out.rename(Path(work) / "previous")  # the site built before: removed with the temporary folder
        html.rename(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    pages = [p for p in files if p.suffix == ".html" and p.relative_to(out).parts[0] != "_static"]
    return {"pages": len(pages), "bytes": sum(p.stat().st_size for p in files),
            "seconds": round(time.perf_counter() - start, 1), **groups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("_build/notebooks"),
                        help="folder of executed notebooks, searched by file name (default _build/notebooks)")
    parser.add_argument("--out", type=Path, default=Path("_site"), help="the site's folder (default _site)")
    parser.add_argument("--partial", action="store_true", help="build the pages of the notebooks found, even if not all")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    args = parser.parse_args(argv)
    try:
        info = build_site(args.notebooks, args.out, partial=args.partial, quiet=not args.verbose)
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"site: {args.out}/index.html, {info['pages']} pages ({len(info['notebooks'])} notebooks, "
          f"{len(info['solutions'])} solutions), {info['bytes'] / 2**20:.1f} MiB, built in {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
