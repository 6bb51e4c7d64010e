"""One real-browser check of seglab.widgets: JupyterLab + Debian's Chromium driven by Playwright.

Starts JupyterLab on 127.0.0.1 (free port, random token, temporary root/config/data dirs, a
kernelspec pointing at this Python), opens a notebook that shows every explorer, runs it, moves
a slider of the dilation explorer and of the prediction browser, and checks that the kernel
redrew the picture in the page. Screenshots of the page and of each explorer go to a temporary
folder, and are copied to ``$SEGLAB_SCREENSHOTS`` when that variable is set.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``; no Playwright browser
download) and the ``playwright`` and ``jupyterlab`` Python packages; skipped with the reason
otherwise. Every process started here is stopped in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SEGLAB_CHROMIUM", "/usr/bin/chromium"))
REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "seglab-browser-test"
EXPLORERS = ("DilationExplorer", "ReceptiveFieldExplorer", "SkipExplorer", "PredictionBrowser",
             "TrainingMonitor", "RunComparer")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium"),
]

NOTEBOOK_CELLS = [
    """\
import json, pathlib, tempfile
import torch
from seglab import widgets
from seglab.data.synthetic import SyntheticShapes
from seglab.models import build_model

ds = SyntheticShapes("val", num_images=6, image_size=96)
items = [ds[i] for i in range(len(ds))]
torch.manual_seed(0)
unet = build_model("unet", ds.num_classes, base_channels=8, depth=3).eval()
unet_noskip = build_model("unet", ds.num_classes, base_channels=8, depth=3, skip_connections=False).eval()""",
    "dilation = widgets.DilationExplorer((1, 2, 3))\ndilation",
    """\
rf = widgets.ReceptiveFieldExplorer({"untrained": unet, "no skips": unet_noskip}, items[0][0],
                                    layers=["encoder.1", "encoder.3", "decoder.2", ""])
rf""",
    """\
image, mask = items[1]
coarse = mask[8::16, 8::16].repeat(16, 0).repeat(16, 1)  # ground truth sampled at stride 16: a stand-in for FCN-32s
skips = widgets.SkipExplorer(image, mask, {"U-Net (untrained)": unet, "no skips (untrained)": unet_noskip,
                                           "GT at stride 16": coarse}, ds.classes, ds.colors)
skips""",
    """\
browser = widgets.PredictionBrowser([im for im, _ in items], [m for _, m in items], model=unet,
                                    classes=ds.classes, colors=ds.colors)
browser""",
    """\
import time
from IPython.display import display
monitor = widgets.TrainingMonitor(classes=ds.classes)
display(monitor)
history = []
for epoch in range(1, 6):
    time.sleep(1.0)  # stands in for one epoch of seglab.engine.fit(config, callbacks=[monitor])
    history.append({"epoch": epoch, "train_loss": 1.2 / epoch, "val_loss": 1.3 / epoch ** 0.8, "lr": 1e-3,
                    "val_mIoU": 0.7 * (1 - 0.6 ** epoch), "val_iou_per_class": [0.9, 0.5, 0.6, 0.4],
                    "val_pixel_accuracy": 0.9, "seconds": 3.0, "images_per_s": 40.0})
    monitor(history[-1], history)""",
    """\
runs = pathlib.Path(tempfile.mkdtemp())
for name, scale in [("unet", 1.0), ("fcn8s", 0.8)]:
    (runs / name).mkdir()
    (runs / name / "history.json").write_text(json.dumps(
        [dict(r, val_mIoU=scale * r["val_mIoU"]) for r in history]))
comparer = widgets.RunComparer(runs, classes=ds.classes)
comparer""",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "seglab (test)", "language": "python"}
    nbformat.write(nb, path)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (server + kernels), wait, then SIGKILL what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # jupyter shuts its kernels down on SIGINT/SIGTERM
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    try:  # kernels left behind in the group (normally none)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def jupyterlab(tmp_path):
    """A running JupyterLab: yields ``(base_url, token, root_dir)``; stopped at teardown."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install jupyterlab)")
    root = tmp_path / "root"
    dirs = {name: tmp_path / name for name in ("config", "data", "runtime", "ipython", "mpl")}
    for d in (root, *dirs.values()):
        d.mkdir()
    kernel_dir = dirs["data"] / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "seglab (test)", "language": "python",
        "env": {"PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"},
    }))
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab"
    for extension, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},  # render every cell, also off-screen ones
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{extension}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    _write_notebook(root / "widgets.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
               MPLCONFIGDIR=str(dirs["mpl"]), JUPYTER_PLATFORM_DIRS="1")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                log_text = (tmp_path / "jupyterlab.log").read_text()[-3000:]
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_text}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in 60 s:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        _stop(server)
        log.close()


