"""Faults and bad input, enumerated: SIGKILL + resume, NaN, a full disk, and every kind of bad CLI input.

Bad input must end with exit status 2 and one line on stderr, and must leave what an earlier study
wrote untouched. (Tests run as root, so "unwritable" means a path under a regular file or in /proc.)
"""
import errno
import hashlib
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nptm.train.checkpoint as checkpoint_module
import nptm.study.records as results_module
from nptm.data import DataConfig, build_dataset
from nptm.study.cli import main
from nptm.train.checkpoint import load_checkpoint, save_checkpoint
from nptm.train.loop import Callback
from nptm.study.records import is_timing
from study_files import phase_checkpoint, phase_checkpoints, unfinish  # noqa: I001  (tests/study is on sys.path)

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--seeds", "0,", "--schedules", "FT,ALLR", "--epochs", "3", "--retrain-epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted study: (output folder, seconds it took)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    start = time.monotonic()
    assert main(["--out", str(out), *ARGS]) == 0
    return out, time.monotonic() - start


def _metrics(out):
    records = json.loads((out / "results.json").read_text())
    for r in records:
        for k in [k for k in r if is_timing(k)]:
            r.pop(k)
        r["config"].pop("output")
    return records


def _same_study(out, ref):
    assert _metrics(out) == _metrics(ref)  # every float exactly
    ours, theirs = phase_checkpoints(ref), phase_checkpoints(out)
    assert sorted(theirs) == sorted(ours)
    for name in ours:
        a, b = load_checkpoint(ours[name])["model"], load_checkpoint(theirs[name])["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def _digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- kill -9 -----------------------------------------------------------------------------------------
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(reference, tmp_path):
    ref, seconds = reference
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "nptm.train", "--out", str(out), *ARGS], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("units/*/checkpoint.pt")):  # the first epoch's checkpoint is complete
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.01)
        delay = random.uniform(0, 0.5) * seconds  # somewhere in the remaining ~90% of the study
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the study ended before the kill {delay:.2f} s after its first checkpoint"
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0, f"kill after {delay:.2f} s"
    _same_study(out, ref)
    assert not list(out.rglob("*.tmp"))  # a temp file of a write the kill interrupted is cleaned up


# -- NaN -----------------------------------------------------------------------------------------------
class Poison(Callback):
    """Sets a weight to NaN when the dense phase starts its second epoch."""

    def on_epoch_start(self, trainer, epoch):
        if trainer.name == "s0/dense" and epoch == 1:
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("nan")


