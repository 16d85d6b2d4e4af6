"""load_sparse against crafted files: each attack (fx name injection, operator.attrgetter/call/methodcaller
chains, torch.from_file, dunder and getattr chains, odd names, unknown classes, absurd shapes, out-of-range
indices, wrong dtypes, old or broken files) is refused up front with one SparseFileError (a ValueError)
naming the file, and a sentinel file that the payload would create never appears."""
import copy

import pytest
import torch
from torch import nn

import nptm
from nptm.pruning import prune_unstructured
from nptm.sparse import SparseFileError, sparsify
from nptm.sparse.saving import FORMAT


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.norm(self.head(y) * self.scale + y.shape[1])


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    torch.manual_seed(0)
    model = Net().eval()
    prune_unstructured(model, "magnitude", 0.5, include_linear=True, per_layer=True)
    path = tmp_path_factory.mktemp("good") / "m.pt"
    nptm.save_sparse(sparsify(model, torch.randn(1, 3, 8, 8), measure=False), path)
    return torch.load(path, weights_only=True)


def step(op, name, target, *args, **kwargs):
    return {"op": op, "name": name, "target": target, "args": list(args), "kwargs": {"dict": [[k, v] for k, v in kwargs.items()]}}


def ref(name):
    return {"node": name}


def with_steps(p, *steps):
    """The good program with ``steps`` inserted before its output (the output then returns the last one)."""
    p["steps"][-1:-1] = list(steps)
    p["steps"][-1]["args"] = [ref(steps[-1]["name"])]


def rename(p, old, new):
    p["modules"][new] = p["modules"].pop(old)
    for s in p["steps"]:
        if s["target"] == old:
            s["target"] = new


def nested(depth):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


def sparse_layer(p):
    return next(r for r in p["modules"].values() if r["class"] == "SparseConv2d")


def flip_first_row(tensors):
    r = tensors["row_ptr"]
    row = int(((r[1:] - r[:-1]) > 1).nonzero()[0])  # a row with two or more entries
    tensors["taps"][int(r[row]):int(r[row + 1])] = tensors["taps"][int(r[row]):int(r[row + 1])].flip(0).clone()


