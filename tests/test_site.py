"""tools/build_site.py: the course site, checked in a real browser (Debian's Chromium driven by Playwright).

The browser tests build the site from executed notebooks into a temporary folder, serve it on 127.0.0.1,
and visit every page once (each test then reads what that visit recorded):

- every page loads with no console error, no failed request, and no request to any other host (each is
  aborted and recorded: the site must work offline);
- every ``<img>`` on every page has ``naturalWidth > 0``, the explorers' static PNGs included;
- every internal link answers HTTP 200, and every ``#fragment`` names an element of its page;
- the math is typeset by the site's own MathJax, without a TeX error;
- the sidebar lists the notebooks in order and the solutions; each notebook links its solutions page;
- the search box finds "receptive field" (the results list links the receptive-fields page).

Which notebooks: with ``SEGLAB_SITE_DIR`` set, the site already built there is tested (CI builds it from
every notebook executed in the laptop profile); otherwise notebooks 02 and 04 and their solutions are
executed here in the ``smoke`` profile (under a minute) and built with ``--partial``. Screenshots of
four pages go to ``SEGLAB_SITE_SCREENSHOTS`` (default: the test's temporary folder).

The checks of bad input (not executed, an error output, a missing notebook, a foreign ``--out``, an
image on another host, a dead link) need neither Sphinx nor a browser.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("SEGLAB_CHROMIUM", "/usr/bin/chromium"))
SMOKE_NOTEBOOKS = ("02_metrics_and_losses", "04_receptive_fields")

_spec = importlib.util.spec_from_file_location("build_site", REPO / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
sys.modules["build_site"] = build_site
_spec.loader.exec_module(build_site)



def browser_test(test):
    """Marks a test ``browser`` and ``slow``; skipped with the reason when Debian's Chromium is not there."""
    test = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")(test)
    return pytest.mark.browser(pytest.mark.slow(test))


# ----------------------------------------------------------------------------------------- bad input
def _fake_executed(folder: Path, name: str = "00_setup_and_data", *, markdown: str = "", outputs=None,
                   execution_count: int | None = 1) -> Path:
    """A small notebook under a repository notebook's name, as if executed."""
    nb = {"nbformat": 4, "nbformat_minor": 5, "cells": [
        {"id": "a", "cell_type": "markdown", "metadata": {}, "source": f"# {name[:2]} · A test page\n\n{markdown}"},
        {"id": "b", "cell_type": "code", "metadata": {}, "source": "1 + 1", "execution_count": execution_count,
         "outputs": outputs if outputs is not None else []},
    ], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                    "language_info": {"name": "python"}}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_refuses_a_notebook_that_was_not_executed(tmp_path):
    _fake_executed(tmp_path / "nb", execution_count=None)
    with pytest.raises(ValueError, match=r"00_setup_and_data\.ipynb was not executed \(1 of 1 code cells never ran"):
        build_site.build_site(tmp_path / "nb", tmp_path / "out", partial=True)
    assert not (tmp_path / "out").exists()


def test_refuses_a_notebook_holding_an_error(tmp_path):
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}
    _fake_executed(tmp_path / "nb", outputs=[error])
    with pytest.raises(ValueError, match="holds an error output in cell 1"):
        build_site.build_site(tmp_path / "nb", tmp_path / "out", partial=True)


def test_every_notebook_is_needed_unless_partial(tmp_path):
    total = len(list(REPO.glob("notebooks/[0-9][0-9]_*.ipynb")) + list(REPO.glob("notebooks/solutions/*_solutions.ipynb")))
    _fake_executed(tmp_path / "nb")
    with pytest.raises(ValueError, match=rf"--notebooks .*: {total - 1} of {total} notebooks missing \(01_augmentation\.ipynb, .*--partial"):
        build_site.find_executed(tmp_path / "nb")
    assert list(build_site.find_executed(tmp_path / "nb", partial=True)) == ["notebooks/00_setup_and_data.ipynb"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"{total} of {total} notebooks missing .*--save-dir\)$"):
        build_site.find_executed(tmp_path / "empty", partial=True)
    with pytest.raises(NotADirectoryError, match="--notebooks .*nowhere: not a folder"):
        build_site.find_executed(tmp_path / "nowhere")


