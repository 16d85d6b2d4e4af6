"""A study as independent units: one process, --jobs 2, and shards run out of order, one repeated and one killed
with SIGKILL mid-way, all end with the same runs (top-1, loss, masks, every float exactly); claims; waiting."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nptm.study.cli import main
from nptm.study.records import is_timing
from nptm.study.execute import Shard
from nptm.study.store import UnitStore
from nptm.train.checkpoint import load_checkpoint
from nptm.utils.errors import UserError
from study_files import phase_checkpoints  # noqa: I001  (tests/study is on sys.path)

ROOT = Path(__file__).resolve().parents[2]
STUDY = ["--pruner", "magnitude,random", "--schedules", "FT,LRW,ALLR", "--seeds", "2", "--epochs", "3",
         "--retrain-epochs", "1", "--quiet"]


def _cli(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nptm.train", *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _runs(out):
    """Every run's record (without timings and how it ran) and the final masks of its training phases."""
    records = json.loads((out / "results.json").read_text())
    runs = {r["run"]: {k: v for k, v in r.items() if not is_timing(k) and k != "config"} for r in records}
    masks = {}
    for name, path in phase_checkpoints(out).items():
        state = load_checkpoint(path)
        masks[name] = state.get("final_masks")
    return runs, masks


def _same(a, b):
    (runs_a, masks_a), (runs_b, masks_b) = a, b
    assert runs_a == runs_b
    assert masks_a.keys() == masks_b.keys()
    for name in masks_a:
        x, y = masks_a[name], masks_b[name]
        assert (x is None) == (y is None) and (x is None or all(torch.equal(x[k], y[k]) for k in x)), name


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    assert main(["--out", str(out), *STUDY]) == 0
    return out


def test_jobs_2_gives_the_same_study(one_process, tmp_path):
    out = tmp_path / "out"
    proc = _cli("--out", str(out), "--jobs", "2", *STUDY)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    _same(_runs(out), _runs(one_process))
    owners = {json.loads((u / "unit.json").read_text())["run"] for u in (out / "units").iterdir()}
    assert len(owners) == len(list((out / "units").iterdir()))  # every unit ran once, in its own folder


def test_shards_out_of_order_repeated_and_killed(one_process, tmp_path):
    out = tmp_path / "out"
    shard = lambda i: ["--out", str(out), "--shard", f"{i}/3", *STUDY]  # noqa: E731
    first = _cli(*shard(2))  # the last shard starts first
    deadline = time.monotonic() + 300
    while not list(out.glob("units/*/checkpoint.pt")):  # it is inside its first training phase
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # killed mid-unit: its claim and checkpoint stay behind
    first.wait()
    others = [_cli(*shard(0)), _cli(*shard(2)), _cli(*shard(1))]  # shard 2 again, beside the others
    for proc in others:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    again = _cli(*shard(2))  # a requeued task of a finished study does nothing
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    _same(_runs(out), _runs(one_process))


