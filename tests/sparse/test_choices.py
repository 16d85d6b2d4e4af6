"""The per-layer choice: the margin rule, identical layers deciding together, replaying a saved decision, the same
choices on a loaded machine; ``deploy`` keeping the dense model where the sparsified one is slower; the typed
``Latency``; one-line errors and the reasons a model cannot be sparsified."""
import copy
import json
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn

from nptm.pruning import prune_unstructured
from nptm.sparse import MARGIN, Latency, SparseConv2d, SparseLinear, deploy, measure_latency, sparsify, summary
from nptm.sparse import latency as latency_module
from nptm.sparse.dense import onednn_available
from nptm.sparse.timings import machine

TOL = 1e-4


def twins():
    """Three identical 3x3 convs (same density), a fourth of the same geometry far sparser, and a head."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]
    model = nn.Sequential(*[m for c in convs for m in (c, nn.ReLU())], nn.Flatten(), nn.Linear(16 * 12 * 12, 5)).eval()
    for c, s in zip(convs, (0.8, 0.8, 0.8, 0.97)):
        prune_unstructured(c, "magnitude", s, per_layer=True)
    return model, torch.randn(2, 16, 12, 12)


def test_margin_and_identical_layers_decide_together():
    model, x = twins()
    sparse = sparsify(model, x, batch_sizes=(4,), rounds=3)
    by = {c.name: c for c in sparse.sparse_layers}
    first = [by["0"], by["2"], by["4"]]
    assert len({c.sparse for c in first}) == 1 and {c.group for c in first} == {"0"}
    assert all(c.dense_ms == first[0].dense_ms and c.sparse_ms == first[0].sparse_ms for c in first)  # pooled
    assert by["6"].group == ""  # 0.97 sparse: not within the density tolerance of the others
    assert "density 1.00" in by["9"].reason and not by["9"].dense_ms  # the unpruned head: dense, untimed
    for c in first + [by["6"]]:
        assert set(c.dense_ms) == {2, 4}
        assert c.sparse == all(c.dense_ms[b] >= MARGIN * c.sparse_ms[b] for b in c.dense_ms), c
        assert c.sparse == isinstance(sparse.get_submodule(c.name), (SparseConv2d, SparseLinear)) and c.reason
    with torch.inference_mode():
        want, got = model(x), sparse(x)
    assert (got - want).abs().max() <= TOL * want.abs().max()


def test_replay_a_saved_decision():
    model, x = twins()
    saved = {"0": True, "2": False, "6": True}  # "4" and the head unnamed: dense
    replayed = sparsify(model, x, choices=saved)
    kinds = {c.name: type(replayed.get_submodule(c.name)).__name__ for c in replayed.sparse_layers}
    dense = "DenseConv2d" if onednn_available() else "Conv2d"  # untimed: the default dense engine of a conv
    assert kinds == {"0": "SparseConv2d", "2": dense, "4": dense, "6": "SparseConv2d", "9": "Linear"}
    assert all(not c.dense_ms for c in replayed.sparse_layers)  # nothing timed
    replayed.sparse_layers[1].dense_engine = "torch"  # a sparse_layers list replays the dense engine too
    again = sparsify(model, x, choices=replayed.sparse_layers)
    assert [(c.sparse, c.dense_engine) for c in again.sparse_layers] == [(c.sparse, c.dense_engine) for c in replayed.sparse_layers]
    assert type(again.get_submodule("2")) is nn.Conv2d and type(again.get_submodule("4")).__name__ == dense
    with torch.inference_mode():
        assert (again(x) - model(x)).abs().max() <= TOL * model(x).abs().max()
    with pytest.raises(ValueError, match="no Conv2d/Linear for: 1, layer9"):
        sparsify(model, x, choices={"layer9": True, "1": False, "0": True})  # "1" is a ReLU
    with pytest.raises(ValueError, match="choices must be a list of LayerChoice or a dict"):
        sparsify(model, x, choices=["0"])
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="choices ask 0 sparse, but cannot run sparse: padding reflect"):
        sparsify(reflect, torch.randn(1, 3, 8, 8), choices={"0": True})


def test_resnet18_makes_the_same_choices_when_both_cores_are_busy(tmp_path, monkeypatch):
    """The second sparsification runs while two processes burn both cores: it reads the first one's timings and
    chooses the same; measured afresh on the busy machine (CPU time), every clear call (2x away from the margin
    either way) comes out the same too."""
    monkeypatch.setenv("NPTM_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    prune_unstructured(model, "magnitude", 0.9, include_linear=True)
    x = torch.randn(1, 3, 64, 64)
    first = sparsify(model, x).sparse_layers
    burn = "import time\nt = time.time() + 60\nwhile time.time() < t: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        again = sparsify(model, x).sparse_layers
        fresh = sparsify(model, x, cache=False).sparse_layers
    finally:
        for p in burners:
            p.kill()
            p.wait()
    assert [(c.name, c.sparse) for c in again] == [(c.name, c.sparse) for c in first], summary(again)
    assert all(c.reason.endswith("(timings kept from an earlier run)") for c in again if c.dense_ms)
    clear = {c.name: c.sparse for c in first
             if c.dense_ms and not 0.5 * MARGIN < min(c.dense_ms[b] / c.sparse_ms[b] for b in c.dense_ms) < 2 * MARGIN}
    assert clear and {c.name: c.sparse for c in fresh if c.name in clear} == clear, summary(fresh)


def test_kept_timings_file_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("NPTM_CACHE_DIR", str(tmp_path))
    path = tmp_path / "sparse-timings.json"
    path.write_text('{"x": [1')
    model, x = twins()
    with pytest.warns(UserWarning, match="sparse-timings.json: not a timings file"):
        first = sparsify(model, x, batch_sizes=(), rounds=3).sparse_layers
    again = sparsify(model, x, batch_sizes=(), rounds=3).sparse_layers
    assert [(c.sparse, c.dense_ms, c.sparse_ms) for c in again] == [(c.sparse, c.dense_ms, c.sparse_ms) for c in first]
    assert "kept from an earlier run" in again[0].reason and "kept" not in first[0].reason
    for bad in ([1.0, -2.0], [1.0, "2"], [1.0]):
        path.write_text(json.dumps({machine("cpu"): {"k": bad}}))
        with pytest.warns(UserWarning, match="not a timings file"):
            assert "kept" not in sparsify(model, x, batch_sizes=(), rounds=3).sparse_layers[0].reason
    monkeypatch.setenv("NPTM_CACHE_DIR", str(tmp_path / "unused"))
    sparsify(model, x, batch_sizes=(), rounds=3, cache=False)
    assert not (tmp_path / "unused").exists()


def test_deploy_keeps_the_dense_model_where_the_sparse_one_is_slower(monkeypatch):
    model, x = twins()
    masks = {"0.weight": torch.ones(16, 16, 3, 3, dtype=torch.bool)}
    unpruned = nn.Sequential(nn.Conv2d(16, 4, 1))
    kept = deploy(unpruned, None, x[:1])
    assert not kept.sparse and kept.module is unpruned and kept.note == "no layer runs faster sparse"

    def fake(models, inputs, **_):  # the sparsified model slower at batch 8 only
        b = inputs[0].shape[0]
        ms = {"sparse": 2.0 if b == 8 else 1.0, "dense": 1.5}
        return {k: Latency.of([ms[k] / 1e3] * 3, 1, 1, b) for k in models}

    monkeypatch.setattr(latency_module, "measure_latency", fake)
    real = latency_module.sparsify
    monkeypatch.setattr(latency_module, "sparsify", lambda *a, **k: real(*a, **{**k, "measure": False}))
    fast = deploy(model, masks, x[:1], batch_sizes=(4,))
    kept = deploy(model, masks, x[:1], batch_sizes=(4, 8))
    assert fast.sparse and fast.module.sparse_layers == fast.choices
    assert not kept.sparse and "batch 8" in kept.note and not hasattr(kept.module, "sparse_layers")
    assert kept.module is not model and torch.equal(kept.module[0].weight, model[0].weight)  # masks applied to a copy


def test_latency_is_typed_and_reads_like_a_dict():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    t = measure_latency(model, torch.randn(2, 3, 16, 16), repeats=4, threads=1)
    assert isinstance(t, Latency) and t["median_ms"] == t.median_ms and len(t.samples_ms) == 4
    assert t.min_ms <= t.q1_ms <= t.median_ms <= t.q3_ms <= t.max_ms and t.batch == 2 and t.threads == 1
    text = repr(t)
    assert text.startswith("Latency(median ") and "batch 2, 1 threads, 4 samples" in text and "samples_ms" not in text
    with pytest.raises(KeyError):
        t["nope"]


def test_summary_header_and_why_a_model_cannot_be_sparsified():
    model, x = twins()
    text = summary(sparsify(model, x, measure=False))
    head, columns, *rows = text.splitlines()
    assert head.startswith("5 of 5 conv/linear layers sparse")
    assert columns.split()[:5] == ["layer", "kind", "density", "run", "dense/sparse"]
    assert len(rows) == 5
    double = copy.deepcopy(model).double()
    with pytest.warns(UserWarning, match=r"no layer of Sequential can run sparse \(0: cannot run sparse: float64"):
        out = sparsify(double, x.double())
    assert "0 of 5" in summary(out) and "float64 on cpu" in summary(out)
    with pytest.warns(UserWarning, match="no Conv2d or Linear layer"):
        out = sparsify(nn.Sequential(nn.ReLU()), x)
    assert summary(out) == "no Conv2d or Linear layer: nothing to sparsify"
    with pytest.raises(ValueError, match="Sequential has no sparse_layers"):
        summary(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparsify(model, x, measure=False)  # a model it can sparsify: no warning


def test_wrong_example_is_one_line_with_no_printed_traceback(capfd):
    model, _ = twins()
    with pytest.raises(ValueError) as err:
        sparsify(model, torch.randn(1, 3, 12, 12))
    assert str(err.value).startswith("sparsify: Sequential does not run on the example input ((1, 3, 12, 12) "
                                     "torch.float32): ") and "\n" not in str(err.value)
    out, errs = capfd.readouterr()
    assert out == "" and errs == ""
