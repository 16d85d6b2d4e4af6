"""python -m nptm.export: ONNX within float tolerance of PyTorch (onnxruntime) and smaller by the parameter
ratio; torch.export programs; files that do not fit refused with status 2."""
import pytest
import torch

from nptm import save_pruned
from nptm.export import export_onnx
from nptm.export.__main__ import main
from nptm.models import build_model, count_params
from nptm.pruning.structured import prune_channels


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory):
    torch.manual_seed(0)
    dense = build_model("resnet20", 10).eval()
    pruned = prune_channels(dense, "l1_filters", 0.5).eval()
    path = tmp_path_factory.mktemp("export") / "resnet20.pt"
    save_pruned(pruned, path)
    return dense, pruned, path


def test_onnx_matches_pytorch_and_shrinks(pruned_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    dense, pruned, path = pruned_file
    assert main([str(path), "--model", "resnet20", "--onnx", str(tmp_path / "p.onnx")]) == 0
    x = torch.randn(3, 3, 32, 32)
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})  # batch 3 through the dynamic batch axis
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), pruned(x), rtol=1e-4, atol=1e-4)
    export_onnx(dense, x[:1], tmp_path / "d.onnx")
    size_ratio = weight_bytes(tmp_path / "p.onnx") / weight_bytes(tmp_path / "d.onnx")
    param_ratio = count_params(pruned)[0] / count_params(dense)[0]
    assert param_ratio < 0.9 and size_ratio == pytest.approx(param_ratio, rel=0.05)


def weight_bytes(path) -> int:
    """Bytes of an ONNX file's initializers (the weights, without the graph's fixed overhead)."""
    onnx = pytest.importorskip("onnx")
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def test_torch_export_program(pruned_file, tmp_path):
    _, pruned, path = pruned_file
    assert main([str(path), "--model", "resnet20", "--torch-export", str(tmp_path / "p.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "p.pt2"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), pruned(x))


def test_bad_input_exits_2(pruned_file, tmp_path, capsys):
    _, _, path = pruned_file
    assert main([str(path), "--model", "resnet32", "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit CifarResNet: tensor layer1.3.conv1.weight" in err
    assert main([str(tmp_path / "missing.pt"), "--model", "resnet20", "--onnx", str(tmp_path / "x.onnx")]) == 2
    with pytest.raises(SystemExit) as e:
        main([str(path), "--model", "resnet20"])
    assert e.value.code == 2


def test_onnx_goes_through_torch_export_and_says_when_it_falls_back(pruned_file, tmp_path, capsys, monkeypatch):
    _, pruned, _ = pruned_file
    x = torch.randn(1, 3, 32, 32)
    assert export_onnx(pruned, x, tmp_path / "a.onnx") == "dynamo" and not capsys.readouterr().err
    real = torch.onnx.export

    def no_onnxscript(*args, dynamo=True, **kw):
        if dynamo:
            raise ImportError("No module named 'onnxscript'")
        return real(*args, dynamo=dynamo, **kw)

    monkeypatch.setattr(torch.onnx, "export", no_onnxscript)
    assert export_onnx(pruned, x, tmp_path / "b.onnx") == "torchscript"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.onnx" in err and "onnxscript" in err and "used the TorchScript exporter" in err
    assert (tmp_path / "b.onnx").stat().st_size > 0
