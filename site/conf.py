"""Sphinx configuration of the course site (read by tools/build_site.py, which copies this folder).

The site is Sphinx + MyST-NB + sphinx-book-theme: the stack under Jupyter Book 1, configured directly.
Every notebook arrives already executed (tools/run_notebooks.py --save-dir); nothing is executed here.
Everything a page loads is served from the site itself: MathJax 3 from the ``sphinx-mathjax-offline``
wheel (the parts that TeX input and HTML output use, copied by ``setup`` below), the theme's fonts and icons from its own wheel, no widget
JavaScript (the explorers leave a static PNG beside their live view, and that PNG is what is shown).

``site.json`` beside this file is written by tools/build_site.py: the project name, version and,
when ``[project.urls]`` in pyproject.toml names one, the repository URL (repository and Colab buttons).
"""

import importlib.metadata
import json
import shutil
from pathlib import Path

_site = json.loads((Path(__file__).parent / "site.json").read_text(encoding="utf-8"))

project = "seglab"
author = "the seglab authors"
copyright = "the seglab authors"
release = _site["version"]
html_title = "seglab: semantic segmentation, built step by step"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["site.json"]

# MyST: $...$ math in markdown cells, ::: fences for the solutions box, anchors for README's headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# MyST-NB: render the stored outputs only.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # default: require.js + the widget manager from two CDNs
# A live widget view cannot be drawn without a kernel: drop it, so the explorer's PNG (its second output) shows.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_merge_streams = True

# MathJax 3.2, served from _static/mathjax/: the TeX-to-HTML bundle, the TeX extensions it loads on demand,
# its fonts, and the menu's accessibility parts (speech, explorer) that a reader can switch on.
mathjax_path = "mathjax/tex-chtml.js"
_MATHJAX_PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts", "ui", "a11y", "sre")


def _copy_mathjax(app, exception) -> None:
    if exception is not None:
        return
    source = Path(importlib.metadata.distribution("sphinx-mathjax-offline").locate_file(
        "sphinx-mathjax-offline/static/mathjax"))
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in _MATHJAX_PARTS:
        (target / part).parent.mkdir(parents=True, exist_ok=True)
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            shutil.copy2(source / part, target / part)


def setup(app) -> None:
    app.connect("build-finished", _copy_mathjax)

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["seglab.css"]
html_copy_source = False  # the executed notebooks would be copied a second time
html_show_sourcelink = False
html_last_updated_fmt = None
html_context = {"default_mode": "light"}  # without one, the theme logs a console error on a reader's first visit
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,  # it links to _sources/, which html_copy_source=False leaves out
    "use_fullscreen_button": True,
    "navigation_with_keys": False,
}
if _site.get("repository_url"):
    html_theme_options.update({
        "repository_url": _site["repository_url"],
        "repository_branch": _site.get("repository_branch", "main"),
        "path_to_docs": "",  # pages sit at the repository's own paths: notebooks/NN_name.ipynb
        "use_repository_button": True,
        "launch_buttons": {"colab_url": "https://colab.research.google.com", "notebook_interface": "jupyterlab"},
    })