def test_a_notebook_found_twice_is_refused(tmp_path):
    _fake_executed(tmp_path / "nb")
    _fake_executed(tmp_path / "nb" / "again")
    with pytest.raises(ValueError, match="00_setup_and_data.ipynb found twice"):
        build_site.find_executed(tmp_path / "nb", partial=True)


def test_never_replaces_a_folder_it_did_not_build(tmp_path):
    _fake_executed(tmp_path / "nb")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"--out .*out: a folder that holds files and no \.seglab-site"):
        build_site.build_site(tmp_path / "nb", out, partial=True)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        build_site.build_site(tmp_path / "nb", tmp_path / "file", partial=True)
    (out / build_site.MARKER).write_text("")
    build_site._prepare_out(out)  # a site built before may be replaced


@pytest.mark.parametrize("markdown, message", [
    ("![a photo](https://example.org/photo.png)", "the image https://example.org/photo.png is on another host"),
    ("[the losses](../seglab/nothing_here.py)", "the link '../seglab/nothing_here.py' points at nothing"),
])
def test_bad_links_and_foreign_images_stop_the_build(tmp_path, markdown, message):
    pytest.importorskip("sphinx_book_theme", reason="the site extra is not installed (pip install -e '.[site]')")
    _fake_executed(tmp_path / "nb", markdown=markdown)
    with pytest.raises(ValueError, match=re.escape(message)):
        build_site.build_site(tmp_path / "nb", tmp_path / "out", partial=True)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nb"]  # the temporary build folder is gone too


