"""--dense-checkpoint: accepted layouts, one-line refusals, and a study that reproduces another's retraining."""
import json
import pickle

import pytest
import torch

from nptm.models import build_model
from nptm.study.cli import main
from nptm.study.records import is_timing
from nptm.train.checkpoint import CheckpointError, save_checkpoint
from nptm.study.dense_checkpoint import check_fits, load_dense_checkpoint, read_state_dict
from study_files import phase_checkpoint, phase_checkpoints  # noqa: I001  (tests/study is on sys.path)

TINY = ["--seeds", "0,", "--pruner", "magnitude", "--schedules", "FT,LLR,none", "--epochs", "2",
        "--retrain-epochs", "1", "--quiet"]


def _state(seed=0):
    torch.manual_seed(seed)
    return build_model("digits_net", 10, 1).state_dict()


@pytest.mark.parametrize("layout", ["plain", "model", "state_dict", "nested", "ddp", "compiled", "nptm"])
def test_layouts_read_to_the_same_tensors(tmp_path, layout):
    state = _state()
    wrapped = {"plain": state, "model": {"model": state, "epoch": 3}, "state_dict": {"state_dict": state},
               "nested": {"checkpoint": 1, "model": {"state_dict": state}},
               "ddp": {f"module.{k}": v for k, v in state.items()},
               "compiled": {"model": {f"_orig_mod.{k}": v for k, v in state.items()}}}
    path = tmp_path / "m.pt"
    if layout == "nptm":
        save_checkpoint(path, {"done": True, "model": state, "summary": {"top1": 0.5}})
    else:
        torch.save(wrapped[layout], path)
    got = read_state_dict(path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    model = load_dense_checkpoint(build_model("digits_net", 10, 1), path)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_refusals_are_one_line(tmp_path):
    cases = {"missing.pt": None, "garbage.pt": b"not a checkpoint", "empty.pt": {}, "strings.pt": {"model": "x"}}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(CheckpointError) as err:
            read_state_dict(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "evil.pt")  # weights_only: never runs code
    save_checkpoint(tmp_path / "unfinished.pt", {"done": False, "trainer": {"model": _state()}})
    with pytest.raises(CheckpointError, match="unfinished"):
        read_state_dict(tmp_path / "unfinished.pt")


def test_first_bad_tensor_is_named():
    model = build_model("digits_net", 10, 1)
    state = _state()
    first = next(iter(state))
    with pytest.raises(CheckpointError, match=f"lacks tensor '{first}'"):
        check_fits(model, {k: v for k, v in state.items() if k != first}, "f.pt")
    wide = dict(state, **{"classifier.0.weight": torch.zeros(7, 64)})
    with pytest.raises(CheckpointError, match=r"'classifier.0.weight' is \(7, 64\) in the file but \(10, 64\)"):
        check_fits(model, wide, "f.pt")
    with pytest.raises(CheckpointError, match="no tensor 'extra.weight'"):
        check_fits(model, dict(state, **{"extra.weight": torch.zeros(1)}), "f.pt")
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # old torchvision files
    check_fits(model, old, "f.pt")


def _retrain_records(out):
    records = json.loads((out / "results.json").read_text())
    varies = {"config", "images_per_s"}  # config: the --out and --dense-checkpoint given; timings
    return [{k: v for k, v in r.items() if k not in varies and not is_timing(k)}
            for r in records if r["kind"] != "dense"], records[0]


def test_second_study_reproduces_the_first_from_its_dense_checkpoint(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*TINY, "--out", str(first)]) == 0
    dense_file = phase_checkpoint(first, "s0__dense.pt")
    assert main([*TINY, "--out", str(second), "--dense-checkpoint", str(dense_file)]) == 0
    (a, dense_a), (b, dense_b) = _retrain_records(first), _retrain_records(second)
    assert a == b  # bit-for-bit equal floats: same pruning, same retraining
    assert dense_b["top1"] == dense_a["top1"] and dense_b["loss"] == dense_a["loss"]
    assert dense_b["dense_checkpoint"] == str(dense_file) and dense_b["time_train_s"] == 0.0
    assert dense_b["lr_trace"] == dense_a["lr_trace"]  # the original schedule it was trained with
    assert "s0__dense.pt" not in phase_checkpoints(second)  # nothing was trained


def test_mismatched_checkpoint_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "resnet20.pth"
    torch.save(build_model("resnet20", 10).state_dict(), path)
    out = tmp_path / "out"
    code = main([*TINY, "--out", str(out), "--dense-checkpoint", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not fit the model" in err and "'features.0.weight'" in err
    assert not out.exists()