def _image_src(page, explorer: str) -> str:
    return page.locator(f".seglab-{explorer} img").first.get_attribute("src") or ""


def _wait_new_src(page, explorer: str, old: str, timeout_ms: int = 20_000) -> str:
    page.wait_for_function(
        "([sel, old]) => { const img = document.querySelector(sel);"
        " return img && img.src && img.src !== old && img.complete && img.naturalWidth > 0; }",
        arg=[f".seglab-{explorer} img", old], timeout=timeout_ms, polling=250,
    )
    return _image_src(page, explorer)


def _status(page, explorer: str):
    """The explorer's status line (an ``ipywidgets.HTML``), as a Playwright locator."""
    return page.locator(f".seglab-{explorer} .widget-html-content").first


def _press_slider(page, explorer: str, index: int, key: str = "ArrowRight") -> None:
    handle = page.locator(f".seglab-{explorer} .widget-slider .noUi-handle").nth(index)
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press(key)


def test_widgets_render_and_respond_in_jupyterlab(jupyterlab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    expect = sync_api.expect
    base, token, _ = jupyterlab
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/widgets.ipynb?token={token}")
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
            # the kernel of our kernelspec started and is idle
            # (before that the indicator already reads "idle" with "No Kernel")
            page.locator(".jp-StatusBar-TextItem", has_text="seglab (test) | Idle").first.wait_for()
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
            # the monitor redraws while its cell still runs (one picture per "epoch", 1 s apart)
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 120
            while len(seen) < 5 and time.monotonic() < deadline:
                src = page.evaluate("() => document.querySelector('.seglab-TrainingMonitor img')?.src || ''")
                if src and src not in seen:
                    seen[src] = time.monotonic()
                page.wait_for_timeout(100)
            assert len(seen) == 5, f"the training monitor showed {len(seen)} of 5 epochs"
            assert max(seen.values()) - min(seen.values()) > 2.5, "the monitor did not update live"
            for explorer in EXPLORERS:  # every explorer drew its first picture
                page.wait_for_function(
                    "sel => { const img = document.querySelector(sel);"
                    " return img && img.complete && img.naturalWidth > 0; }",
                    arg=f".seglab-{explorer} img", timeout=90_000, polling=250,  # "raf" polling stalls headless
                )
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            texts = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not texts, f"the notebook raised: {texts}"

            # The kernel sends the new picture and the new status text as two separate widget updates,
            # so each assertion waits for the very state it checks (Playwright's auto-retrying expect),
            # never for the picture as a proxy of the text.
            old = _image_src(page, "DilationExplorer")
            _press_slider(page, "DilationExplorer", 1)  # the "rate 1" slider: 1 -> 2
            new = _wait_new_src(page, "DilationExplorer", old)
            assert new != old
            expect(_status(page, "DilationExplorer")).to_contain_text("rates (2, 2, 3)", timeout=30_000)

            old = _image_src(page, "PredictionBrowser")
            _press_slider(page, "PredictionBrowser", 0)  # image 0 -> 1 (the model runs in the kernel)
            _wait_new_src(page, "PredictionBrowser", old)
            expect(_status(page, "PredictionBrowser")).to_contain_text("image 1 (2 of 6)", timeout=30_000)

            page.screenshot(path=str(shots / "jupyterlab.png"))
            for explorer in EXPLORERS:
                box = page.locator(f".seglab-{explorer}").first
                box.scroll_into_view_if_needed()
                box.screenshot(path=str(shots / f"{explorer}.png"))
        finally:
            browser.close()
    target = os.environ.get("SEGLAB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, Path(target) / png.name)
    assert all((shots / f"{e}.png").stat().st_size > 10_000 for e in EXPLORERS)
