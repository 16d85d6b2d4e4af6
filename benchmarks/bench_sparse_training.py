"""Training-step cost of the pruning-stable methods (``nptm.pruning.sparse_training``): one step (forward,
backward, SGD Nesterov step) of CIFAR ResNet-20 on a batch of 128 random 32x32 images with the method prepared
for 90% sparsity — its reparametrized forward, its optimizer pre-hook and its ``on_step_end`` — against the dense
step, timed round-robin. The ratio is the method's training-throughput cost (Table 2's images/s column).
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import workloads as W
from harness import Case, Spec, Timed, Unavailable, pytest_bench

BATCH, SPARSITY, ITERS = 128, 0.9, 1000


def _methods():
    try:
        from nptm.pruning.sparse_training import SPARSE_TRAINING

        return SPARSE_TRAINING
    except ImportError as e:
        raise Unavailable(f"nptm.pruning.sparse_training not available ({e})") from None


def specs(device: str, full: bool) -> list[Spec]:
    try:
        names = _methods().names()
    except Unavailable:
        return []
    return [Spec("sparse_training_step", f"resnet20 b{BATCH} {name} s={SPARSITY}", (name, "dense"), (name,), True)
            for name in names]


def build(spec: Spec, device: str) -> Case:
    (name,) = spec.params
    torch.manual_seed(0)
    base = W.nptm_models().build_model("resnet20", num_classes=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)

    def host(method=None):
        model = copy.deepcopy(base).to(device).train()
        if method is not None:
            method.prepare(model, sparsity=SPARSITY, total_iters=ITERS, iters_per_epoch=ITERS // 10, include_linear=True)
        params = method.param_groups(model, 1e-4) if method is not None else model.parameters()
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
        h = SimpleNamespace(model=model, optimizer=opt, iteration=0, epoch=0, method=method)
        if method is not None:
            method.on_fit_start(h)
            method.on_epoch_start(h, 0)
        return h

    def step(h):
        h.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(h.model(x), y)
        loss.backward()
        h.optimizer.step()
        h.iteration = (h.iteration + 1) % ITERS
        if h.method is not None:
            h.method.on_step_end(h, h.iteration, loss)

    ours, dense = host(_methods()[name]()), host()
    timed = {name: Timed(lambda: step(ours)), "dense": Timed(lambda: step(dense))}
    note = lambda t: f"{(t[name] / t['dense'] - 1) * 100:+.1f}% step time vs dense" if {name, "dense"} <= set(t) else None  # noqa: E731
    return Case(spec, device, timed, note=note, keep=[ours, dense, x, y])


def test_sparse_training_step(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)
