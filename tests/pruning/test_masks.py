import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from nptm import ops
from nptm.pruning import Masks, prunable_weights, prune_unstructured
from nptm.pruning.masks import clean_name


class Net(nn.Module):
    """conv -> MHA over the spatial positions -> linear classifier, plus a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.conv(x).flatten(2).transpose(1, 2)
        h = self.norm(self.attn(h, h, h, need_weights=False)[0])
        return self.fc(h.mean(1))


class Tied(nn.Module):
    """One weight shared by two linear layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 6, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_selection_by_type_and_pattern():
    m = Net()
    assert list(prunable_weights(m)) == ["conv.weight"]
    assert list(prunable_weights(m, include_linear=True)) == ["conv.weight", "attn.out_proj.weight", "fc.weight"]
    mha = prunable_weights(m, types=(nn.Conv2d, nn.Linear, nn.MultiheadAttention), spare_classifier=True)
    assert list(mha) == ["conv.weight", "attn.in_proj_weight", "attn.out_proj.weight"]
    assert mha["attn.in_proj_weight"] is m.attn.in_proj_weight
    assert list(prunable_weights(m, types=(), include=["*proj*weight", "norm.*"], exclude=["*.bias"])) == [
        "attn.in_proj_weight", "attn.out_proj.weight", "norm.weight"]
    assert list(prunable_weights(m, include_linear=True, exclude=["attn.*"])) == ["conv.weight", "fc.weight"]
    with pytest.raises(ValueError, match="no prunable weights"):
        Masks.for_model(m, types=(nn.GRU,))


def test_mha_in_proj_weight_is_pruned_and_stays_pruned():
    m = Net()
    masks = Masks.for_model(m, types=(nn.MultiheadAttention,))
    assert list(masks) == ["attn.in_proj_weight"]
    masks = prune_unstructured(m, "magnitude", 0.5, masks=masks)  # the masks choose the weights
    keep = masks["attn.in_proj_weight"]
    assert keep.sum() == keep.numel() // 2
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    masks.attach(opt)
    for _ in range(3):
        step(m, opt, *batch())
    w = m.attn.in_proj_weight
    assert bool((w[~keep] == 0).all()) and bool((w[keep] != 0).all())
    st = opt.state[w]
    assert bool((st["exp_avg"][~keep] == 0).all()) and bool((st["exp_avg_sq"][~keep] == 0).all())


def test_names_without_wrapper_prefixes():
    assert clean_name("_orig_mod.layer1._fsdp_wrapped_module.conv.weight") == "layer1.conv.weight"
    assert clean_name("_checkpoint_wrapped_module.fc.weight") == "fc.weight"
    m = Net()
    compiled = torch.compile(m)  # wrapping only; nothing compiles until it is called
    assert list(prunable_weights(compiled, include_linear=True)) == list(prunable_weights(m, include_linear=True))
    dp = nn.DataParallel(compiled)
    masks = Masks.for_model(dp, include_linear=True)
    assert list(masks) == ["conv.weight", "attn.out_proj.weight", "fc.weight"]


def test_shared_parameter_is_masked_once_with_the_and(monkeypatch):
    m = Tied()
    assert list(prunable_weights(m, include_linear=True)) == ["a.weight"]  # counted once when pruning
    g = torch.Generator().manual_seed(3)
    ka, kb = torch.rand(6, 6, generator=g) > 0.3, torch.rand(6, 6, generator=g) > 0.3
    masks = Masks({"a.weight": ka, "b.weight": kb})
    calls = []
    real = ops.apply_masks_
    monkeypatch.setattr(ops, "apply_masks_", lambda t, mk, extra=None: calls.append((list(t), list(mk))) or real(t, mk, extra=extra))
    masks.apply(m)
    (tensors, ms), = calls
    assert len(tensors) == 1 and tensors[0] is m.a.weight
    both = ka & kb
    assert torch.equal(ms[0], both) and torch.equal(masks["a.weight"], both) and torch.equal(masks["b.weight"], both)
    assert torch.equal(m.a.weight != 0, both)


