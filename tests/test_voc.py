"""PASCAL VOC 2012: palette decoding, root layouts, splits, download through mirrors, safe extraction, SBD.

VOC itself cannot be downloaded on the test machines, so every test builds a VOC-format tree (palette PNG
masks written with PIL in "P" mode, 255 borders included) and tar archives in tmp_path, served by file:// URLs.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets.utils import calculate_md5

from seglab.data import VOCSegmentation, build_dataset, resolve_root
from seglab.data import download_dataset as download
from seglab.data.download import (
    VOC_FILENAME,
    DownloadError,
    UnsafeArchiveError,
    download_sbd,
    download_voc,
    fetch,
    safe_extract,
)
from seglab.data.palettes import IGNORE_COLOR, VOC_CLASSES, VOC_COLORS, rgb_to_index, voc_colormap

download_module = importlib.import_module("seglab.data.download")

TRAIN_IDS = ["2007_000032", "2007_000039", "2008_000002"]
VAL_IDS = ["2007_000033", "2009_000001"]


def devkit_colormap(n: int = 256) -> np.ndarray:
    """Independent transcription of VOClabelcolormap.m (bitget loop), as an oracle for voc_colormap."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        idx, r, g, b = i, 0, 0, 0
        for j in range(8):
            r = r | (((idx >> 0) & 1) << (7 - j))
            g = g | (((idx >> 1) & 1) << (7 - j))
            b = b | (((idx >> 2) & 1) << (7 - j))
            idx = idx >> 3
        cmap[i] = [r, g, b]
    return cmap


