"""save_sparse / load_sparse: the same outputs after a round trip (weights_only loading), one-line errors
naming the file for missing, truncated, corrupt and foreign files, and no code run from a file."""
import pickle

import pytest
import torch
import torchvision

import nptm
from nptm.pruning import prune_unstructured
from nptm.sparse import SparseConv2d, SparseFileError, sparsify
from nptm.sparse.saving import FORMAT


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    prune_unstructured(model, "magnitude", 0.8, include_linear=True, per_layer=True)
    x = torch.randn(2, 3, 32, 32)
    sparse = sparsify(model, x, measure=False)
    path = tmp_path_factory.mktemp("sparse") / "m.pt"
    nptm.save_sparse(sparse, path)
    return sparse, path


def test_roundtrip_same_outputs(saved):
    sparse, path = saved
    loaded = nptm.load_sparse(path)
    assert sum(isinstance(m, SparseConv2d) for m in loaded.modules()) == sum(isinstance(m, SparseConv2d) for m in sparse.modules())
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for x in (torch.randn(1, 3, 32, 32, generator=gen), torch.randn(5, 3, 24, 40, generator=gen).contiguous(memory_format=torch.channels_last)):
            assert torch.equal(loaded(x), sparse(x))


def test_loads_with_weights_only(saved):
    payload = torch.load(saved[1], weights_only=True)
    assert payload["format"] == FORMAT


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "missing"])
def test_bad_files_one_line_errors(saved, tmp_path, damage):
    path = tmp_path / "bad.pt"
    data = saved[1].read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(SparseFileError) as err:
        nptm.load_sparse(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _tampered(saved, tmp_path, edit):
    payload = torch.load(saved[1], weights_only=True)
    edit(payload)
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit", [
    lambda p: p["nodes"][1].update(op="call_function", target="torch:load"),
    lambda p: p["nodes"][1].update(op="call_function", target="os:system"),
    lambda p: p["nodes"][1].update(op="call_method", target="__reduce__"),
    lambda p: next(iter(p["modules"].values())).update({"class": "subprocess:Popen"}),
])
def test_files_cannot_name_arbitrary_code(saved, tmp_path, edit):
    path = _tampered(saved, tmp_path, edit)
    with pytest.raises(SparseFileError, match="not allowed"):
        nptm.load_sparse(path)


def test_unpicklable_globals_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": FORMAT, "nodes": Evil()}, f, protocol=2)
    with pytest.raises(SparseFileError, match="not a readable sparse-model file"):
        nptm.load_sparse(path)
