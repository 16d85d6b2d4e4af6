"""End-to-end: the study CLI at reduced size, resume equality, bad input via subprocess."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nptm.models import build_model, count_params
from nptm.pruning import load_pruned, prunable_weights
from nptm.schedules import OriginalSchedule
from nptm.study.cli import main
from nptm.train.checkpoint import load_checkpoint
from nptm.train.loop import Callback
from nptm.study.records import is_timing
from study_files import phase_checkpoint, phase_checkpoints, unfinish  # noqa: I001  (tests/study is on sys.path)

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--seeds", "0,", "--schedules", "FT,ALLR", "--epochs", "2", "--retrain-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    assert main(["--out", str(out), *SMALL]) == 0
    return out


def test_default_study_outputs(small_study, capsys):
    out = small_study
    for name in ["results.json", "results.csv", "table.txt", "config.json", "lr_schedules.png", "accuracy.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    records = json.loads((out / "results.json").read_text())
    assert [(r["kind"], r["pruner"], r["schedule"]) for r in records] == [
        ("dense", "-", "original"), ("retrain", "magnitude", "FT"), ("retrain", "magnitude", "ALLR"),
        ("retrain", "random", "FT"), ("retrain", "random", "ALLR")]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(records) and "top1" in csv_lines[0].split(",")
    n = sum(w.numel() for w in prunable_weights(build_model("digits_net", 10, 1)).values())
    for r in records[1:]:
        assert r["sparsity"] == 1 - (n - round(0.9 * n)) / n  # exactly round(s * N) weights pruned
        assert r["config"]["training"]["seeds"] == [0] and len(r["lr_trace"]["lr"]) == r["iters_per_epoch"]
        assert 0 <= r["top1"] <= 1 and r["flops_effective"] < r["flops_dense"] and r["speedup"] > 1
        # the pruned weights are still zero in the retrained model
        state = load_checkpoint(phase_checkpoint(out, f"s0__{r['pruner']}-0.9__{r['schedule']}__c1.pt"))
        zeros = sum(int((state["model"][name] == 0).sum()) for name in state["masks"])
        assert zeros >= round(0.9 * n) and all(int((state["model"][k][~m]).count_nonzero()) == 0 for k, m in state["masks"].items())
    fts = [r for r in records if r["schedule"] == "FT"]
    assert all(set(r["lr_trace"]["lr"]) == {OriginalSchedule(0.1, 2).eta_min} for r in fts)  # FT: constant eta_min
    allr = records[2]
    assert allr["d"] == min(1.0, max(allr["d1"], allr["d2"])) and allr["d2"] == 1 / 2
    assert max(allr["lr_trace"]["lr"]) <= allr["d"] * 0.1 + 1e-12
    assert records[1]["pruned_top1"] == records[2]["pruned_top1"]  # every schedule starts from the same pruned weights
    table = (out / "table.txt").read_text()
    assert "ALLR" in table and "±" not in table and "magnitude" in table  # one seed: no spread to show


class Kill(Callback):
    """Simulates a kill between epochs: raises after ``n`` epochs (the epoch's checkpoint is written)."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer, epoch):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def _metrics(out):
    records = json.loads((out / "results.json").read_text())
    for r in records:
        for k in [k for k in r if is_timing(k)]:
            r.pop(k)
        for h in r.get("history", []):
            assert "test_top1" in h
        r["config"].pop("output")
    return records


def test_resume_gives_the_same_results(small_study, tmp_path, capsys):
    out = tmp_path / "killed"
    assert main(["--out", str(out), *SMALL], callbacks=[Kill(1)]) == 130  # inside the dense phase
    assert "--resume" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume"], callbacks=[Kill(2)]) == 130  # dense done, inside FT
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert _metrics(out) == _metrics(small_study)  # floats compared exactly
    theirs = phase_checkpoints(out)
    for name, ckpt in sorted(phase_checkpoints(small_study).items()):
        a, b = load_checkpoint(ckpt)["model"], load_checkpoint(theirs[name])["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nptm.train", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)


def _tree_digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert pattern in lines[0], lines[0]


def test_bad_inputs_exit_2_with_one_line(small_study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_study, copy)
    before = _tree_digest(copy)
    _one_line_error(_cli("--out", str(copy)), "is not an empty folder")  # would overwrite
    assert _tree_digest(copy) == before
    _one_line_error(_cli("--dataset", "mnist"), "unknown dataset 'mnist'")
    _one_line_error(_cli("--resume", "--out", str(tmp_path / "nothing")), "nothing to resume")
    (tmp_path / "afile").write_text("x")
    _one_line_error(_cli("--out", str(tmp_path / "afile" / "sub")), "cannot write there")
    empty = tmp_path / "empty-data"
    empty.mkdir()
    _one_line_error(_cli("--dataset", "cifar10", "--data-dir", str(empty), "--out", str(tmp_path / "o1")),
                    "cifar10 not found")
    assert not (tmp_path / "o1").exists()  # nothing written before the data loaded
    ckpt = unfinish(phase_checkpoint(copy, "s0__magnitude-0.9__ALLR__c1.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    _one_line_error(_cli("--resume", "--out", str(copy)), "unreadable checkpoint")


@pytest.mark.parametrize("argv, pattern", [
    (["--pruner", "magnitude,foo"], "unknown pruner 'foo'"),
    (["--sparsity", "1"], "is outside [0, 1)"),
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--schedules", "FT,SUPER"], "unknown schedule 'SUPER'"),
    (["--resume"], "--resume needs --out"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
])
def test_bad_inputs_in_process(argv, pattern, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o")] if "--resume" not in argv else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0], err
    assert not (tmp_path / "o").exists()


def test_resume_refuses_a_changed_study(small_study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_study, copy)
    assert main(["--out", str(copy), "--resume", "--epochs", "5"]) == 2
    assert "--epochs differs" in capsys.readouterr().err


def test_diverging_loss_exits_1(tmp_path, capsys):
    code = main(["--out", str(tmp_path / "o"), "--lr", "1e30", "--seeds", "0,", "--epochs", "1", "--quiet",
                 "--schedules", "FT"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "s0/dense: the loss became NaN/Inf at epoch 1/1, step" in err[0]


def test_imp_filters_scratch_bimp_after_a_resume(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["--out", str(out), "--seeds", "0,", "--schedules", "FT", "--epochs", "3", "--retrain-epochs", "1",
            "--batch-size", "256", "--iterations", "2", "--sparsity", "0.5", "--pruner", "magnitude,l1_filters",
            "--scratch", "--bimp", "--quiet"]
    assert main(argv, callbacks=[Kill(6)]) == 130  # killed inside the first scratch run
    assert main(["--out", str(out), "--resume"]) == 0
    runs = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert list(runs) == ["s0/dense", "s0/magnitude-0.5/FT", "s0/magnitude-0.5/scratch-e", "s0/magnitude-0.5/scratch-b",
                          "s0/magnitude-0.5/bimp", "s0/l1_filters-0.5/FT", "s0/l1_filters-0.5/scratch-e",
                          "s0/l1_filters-0.5/scratch-b"]
    dense = runs["s0/dense"]
    n = sum(w.numel() for w in prunable_weights(build_model("digits_net", 10, 1)).values())
    step = 1 - 0.5 ** 0.5
    alive = n - round(step * n)
    alive -= round(step * alive)
    for name in ["s0/magnitude-0.5/FT", "s0/magnitude-0.5/bimp"]:  # IMP: 2 cycles of 1-(1-s)^(1/2)
        r = runs[name]
        assert r["sparsity"] == 1 - alive / n and [c["cycle"] for c in r["cycles"]] == [1, 2]
    bimp = runs["s0/magnitude-0.5/bimp"]
    assert (bimp["epochs"], bimp["bimp_initial_epochs"], bimp["schedule"]) == (3, 1, "BIMP")
    for pruner in ["magnitude", "l1_filters"]:
        e, b = runs[f"s0/{pruner}-0.5/scratch-e"], runs[f"s0/{pruner}-0.5/scratch-b"]
        assert e["epochs"] == 3 + 2 * 1 and b["epochs"] == round(5 * dense["flops_dense"] / b["flops_effective"])
        assert len(e["history"]) == e["epochs"]
    filt = runs["s0/l1_filters-0.5/FT"]
    assert filt["params_total"] < dense["params_total"] and filt["flops_dense"] < dense["flops_dense"]
    assert filt["speedup"] == dense["flops_dense"] / filt["flops_effective"] and len(filt["cycles"]) == 2
    saved = sorted(p.name for p in (out / "models").iterdir())  # --save-models: every pruned run's final model
    assert saved == sorted(r.replace("/", "__") + ".pt" for r in runs if r != "s0/dense")
    assert all(runs[r]["model_file"] == f"models/{r.replace('/', '__')}.pt" for r in runs if r != "s0/dense")
    filt_file = out / "models" / "s0__l1_filters-0.5__FT.pt"
    assert count_params(load_pruned(build_model("digits_net", 10, 1), filt_file))[0] == filt["params_total"]