def test_nan_loss_names_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), *ARGS], callbacks=[Poison()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    steps = len(build_dataset(DataConfig("digits", batch_size=64)).train)
    assert err == [f"nptm.train: error: s0/dense: the loss became NaN/Inf at epoch 2/3, step 1/{steps} (lr 0.1); "
                   f"try a lower --lr"]
    state = load_checkpoint(phase_checkpoint(out, "s0__dense.pt"))  # epoch 1's, still finite
    assert not state["done"] and state["trainer"]["epoch"] == 1 and len(state["trainer"]["history"]) == 1
    assert all(torch.isfinite(t).all() for t in state["trainer"]["model"].values() if t.is_floating_point())


# -- a full disk ---------------------------------------------------------------------------------------
def _fail_nth_write(monkeypatch, module, matches, nth):
    """Make the nth ``atomic_write`` to a matching path write half its bytes, then fail with ENOSPC."""
    real, calls = module.atomic_write, []

    def atomic_write(path, write):
        if not matches(Path(path)):
            return real(path, write)
        calls.append(path)
        if len(calls) != nth:
            return real(path, write)

        def half_then_full(f):
            buf = io.BytesIO()
            write(buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        return real(path, half_then_full)

    monkeypatch.setattr(module, "atomic_write", atomic_write)


@pytest.mark.parametrize("target", ["results", "checkpoint"])
def test_disk_full_mid_write_keeps_earlier_files_and_resumes(reference, tmp_path, monkeypatch, capsys, target):
    ref = reference[0]
    out = tmp_path / "out"
    if target == "results":  # the second results.json write (after the first retraining) fails
        _fail_nth_write(monkeypatch, results_module, lambda p: p.name == "results.json", 2)
    else:  # the dense phase's second epoch checkpoint fails
        _fail_nth_write(monkeypatch, checkpoint_module, lambda p: p.name == "checkpoint.pt" and ".dense." in p.parent.name, 2)
    assert main(["--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and f"--resume --out {out}" in err[0], err
    assert not list(out.rglob("*.tmp"))
    if target == "results":
        assert _metrics(out) == _metrics(ref)[:1]  # the dense record, intact
    else:
        assert not (out / "results.json").exists()
        assert load_checkpoint(phase_checkpoint(out, "s0__dense.pt"))["trainer"]["epoch"] == 1
    monkeypatch.undo()
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0
    _same_study(out, ref)


def test_failed_results_write_leaves_the_old_files(tmp_path, monkeypatch):
    results_module.write_results(tmp_path, [{"run": "a", "top1": 0.5}])
    before = _digest(tmp_path)
    _fail_nth_write(monkeypatch, results_module, lambda p: True, 1)
    with pytest.raises(OSError, match="No space left"):
        results_module.write_results(tmp_path, [{"run": "a", "top1": 0.5}, {"run": "b", "top1": 0.7}])
    assert _digest(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json"]


# -- bad input: python -m nptm.train -----------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(reference, tmp_path_factory):
    """Paths the bad-input cases refer to; the resume cases get copies of the reference study."""
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "empty").mkdir()
    (tmp / "file").write_text("a regular file")
    (tmp / "bad_yaml").write_text("epochs: [1\n")
    (tmp / "unknown_yaml").write_text("colour: blue\n")
    ref = reference[0]
    ckpts = {"truncated": "s0__random-0.9__ALLR__c1.pt", "foreign": "s0__random-0.9__FT__c1.pt",
             "other_phase": "s0__magnitude-0.9__ALLR__c1.pt"}
    for name, ckpt in ckpts.items():
        shutil.copytree(ref, tmp / name)
    path = unfinish(phase_checkpoint(tmp / "truncated", ckpts["truncated"]))
    path.write_bytes(path.read_bytes()[:1000])
    torch.save({"weights": torch.zeros(3)}, unfinish(phase_checkpoint(tmp / "foreign", ckpts["foreign"])))
    shutil.copy(phase_checkpoint(ref, "s0__dense.pt"), unfinish(phase_checkpoint(tmp / "other_phase", ckpts["other_phase"])))
    return {"tmp": tmp, "earlier": ref, **{k: tmp / k for k in ["empty", "file", "bad_yaml", "unknown_yaml", *ckpts]}}


BAD_INPUT = {  # name: (argv, expected text of the one line, environment)
    "unknown option": (["--frobnicate"], "unrecognized arguments: --frobnicate", {}),
    "int expected": (["--epochs", "two"], "--epochs: invalid value 'two'", {}),
    "float list expected": (["--sparsity", "0.5,x"], "--sparsity: invalid value '0.5,x'", {}),
    "unknown choice": (["--schedules", "FT,SUPER"], "unknown schedule 'SUPER'", {}),
    "sparsity 1.0": (["--sparsity", "1.0"], "--sparsity 1.0 is outside [0, 1)", {}),
    "negative lr": (["--lr", "-1"], "--lr must be positive", {}),
    "seed twice": (["--seeds", "1,1"], "--seeds must be distinct", {}),
    "zero timeout": (["--dist-timeout", "0"], "--dist-timeout must be a positive number", {}),
    "LRW longer than training": (["--schedules", "LRW", "--epochs", "2", "--retrain-epochs", "5"], "LRW replays", {}),
    "BIMP without unstructured pruner": (["--bimp", "--pruner", "l1_filters"], "--bimp needs an unstructured pruner", {}),
    "filter preset the model lacks": (["--pruner", "l1_filters", "--filter-config", "A"],
                                      "no PFEC config 'A' for digits_net", {}),
    "unknown model": (["--model", "resnet9000"], "unknown model 'resnet9000'", {}),
    "unknown device": (["--device", "tpu:0"], "--device: unknown device 'tpu:0'", {}),
    "batch not divisible by world size": (["--batch-size", "63"], "--batch-size 63 (the global batch) is not divisible "
                                                                  "by the 2 processes", {"WORLD_SIZE": "2"}),
    "garbled torchrun environment": ([], "WORLD_SIZE='two' is not an integer", {"WORLD_SIZE": "two"}),
    "missing config file": (["--config", "{tmp}/none.yaml"], "cannot read config file", {}),
    "malformed config file": (["--config", "{bad_yaml}"], "malformed config file", {}),
    "unknown config key": (["--config", "{unknown_yaml}"], "unknown config key 'colour'", {}),
    "no data dir": (["--dataset", "cifar10"], "cifar10 needs --data-dir", {}),
    "missing data dir": (["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"], "cifar10 not found", {}),
    "empty data dir": (["--dataset", "cifar100", "--data-dir", "{empty}"], "cifar100 not found", {}),
    "output under a regular file": (["--out", "{file}/out"], "cannot write there", {}),
    "output in /proc": (["--out", "/proc/nptm-test-out"], "cannot write there", {}),
    "output holds a study": (["--out", "{earlier}"], "is not an empty folder; pass --resume", {}),
    "resume without --out": (["--resume"], "--resume needs --out", {}),
    "resume with no checkpoint": (["--resume", "--out", "{empty}"], "nothing to resume", {}),
    "resume a changed study": (["--resume", "--out", "{earlier}", "--epochs", "9"], "--epochs differs", {}),
    "resume a truncated checkpoint": (["--resume", "--out", "{truncated}"], "unreadable checkpoint", {}),
    "resume a foreign checkpoint": (["--resume", "--out", "{foreign}"], "is not an nptm.train checkpoint", {}),
    "resume another phase's checkpoint": (["--resume", "--out", "{other_phase}"], "belongs to phase 's0/dense'", {}),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_overwrites_nothing(case, folders, monkeypatch, capsys):
    argv, expected, env = BAD_INPUT[case]
    argv = [a.format(**folders) for a in argv]
    if "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(folders["tmp"] / "new")]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = {k: _digest(v) for k, v in folders.items() if k in ("tmp", "earlier")}
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nptm.train: error: ") and expected in err[0], err
    assert "Traceback" not in captured.err
    assert {k: _digest(v) for k, v in folders.items() if k in ("tmp", "earlier")} == before
    assert not Path("/proc/nptm-test-out").exists()


# -- bad input: python -m nptm.data write --------------------------------------------------------------
def _data_cli(argv):
    from nptm.data.__main__ import main as data_main

    try:
        return data_main(argv)
    except SystemExit as e:  # argparse
        return e.code


DATA_BAD_INPUT = [
    pytest.param(["write", "--frobnicate"], "--frobnicate", id="unknown option"),
    pytest.param(["write", "--source", "digits", "--out", "{tmp}/a.beton", "--jpeg-quality", "abc"], "--jpeg-quality",
                 id="int expected"),
    pytest.param(["write", "--source", "foo:/x", "--out", "{tmp}/a.beton"], "unknown source kind 'foo'", id="unknown source"),
    pytest.param(["write", "--source", "digits", "--out", "{tmp}/a.beton", "--jpeg-quality", "300"], "--jpeg-quality",
                 id="out of range"),
    pytest.param(["write", "--source", "imagefolder:{tmp}/nowhere", "--out", "{tmp}/a.beton"], "is not a directory",
                 id="missing folder"),
    pytest.param(["write", "--source", "imagefolder:{empty}", "--out", "{tmp}/a.beton"], "class folder", id="empty folder"),
    pytest.param(["write", "--source", "cifar10:{empty}", "--out", "{tmp}/a.beton"], "cifar10 not found", id="empty cifar dir"),
    pytest.param(["write", "--source", "digits", "--out", "{file}"], "--force", id="output exists"),
    pytest.param(["write", "--source", "digits", "--out", "{file}/a.beton"], "{file}",
                 id="output under a regular file"),
]


@pytest.mark.parametrize("argv, expected", DATA_BAD_INPUT)
def test_data_write_bad_input_exits_2_with_one_line(argv, expected, folders, capsys):
    argv = [a.format(**folders) for a in argv]
    before = _digest(folders["tmp"])
    try:
        code = _data_cli(argv)
    except Exception as e:  # what a user would see as a traceback
        code = f"{type(e).__name__}: {e}"
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected.format(**folders) in err[0], (code, err)
    assert _digest(folders["tmp"]) == before and not (folders["tmp"] / "a.beton").exists()


def test_nan_check_reports_the_first_bad_step_exactly():
    """The loop checks for NaN lazily on the GPU; the step it names is still the first bad one."""
    from nptm.data.loaders import TensorLoader
    from nptm.schedules.retrain import Schedule
    from nptm.train.loop import Trainer, TrainingDiverged

    x, y = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.randint(0, 3, (40,))
    x[21] = math.inf  # batch size 4: step 6
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    trainer = Trainer(model, TensorLoader(x, y, 4, shuffle=False), Schedule("c", 20, lambda it: 0.1), epochs=2,
                      nan_check_every=50)
    with pytest.raises(TrainingDiverged, match=r"epoch 1/2, step 6/10"):
        trainer.fit()
    assert trainer.iteration == 10  # it noticed at the end of the epoch, before any checkpoint of it


def test_checkpoint_write_is_atomic_under_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"v": 1})
    _fail_nth_write(monkeypatch, checkpoint_module, lambda p: True, 1)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"v": 2, "w": torch.zeros(1000)})
    assert load_checkpoint(path)["v"] == 1 and [p.name for p in tmp_path.iterdir()] == ["c.pt"]