def test_mixed_dtypes_masked_in_one_call(monkeypatch):
    m = Net()
    m.conv.to(torch.bfloat16)  # bf16 weights beside fp32 ones
    masks = Masks.for_model(m, include_linear=True)
    g = torch.Generator().manual_seed(4)
    masks = Masks({n: torch.rand(k.shape, generator=g) > 0.5 for n, k in masks.items()}).bind(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for n in masks:  # fp32 optimizer states (as mixed-precision optimizers keep them), bf16 grads where the weight is bf16
        p = m.get_parameter(n)
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.state[p] = {"exp_avg": torch.randn(p.shape, generator=g), "step": torch.tensor(1.0)}
    calls = []
    real = ops.apply_masks_
    monkeypatch.setattr(ops, "apply_masks_", lambda t, mk, extra=None: calls.append(1) or real(t, mk, extra=extra))
    masks.apply(m, opt)
    assert len(calls) == 1
    for n, keep in masks.items():
        p = m.get_parameter(n)
        for t in (p, p.grad, opt.state[p]["exp_avg"]):
            assert bool((t[~keep] == 0).all()) and bool((t[keep] != 0).all()), (n, t.dtype)
    assert {m.get_parameter(n).dtype for n in masks} == {torch.bfloat16, torch.float32}


def test_attach_and_detach():
    m = Net()
    masks = prune_unstructured(m, "magnitude", 0.7, include_linear=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    masks.attach(opt)
    x, y = batch()
    for _ in range(2):
        step(m, opt, x, y)
    for n, w in prunable_weights(m, include_linear=True).items():
        assert bool((w[~masks[n]] == 0).all()), n
        assert bool((opt.state[w]["momentum_buffer"][~masks[n]] == 0).all()), n
    masks.detach()
    step(m, opt, x, y)  # no hook any more: momentum revives pruned weights
    assert any(bool((w[~masks[n]] != 0).any()) for n, w in prunable_weights(m, include_linear=True).items())
    with pytest.raises(ValueError, match="needs the model"):
        Masks({"conv.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool)}).attach(opt)


def test_apply_to_another_model_rebinds():
    import copy
    m = Net()
    masks = prune_unstructured(m, "random", 0.5, include_linear=True, generator=torch.Generator().manual_seed(0))
    other = copy.deepcopy(m)
    with torch.no_grad():
        for p in other.parameters():
            p.fill_(1.0)
    masks.apply(other)
    for n in masks:
        assert torch.equal(other.get_parameter(n) != 0, masks[n]), n


def test_bad_masks_are_refused():
    m = Net()
    with pytest.raises(ValueError, match="names no parameter"):
        Masks({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(m)
    with pytest.raises(ValueError, match="shape"):
        Masks({"conv.weight": torch.ones(2, dtype=torch.bool)}).apply(m)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo():
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_training_keeps_pruned_weights_zero(gloo):
    m = Net()
    masks = prune_unstructured(m, "random", 0.6, include_linear=True, generator=torch.Generator().manual_seed(0))
    ddp = nn.parallel.DistributedDataParallel(m)
    masks = Masks(masks.state_dict())  # as loaded from a checkpoint: bound to the wrapped model
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
    masks.attach(opt, ddp)
    for _ in range(2):
        step(ddp, opt, *batch())
    for n, w in prunable_weights(ddp, include_linear=True).items():
        assert bool((w[~masks[n]] == 0).all()) and bool((w[masks[n]] != 0).any()), n


def test_fsdp_names_and_training(gloo):
    fsdp = pytest.importorskip("torch.distributed.fsdp")
    m = Net()
    try:
        wrapped = fsdp.FullyShardedDataParallel(m, use_orig_params=True, device_id=torch.device("cpu"),
                                                sharding_strategy=fsdp.ShardingStrategy.NO_SHARD)
    except (RuntimeError, ValueError, AssertionError) as e:  # pragma: no cover - depends on the torch build
        pytest.skip(f"FSDP does not run on CPU with gloo here: {e}")
    names = [n for n, _ in wrapped.named_parameters()]
    assert any("_fsdp_wrapped_module" in n for n in names)
    masks = Masks.for_model(wrapped, include_linear=True)
    assert list(masks) == ["conv.weight", "attn.out_proj.weight", "fc.weight"]
    keep = torch.arange(m.fc.weight.numel()).reshape(m.fc.weight.shape) % 3 != 0
    masks = Masks({**masks, "fc.weight": keep}).bind(wrapped)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5, momentum=0.9)
    masks.attach(opt)
    step(wrapped, opt, *batch())
    w = dict(prunable_weights(wrapped, include_linear=True))["fc.weight"]
    assert bool((w[~keep] == 0).all()) and bool((w[keep] != 0).all())


def test_fsdp2_sharded_parameters_over_two_ranks():
    pytest.importorskip("torch.distributed.fsdp", reason="torch without FSDP")
    if not hasattr(torch.distributed.fsdp, "fully_shard"):
        pytest.skip("this torch has no FSDP2 fully_shard")
    worker, port = Path(__file__).with_name("fsdp2_worker.py"), _free_port()
    root = str(Path(__file__).resolve().parents[2])  # this checkout's nptm
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for r in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"rank {r} ok" in o for r, o in enumerate(outs))


@pytest.mark.slow
def test_torch_compile_training():
    m = Net()
    masks = prune_unstructured(m, "magnitude", 0.5, include_linear=True)
    compiled = torch.compile(m, backend="eager")
    opt = torch.optim.SGD(compiled.parameters(), lr=0.5, momentum=0.9)
    Masks(masks.state_dict()).attach(opt, compiled)
    step(compiled, opt, *batch())
    for n, w in prunable_weights(m, include_linear=True).items():
        assert bool((w[~masks[n]] == 0).all()), n
