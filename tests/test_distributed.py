"""Data-parallel training on the CPU with Gloo, 2 processes (seglab.engine.distributed, fit under torchrun).

What each test proves:
- distributed evaluation (disjoint shards + summed confusion matrices) = one process, bit for bit;
- one DDP step on 2 x B images = one single-process step on 2B images (no BatchNorm; SyncBatchNorm);
- no two ranks or DataLoader workers draw the same augmentation (and the naive seeding would);
- a 2-process run killed mid-epoch fails fast (no hang, the dead rank named), resumes, and its history
  has no gap or repeat and equals an uninterrupted run;
- only rank 0 writes files; the history's val mIoU equals a single-process evaluation of last.pt.
Plus the clear errors: NCCL without CUDA, more processes than GPUs, resume with another world size,
batch size 1 with BatchNorm.

Processes are spawned (``torch.multiprocessing``) or launched with ``torchrun --standalone``; one
thread each (OMP_NUM_THREADS=1), tiny models and images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from seglab.engine import TrainConfig, evaluate, fit, load_history, load_model
from seglab.engine.distributed import (
    ShardSampler, check_batch_for_batchnorm, convert_sync_batchnorm, distributed_session, evaluate_distributed,
    init_distributed,
)

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn, port: int, args: tuple) -> None:
    """One spawned rank: the variables torchrun would set, one thread, then ``fn(rank, *args)``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), NO_ALBUMENTATIONS_UPDATE="1")
    torch.set_num_threads(1)
    with distributed_session("cpu", "gloo", timeout=60) as info:
        assert info.enabled and info.backend == "gloo" and info.world_size == WORLD
        fn(rank, *args)


def _spawn(fn, *args) -> None:
    mp.start_processes(_worker, args=(fn, _free_port(), args), nprocs=WORLD, join=True, start_method="spawn")


# --- 1. exact distributed evaluation ---------------------------------------------------------------

def _eval_rank(rank: int, out: str) -> None:
    from torch.utils.data import DataLoader, Subset

    from seglab.data import build_dataset, pad_collate
    from seglab.models import build_model
    from seglab.transforms import eval_transform

    full = build_dataset("synthetic", "val", transform=eval_transform(pad_multiple=16))
    k = full.num_classes
    torch.manual_seed(0)
    model = build_model("unet", k, base_channels=4).eval()  # random weights: several classes predicted
    dataset = Subset(full, range(7))
    collate = functools.partial(pad_collate, ignore_index=255)
    shard = ShardSampler(len(dataset), rank, WORLD)
    loader = DataLoader(dataset, batch_size=2, sampler=shard, collate_fn=collate)
    result = evaluate_distributed(model, loader, k, device="cpu")
    if rank == 0:  # the oracle: one process over the whole split, in another batching
        single = evaluate(model, DataLoader(dataset, batch_size=3, collate_fn=collate), k, device="cpu")
        torch.save({"dist": result["confusion_matrix"], "single": single["confusion_matrix"],
                    "dist_mIoU": result["mIoU"], "single_mIoU": single["mIoU"],
                    "shards": [list(ShardSampler(len(dataset), r, WORLD)) for r in range(WORLD)]}, out)


def test_distributed_evaluation_equals_single_process_exactly(tmp_path):
    out = tmp_path / "eval.pt"
    _spawn(_eval_rank, str(out))
    got = torch.load(out)
    shards = got["shards"]
    assert sorted(i for s in shards for i in s) == list(range(7))  # every image once: none dropped, none twice
    assert [len(s) for s in shards] == [4, 3]  # uneven shards, no padding (DistributedSampler would give 4 + 4)
    assert got["dist"].dtype == torch.int64 and (got["dist"] > 0).sum() >= 3  # counts spread over cells
    assert torch.equal(got["dist"], got["single"])  # integer counts, bit-identical
    assert got["dist_mIoU"] == got["single_mIoU"]


# --- 2. one DDP step = one single-process step on the global batch -----------------------------------

