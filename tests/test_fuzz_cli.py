"""Fuzz the command line (issue 16, "What it must show"): random flag values for ``evaluate``, ``predict``,
``export`` and ``download``, run in-process through ``seglab.cli.main`` on a tiny checkpoint trained once.

Values: whole numbers (0, negative, huge, non-ASCII digits, floats written as ints), floats (nan, inf, -0,
1e308, subnormal), text (empty, unicode, commas, NUL), and paths: new files, existing outputs, folders,
symbolic links to a file outside the example's folder, dangling links, missing files, images, and the
checkpoint itself (by its name, a hard link, a symbolic link, and a hard link named ``*.onnx``).

Every example must hold:

- the exit code is 0 or 2; no traceback; on 2 exactly one stderr line ``error: ...``, the last one (the
  others may only be progress lines: tqdm bars, download's "trying mirror" and "note:" lines);
- nothing outside the example's work folder changes (a sentinel folder next to it, the run folder of the
  checkpoint); the checkpoint is byte-identical and every alias of it still is it;
- a user's file is never lost: inputs are unchanged (a ``VOCtrainval`` tar with another MD5 may only be
  renamed ``*.md5-mismatch``), earlier outputs are replaced only with ``--overwrite``, and then by a whole
  file; symbolic links and folders stay what they were;
- no output is half-written: no temp file is left, every JSON parses (strictly), every PNG decodes, every
  ONNX file loads and passes ``onnx.checker``;
- no network: the download mirrors point at closed ports on 127.0.0.1, and any connection to another host
  fails the example.

The module runs under an address-space cap (current size + 3 GiB) so that a runaway allocation fails the
example instead of the machine. ``pytest tests/test_fuzz_cli.py -s`` prints the examples and exit codes per
command and the seconds; ``SEGLAB_FUZZ_LOG=fuzz.log`` also appends every command line and its stderr there.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _helpers import address_space_cap

from seglab.cli import main

EXAMPLES = Counter()  # (command, exit code) -> examples
SECONDS = Counter()  # command -> seconds
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
VOC_TAR = "VOCtrainval_11-May-2012.tar"
#: seglab.files's temp files (".<name>.XXXXXXXX.tmp"), and any other *.tmp
TEMP = re.compile(r"\.tmp$")
#: stderr lines that are progress, not errors: tqdm bars, the download's mirror and note lines
PROGRESS = re.compile(r"^(\S[^|]*: *\d+%\||\S[^|]*: *\d+(\.\d+)?[a-zA-Z ]*\[|download \S+: |note: )")


# --- the world: one tiny checkpoint, a memory cap, no network -----------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shared run folder (U-Net base 4 on 8 synthetic 32 x 32 images, 1 step) and its checkpoint's SHA-256."""
    from seglab.engine import TrainConfig, fit

    run = tmp_path_factory.mktemp("fuzz_run")
    config = TrainConfig(base_channels=4, dataset_kwargs={"num_images": 8, "image_size": 32}, crop_size=32,
                         batch_size=4, val_batch_size=4, epochs=1, max_train_batches=1, num_workers=0,
                         out=str(run / "run"), progress=False, device="cpu", verbose=False)  # 8 val images: fast
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fit(config)
    checkpoint = run / "run" / "best.pt"
    return {"root": run, "checkpoint": checkpoint, "sha": _sha(checkpoint), "run_files": _snapshot(run / "run")}


@pytest.fixture(scope="module", autouse=True)
def memory_cap_and_report():
    """Cap the address space at its current size + 3 GiB for this module; report examples and seconds."""
    import importlib

    for name in ("torch", "seglab.engine", "seglab.predict", "seglab.export", "seglab.data", "seglab.crf", "onnx",
                 "onnxscript", "onnxruntime"):  # what the commands load, mapped before the size is measured
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    start = time.perf_counter()
    with address_space_cap(3 * 2**30):
        yield
        commands = sorted({command for command, _ in EXAMPLES})
        print(f"\nseglab CLI fuzz: {sum(EXAMPLES.values())} examples in {time.perf_counter() - start:.1f} s; "
              + "; ".join(f"{c}: {sum(n for (k, _), n in EXAMPLES.items() if k == c)} examples "
                          f"(exit 0: {EXAMPLES[c, 0]}, exit 2: {EXAMPLES[c, 2]}) in {SECONDS[c]:.1f} s"
                          for c in commands))  # fmt: skip