def craft(payload, sentinel):
    """Name -> edit of a good payload. Every code-carrying edit would create ``sentinel`` if it ran."""
    cmd = f"touch {sentinel}"
    inject = f'z") or open("{sentinel}", "w") or getattr(self, "z'
    chain = [  # issue 25's route: operator.attrgetter -> __globals__ -> builtins -> os.system (from a tensor here)
        step("call_function", "g", "operator:attrgetter", "__class__.__repr__.__globals__"),
        step("call_function", "glob", "operator:call", ref("g"), ref("x")),
        step("call_function", "b", "operator:getitem", ref("glob"), "__builtins__"),
        step("call_function", "imp", "operator:getitem", ref("b"), "__import__"),
        step("call_function", "os", "operator:call", ref("imp"), "os"),
        step("call_function", "m", "operator:methodcaller", "system", cmd),
        step("call_function", "r", "operator:call", ref("m"), ref("os")),
    ]

    edits = {
        "fx get_attr name injection": lambda p: (p["attributes"].__setitem__(inject, torch.zeros(1)),
                                                 with_steps(p, step("get_attr", "z", inject))),
        "attrgetter/call/methodcaller chain": lambda p: with_steps(p, *chain),
        "methodcaller alone": lambda p: with_steps(p, step("call_function", "m", "operator:methodcaller", "system", cmd)),
        "torch.from_file": lambda p: with_steps(p, step("call_function", "f", "torch:from_file", str(sentinel), True, 4)),
        "torch.load": lambda p: with_steps(p, step("call_function", "f", "torch:load", str(sentinel))),
        "torch.save": lambda p: with_steps(p, step("call_function", "f", "torch:save", ref("x"), str(sentinel))),
        "os.system": lambda p: with_steps(p, step("call_function", "f", "os:system", cmd)),
        "builtins.eval": lambda p: with_steps(p, step("call_function", "f", "builtins:eval", f"open('{sentinel}', 'w')")),
        "builtins.__import__": lambda p: with_steps(p, step("call_function", "f", "builtins:__import__", "os")),
        "function not a string": lambda p: with_steps(p, step("call_function", "f", ["torch", "add"], ref("x"), 1)),
        "getattr dunder": lambda p: with_steps(p, step("call_function", "f", "builtins:getattr", ref("x"), "__class__")),
        "getattr chain": lambda p: with_steps(p, step("call_function", "f", "builtins:getattr", ref("x"), "T"),
                                              step("call_function", "g", "builtins:getattr", ref("f"), "__dict__")),
        "getattr of a module attribute": lambda p: with_steps(p, step("call_function", "f", "builtins:getattr", ref("x"), "forward")),
        "getattr of a constant": lambda p: with_steps(p, step("call_function", "f", "builtins:getattr", "abc", "upper")),
        "method dunder": lambda p: with_steps(p, step("call_method", "f", "__reduce_ex__", ref("x"), 2)),
        "method not listed": lambda p: with_steps(p, step("call_method", "f", "register_hook", ref("x"), ref("x"))),
        "method set_": lambda p: with_steps(p, step("call_method", "f", "set_", ref("x"))),
        "out= keyword": lambda p: with_steps(p, step("call_function", "f", "torch:add", ref("x"), 1, out=ref("x"))),
        "dunder keyword": lambda p: with_steps(p, step("call_function", "f", "torch:add", ref("x"), 1, __class__=1)),
        "step name with quotes": lambda p: p["steps"][1].update(name=inject),
        "step name with newline": lambda p: p["steps"][1].update(name="a\nb"),
        "step name with space": lambda p: p["steps"][1].update(name="a b"),
        "step name dunder": lambda p: p["steps"][1].update(name="__init__"),
        "step name keyword": lambda p: p["steps"][1].update(name="import"),
        "repeated step name": lambda p: p["steps"][1].update(name=p["steps"][0]["name"]),
        "input name injection": lambda p: p["steps"][0].update(target=inject),
        "module path with quotes": lambda p: rename(p, "conv", inject),
        "module path dunder": lambda p: rename(p, "conv", "__class__"),
        "module path with space": lambda p: rename(p, "conv", "con v"),
        "module path empty part": lambda p: rename(p, "conv", "a..conv"),
        "module named like a method": lambda p: rename(p, "conv", "forward"),
        "module path keyword": lambda p: rename(p, "conv", "a.class"),
        "nested layers": lambda p: rename(p, "head", "conv.head"),
        "call of a missing module": lambda p: next(s for s in p["steps"] if s["op"] == "call_module").update(target="nothere"),
        "call of a container": lambda p: (p["attributes"].__setitem__("box.t", torch.zeros(1)),
                                          next(s for s in p["steps"] if s["op"] == "call_module").update(target="box")),
        "get_attr dunder chain": lambda p: with_steps(p, step("get_attr", "f", "conv.__class__.__init__.__globals__")),
        "get_attr of a module": lambda p: with_steps(p, step("get_attr", "f", "conv")),
        "get_attr of a compressed buffer": lambda p: with_steps(p, step("get_attr", "f", "conv.row_ptr"),
                                                                step("call_method", "g", "add_", ref("f"), 1 << 40)),
        "attribute inside a layer": lambda p: p["attributes"].__setitem__("conv.values2", torch.zeros(1)),
        "unknown module class": lambda p: p["modules"]["conv"].update({"class": "subprocess:Popen"}),
        "nn class not listed": lambda p: p["modules"]["conv"].update({"class": "MultiheadAttention"}),
        "constructor argument not allowed": lambda p: p["modules"]["norm"]["args"].update(_bias=True),
        "constructor argument a tensor": lambda p: p["modules"]["norm"]["args"].update(normalized_shape=torch.zeros(1)),
        "layer tensor extra": lambda p: p["modules"]["norm"]["tensors"].update(extra=torch.zeros(1)),
        "layer tensor wrong shape": lambda p: p["modules"]["norm"]["args"].update(normalized_shape=(1 << 40,)),
        "compressed attribute extra": lambda p: sparse_layer(p)["args"].update(cmd=cmd),
        "compressed huge shape": lambda p: sparse_layer(p)["args"].update(weight_shape=(1 << 23, 1 << 23, 3, 3)),
        "compressed zero stride": lambda p: sparse_layer(p)["args"].update(stride=(0, 1)),
        "compressed groups not dividing": lambda p: sparse_layer(p)["args"].update(groups=3),
        "taps out of range": lambda p: sparse_layer(p)["tensors"]["taps"].__setitem__(0, 3 * 3 * 3),
        "taps negative": lambda p: sparse_layer(p)["tensors"]["taps"].__setitem__(-1, -1),
        "taps falling within a row": lambda p: flip_first_row(sparse_layer(p)["tensors"]),
        "row_ptr past the values": lambda p: sparse_layer(p)["tensors"]["row_ptr"].__setitem__(-1, 1 << 40),
        "row_ptr not from 0": lambda p: sparse_layer(p)["tensors"]["row_ptr"].__setitem__(0, 1),
        "row_ptr falling": lambda p: sparse_layer(p)["tensors"]["row_ptr"].__setitem__(1, 10 ** 6),
        "row_ptr too short": lambda p: sparse_layer(p)["tensors"].update(row_ptr=sparse_layer(p)["tensors"]["row_ptr"][:-1].clone()),
        "taps int64": lambda p: sparse_layer(p)["tensors"].update(taps=sparse_layer(p)["tensors"]["taps"].long()),
        "values float64": lambda p: sparse_layer(p)["tensors"].update(values=sparse_layer(p)["tensors"]["values"].double()),
        "row_ptr int32": lambda p: sparse_layer(p)["tensors"].update(row_ptr=sparse_layer(p)["tensors"]["row_ptr"].int()),
        "bias wrong length": lambda p: sparse_layer(p)["tensors"].update(bias=torch.zeros(3)),
        "values not a tensor": lambda p: sparse_layer(p)["tensors"].update(values=[1.0, 2.0]),
        "values in blocks of 3": lambda p: sparse_layer(p)["tensors"].update(
            values=sparse_layer(p)["tensors"]["values"][:, None].expand(-1, 3).contiguous()),
        "values 3-D": lambda p: sparse_layer(p)["tensors"].update(values=sparse_layer(p)["tensors"]["values"].view(-1, 1, 1)),
        "values a huge stride-0 view": lambda p: sparse_layer(p)["tensors"].update(values=torch.zeros(1).expand(1 << 40)),
        "layer weight int": lambda p: p["modules"]["norm"]["tensors"].update(weight=torch.zeros(4, dtype=torch.int64)),
        "reference to a later step": lambda p: p["steps"][1].update(args=[ref(p["steps"][-1]["name"])]),
        "reference to nothing": lambda p: p["steps"][1].update(args=[ref("nobody")]),
        "no output": lambda p: p["steps"].pop(),
        "two outputs": lambda p: p["steps"].append(dict(p["steps"][-1], name="output2")),
        "unknown op": lambda p: p["steps"][1].update(op="call_everything"),
        "step with extra field": lambda p: p["steps"][1].update(code="print(1)"),
        "args not a list": lambda p: p["steps"][1].update(args="x"),
        "unknown argument kind": lambda p: p["steps"][1].update(args=[{"lambda": "x: x"}]),
        "unknown dtype": lambda p: with_steps(p, step("call_method", "f", "to", ref("x"), {"dtype": "__class__"})),
        "deeply nested argument": lambda p: with_steps(p, step("call_function", "f", "torch:add", ref("x"), nested(40))),
        "old format": lambda p: p.update(format="nptm.sparse/1"),
        "missing section": lambda p: p.pop("modules"),
        "extra section": lambda p: p.update(code="import os"),
        "steps not a list": lambda p: p.update(steps={"a": 1}),
        "sparse_layers not a list": lambda p: p.update(sparse_layers="all"),
        "sparse_layers unknown field": lambda p: p["sparse_layers"][0].update(__class__="x"),
    }
    return edits