def _tiny_model(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    def norm():
        return [nn.BatchNorm2d(6)] if batch_norm else []

    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=not batch_norm), *norm(), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=2, dilation=2), *norm(), nn.ReLU(), nn.Conv2d(6, 4, 1))


def _global_batch(per_rank: int):
    g = torch.Generator().manual_seed(1)
    return torch.randn(WORLD * per_rank, 3, 12, 12, generator=g), torch.randint(0, 4, (WORLD * per_rank, 12, 12), generator=g)


def _step_rank(rank: int, batch_norm: bool, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    per_rank, steps = 3, 2
    images, masks = _global_batch(per_rank)
    model = _tiny_model(batch_norm)
    if batch_norm:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(ddp(images[mine]), masks[mine]).backward()
        optimizer.step()
    if rank == 0:
        reference = _tiny_model(batch_norm)  # plain BatchNorm, one process, the whole batch of 2B
        ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
        for _ in range(steps):
            ref_opt.zero_grad()
            F.cross_entropy(reference(images), masks).backward()
            ref_opt.step()
        torch.save({"ddp": model.state_dict(), "single": reference.state_dict(),
                    "start": _tiny_model(batch_norm).state_dict()}, out)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["no_batchnorm", "sync_batchnorm"])
def test_ddp_step_equals_single_process_with_twice_the_batch(tmp_path, batch_norm):
    out = tmp_path / "weights.pt"
    _spawn(_step_rank, batch_norm, str(out))
    got = torch.load(out)
    assert got["ddp"].keys() == got["single"].keys()
    for name, value in got["single"].items():
        torch.testing.assert_close(got["ddp"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        if value.is_floating_point() and "running" not in name:
            assert not torch.equal(value, got["start"][name]), f"{name} did not move: the test proves nothing"
    if batch_norm:  # SyncBN's running statistics are those of the global batch too
        assert any("running_var" in name for name in got["single"])


# --- 3. augmentation draws: unique across ranks, workers and epochs ----------------------------------

class _SameImage(torch.utils.data.Dataset):
    """16 copies of one image under the training augmentation: equal outputs = equal random draws."""

    def __init__(self) -> None:
        import numpy as np

        from seglab.transforms import train_transform

        self.transform = train_transform(24, scale=(0.5, 2.0))
        g = np.random.default_rng(0)
        self.image = g.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        self.mask = g.integers(0, 3, (40, 40)).astype(np.uint8)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int):
        out = self.transform(image=self.image, mask=self.mask)
        info = torch.utils.data.get_worker_info()
        return out["image"], torch.tensor([index, info.id if info else -1])


def _seed_like_worker_id(dataset, worker: int) -> None:
    from seglab.engine.loaders import seed_transform

    seed_transform(dataset, worker)


def _draw_rank(rank: int, naive: bool, out: str) -> None:
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from seglab.engine.loaders import EpochSampler, SeededDataset

    dataset = _SameImage()
    sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=0, drop_last=True)
    if naive:  # the bug of many reference scripts: every rank seeds its workers alike
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2, multiprocessing_context="fork",
                            worker_init_fn=functools.partial(_seed_like_worker_id, dataset))
    else:  # seglab: build_loaders' SeededDataset + EpochSampler
        sampler = EpochSampler(sampler)
        loader = DataLoader(SeededDataset(dataset), batch_size=2, sampler=sampler, num_workers=2,
                            persistent_workers=True, multiprocessing_context="fork")  # fork: no re-import
    draws = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        for images, keys in loader:
            for image, (index, worker) in zip(images, keys.tolist()):
                draws.append({"rank": rank, "epoch": epoch, "index": index, "worker": worker,
                              "digest": hashlib.sha1(image.numpy().tobytes()).hexdigest()})
    Path(out, f"rank{rank}.json").write_text(json.dumps(draws))


def _draws(tmp_path: Path, naive: bool) -> list[dict]:
    folder = tmp_path / ("naive" if naive else "seeded")
    folder.mkdir()
    _spawn(_draw_rank, naive, str(folder))
    return [d for r in range(WORLD) for d in json.loads((folder / f"rank{r}.json").read_text())]


