"""DDP on this CPU machine: gloo, 2 processes started by torchrun (or by hand), digits, one seed.

The 2-rank study is compared with one process using the same global batch. Exact (bitwise) agreement
is not expected: DDP sums each rank's gradient (over its half of the batch) and then all-reduces the
two partial sums, while one process sums the whole batch in one reduction, so float additions happen
in another order. The masks and the test accuracy must still agree exactly, the weights to ~1e-5.
The model has no BatchNorm (``dist_worker.digits_nobn``): per-rank batch statistics would differ.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from nptm.data.transforms import augment_batch
from nptm.data.loaders import TensorLoader
from nptm.study.cli import main
from nptm.train.checkpoint import load_checkpoint
from tests.conftest import assert_bitwise_equal
from tests.study.dist_worker import Dump
from tests.study.study_files import phase_checkpoint

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("dist_worker.py"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ARGS = ["--model", "digits_nobn", "--pruner", "magnitude", "--seeds", "0,", "--schedules", "FT,ALLR", "--epochs", "2",
        "--retrain-epochs", "1", "--lr", "0.05", "--quiet", "--dist-timeout", "20"]
PHASES = ["s0__dense.pt", "s0__magnitude-0.9__FT__c1.pt", "s0__magnitude-0.9__ALLR__c1.pt"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _run(cmd, timeout=90, **env):
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), cwd=ROOT, timeout=timeout)
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, global batch 64."""
    tmp = tmp_path_factory.mktemp("single")
    assert main(["--out", str(tmp / "out"), *ARGS], callbacks=[Dump(tmp / "dump")]) == 0
    return tmp


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """torchrun, 2 processes x 32 = global batch 64."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc, _ = _run([*TORCHRUN, WORKER, "--dump", str(tmp / "dump"), "--", "--out", str(tmp / "out"), *ARGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_two_ranks_match_one_process(single, ddp):
    for phase in PHASES:
        one = torch.load(single / "dump" / "rank0" / phase)
        r0, r1 = (torch.load(ddp / "dump" / f"rank{r}" / phase) for r in (0, 1))
        assert r0["world_size"] == r1["world_size"] == 2 and one["world_size"] == 1
        for name in r0["model"]:  # every rank holds the same weights, bit for bit
            assert_bitwise_equal(r0["model"][name], r1["model"][name])
            torch.testing.assert_close(r0["model"][name], one["model"][name], rtol=1e-4, atol=1e-5)
        if phase != "s0__dense.pt":  # masks: identical on every rank and to one process
            assert r0["masks"].keys() == r1["masks"].keys() == one["masks"].keys()
            for name in r0["masks"]:
                assert torch.equal(r0["masks"][name], r1["masks"][name]) and torch.equal(r0["masks"][name], one["masks"][name])
                assert int((r0["model"][name][~r0["masks"][name]] != 0).sum()) == 0  # pruned weights stay zero
        saved = load_checkpoint(phase_checkpoint(ddp / "out", phase))["model"]  # rank 0 wrote what it trained
        for name, t in saved.items():
            assert_bitwise_equal(t, r0["model"][name])
    a = json.loads((single / "out" / "results.json").read_text())
    b = json.loads((ddp / "out" / "results.json").read_text())
    assert [r["run"] for r in a] == [r["run"] for r in b] and [r["world_size"] for r in b] == [2] * len(b)
    for x, y in zip(a, b):
        assert x["top1"] == y["top1"] and x["sparsity"] == y["sparsity"] and x["iterations"] == y["iterations"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5) and x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert ("d" in x) == ("d" in y) and x.get("d", 0) == pytest.approx(y.get("d", 0), rel=1e-5)
    assert not (ddp / "dump" / "rank1" / "out").exists() and sorted(p.name for p in (ddp / "out").iterdir()) == sorted(
        p.name for p in (single / "out").iterdir())  # only rank 0 wrote, the same files


def test_killed_worker_fails_fast_and_resumes_in_one_process(single, tmp_path):
    out = tmp_path / "out"
    proc, took = _run([*TORCHRUN, WORKER, "--fail-rank", "1", "--fail-after", "1", "--", "--out", str(out), *ARGS])
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and took < 60, log[-3000:]
    assert "rank 1 simulates a exit" in log and "exitcode  : 17" in log and "ChildFailedError" in log, log[-3000:]
    # rank 0 either reports the lost peer or is stopped by torchrun's SIGTERM; both say how to resume
    assert ("lost contact with its peers" in log or "interrupted by SIGTERM" in log), log[-3000:]
    # the checkpoints rank 0 left are resumable, here by a single process (the same global batches)
    assert main(["--out", str(out), "--resume"]) == 0
    a = json.loads((single / "out" / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in a] == [r["run"] for r in b]
    for x, y in zip(a, b):
        assert x["top1"] == y["top1"] and x["loss"] == pytest.approx(y["loss"], rel=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stalled_peer_times_out_with_a_clear_error(tmp_path):
    """No torchrun to clean up: rank 1 stalls after an epoch, rank 0 must give up after --dist-timeout."""
    cmd = [sys.executable, WORKER, "--fail-rank", "1", "--fail-after", "1", "--fail-how", "hang", "--",
           "--out", str(tmp_path / "out"), *ARGS, "--dist-timeout", "4"]
    env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        start = time.monotonic()
        _, err0 = procs[0].communicate(timeout=60)
        took = time.monotonic() - start
        assert procs[0].returncode == 3, err0
        lines = [line for line in err0.splitlines() if line.startswith("nptm.train")]
        assert len(lines) == 1 and "rank 0 of 2 lost contact with its peers (Timed out" in lines[0], err0
        assert f"--resume --out {tmp_path / 'out'}" in lines[0] and "Traceback" not in err0
        assert procs[1].poll() is None  # still stalled: rank 0 did not wait for it
        procs[1].send_signal(signal.SIGTERM)
        _, err1 = procs[1].communicate(timeout=30)
        assert procs[1].returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err1, err1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert took < 45


def test_bad_input_stops_every_rank_with_one_line(single, tmp_path):
    earlier = tmp_path / "earlier"
    shutil.copytree(single / "out", earlier)
    proc, took = _run([*TORCHRUN, "-m", "nptm.train", "--out", str(earlier), *ARGS])  # would overwrite a study
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nptm.train: ")]
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "is not an empty folder" in errors[0], errors  # rank 0 decided, rank 1 followed
    assert json.loads((earlier / "results.json").read_text()) == json.loads((single / "out" / "results.json").read_text())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), per_rank=st.integers(1, 5), world=st.integers(1, 4), seed=st.integers(0, 9))
def test_rank_shares_of_a_global_batch_are_the_single_process_batch(n, per_rank, world, seed):
    """Rank r's batch k (with its random augmentation) is rows r, r+W, ... of one process's batch k of W*b."""
    x = torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n)
    aug = lambda x, g, share=None: augment_batch(x, g, share)  # noqa: E731
    one = TensorLoader(x, y, per_rank * world, shuffle=True, seed=seed, transform=aug)
    ranks = [TensorLoader(x, y, per_rank, shuffle=True, seed=seed, rank=r, world_size=world, transform=aug) for r in range(world)]
    for loader in [one, *ranks]:
        loader.set_epoch(3, stream=7)
    whole = list(one)
    shares = [list(r) for r in ranks]
    steps = len(ranks[0])
    assert all(len(r) == steps == len(s) for r, s in zip(ranks, shares))  # every rank steps equally often
    tail = n % (per_rank * world)
    assert steps == len(whole) - (0 < tail < world)  # only a last batch smaller than the world is dropped
    for k in range(steps):
        xs, ys = whole[k]
        assert ranks[0].global_batch(k) == len(ys)
        for r in range(world):
            assert torch.equal(shares[r][k][1], ys[r::world]) and torch.equal(shares[r][k][0], xs[r::world])
    evals = [TensorLoader(x, y, per_rank, shuffle=False, rank=r, world_size=world) for r in range(world)]
    seen = torch.cat([b for e in evals for _, b in e])
    assert sorted(seen.tolist()) == list(range(n)) and all(len(e) == len(list(e)) for e in evals)  # evaluation: all, once