def attempt(path, sentinel, *inputs):
    """load_sparse(path) must raise; were a model returned, calling it must not create the sentinel either."""
    with pytest.raises(SparseFileError) as err:
        model = nptm.load_sparse(path)
        try:
            model(*inputs)
        finally:
            assert not sentinel.exists()
    assert not sentinel.exists()
    return err.value


def assert_each_refused(payload, edits, part, folder, sentinel, x):
    """Each edit of ``part(payload)``, saved, is refused by load_sparse with one ValueError line naming the file."""
    folder.mkdir()
    failures = []
    for i, (name, edit) in enumerate(edits.items()):
        p = copy.deepcopy(payload)
        edit(part(p))
        path = folder / f"crafted {i}.pt"
        torch.save(p, path)
        try:
            err = attempt(path, sentinel, x)
        except BaseException as e:  # collect every failing case, then fail once
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if not (isinstance(err, ValueError) and str(path) in str(err) and "\n" not in str(err)):
            failures.append(f"{name}: message {err!r}")
    assert not failures, "\n".join(failures)


def test_every_crafted_file_is_refused(payload, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    x = torch.randn(2, 3, 8, 8)
    assert (payload["steps"][0]["op"], payload["steps"][0]["name"]) == ("placeholder", "x")
    assert_each_refused(payload, craft(payload, sentinel), lambda p: p, tmp_path / "crafted", sentinel, x)


@pytest.mark.parametrize("content", [[1, 2], "nptm.sparse/2", torch.zeros(3), None, {"format": FORMAT}])
def test_non_dict_or_empty_payloads(tmp_path, content):
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    err = attempt(path, tmp_path / "SENTINEL")
    assert str(path) in str(err) and "\n" not in str(err)


def test_truncated_files(payload, tmp_path):
    good = tmp_path / "good.pt"
    torch.save(payload, good)
    data = good.read_bytes()
    for i, cut in enumerate((10, len(data) // 3, len(data) - 10)):
        path = tmp_path / f"cut{i}.pt"
        path.write_bytes(data[:cut])
        err = attempt(path, tmp_path / "SENTINEL")
        assert str(path) in str(err) and "\n" not in str(err)


def test_strings_in_a_file_stay_data(payload, tmp_path):
    """A string argument that would be code if pasted into source runs as a string; nothing is executed."""
    sentinel = tmp_path / "SENTINEL"
    p = copy.deepcopy(payload)
    evil = f'") or open("{sentinel}", "w") or ("'
    out = p["steps"][-1]["args"][0]
    with_steps(p, step("call_function", "s", "operator:add", "a", evil), step("call_function", "y", "operator:mul", out, 1))
    path = tmp_path / "strings.pt"
    torch.save(p, path)
    model = nptm.load_sparse(path)
    with torch.inference_mode():
        model(torch.randn(3, 3, 8, 8))
    assert not sentinel.exists()


def test_memory_shared_with_compressed_buffers_cannot_change_them(payload, tmp_path):
    """A file whose attribute shares memory with a sparse layer's row_ptr, which the program bumps before the
    layer runs: load copies the compressed buffers, so the layer computes what it computed before."""
    good, p = tmp_path / "good.pt", copy.deepcopy(payload)
    torch.save(payload, good)
    p["attributes"]["alias"] = sparse_layer(p)["tensors"]["row_ptr"]
    p["steps"][1:1] = [step("get_attr", "alias", "alias"), step("call_method", "bump", "add_", ref("alias"), 1 << 40)]
    path = tmp_path / "alias.pt"
    torch.save(p, path)
    saved = torch.load(path, weights_only=True)
    assert saved["attributes"]["alias"].data_ptr() == sparse_layer(saved)["tensors"]["row_ptr"].data_ptr()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        want, model = nptm.load_sparse(good)(x), nptm.load_sparse(path)
        for _ in range(2):
            assert torch.equal(model(x), want)


def test_crafted_dense_layers_are_refused(tmp_path):
    """A DenseConv2d record (the plain weight; oneDNN's packed copy is made at run time) is checked like a conv's."""
    torch.manual_seed(0)
    model = Net().eval()
    made = sparsify(model, torch.randn(1, 3, 8, 8), choices={"conv": False}).sparse_layers
    made[0].dense_engine = "onednn"
    path = tmp_path / "dense.pt"
    nptm.save_sparse(sparsify(model, torch.randn(1, 3, 8, 8), choices=made), path)
    payload = torch.load(path, weights_only=True)
    rec = payload["modules"]["conv"]
    assert rec["class"] == "DenseConv2d" and set(rec["tensors"]) == {"weight", "bias"}  # no packed weight saved
    sentinel, x = tmp_path / "SENTINEL", torch.randn(2, 3, 8, 8)
    edits = {
        "attribute extra": lambda r: r["args"].update(cmd=f"touch {sentinel}"),
        "attribute missing": lambda r: r["args"].pop("groups"),
        "zero stride": lambda r: r["args"].update(stride=(0, 1)),
        "negative padding": lambda r: r["args"].update(padding=(-1, 1)),
        "huge dilation": lambda r: r["args"].update(dilation=(1 << 40, 1)),
        "groups not dividing": lambda r: r["args"].update(groups=3),
        "clamp a string": lambda r: r["args"].update(clamp_min="0"),
        "weight missing": lambda r: r["tensors"].pop("weight"),
        "weight float64": lambda r: r["tensors"].update(weight=r["tensors"]["weight"].double()),
        "weight 3-D": lambda r: r["tensors"].update(weight=r["tensors"]["weight"][0].clone()),
        "weight empty": lambda r: r["tensors"].update(weight=torch.zeros(8, 0, 3, 3)),
        "weight a huge stride-0 view": lambda r: r["tensors"].update(weight=torch.zeros(1).expand(1 << 20, 1 << 10, 3, 3)),
        "packed weight": lambda r: r["tensors"].update(packed=r["tensors"]["weight"].clone()),
        "bias wrong length": lambda r: r["tensors"].update(bias=torch.zeros(3)),
    }
    assert_each_refused(payload, edits, lambda p: p["modules"]["conv"], tmp_path / "dense", sentinel, x)
    p = copy.deepcopy(payload)
    with_steps(p, step("get_attr", "w", "conv.weight"))  # the program may not reach the layer's tensors
    torch.save(p, tmp_path / "reach.pt")
    attempt(tmp_path / "reach.pt", sentinel, x)
    with torch.inference_mode():
        assert torch.allclose(nptm.load_sparse(path)(x), model(x), atol=1e-5)