def voc_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blocks of random VOC classes separated by 255 'void' borders, like real VOC annotations."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[2:-2, 3 : width // 2] = rng.integers(1, 21)
    mask[4:-3, width // 2 + 2 : -2] = rng.integers(1, 21)
    mask[1, :] = 255
    mask[:, width // 2] = 255
    return mask


def save_palette_png(mask: np.ndarray, path: Path) -> None:
    image = Image.fromarray(mask, mode="P")
    image.putpalette(voc_colormap().ravel().tolist())
    image.save(path)


def make_voc_tree(root: Path, *, seed: int = 0, size: tuple[int, int] = (20, 26)) -> dict[str, np.ndarray]:
    """Write root/VOCdevkit/VOC2012 with JPEG images, palette PNG masks and split files; return the masks."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    masks = {}
    for image_id in TRAIN_IDS + VAL_IDS:
        h, w = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        masks[image_id] = voc_mask(rng, h, w)
        save_palette_png(masks[image_id], voc / "SegmentationClass" / f"{image_id}.png")
    sets = voc / "ImageSets" / "Segmentation"
    sets.joinpath("train.txt").write_text("\n".join(TRAIN_IDS) + "\n")
    sets.joinpath("val.txt").write_text("\n".join(VAL_IDS) + "\n")
    sets.joinpath("trainval.txt").write_text("\n".join(TRAIN_IDS + VAL_IDS) + "\n")
    return masks


def make_voc_tar(tmp_path: Path) -> tuple[Path, str, dict[str, np.ndarray]]:
    """A VOCtrainval-like tar holding VOCdevkit/VOC2012/...; returns (path, md5, masks)."""
    staging = tmp_path / "staging"
    masks = make_voc_tree(staging)
    archive = tmp_path / "good" / VOC_FILENAME
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        tar.add(staging / "VOCdevkit", arcname="VOCdevkit")
    return archive, calculate_md5(archive), masks


@pytest.fixture
def voc_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    return root, make_voc_tree(root)


# --- palette -------------------------------------------------------------------------------------------------


def test_voc_colormap_matches_devkit_and_known_colours():
    cmap = voc_colormap()
    np.testing.assert_array_equal(cmap, devkit_colormap())
    assert tuple(cmap[1]) == (128, 0, 0)  # aeroplane
    assert tuple(cmap[15]) == (192, 128, 128)  # person
    assert tuple(cmap[255]) == IGNORE_COLOR == (224, 224, 192)  # void border
    assert VOC_COLORS == tuple(tuple(int(v) for v in c) for c in cmap[:21])
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"


# --- reading -------------------------------------------------------------------------------------------------


def test_voc_reads_palette_indices_and_255_border(voc_root):
    root, masks = voc_root
    ds = VOCSegmentation("train", root)
    assert (len(ds), ds.num_classes, ds.ignore_index, ds.split) == (3, 21, 255, "train")
    assert ds.classes == VOC_CLASSES and ds.colors == VOC_COLORS
    assert ds.root == root / "VOCdevkit" / "VOC2012"
    for i, image_id in enumerate(TRAIN_IDS):
        image, mask = ds[i]
        assert image.dtype == np.uint8 and image.shape == (20, 26, 3)
        assert mask.dtype == np.int64 and mask.shape == (20, 26)
        np.testing.assert_array_equal(mask, masks[image_id])
        assert (mask == 255).any() and set(np.unique(mask)) <= set(range(21)) | {255}
        # the file displays with the VOC colours (independent of our reader: PIL applies the palette)
        shown = np.asarray(Image.open(ds.samples[i][1]).convert("RGB"))
        np.testing.assert_array_equal(shown[mask == 255], np.tile(IGNORE_COLOR, ((mask == 255).sum(), 1)))


def test_voc_splits_and_root_layouts(voc_root):
    root, _ = voc_root
    assert [len(VOCSegmentation(s, root)) for s in ("train", "val", "trainval")] == [3, 2, 5]
    expected = VOCSegmentation("val", root).samples
    for variant in (root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        assert VOCSegmentation("val", variant).samples == expected
    assert build_dataset("voc", "val", root=root).samples == expected


def test_voc_env_var_and_explicit_root(voc_root, monkeypatch, tmp_path):
    root, _ = voc_root
    monkeypatch.setenv("SEGLAB_DATA", str(root))
    assert resolve_root("voc") == root / "VOCdevkit"
    assert len(VOCSegmentation("train")) == 3  # found through $SEGLAB_DATA/VOCdevkit
    with pytest.raises(FileNotFoundError):
        VOCSegmentation("train", tmp_path / "elsewhere")  # explicit root wins over the variable


def test_voc_rgb_mask_is_refused_not_guessed(voc_root):
    """An RGB-saved mask is an error naming the file and the repair, even when its colours are exact VOC
    colours: VOC masks are palette PNGs, and the message's recipe (rgb_to_index) restores one losslessly."""
    root, masks = voc_root
    voc = root / "VOCdevkit" / "VOC2012"
    image_id = TRAIN_IDS[0]
    rgb = voc_colormap()[masks[image_id]]
    path = voc / "SegmentationClass" / f"{image_id}.png"
    Image.fromarray(rgb).save(path)  # an RGB-saved mask
    with pytest.raises(ValueError, match=rf"{image_id}\.png: an RGB image, not a VOC mask.*rgb_to_index"):
        VOCSegmentation("train", root)[0]
    # the repair the message describes gives back the original indices
    repaired = rgb_to_index(np.asarray(Image.open(path)), VOC_COLORS, ignore_color=IGNORE_COLOR)
    save_palette_png(repaired.astype(np.uint8), path)
    np.testing.assert_array_equal(VOCSegmentation("train", root)[0][1], masks[image_id])


def test_voc_errors(voc_root, tmp_path):
    root, masks = voc_root
    voc = root / "VOCdevkit" / "VOC2012"
    with pytest.raises(FileNotFoundError, match=r"python -m seglab download voc") as info:
        VOCSegmentation("train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(ValueError, match=r"unknown split 'test'.*trainaug"):
        VOCSegmentation("test", root)
    with pytest.raises(FileNotFoundError, match=r"download sbd.*SegmentationClassAug"):
        VOCSegmentation("trainaug", root)

    bad = masks[TRAIN_IDS[1]].copy()
    bad[5, 5], bad[6, 6] = 21, 40
    save_palette_png(bad, voc / "SegmentationClass" / f"{TRAIN_IDS[1]}.png")
    with pytest.raises(ValueError, match=rf"{TRAIN_IDS[1]}\.png.*\[21, 40\].*\[0, 21\).*255"):
        VOCSegmentation("train", root)[1]

    save_palette_png(np.zeros((10, 10), np.uint8), voc / "SegmentationClass" / f"{TRAIN_IDS[2]}.png")
    with pytest.raises(ValueError, match=rf"{TRAIN_IDS[2]}\.png.*20x26.*10x10"):
        VOCSegmentation("train", root)[2]

    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"'val' is empty"):
        VOCSegmentation("val", root)

    (voc / "JPEGImages" / f"{TRAIN_IDS[0]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of the 3 ids.*the first is {TRAIN_IDS[0]} \(no JPEGImages/{TRAIN_IDS[0]}\.jpg"):
        VOCSegmentation("train", root)


# --- download ------------------------------------------------------------------------------------------------


def test_download_tries_mirrors_until_checksum_matches(tmp_path):
    archive, md5, masks = make_voc_tar(tmp_path)
    corrupt = tmp_path / "corrupt" / VOC_FILENAME
    corrupt.parent.mkdir()
    corrupt.write_bytes(archive.read_bytes()[:-4096])  # truncated download
    missing = tmp_path / "missing" / VOC_FILENAME
    mirrors = [missing.as_uri(), corrupt.as_uri(), archive.as_uri()]

    dest = tmp_path / "data"
    voc2012 = download_voc(dest, mirrors=mirrors, md5=md5)
    assert voc2012 == dest / "VOCdevkit" / "VOC2012"
    assert calculate_md5(dest / VOC_FILENAME) == md5  # the verified archive is kept
    ds = VOCSegmentation("train", dest)
    np.testing.assert_array_equal(ds[0][1], masks[TRAIN_IDS[0]])
    # a second call finds the data and downloads nothing (all mirrors broken now)
    assert download_voc(dest, mirrors=[missing.as_uri()], md5=md5) == voc2012


def test_download_failure_lists_every_url_and_deletes_partial_file(tmp_path):
    archive, md5, _ = make_voc_tar(tmp_path)
    corrupt = tmp_path / "corrupt" / VOC_FILENAME
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a tar")
    missing = (tmp_path / "missing" / VOC_FILENAME).as_uri()
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download_voc(dest, mirrors=[corrupt.as_uri(), missing], md5=md5)
    message = str(info.value)
    assert corrupt.as_uri() in message and "MD5 mismatch" in message and calculate_md5(corrupt) in message
    assert missing in message and "FileNotFoundError" in message
    assert "tried 2 URLs" in message
    assert not (dest / VOC_FILENAME).exists()  # corrupt file deleted
    assert not (dest / "VOCdevkit").exists()


def test_download_over_http_with_a_dead_mirror(tmp_path):
    """The real transfer path: a local HTTP server with one 404 URL and one good URL."""
    archive, md5, _ = make_voc_tar(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        mirrors = [f"{base}/no-such-file.tar", f"{base}/{VOC_FILENAME}"]
        assert download_voc(tmp_path / "data", mirrors=mirrors, md5=md5, timeout=10).is_dir()
        with pytest.raises(DownloadError, match=r"no-such-file\.tar: HTTPError: HTTP Error 404"):
            fetch(mirrors[:1], tmp_path / "other", VOC_FILENAME, md5, timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_keeps_a_stale_file_aside_and_keeps_good_one(tmp_path):
    archive, md5, _ = make_voc_tar(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / VOC_FILENAME).write_bytes(b"partial download from an earlier run")
    assert calculate_md5(fetch([archive.as_uri()], dest, VOC_FILENAME, md5)) == md5
    # the file that was there is never deleted (it may be the user's): it is renamed
    assert (dest / f"{VOC_FILENAME}.md5-mismatch").read_bytes() == b"partial download from an earlier run"
    # with the good file in place no URL is contacted
    assert fetch(["file:///does/not/exist.tar"], dest, VOC_FILENAME, md5) == dest / VOC_FILENAME


def test_dataset_download_flag_uses_module_mirrors(tmp_path, monkeypatch):
    archive, md5, masks = make_voc_tar(tmp_path)
    monkeypatch.setattr(download_module, "VOC_MD5", md5)
    monkeypatch.setattr(download_module, "VOC_MIRRORS", ((tmp_path / "nope.tar").as_uri(), archive.as_uri()))
    ds = build_dataset("voc", "val", root=tmp_path / "data" / "VOCdevkit", download=True)
    assert len(ds) == 2 and (tmp_path / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()
    np.testing.assert_array_equal(ds[1][1], masks[VAL_IDS[1]])
    # the mirrors parameter overrides the module constant; the CLI entry point works too
    other = tmp_path / "other"
    assert download("voc", other, mirrors=[archive.as_uri()], md5=md5) == other / "VOCdevkit" / "VOC2012"
    assert len(VOCSegmentation("train", other, download=True, mirrors=["file:///nowhere.tar"])) == 3


# --- safe extraction -----------------------------------------------------------------------------------------


def _tar_with(path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("VOCdevkit/readme.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("/tmp/seglab_evil.txt"), "absolute path"),
        (tarfile.TarInfo("VOCdevkit/../../evil.txt"), r"contains '\.\.'"),
        (_link("VOCdevkit/passwd", "/etc/passwd", tarfile.SYMTYPE), "links to the absolute path"),
        (_link("VOCdevkit/up", "../../outside", tarfile.SYMTYPE), "outside"),
        (_link("VOCdevkit/hard", "../outside.txt", tarfile.LNKTYPE), "outside"),
        (_link("VOCdevkit/dev", "", tarfile.CHRTYPE), "device file"),
    ],
    ids=["absolute", "dotdot", "symlink-absolute", "symlink-outside", "hardlink-outside", "device"],
)
def test_unsafe_members_are_rejected_before_anything_is_extracted(tmp_path, member, reason):
    archive = _tar_with(tmp_path / "evil.tar", member)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(archive, dest)
    assert member.name in str(info.value) and "refusing" in str(info.value)
    assert list(dest.iterdir()) == []  # not even the harmless member was written
    assert not (tmp_path / "outside").exists() and not Path("/tmp/seglab_evil.txt").exists()


def test_safe_extract_keeps_links_that_stay_inside(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar", _link("VOCdevkit/alias.txt", "readme.txt", tarfile.SYMTYPE))
    dest = safe_extract(archive, tmp_path / "dest")
    assert (dest / "VOCdevkit" / "alias.txt").read_text() == "ok"


def test_download_rejects_unsafe_archive_with_good_checksum(tmp_path):
    archive = _tar_with(tmp_path / "mirror" / VOC_FILENAME, tarfile.TarInfo("../escaped.txt"))
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./escaped\.txt'"):
        download_voc(tmp_path / "data", mirrors=[archive.as_uri()], md5=calculate_md5(archive))
    assert not (tmp_path / "escaped.txt").exists()


# --- SBD / trainaug ------------------------------------------------------------------------------------------

SBD_IDS = ["2007_000032", "2007_000033", "2008_000123", "2010_000456"]  # overlaps VOC train and VOC val


def make_sbd_tgz(tmp_path: Path, voc2012: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """A benchmark.tgz with benchmark_RELEASE/dataset/cls/<id>.mat labels (GTcls.Segmentation)."""
    savemat = pytest.importorskip("scipy.io", reason="SBD's .mat labels are read with scipy").savemat
    labels = {}
    archive = tmp_path / "sbd" / "benchmark.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for image_id in SBD_IDS:
            if not (voc2012 / "JPEGImages" / f"{image_id}.jpg").exists():  # SBD images are VOC images
                Image.fromarray(rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)).save(
                    voc2012 / "JPEGImages" / f"{image_id}.jpg"
                )
            shape = (20, 26) if image_id in TRAIN_IDS + VAL_IDS else (18, 22)
            labels[image_id] = rng.integers(0, 21, shape, dtype=np.uint8)
            buffer = io.BytesIO()
            savemat(buffer, {"GTcls": {"Segmentation": labels[image_id], "CategoriesPresent": np.arange(3)}})
            info = tarfile.TarInfo(f"benchmark_RELEASE/dataset/cls/{image_id}.mat")
            info.size = buffer.getbuffer().nbytes
            buffer.seek(0)
            tar.addfile(info, buffer)
        listing = "\n".join(SBD_IDS).encode()
        info = tarfile.TarInfo("benchmark_RELEASE/dataset/train.txt")
        info.size = len(listing)
        tar.addfile(info, io.BytesIO(listing))
    return archive, labels


def test_sbd_download_builds_trainaug(voc_root, tmp_path):
    root, masks = voc_root
    voc2012 = root / "VOCdevkit" / "VOC2012"
    archive, labels = make_sbd_tgz(tmp_path, voc2012, np.random.default_rng(1))
    out = download_sbd(root, mirrors=[(tmp_path / "gone.tgz").as_uri(), archive.as_uri()], md5=calculate_md5(archive))
    assert out == voc2012 / "SegmentationClassAug"

    ds = VOCSegmentation("trainaug", root)
    expected = sorted((set(SBD_IDS) | set(TRAIN_IDS)) - set(VAL_IDS))  # VOC val never enters training
    assert [p[0].stem for p in ds.samples] == expected
    got = {image_id: ds[i][1] for i, image_id in enumerate(expected)}
    np.testing.assert_array_equal(got["2008_000123"], labels["2008_000123"])  # SBD-only image: SBD label
    np.testing.assert_array_equal(got["2007_000032"], masks["2007_000032"])  # VOC annotates it: VOC label, 255s
    # without trainaug.txt the split is derived from SegmentationClassAug minus val: same ids
    (voc2012 / "ImageSets" / "Segmentation" / "trainaug.txt").unlink()
    assert [p[0].stem for p in VOCSegmentation("trainaug", root).samples] == expected


def test_trainaug_download_flag_fetches_sbd(voc_root, tmp_path, monkeypatch):
    root, _ = voc_root
    archive, _ = make_sbd_tgz(tmp_path, root / "VOCdevkit" / "VOC2012", np.random.default_rng(2))
    monkeypatch.setattr(download_module, "SBD_MD5", calculate_md5(archive))
    ds = VOCSegmentation("trainaug", root, download=True, sbd_mirrors=[archive.as_uri()])
    assert len(ds) == len((set(SBD_IDS) | set(TRAIN_IDS)) - set(VAL_IDS))


def test_sbd_needs_voc_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="download voc"):
        download_sbd(tmp_path, mirrors=["file:///nowhere.tgz"], md5="0" * 32)


# --- from_file: a copy the user already has (issue 21 item 3) -------------------------------------------------------


def _untouched(path: Path) -> tuple[bytes, int, int]:
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_mode


def test_from_file_links_the_users_tar_into_place_and_never_moves_it(tmp_path, capsys):
    archive, md5, masks = make_voc_tar(tmp_path)
    before = _untouched(archive)
    dest = tmp_path / "data"
    voc2012 = download("voc", dest, from_file=archive, md5=md5, mirrors=["file:///never/tried.tar"])
    assert voc2012 == dest / "VOCdevkit" / "VOC2012"
    np.testing.assert_array_equal(VOCSegmentation("train", dest)[0][1], masks[TRAIN_IDS[0]])
    assert _untouched(archive) == before  # still there, same bytes, same time stamp
    assert (dest / VOC_FILENAME).samefile(archive)  # hard-linked: no second 2 GB
    err = capsys.readouterr().err
    assert f"linked your copy {archive} (MD5 checked)" in err and "trying mirror" not in err
    # keep_archive=False removes only our link, never the user's file
    other = tmp_path / "other"
    download_voc(other, from_file=archive, md5=md5, keep_archive=False)
    assert _untouched(archive) == before


def test_from_file_copies_when_it_cannot_link(tmp_path, monkeypatch):
    archive, md5, _ = make_voc_tar(tmp_path)
    before = _untouched(archive)
    local_copy = importlib.import_module("seglab.data.local_copy")

    def no_link(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")  # another file system

    monkeypatch.setattr(local_copy.os, "link", no_link)
    download_voc(tmp_path / "data", from_file=archive, md5=md5)
    copy = tmp_path / "data" / VOC_FILENAME
    assert copy.read_bytes() == archive.read_bytes() and not copy.samefile(archive)
    assert _untouched(archive) == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["VOCdevkit", VOC_FILENAME]  # no .copying left

    def full_disk(source, target):
        Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_copy.shutil, "copyfile", full_disk)
    dest = tmp_path / "full"
    with pytest.raises(OSError, match=rf"cannot write {dest}/{VOC_FILENAME}\.copying \(copying {archive}\): No space"):
        download_voc(dest, from_file=archive, md5=md5)
    assert list(dest.iterdir()) == [] and _untouched(archive) == before  # our half copy removed, theirs untouched


def test_from_file_with_the_wrong_md5_is_refused_and_left_untouched(tmp_path):
    archive, _, _ = make_voc_tar(tmp_path)
    before = _untouched(archive)
    with pytest.raises(ValueError) as info:
        download_voc(tmp_path / "data", from_file=archive)  # the real VOC MD5: this small tar is not VOC
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"from_file (--from-file): {archive} has MD5 ")
    assert calculate_md5(archive) in message and download_module.VOC_MD5 in message
    assert "It was left as it is" in message
    assert _untouched(archive) == before and not (tmp_path / "data").exists()  # nothing written


def test_from_file_errors_and_the_tar_already_in_place(tmp_path):
    archive, md5, _ = make_voc_tar(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"from_file \(--from-file\): no file at .*nowhere\.tar; give the path"):
        download_voc(tmp_path / "data", from_file=tmp_path / "nowhere.tar", md5=md5)
    with pytest.raises(IsADirectoryError, match=r"from_file \(--from-file\): .* is a folder"):
        download_voc(tmp_path / "data", from_file=tmp_path, md5=md5)
    with pytest.raises(ValueError, match=r"from_file \(--from-file\) works for voc and sbd.*not 'camvid'"):
        download("camvid", tmp_path, from_file=archive)
    # the user's tar is already where the download goes: used as it is
    before = _untouched(archive)
    assert download_voc(archive.parent, from_file=archive, md5=md5) == archive.parent / "VOCdevkit" / "VOC2012"
    assert _untouched(archive) == before
    # a different file where the tar goes is kept aside, never replaced
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / VOC_FILENAME).write_bytes(b"someone's other file")
    download_voc(dest, from_file=archive, md5=md5)
    assert (dest / f"{VOC_FILENAME}.md5-mismatch").read_bytes() == b"someone's other file"
    assert (dest / VOC_FILENAME).read_bytes() == archive.read_bytes()


def test_sbd_from_file(voc_root, tmp_path):
    root, _ = voc_root
    archive, _ = make_sbd_tgz(tmp_path, root / "VOCdevkit" / "VOC2012", np.random.default_rng(3))
    out = download("sbd", root, from_file=archive, md5=calculate_md5(archive), mirrors=["file:///never.tgz"])
    assert out == root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" and archive.is_file()
    assert len(VOCSegmentation("trainaug", root)) == len((set(SBD_IDS) | set(TRAIN_IDS)) - set(VAL_IDS))


def test_the_cli_from_file_flag(tmp_path, monkeypatch, capsys):
    from seglab import cli

    archive, md5, _ = make_voc_tar(tmp_path)
    before = _untouched(archive)
    assert cli.main(["download", "voc", "--data-root", str(tmp_path / "data"), "--from-file", str(archive)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # the real VOC MD5: this small tar is refused, in one line
    assert error.startswith(f"error: from_file (--from-file): {archive} has MD5 {md5}, but {VOC_FILENAME} has MD5 ")
    monkeypatch.setattr(download_module, "VOC_MD5", md5)
    assert cli.main(["download", "voc", "--data-root", str(tmp_path / "data"), "--from-file", str(archive)]) == 0
    assert f"voc is ready in {tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'}" in capsys.readouterr().out
    assert _untouched(archive) == before
