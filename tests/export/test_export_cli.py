"""python -m nptm.export as a user meets it: what it wrote, no overwriting without --force, one line for a file
that is no model file (a text file, a truncated one, a file without its architecture)."""
import torch

from nptm import save_pruned
from nptm.export.__main__ import main
from nptm.models import build_model
from nptm.pruning import prune_unstructured
from nptm.sparse import load_sparse


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "weights_only" not in err
    return err


def test_export_says_what_it_wrote_and_keeps_what_exists(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("digits_net", 10, 1)
    masks = prune_unstructured(model, "magnitude", 0.8)
    path = tmp_path / "m.pt"
    save_pruned(model, path, masks, info={"model": "digits_net", "num_classes": 10, "input_shape": [1, 8, 8]})
    out = tmp_path / "m.sparse.pt"
    assert main([str(path), "--sparse", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (sparsified model of digits_net, ")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(load_sparse(out)(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    before = out.stat().st_mtime_ns
    assert main([str(path), "--sparse", str(out)]) == 2
    assert "exists; give --force to overwrite it" in _one_line(capsys) and out.stat().st_mtime_ns == before
    save_pruned(model, path, masks)  # no info: the architecture must be named
    assert main([str(path), "--sparse", str(tmp_path / "n.pt")]) == 2
    assert "does not name its architecture; give --model NAME" in _one_line(capsys)


def test_files_that_are_no_model_files_get_one_line(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    assert main([str(text), "--model", "digits_net", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not a PyTorch checkpoint: truncated or corrupt" in _one_line(capsys)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module: code, refused
    assert main([str(tmp_path / "module.pt"), "--model", "digits_net", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "holds a Python object (torch.nn.modules.linear.Linear)" in _one_line(capsys)