NETWORK: list[str] = []  # connections to anything but this machine, per example


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Any connection or name lookup beyond 127.0.0.1 is refused and recorded (the example then fails)."""
    local = {"127.0.0.1", "localhost", "::1"}
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in local:
            NETWORK.append(str(address))
            raise ConnectionRefusedError(f"the CLI fuzz allows no network: {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in local and host is not None:
            NETWORK.append(str(host))
            raise socket.gaierror(f"the CLI fuzz allows no network: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(scope="module", autouse=True)
def offline_mirrors(world):
    """Every download mirror is a closed port on this machine (connection refused at once); the data and
    torch hub folders are inside the fuzz folder."""
    import seglab.data.download as download

    def closed_port() -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{probe.getsockname()[1]}/{VOC_TAR}"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, "VOC_MIRRORS", (closed_port(), closed_port()))
        patch.setattr(download, "SBD_MIRRORS", (closed_port(),))
        patch.setenv("SEGLAB_DATA", str(world["root"] / "data"))
        patch.setenv("TORCH_HOME", str(world["root"] / "torch_home"))
        patch.delenv("SEGLAB_DEBUG", raising=False)
        yield


# --- one example: a fresh folder of inputs, the command, the checks ---------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): kind and content hash / link target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            found[str(path)] = ("dir",)
        else:
            found[str(path)] = ("file", _sha(path))
    return found


def _png(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _make_example(world, number: int) -> Path:
    """``ex/work`` (the current folder of the command: inputs, earlier outputs, links) and ``ex/outside``."""
    ex = world["root"] / "examples" / str(number)
    work, outside = ex / "work", ex / "outside"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("a file outside the work folder")
    work.mkdir()
    for name in ("best.pt", "ck.onnx"):  # the checkpoint under other names: the same file (hard links)
        os.link(world["checkpoint"], work / name)
    (work / "ck_link.pt").symlink_to("best.pt")
    _png(work / "img.png", 20, 30)
    _png(work / "ünï ☃,x.png", 24, 16, seed=1)
    _png(work / "imgs" / "a.png", 20, 30, seed=2)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(work / "imgs" / "b.jpg")
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(work / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (work / "empty").mkdir()
    (work / "notimage.png").write_bytes(b"not an image at all")
    (work / "empty.pt").write_bytes(b"")
    (work / "existing.json").write_text('{"an": "earlier report"}')
    (work / "existing.onnx").write_bytes(b"an earlier export")
    _png(work / "preds" / "img.png", 20, 30, seed=3)  # an earlier prediction
    (work / "link.json").symlink_to(outside / "keep.txt")
    (work / "link.onnx").symlink_to(outside / "keep.txt")
    (work / "dangling.json").symlink_to(outside / "nothing")
    (work / "dirlink").symlink_to("empty")
    (work / "voc_root").mkdir()
    (work / "voc_root" / VOC_TAR).write_bytes(b"my own copy, another MD5")
    (work / "user.tar").write_bytes(b"my own tar, another MD5")
    return ex


#: files of _make_example an earlier run of a command wrote: replaced only with --overwrite, by a whole file
REPLACEABLE = {"existing.json", "existing.onnx", "preds/img.png"}

#: path tokens: files and folders of the work folder, its links, new and odd names
INPUT_PATHS = ["best.pt", "ck.onnx", "ck_link.pt", "img.png", "ünï ☃,x.png", "imgs", "imgs/*.png", "imgs/*.nope",
               "anim.gif", "empty", "notimage.png", "empty.pt", "missing.png", "dangling.json", "dirlink", "user.tar",
               "", ".", "link.json"]  # fmt: skip
FILE_OUTPUTS = ["new.json", "nested/deeper/new.json", "existing.json", "link.json", "dangling.json", "best.pt",
                "ck_link.pt", "empty", "img.png/x.json", "ünï ☃,y.json", "", ".", "new.onnx", "existing.onnx",
                "link.onnx", "ck.onnx", "nested/x.onnx", "x.pt"]  # fmt: skip
FOLDER_OUTPUTS = ["preds", "new_preds", "nested/new", "empty", "dirlink", "imgs", ".", "", "best.pt", "img.png",
                  "link.json", "ünï ☃,z"]  # fmt: skip


def paths(tokens):
    """A token of ``tokens`` (mostly), an absolute form of one, or random text."""
    return st.one_of(st.sampled_from(tokens), st.sampled_from(tokens).map(lambda t: f"@ABS@{t}"), st.text(max_size=8))


def _resolve(argv: list[str], work: Path) -> list[str]:
    """``@ABS@name`` (also in ``--flag=@ABS@name``) -> the absolute path of ``name`` in the work folder."""
    return [a.replace("@ABS@", f"{work}{os.sep}") for a in argv]


# --- flag values ----------------------------------------------------------------------------------------------------

INTS = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "32", "33", "48", "64", "100000", "2147483648", "9223372036854775808",
                     "1e3", "2.5", "nan", "", " 7 ", "+4", "0x10", "1_000", "٣", "-0"]),
    st.integers(-(10**20), 10**20).map(str),
)  # fmt: skip
SMALL_INTS = st.sampled_from(["1", "2", "3", "16", "32", "33", "64"])  # valid values, so that examples do work
FLOATS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-0", "0", "1", "0.5", "1e-320", "1e308", "-3", "2", "", " 0.25", "1,5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)  # fmt: skip
SCALES = st.one_of(
    st.sampled_from(["1", "0.5,1,1.5", "1,1.25", "4", "4.0001", "50", "1,,2", ",", "0.001", "0", "-1", "nan", "inf",
                     "1e308", " 1 , 2 ", ""]),
    st.lists(FLOATS, max_size=4).map(",".join),
    st.text(max_size=8),
)  # fmt: skip
DEVICES = st.one_of(st.sampled_from(["auto", "cpu", "cpu:0", "CPU", "cuda", "cuda:99", "meta", "mps", "xpu", ""]),
                    st.text(max_size=6))  # fmt: skip
TEXT = st.text(max_size=10)


def _mostly(valid, anything):
    """Three draws in four from ``valid``, so that many examples get past the checks and do the work."""
    return st.integers(0, 3).flatmap(lambda i: anything if i == 3 else valid)


@st.composite
def flags(draw, options: dict) -> list[str]:
    """A random subset of ``options`` (flag -> strategy of its value, or None for a switch), in random order."""
    chosen = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=4))
    argv = []
    for flag in chosen:
        if options[flag] is None:
            argv.append(flag)
        elif draw(st.booleans()):
            argv += [flag, draw(options[flag])]
        else:
            argv.append(f"{flag}={draw(options[flag])}")
    return argv


INFERENCE = {"--tta-scales": _mostly(st.sampled_from(["1", "0.75,1.5", "1,1.25", "2"]), SCALES), "--tta-flip": None,
             "--no-tta-flip": None, "--window": _mostly(st.sampled_from(["32", "48"]), INTS),
             "--window-stride": _mostly(st.sampled_from(["16", "32"]), INTS), "--crf": None,
             "--crf-max-size": _mostly(st.sampled_from(["16", "24"]), INTS)}  # fmt: skip
CHECKPOINTS = _mostly(st.sampled_from(["best.pt", "ck_link.pt", "@ABS@best.pt", "ck.onnx"]), paths(INPUT_PATHS))


@st.composite
def evaluate_argv(draw):
    argv = ["evaluate"]
    if draw(st.integers(0, 9)):  # mostly with a checkpoint (without: --weights, the pretrained path)
        argv.append(draw(CHECKPOINTS))
    return argv + draw(flags({
        "--max-batches": _mostly(st.sampled_from(["1", "2"]), INTS), "--batch-size": _mostly(SMALL_INTS, INTS),
        "--json": paths(FILE_OUTPUTS), "--overwrite": None,
        "--split": st.one_of(st.sampled_from(["val", "test"]), TEXT),
        "--data-root": paths(FOLDER_OUTPUTS), "--device": _mostly(st.just("cpu"), DEVICES), "--weights": TEXT,
        "--model": TEXT, "--dataset": st.one_of(st.sampled_from(["voc", "synthetic"]), TEXT), **INFERENCE,
    }))  # fmt: skip


@st.composite
def predict_argv(draw):
    images = draw(st.lists(_mostly(st.sampled_from(["img.png", "imgs", "ünï ☃,x.png", "anim.gif"]),
                                   paths(INPUT_PATHS)), min_size=1, max_size=3))  # fmt: skip
    return ["predict", draw(CHECKPOINTS), *images] + draw(flags({
        "--out": _mostly(st.sampled_from(["new_preds", "preds", "nested/new"]), paths(FOLDER_OUTPUTS)),
        "--overlay": None, "--alpha": FLOATS, "--overwrite": None, "--batch-size": _mostly(SMALL_INTS, INTS),
        "--max-size": _mostly(SMALL_INTS, INTS), "--device": _mostly(st.just("cpu"), DEVICES), "--progress": None,
        "--no-progress": None, **INFERENCE,
    }))  # fmt: skip


@st.composite
def export_argv(draw):
    # one example in ten or so exports (about 5 s each on a 2-core CPU); the others are refused before the work
    sizes = draw(st.integers(0, 5).flatmap(lambda i: st.lists(st.sampled_from(["32", "33", "40"]), min_size=1,
                                                              max_size=2) if i == 0 else st.lists(INTS, min_size=1,
                                                                                                  max_size=3)))
    argv = ["export", draw(CHECKPOINTS)] + draw(flags({
        "--out": st.one_of(st.sampled_from(["new.onnx", "existing.onnx", "nested/x.onnx"]), paths(FILE_OUTPUTS)),
        "--format": st.one_of(st.sampled_from(["onnx", "ONNX"]), TEXT), "--overwrite": None,
    }))  # fmt: skip
    return argv + ["--input-size", *sizes]  # never the default 512 x 512: slow


@st.composite
def download_argv(draw):
    name = draw(_mostly(st.sampled_from(["voc", "sbd", "camvid", "isbi2012", "cityscapes", "ade20k", "synthetic",
                                         "folder"]), TEXT))  # fmt: skip
    return ["download", name] + draw(flags({
        "--data-root": st.one_of(st.sampled_from(["voc_root", "new_root", "empty"]), paths(FOLDER_OUTPUTS)),
        "--from-file": st.one_of(st.sampled_from(["user.tar", "best.pt", "voc_root/" + VOC_TAR]), paths(INPUT_PATHS)),
    }))  # fmt: skip


# --- the run and the checks ---------------------------------------------------------------------------------------


_COUNTER = iter(range(10**9))


#: what each command writes (whatever the file's name): a file of that kind, whole
KIND = {"evaluate": "json", "predict": "png", "export": "onnx", "download": "archive"}


def _valid_output(path: Path, kind: str) -> None:
    """A whole file of its kind (raises if half-written or not what the command writes)."""
    if kind == "json":
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: {c} is not strict JSON"))
    elif kind == "png":
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.load()
    elif kind == "onnx":
        import onnx

        onnx.checker.check_model(onnx.load(str(path)))
    else:  # download: a resumable partial transfer, or a user's file kept aside
        assert path.name.endswith((".part", ".md5-mismatch")), path


def run_example(world, argv: list[str]) -> None:
    ex = _make_example(world, next(_COUNTER))
    work = ex / "work"
    argv = _resolve(argv, work)
    before = _snapshot(ex)
    NETWORK.clear()
    os.environ["SEGLAB_DATA"] = str(work / "data")  # the default data root (restored by offline_mirrors)
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        os.chdir(cwd)
    SECONDS[argv[0]] += time.perf_counter() - start
    if os.environ.get("SEGLAB_FUZZ_LOG"):  # a file: every command line, its exit code and the end of its stderr
        with open(os.environ["SEGLAB_FUZZ_LOG"], "a") as log:
            log.write(f"{argv!r}\n  -> {code} {err.getvalue()[-600:]!r}\n")
    EXAMPLES[argv[0], code] += 1
    err = err.getvalue()
    context = f"argv={argv!r}\nstdout={out.getvalue()[-2000:]!r}\nstderr={err[-2000:]!r}"

    # exit code and stderr
    assert code in (0, 2), context
    assert "Traceback" not in err, context
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    errors = [line for line in lines if not PROGRESS.match(line)]
    if code == 2:
        assert len(errors) == 1 and errors[0].startswith("error: ") and lines[-1] == errors[0], context
    else:
        assert errors == [], context
    assert NETWORK == [], context

    # nothing outside the work folder changed; the checkpoint is itself, under every name
    after = _snapshot(ex)
    outside = str(ex / "outside")
    assert {k: v for k, v in after.items() if k.startswith(outside)} == \
           {k: v for k, v in before.items() if k.startswith(outside)}, context  # fmt: skip
    assert _snapshot(world["checkpoint"].parent) == world["run_files"], context
    assert _sha(world["checkpoint"]) == world["sha"], context
    for name in ("best.pt", "ck.onnx"):
        assert (work / name).samefile(world["checkpoint"]), context

    # a user's file is never lost; earlier outputs replaced only with --overwrite; nothing half-written
    overwrite = "--overwrite" in argv
    for key, state in before.items():
        if not key.startswith(str(work) + os.sep):
            continue
        relative = os.path.relpath(key, work)
        now = after.get(key)
        if now == state:
            continue
        if relative == f"voc_root/{VOC_TAR}" and after.get(key + ".md5-mismatch") == state:
            continue  # download: a user's tar with another MD5 is kept, renamed
        assert relative in REPLACEABLE and overwrite and now is not None and now[0] == "file", \
            f"{relative} changed: {state} -> {now}\n{context}"  # fmt: skip
        _valid_output(Path(key), KIND[argv[0]])
    for key, state in after.items():
        assert not TEMP.search(key), f"temp file left: {key}\n{context}"
        if key not in before and state[0] == "file":
            _valid_output(Path(key), KIND[argv[0]])
    shutil.rmtree(ex)


@FUZZ
@given(argv=evaluate_argv())
def test_fuzz_evaluate(world, argv):
    run_example(world, argv)


@FUZZ
@given(argv=predict_argv())
def test_fuzz_predict(world, argv):
    run_example(world, argv)


@settings(FUZZ, max_examples=24)
@given(argv=export_argv())
def test_fuzz_export(world, argv):
    pytest.importorskip("onnxruntime", reason="the test extra holds onnx, onnxscript, onnxruntime")
    run_example(world, argv)


@FUZZ
@given(argv=download_argv())
def test_fuzz_download(world, argv):
    run_example(world, argv)
