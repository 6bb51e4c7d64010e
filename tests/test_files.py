"""seglab.files: the one writer (no overwrite without the flag, never an input, no symlink, atomic) and the
messages of a full disk and of a refused weights-only load (issue 16, items 1, 3, 14)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest
import torch

from seglab import files
from seglab.files import atomic_path, check_target, without_load_advice, write_bytes, write_text


def test_existing_files_need_overwrite_and_inputs_never_go(tmp_path):
    target = tmp_path / "m.json"
    assert write_text(target, "one") == target and target.read_text() == "one"
    with pytest.raises(FileExistsError, match=r"--out .*m\.json already exists; pass --overwrite"):
        write_text(target, "two")
    assert target.read_text() == "one"
    write_text(target, "two", overwrite=True)
    assert target.read_text() == "two"
    # the command's own input: by its path, through a hard link, through a symlink named as the input
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    os.link(ckpt, tmp_path / "hard.pt")
    (tmp_path / "alias.pt").symlink_to(ckpt)
    for target, inputs in [(ckpt, [ckpt]), (tmp_path / "hard.pt", [ckpt]), (ckpt, [tmp_path / "alias.pt"]),
                           (tmp_path / "sub" / ".." / "best.pt", [ckpt])]:
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(FileExistsError, match=r"--json .* would replace the input .*even with --overwrite"):
            write_bytes(target, b"{}", overwrite=True, inputs=inputs, what="--json")
    assert ckpt.read_bytes() == b"weights"
    assert check_target(tmp_path / "new.json", inputs=[ckpt, tmp_path / "gone.pt"]) == tmp_path / "new.json"


def test_symlinks_folders_and_unwritable_parents_are_refused(tmp_path, monkeypatch):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(outside)
    (run / "dangling.json").symlink_to(tmp_path / "nowhere")
    for link in ("metrics.json", "dangling.json"):
        with pytest.raises(FileExistsError, match="symbolic link; refusing to write through it"):
            write_text(run / link, "{}", overwrite=True)
    assert outside.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_target(run, overwrite=True)
    outside_file = tmp_path / "afile"
    outside_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"afile is a file, not a folder"):
        check_target(outside_file / "sub" / "m.json")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(run) else real_access(p, mode))
    with pytest.raises(PermissionError, match=r"--json .*the folder .*run is not writable"):
        check_target(run / "new" / "m.json", what="--json")  # the nearest existing folder is checked
    assert sorted(p.name for p in run.iterdir()) == ["dangling.json", "metrics.json"]


def test_atomic_path_replaces_at_once_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target, overwrite=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".mask.png.") and tmp.suffix == ".tmp"
            tmp.write_bytes(b"half")
            assert target.read_bytes() == b"old"  # nothing visible before the block ends
            1 / 0
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["mask.png"]
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["mask.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    # a file that appears during the work is not lost
    late = tmp_path / "late.json"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_path(late) as tmp:
            tmp.write_text("mine")
            late.write_text("someone else's")
    assert late.read_text() == "someone else's" and sorted(os.listdir(tmp_path)) == ["late.json", "mask.png"]
    assert files.remove_stale_tmp(tmp_path) == []


def test_a_full_disk_names_the_file(tmp_path):
    target = tmp_path / "pred" / "x.png"
    with pytest.raises(OSError, match=r"No space left on device while writing .*pred/x\.png \(the disk is full\)") as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"start")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what PIL / torch.save raise mid-write
    assert info.value.errno == errno.ENOSPC and not target.exists() and os.listdir(target.parent) == []


def test_a_file_size_limit_names_the_file(tmp_path):
    # a real EFBIG: `ulimit -f` (RLIMIT_FSIZE) below the file's size; Python ignores SIGXFSZ, so write() fails
    code = (
        "import resource, sys\n"
        "from seglab.files import atomic_write_bytes\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "try:\n"
        f"    atomic_write_bytes(__import__('pathlib').Path({str(tmp_path / 'big.pt')!r}), bytes(300_000))\n"
        "except OSError as error:\n"
        "    print(error.errno, error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{errno.EFBIG} ") and "while writing" in result.stdout
    assert "big.pt (the file is larger than this file system (or `ulimit -f`) allows)" in result.stdout
    assert os.listdir(tmp_path) == []  # no temp file left


class Evil:
    pass


def test_torchs_weights_only_false_advice_is_removed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(Exception) as info:
        torch.load(path, weights_only=True)
    raw = str(info.value)
    assert "`False`" in raw and "add_safe_globals" in raw  # what torch says (the test can fail)
    text = without_load_advice(f"cannot load checkpoint {path}: UnpicklingError: {raw}. Refused for safety.")
    assert "\n" not in text and "False" not in text and "safe_globals" not in text and "trust" not in text
    assert text.startswith(f"cannot load checkpoint {path}: UnpicklingError: Weights only load failed.")
    assert "Unsupported global: GLOBAL test_files.Evil was not an allowed global by default." in text
    assert text.endswith("Refused for safety.")


def test_moved_names_stay_importable_from_the_checkpoint_module():
    import seglab.engine.checkpoint as checkpoint

    for name in ("atomic_write_bytes", "current_umask", "run_folder_lock", "RunFolderLocked", "remove_stale_tmp",
                 "LOCK_NAME"):
        assert getattr(checkpoint, name) is getattr(files, name)


def test_the_run_folder_lock_never_writes_through_a_symlink(tmp_path):
    # the lock file is truncated and holds the PID: a planted symlink must not truncate the file it names
    precious = tmp_path / "precious.txt"
    precious.write_text("years of notes")
    run = tmp_path / "run"
    run.mkdir()
    (run / files.LOCK_NAME).symlink_to(precious)
    with pytest.raises(FileExistsError, match=r"lock file .*\.seglab\.lock is a symbolic link"):
        with files.run_folder_lock(run):
            pass
    assert precious.read_text() == "years of notes"
    (run / files.LOCK_NAME).unlink()
    with files.run_folder_lock(run) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