def test_rerun_of_a_finished_study_trains_nothing(one_process, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(one_process, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    assert main(["--out", str(out), "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == before
    _same(_runs(out), _runs(one_process))


def test_a_live_claim_is_waited_for_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", str(out), "--pruner", "magnitude", "--schedules", "FT", "--seeds", "0,", "--epochs", "1",
            "--retrain-epochs", "1", "--quiet"]
    from nptm.study.config import parse_args
    from nptm.study.folder import create, prepare
    from nptm.study.plan import plan_study

    cfg, _ = prepare(*parse_args(args))
    plan = plan_study(cfg)
    create(cfg, out, plan)
    held = UnitStore(out, who="another test process").claim(plan[0].id)  # this process is alive: not stale
    try:
        assert main([*args, "--shard", "0/1", "--wait-timeout", "1"]) == 4
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "waited" in err[0] and "s0/dense" in err[0] and "another test process" in err[0], err
    assert main([*args, "--shard", "0/1"]) == 0  # released: the shard runs it


def test_a_heartbeat_survives_file_system_errors(tmp_path, monkeypatch):
    """A failed touch of the claim (e.g. while another process renames it in a take-over) is retried, not the
    end of the heartbeat: the claim keeps being touched after a run of errors."""
    import nptm.study.store as store_module

    monkeypatch.setattr(store_module, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr(store_module, "RETRY_S", 0.01)
    real, calls = os.utime, []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= 5:
            raise (FileNotFoundError if len(calls) % 2 else OSError)(5, "Input/output error", str(path))
        return real(path, *args, **kwargs)

    claim = UnitStore(tmp_path).claim("u1")
    monkeypatch.setattr(store_module.os, "utime", flaky)
    path = tmp_path / "units" / "u1" / "claim"
    old = time.time() - 3600
    real(path, (old, old))
    deadline = time.monotonic() + 10
    while path.stat().st_mtime < old + 1800:  # touched again after five failures
        assert time.monotonic() < deadline and claim._thread.is_alive(), f"{len(calls)} touches"
        time.sleep(0.01)
    assert len(calls) > 5 and claim._thread.is_alive()
    claim.release()
    claim._thread.join(1)
    assert not claim._thread.is_alive() and not path.exists()


def test_claims(tmp_path):
    store, other = UnitStore(tmp_path), UnitStore(tmp_path, lease_s=3600)
    claim = store.claim("u1")
    assert claim is not None and other.claim("u1") is None  # held by a live process
    claim.release()
    assert other.claim("u1") is not None  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "units" / "u2" / "claim"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "token": "x"}))
    assert store.claim("u2") is not None  # its owner is gone (kill -9): taken over
    path = tmp_path / "units" / "u3" / "claim"
    path.parent.mkdir(parents=True)
    path.write_text("")  # a claim being written
    assert store.claim("u3") is None
    old = time.time() - 60
    os.utime(path, (old, old))
    assert store.claim("u3") is not None  # never finished: stale after a while
    path = tmp_path / "units" / "u4" / "claim"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    assert store.claim("u4") is None  # another host's, fresh
    os.utime(path, (time.time() - 7200,) * 2)
    assert store.claim("u4") is not None  # not touched for longer than the lease


@pytest.mark.parametrize("env, text, expected", [
    ({}, "1/3", (1, 3)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "5"}, "auto", (4, 5)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8"}, "auto", (2, 4)),
    ({"JOB_COMPLETION_INDEX": "2", "NPTM_SHARDS": "3"}, "auto", (2, 3)),
    *[({"SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",  # --array=0-6:2
        "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "auto", (t // 2, 4)) for t in (0, 2, 4, 6)],
    *[({"SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "5",  # --array=3-5
        "SLURM_ARRAY_TASK_STEP": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "auto", (t - 3, 3)) for t in (3, 4, 5)],
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "11",  # no COUNT: from the step
      "SLURM_ARRAY_TASK_STEP": "4"}, "auto", (1, 3)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "5",  # --array=5
      "SLURM_ARRAY_TASK_STEP": "1", "SLURM_ARRAY_TASK_COUNT": "1"}, "auto", (0, 1)),
])
def test_shard_from_flags_and_schedulers(env, text, expected):
    s = Shard.parse(text, env)
    assert (s.index, s.count) == expected


@pytest.mark.parametrize("env, text, message", [
    ({}, "3/3", "need 0 <= I < N"), ({}, "x", "expected I/N or auto"), ({}, "auto", "neither SLURM_ARRAY_TASK_ID"),
    ({"JOB_COMPLETION_INDEX": "1"}, "auto", "NPTM_SHARDS"),
    *[({"SLURM_ARRAY_TASK_ID": t, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",  # --array=1,5,9 (Slurm's
        "SLURM_ARRAY_TASK_STEP": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "auto", "not a range.*--array=0-2.*I/3")  # step)
      for t in ("1", "5")],
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
      "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "auto", "cannot tell its position"),
    ({"SLURM_ARRAY_TASK_ID": "x"}, "auto", "unreadable Slurm array variables"),
])
def test_bad_shards(env, text, message):
    with pytest.raises(UserError, match=message):
        Shard.parse(text, env)