@pytest.mark.slow  # two Sphinx builds
def test_a_rebuild_replaces_the_site_only_when_it_succeeds(tmp_path, capsys):
    pytest.importorskip("sphinx_book_theme", reason="the site extra is not installed (pip install -e '.[site]')")
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/o/r/blob/main/notebooks/00_setup_and_data.ipynb)")
    _fake_executed(tmp_path / "nb", markdown=f"{badge}\n\nThe mean $\\frac{{1}}{{K}}\\sum_c \\mathrm{{IoU}}_c$.")
    out = tmp_path / "site"
    assert build_site.main(["--notebooks", str(tmp_path / "nb"), "--out", str(out), "--partial"]) == 0
    assert capsys.readouterr().out.startswith(f"site: {out}/index.html, 5 pages (1 notebooks, 0 solutions)")  # + index, data, search, genindex
    page = (out / "notebooks" / "00_setup_and_data.html").read_text()
    assert "00 · A test page" in page and "mathjax/tex-chtml.js" in page and (out / "_static/mathjax/tex-chtml.js").is_file()
    badge_src = re.search(r'<img alt="Open In Colab" src="([^"]+)"', page)[1]  # the badge, served by the site itself
    assert not badge_src.startswith("http") and (out / "notebooks" / badge_src).resolve().is_file()
    (out / "stale.txt").write_text("from the previous build")
    _fake_executed(tmp_path / "nb", markdown="![a photo](https://example.org/photo.png)")
    assert build_site.main(["--notebooks", str(tmp_path / "nb"), "--out", str(out), "--partial"]) == 2
    assert (out / "stale.txt").is_file()  # a failed build leaves the previous site as it was
    _fake_executed(tmp_path / "nb")
    assert build_site.main(["--notebooks", str(tmp_path / "nb"), "--out", str(out), "--partial"]) == 0
    assert not (out / "stale.txt").exists() and (out / build_site.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb", "site"]  # no temporary folder left behind


def test_markdown_links_are_rewritten_for_the_site(tmp_path):
    pages = {"README.md": "index.md", "data/README.md": "data/README.md",
             "notebooks/04_receptive_fields.ipynb": "notebooks/04_receptive_fields.ipynb",
             "notebooks/solutions/04_receptive_fields_solutions.ipynb":
                 "notebooks/solutions/04_receptive_fields_solutions.ipynb"}
    rewrite = build_site._Rewriter("notebooks/solutions/04_receptive_fields_solutions.ipynb", pages, tmp_path, None)
    text = ("[the notebook](../04_receptive_fields.ipynb#the-rf) [home](../../README.md) `[x](nowhere.md)` "
            "[code](../../seglab/losses.py) [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            "(https://colab.research.google.com/github/o/r/blob/main/notebooks/04_receptive_fields.ipynb)")
    assert rewrite(text) == (
        "[the notebook](../04_receptive_fields.ipynb#the-rf) [home](../../index.md) `[x](nowhere.md)` "
        "code [![Open In Colab](../../_static/colab-badge.svg)]"
        "(https://colab.research.google.com/github/o/r/blob/main/notebooks/04_receptive_fields.ipynb)")
    html_badge = '<a href="https://colab.research.google.com/x"><img src="https://colab.research.google.com/assets/colab-badge.svg"/></a>'
    assert rewrite(html_badge) == html_badge.replace("https://colab.research.google.com/assets/", "../../_static/")
    with_repo = build_site._Rewriter("README.md", pages, tmp_path, "https://example.org/o/seglab")
    assert with_repo("[losses](seglab/losses.py) [engine](seglab/engine/)") == (
        "[losses](https://example.org/o/seglab/blob/main/seglab/losses.py) "
        "[engine](https://example.org/o/seglab/tree/main/seglab/engine)")


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert build_site.main(["--notebooks", str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --notebooks ") and err.count("\n") == 1


# -------------------------------------------------------------------------------- the site in a browser
def _execute_smoke(folder: Path) -> Path:
    """Execute the cheap notebooks and their solutions in the smoke profile into ``folder`` (one at a time)."""
    import nbformat
    from nbclient import NotebookClient

    names = [f"{n}.ipynb" for n in SMOKE_NOTEBOOKS] + [f"solutions/{n}_solutions.ipynb" for n in SMOKE_NOTEBOOKS]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEGLAB_PROFILE", "smoke")
        env.setenv("MPLBACKEND", "Agg")
        for name in names:
            source = REPO / "notebooks" / name
            nb = nbformat.read(source, as_version=4)
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": str(source.parent)}}).execute()
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / name)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: ``$SEGLAB_SITE_DIR``, else built here from notebooks executed in the smoke profile."""
    if os.environ.get("SEGLAB_SITE_DIR"):
        path = Path(os.environ["SEGLAB_SITE_DIR"])
        assert (path / build_site.MARKER).is_file(), f"SEGLAB_SITE_DIR={path} is not a site built by tools/build_site.py"
        return path
    pytest.importorskip("sphinx_book_theme", reason="the site extra is not installed (pip install -e '.[site]')")
    executed = _execute_smoke(tmp_path_factory.mktemp("executed"))
    out = tmp_path_factory.mktemp("site") / "_site"
    info = build_site.build_site(executed, out, partial=True)
    print(f"site built in {info['seconds']} s: {info['pages']} pages, {info['bytes'] / 2**20:.1f} MiB")
    return out


@pytest.fixture(scope="module")
def server(site):
    """``http://127.0.0.1:PORT/`` serving the site (a thread, stopped at teardown)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser left a page mid-transfer
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser_ = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-dev-shm-usage"])
        try:
            yield browser_
        finally:
            browser_.close()


_PAGE_STATE = """() => ({
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth, complete: i.complete})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  math: document.querySelectorAll('.math').length,
  typeset: document.querySelectorAll('.math mjx-container').length,
  texErrors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent),
  sidebar: [...document.querySelectorAll('.bd-sidebar-primary a.reference.internal')].map(
      a => [a.closest('ul')?.previousElementSibling?.textContent?.trim() || '', a.textContent.trim(), a.href]),
  solutions: [...document.querySelectorAll('.seglab-solutions a')].map(a => a.href),
  widgetCells: [...document.querySelectorAll('div.cell')].filter(c => /^\\w+(Explorer|Browser|Monitor|Comparer)\\b/m
      .test(c.querySelector('.cell_output')?.innerText || '')).map(c => [...c.querySelectorAll('.cell_output img')]
      .map(i => i.naturalWidth)),
})"""


@pytest.fixture(scope="module")
def visit(site, server, chromium, tmp_path_factory):
    """Visit every page reachable from index.html once; returns ``{url: record}`` and the requests that left."""
    shots = Path(os.environ.get("SEGLAB_SITE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    outside: list[str] = []

    def only_here(route):
        if urllib.parse.urlsplit(route.request.url).netloc == urllib.parse.urlsplit(server).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    # every HTML file of the site (not the theme's templates in _static/), and whatever their links reach
    records, queue = {}, [server + p.relative_to(site).as_posix() for p in sorted(site.rglob("*.html"))
                          if p.relative_to(site).parts[0] != "_static"]
    start = time.monotonic()
    while queue:
        url = queue.pop(0)
        if url in records:
            continue
        problems.clear()
        page.goto(url, wait_until="load")
        page.wait_for_function("() => [...document.images].every(i => i.complete)", polling=100)
        if page.evaluate("() => document.querySelectorAll('.math').length"):
            page.wait_for_function("() => window.MathJax?.startup?.promise", polling=100)
            page.evaluate("() => MathJax.startup.promise")  # resolves when the first typeset is done
        record = page.evaluate(_PAGE_STATE)
        record["problems"] = list(problems)
        records[url] = record
        for link in record["links"]:
            target = urllib.parse.urldefrag(link).url.split("?")[0]
            if target.startswith(server) and target.endswith(".html") and "/_static/" not in target:
                queue.append(target)
    pages_seconds = time.monotonic() - start

    def shot(name: str, url: str, scroll_to: str | None = None) -> None:
        page.goto(url, wait_until="load")
        if scroll_to:
            page.locator(scroll_to).first.scroll_into_view_if_needed()
        page.wait_for_function("() => [...document.images].every(i => i.complete)", polling=100)
        page.screenshot(path=str(shots / name))

    shot("site-landing.png", server + "index.html")
    shot("site-04-receptive-fields.png", server + "notebooks/04_receptive_fields.html", "div.cell_output img >> nth=-1")
    shot("site-02-metrics-math.png", server + "notebooks/02_metrics_and_losses.html", "mjx-container[display='true']")
    # the search, as a reader uses it: the search button, type, Enter
    page.goto(server + "index.html", wait_until="load")
    page.locator("button.search-button__button:visible").first.click()
    page.locator("#pst-search-dialog input[name='q']").fill("receptive field")
    page.keyboard.press("Enter")
    results = page.locator("#search-results a[href*='04_receptive_fields']")
    results.first.wait_for()  # the asserted state itself: a result linking the receptive-fields page
    search = {"url": page.url, "hrefs": [a.get_attribute("href") for a in page.locator("#search-results a").all()],
              "problems": list(problems)}
    page.screenshot(path=str(shots / "site-search.png"))
    context.close()
    print(f"visited {len(records)} pages in {pages_seconds:.1f} s; screenshots in {shots}")
    return {"records": records, "outside": outside, "search": search, "server": server, "site": site}


def _notebook_pages(visit) -> list[str]:
    return sorted(u for u in visit["records"] if "/notebooks/" in u and "/solutions/" not in u)


@browser_test
def test_every_page_loads_without_error_and_nothing_leaves_the_site(visit):
    records, server = visit["records"], visit["server"]
    assert {"index.html", "search.html", "genindex.html", "data/README.html"} <= {u[len(server):] for u in records}
    linked = {urllib.parse.urldefrag(link).url for r in records.values() for link in r["links"]}
    assert sorted(set(records) - linked - {server + "search.html", server + "genindex.html"}) == []  # none unreachable
    assert len(_notebook_pages(visit)) >= len(SMOKE_NOTEBOOKS)
    assert {u: r["problems"] for u, r in records.items() if r["problems"]} == {}
    assert visit["outside"] == [], "the site asked another host for something: it would not work offline"
    print(f"{len(records)} pages, no console error")


@browser_test
def test_every_image_on_every_page_loads(visit):
    images = [(u, i) for u, r in visit["records"].items() for i in r["images"]]
    broken = [(u, i["src"][:80]) for u, i in images if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    per_notebook = {u: len(visit["records"][u]["images"]) for u in _notebook_pages(visit)}
    assert all(n > 0 for n in per_notebook.values()), f"a notebook page without any figure: {per_notebook}"
    widget_cells = [cell for u in _notebook_pages(visit) for cell in visit["records"][u]["widgetCells"]]
    assert widget_cells, "no explorer output found (notebook 04 shows the receptive-field explorer)"
    assert all(cell and min(cell) > 0 for cell in widget_cells), f"an explorer without its static PNG: {widget_cells}"
    print(f"{len(images)} images on {len(visit['records'])} pages, {len(widget_cells)} explorer pictures")


@browser_test
def test_every_internal_link_resolves(visit):
    records, server = visit["records"], visit["server"]
    links = {link for r in records.values() for link in r["links"] if link.startswith(server)}
    dead = []
    for link in sorted({urllib.parse.urldefrag(link).url for link in links}):
        try:
            with urllib.request.urlopen(link, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        if status != 200:
            dead.append(f"{link}: HTTP {status}")
    for link in links:
        page, fragment = urllib.parse.urldefrag(link)
        page = page.split("?")[0]
        if fragment and page in records and urllib.parse.unquote(fragment) not in records[page]["ids"]:
            dead.append(f"{link}: no element with id {fragment!r}")
    assert dead == []
    print(f"{len(links)} internal links ({len({urllib.parse.urldefrag(x).url for x in links})} distinct targets) resolve")


@browser_test
def test_math_is_typeset_by_the_sites_own_mathjax(visit):
    with_math = {u: r for u, r in visit["records"].items() if r["math"]}
    assert with_math, "no page holds math"
    assert {u: (r["typeset"], r["math"]) for u, r in with_math.items() if r["typeset"] != r["math"]} == {}
    assert {u: r["texErrors"] for u, r in with_math.items() if r["texErrors"]} == {}
    assert (Path(visit["site"]) / "_static" / "mathjax" / "tex-chtml.js").is_file()
    print(f"{sum(r['math'] for r in with_math.values())} formulas typeset on {len(with_math)} pages")


@browser_test
def test_sidebar_lists_the_notebooks_in_order_and_each_links_its_solutions(visit):
    server, records = visit["server"], visit["records"]
    sidebar = records[server + "index.html"]["sidebar"]
    notebooks = [href for caption, _, href in sidebar if caption == "Notebooks"]
    solutions = [href for caption, _, href in sidebar if caption == "Solutions"]
    assert notebooks == _notebook_pages(visit) and notebooks == sorted(notebooks)
    assert solutions == sorted(solutions) and len(solutions) == len(notebooks)
    for page in notebooks:
        name = page.rsplit("/", 1)[1].removesuffix(".html")
        assert records[page]["solutions"] == [f"{server}notebooks/solutions/{name}_solutions.html"], page


@browser_test
def test_search_finds_receptive_field(visit):
    search = visit["search"]
    assert "search.html?q=receptive+field" in search["url"]
    assert any("04_receptive_fields" in href for href in search["hrefs"]), search["hrefs"]
    assert search["problems"] == []
