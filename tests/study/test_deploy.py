"""From a study to a deployed model: every pruned run writes models/<run>.pt (listed in results.json and the report
with the command that deploys it), --deploy sparse writes the sparsified form, python -m nptm.export takes the file
as it is; pruning that would empty a layer stops the study with one line, and records flag empty layers."""
import json
import shlex

import pytest
import torch

from nptm.export.__main__ import main as export_main
from nptm.models import build_model
from nptm.pruning import Masks, load_pruned, prunable_weights, prune_unstructured
from nptm.sparse import load_sparse
from nptm.study.cli import main
from nptm.study.measure import DenseBaseline, measure

TINY = ["--seeds", "0,", "--schedules", "FT", "--epochs", "1", "--retrain-epochs", "1", "--latency-batches", "0",
        "--quiet"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "out"
    assert main(["--out", str(out), "--pruner", "magnitude,l1_filters", "--sparsity", "0.5", "--deploy", "sparse",
                 *TINY]) == 0
    return out


def test_every_pruned_run_writes_a_model_file_listed_with_its_command(study):
    records = {r["run"]: r for r in json.loads((study / "results.json").read_text())}
    pruned = [r for r in records.values() if r["kind"] != "dense"]
    assert {r["pruner"] for r in pruned} == {"magnitude", "l1_filters"} and "model_file" not in records["s0/dense"]
    report = (study / "report.md").read_text()
    for r in pruned:
        assert (study / r["model_file"]).is_file() and (study / r["deployed_file"]).is_file()
        assert r["deploy_command"].startswith(f"python -m nptm.export {r['model_file']} ")
        assert r["model_file"] in report and r["deploy_command"] in report
    # the unstructured run's file: the dense shapes, the pruned weights zero, the masks beside them
    mag = records["s0/magnitude-0.5/FT"]
    model, masks = load_pruned(build_model("digits_net", 10, 1), study / mag["model_file"], with_masks=True)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * sum(m.numel() for m in masks.values()))
    assert all(int(model.get_parameter(n)[~m].count_nonzero()) == 0 for n, m in masks.items())
    # --deploy sparse: the sparsified form computes what the model computes
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(load_sparse(study / mag["deployed_file"])(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_the_recorded_command_deploys_the_model(study, monkeypatch, capsys):
    rec = next(r for r in json.loads((study / "results.json").read_text()) if r["pruner"] == "l1_filters")
    monkeypatch.chdir(study)
    argv = shlex.split(rec["deploy_command"])[3:]
    onnx = argv[argv.index("--onnx") + 1]
    assert export_main(argv) == 0  # no --model: the file names its architecture
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {onnx} (ONNX of digits_net") and "--sparse" not in argv  # --deploy sparse wrote it
    assert export_main(argv) == 2  # the output exists now
    assert "exists; give --force to overwrite it" in capsys.readouterr().err
    sparse = rec["deployed_file"]
    assert export_main([rec["model_file"], "--sparse", sparse]) == 2
    assert export_main([rec["model_file"], "--sparse", sparse, "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {sparse} (sparsified model of digits_net")


def test_a_unit_checkpoint_points_at_the_model_file(study, capsys):
    checkpoint = next(study.glob("units/*magnitude*/c1.pt"))
    assert export_main([str(checkpoint), "--onnx", str(study / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a training checkpoint of run s0/magnitude-0.5/FT" in err
    assert str(study / "models" / "s0__magnitude-0.5__FT.pt") in err and not (study / "x.onnx").exists()


SMALL_HEAD = """
import torch
from torch import nn

def net(num_classes):  # a classifier whose weights are far smaller than the conv's: a global top-k empties it
    m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    with torch.no_grad():
        m[4].weight.mul_(1e-4)
    return m
"""


def test_a_layer_emptied_by_pruning_stops_the_study_with_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "small_head.py").write_text(SMALL_HEAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    import small_head

    torch.save(small_head.net(10).state_dict(), tmp_path / "dense.pt")  # pruned as it is, not trained first
    args = ["--model", "small_head:net", "--dense-checkpoint", str(tmp_path / "dense.pt"), "--pruner", "magnitude",
            "--sparsity", "0.6", "--include-linear", *TINY]
    assert main(["--out", str(tmp_path / "a"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pruner magnitude: pruning would empty" in err
    assert "--max-layer-sparsity" in err and "--spare-classifier" in err
    # allowed explicitly: the run finishes and its record flags the empty layer
    assert main(["--out", str(tmp_path / "b"), *args, "--max-layer-sparsity", "1"]) == 0
    run = json.loads((tmp_path / "b" / "results.json").read_text())[1]
    assert run["empty_layers"] == ["4.weight"] and run["per_layer_sparsity"]["4.weight"] == 1.0


def test_records_flag_layers_at_density_zero():
    model = build_model("digits_net", 10, 1)
    base = DenseBaseline.of("digits_net", 10, 1, 8, include_linear=True)
    masks = Masks.ones(prunable_weights(model, True))
    last = list(masks)[-1]
    masks = Masks({n: m if n != last else torch.zeros_like(m) for n, m in masks.items()})
    assert measure(model, masks, base)["empty_layers"] == [last]
    assert measure(model, Masks.ones(prunable_weights(model, True)), base)["empty_layers"] == []


def test_report_says_what_it_read_and_which_duplicates_it_left_out(study, tmp_path, capsys):
    import shutil

    from nptm.report.__main__ import main as report_main

    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    assert report_main([str(study), str(copy), "--out", str(tmp_path / "rep")]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = len(json.loads((study / "results.json").read_text()))
    assert lines[:2] == [f"read {study}: {runs} run(s)", f"read {copy}: {runs} run(s)"]
    merged = f"merged copy: {runs} run(s) already read from out left out, e.g. s0/dense (the folder given first wins)"
    assert merged in lines and any(line.startswith("plotting out + copy") for line in lines)
    assert merged[len("merged "):] in (tmp_path / "rep" / "report.md").read_text()


def test_deploy_onnx_writes_what_onnxruntime_runs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from nptm.study.deploy import model_info, write_deployable

    torch.manual_seed(0)
    model = build_model("digits_net", 10, 1).eval()
    masks = prune_unstructured(model, "magnitude", 0.5)
    fields = write_deployable(tmp_path, "s0/magnitude-0.5/FT", model, masks.state_dict(),
                              model_info("digits_net", 10, (1, 8, 8)), deploy="onnx")
    assert fields["deployed_file"] == "models/s0__magnitude-0.5__FT.onnx" and "--onnx" not in fields["deploy_command"]
    x = torch.randn(3, 1, 8, 8)
    session = ort.InferenceSession(str(tmp_path / fields["deployed_file"]), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-4)