def test_no_two_ranks_or_workers_draw_the_same_augmentation(tmp_path):
    draws = _draws(tmp_path, naive=False)
    assert {(d["rank"], d["worker"]) for d in draws} == {(r, w) for r in range(WORLD) for w in range(2)}
    for epoch in (1, 2):  # the shards partition the dataset every epoch
        assert sorted(d["index"] for d in draws if d["epoch"] == epoch) == list(range(16))
    assert len({d["digest"] for d in draws}) == len(draws) == 32  # 32 different augmentations of one image
    naive = _draws(tmp_path, naive=True)  # the check detects the bug it guards against
    assert len({d["digest"] for d in naive}) < len(naive)


# --- 4 and 5. fit under torchrun: kill, resume, only rank 0 writes ------------------------------------

_SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    import seglab.engine.run as run
    from seglab.engine import TrainConfig, fit

    out, log, kill_epoch, resume = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    rank = int(os.environ["RANK"])
    real_replace = os.replace

    def logged_replace(src, dst, *args, **kwargs):  # every file fit writes ends in an atomic os.replace
        with open(log / f"writes_rank{rank}.txt", "a") as f:
            f.write(f"{Path(dst).name}\\n")
        return real_replace(src, dst, *args, **kwargs)

    os.replace = logged_replace
    real_train_steps = run.train_steps
    calls = {"epoch": 0}

    def train_steps(state, n, **kwargs):  # fit trains each epoch with one call
        calls["epoch"] += 1
        if rank == 1 and calls["epoch"] == kill_epoch:  # rank 1 dies (SIGKILL: no cleanup) after one step
            real_train_steps(state, 1, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_train_steps(state, n, **kwargs)

    run.train_steps = train_steps
    config = TrainConfig(model="unet", base_channels=4, crop_size=32, batch_size=2, epochs=3, max_train_batches=4,
                         max_val_batches=2, val_batch_size=4, num_workers=0, progress=False, out=out, resume=resume,
                         dist_timeout=60.0, device="cpu")
    fit(config)
''')


def _torchrun(tmp_path: Path, out: Path, tag: str, kill_epoch: int = 0, resume: bool = False):
    script = tmp_path / "ddp_fit.py"
    script.write_text(_SCRIPT)
    log = tmp_path / f"log_{tag}"
    log.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", MPLBACKEND="Agg")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               str(script), str(out), str(log), str(kill_epoch), "1" if resume else "0"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    writes = {r: (log / f"writes_rank{r}.txt").read_text().split() if (log / f"writes_rank{r}.txt").exists() else []
              for r in range(WORLD)}
    return proc, writes


def _comparable(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "elapsed", "images_per_s")} for r in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_straight")
    proc, writes = _torchrun(tmp, tmp / "run", "straight")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", proc, writes


def test_only_rank_zero_writes(uninterrupted):
    out, proc, writes = uninterrupted
    assert writes[1] == []  # rank 1 wrote nothing
    assert {"config.json", "history.json", "history.csv", "curves.png", "last.pt", "best.pt"} <= set(writes[0])
    assert writes[0].count("last.pt") == 3  # once per epoch
    assert proc.stdout.count("epoch   1/3") == 1  # one process prints
    assert "global batch 4 = batch 2 per process x 2 process(es)" in proc.stdout
    # the distributed val mIoU of the last epoch = one process evaluating last.pt on the same batches
    history = load_history(out)
    model, config, state = load_model(out / "last.pt")
    assert state["world_size"] == WORLD
    from seglab.engine import build_loaders

    _, val_loader = build_loaders(config, torch.device("cpu"))
    from seglab.engine import resolve_amp_dtype

    single = evaluate(model, val_loader, state["num_classes"], max_batches=2 * WORLD,  # 2 per rank x 2 ranks
                      amp_dtype=resolve_amp_dtype(config.amp, torch.device("cpu")))  # as fit evaluated
    assert single["mIoU"] == history[-1]["val_mIoU"]


def test_killed_run_resumes_without_gap_or_repeat(tmp_path, uninterrupted):
    straight_out = uninterrupted[0]
    out = tmp_path / "run"
    killed, _ = _torchrun(tmp_path, out, "killed", kill_epoch=2)
    assert killed.returncode != 0  # it ended (subprocess.run's timeout: no hang) and failed
    assert "rank: 1" in killed.stderr or "rank 1" in killed.stderr  # torchrun names the rank that died
    assert [r["epoch"] for r in load_history(out)] == [1]  # epoch 2 died mid-way: last.pt holds epoch 1
    resumed, writes = _torchrun(tmp_path, out, "resumed", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and writes[1] == []
    history = load_history(out)
    assert [r["epoch"] for r in history] == [1, 2, 3]  # no gap, no repeat
    expected = _comparable(load_history(straight_out))
    for got, want in zip(_comparable(history), expected):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7, nan_ok=True), key
    # another world size: a clear error, not a silently different run
    with pytest.raises(ValueError, match="trained by 2 process"):
        fit(TrainConfig.from_dict(dict(json.loads((out / "config.json").read_text()), resume=True, epochs=4,
                                       verbose=False)))


# --- 6. a stopped rank: rank 0 names it ---------------------------------------------------------------

def _stopped_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    try:
        with distributed_session("cpu", "gloo", timeout=3):
            torch.distributed.all_reduce(torch.ones(1))  # both ranks are up
            if rank == 1:
                os.kill(os.getpid(), signal.SIGSTOP)  # stopped, not dead: the others wait for it until the timeout
            torch.distributed.all_reduce(torch.ones(1))
    except RuntimeError as error:
        Path(out).write_text(str(error))


@pytest.mark.slow  # two spawned processes and a 3 s collective timeout
def test_a_stopped_rank_is_named_with_the_timeout_flag(tmp_path):
    # before (issue 16, item 13): rank 0 said only "Timed out waiting 60000ms for recv", torchrun blamed rank 0
    out = tmp_path / "rank0.txt"
    context = mp.start_processes(_stopped_rank, args=(_free_port(), str(out)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    rank0, rank1 = context.processes
    try:
        rank0.join(timeout=120)
        assert rank0.exitcode == 0
    finally:
        for process in (rank1, rank0):  # rank 1 is stopped: SIGKILL ends it anyway
            if process.is_alive():
                process.kill()
            process.join()
    message = out.read_text()
    assert message.startswith("rank 1 of 2 did not answer within the 3 s timeout"), message
    assert "raise --dist-timeout (now 3 s)" in message and "\n" not in message


# --- clear errors ------------------------------------------------------------------------------------

def test_nccl_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(ValueError, match="nccl.*needs CUDA.*--dist-backend gloo"):
        init_distributed("auto", "nccl", environ=env)


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    env = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "1"}
    with pytest.raises(ValueError, match="4 processes on this node but only 2 CUDA.*--nproc_per_node=2"):
        init_distributed("auto", "auto", environ=env)


def test_no_launcher_means_one_plain_process():
    info = init_distributed("cpu", "auto", environ={})
    assert not info.enabled and info.world_size == 1 and info.is_main
    slurm = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    from seglab.engine.distributed import launcher_env

    assert launcher_env(slurm) == (1, 4, 1) and launcher_env({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_batch_size_one_with_batchnorm_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch size 1 per process with a BatchNorm model.*--batch-size.*GroupNorm"):
        fit(TrainConfig(model="deeplabv3plus", backbone="resnet18", batch_size=1, crop_size=32, epochs=1,
                        max_train_batches=1, out=str(tmp_path / "run"), progress=False, verbose=False))
    assert not (tmp_path / "run" / "last.pt").exists()
    bn_free = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
    check_batch_for_batchnorm(bn_free, 1, 1, True)  # GroupNorm: batch 1 is fine
    check_batch_for_batchnorm(_tiny_model(True), 1, 2, True)  # SyncBN over 2 processes: fine
    with pytest.raises(ValueError, match="keep --sync-batchnorm"):
        check_batch_for_batchnorm(_tiny_model(True), 1, 2, False)
