"""Sparse CPU inference: ``nptm.sparsify`` on masked torchvision models against the dense engines a user could pick
for the same masked model (torch eager / oneDNN, ``torch.jit.freeze`` + ``optimize_for_inference``, ONNX Runtime),
and each ResNet-50 1x1 conv alone against torch's dense conv and ``torch.sparse`` CSR matmul. Random-init weights,
pruned three ways, since a trained network's allocation lies between them: global magnitude (the layers with the
smallest init pruned hardest: 13 bottleneck conv1 layers stay 45-71% dense), LAMP (layer-adaptive), and uniform
(the same sparsity in every layer); and in 4x1 blocks (global magnitude over blocks of 4 output channels,
``nptm.pruning.patterns``). MobileNetV2 has its pointwise convs pruned only ("1x1"); fp32, 224 px. The note names
the fastest dense engine of the run and the ratio against it (every engine's own ratio, with its min-max spread
over rounds, is a row), the FLOPs ideal (dense MACs / nonzero MACs) and the fraction of it reached, and the ISA the
sparse kernels ran (``nptm.ops.sparse_conv2d_isa()``).
"""
from __future__ import annotations

import functools
import io
import time

import torch
import torch.nn.functional as F

from harness import Case, Spec, Timed, Unavailable, pytest_bench

SIZE = 224
# (model, sparsity, batch, pruning): "" global magnitude, "lamp", "uniform" (magnitude per layer), "4x1" blocks
MODELS = [("resnet50", 0.9, 1, ""), ("resnet50", 0.95, 1, ""), ("resnet50", 0.9, 16, ""),
          ("resnet50", 0.9, 1, "lamp"), ("resnet50", 0.9, 16, "lamp"), ("resnet50", 0.9, 1, "uniform"),
          ("resnet50", 0.9, 16, "uniform"), ("resnet50", 0.9, 1, "4x1"), ("resnet50", 0.9, 16, "4x1"),
          ("mobilenet_v2 1x1", 0.9, 1, ""), ("mobilenet_v2 1x1", 0.9, 1, "uniform"), ("mobilenet_v2 1x1", 0.9, 1, "4x1")]
PRUNING = {"": ("magnitude", False, None), "lamp": ("lamp", False, None), "uniform": ("magnitude", True, None),
           "4x1": ("magnitude", False, "4x1")}  # (criterion, per layer, pattern)
DENSE = ("onnxruntime", "torch_frozen", "torch")  # the dense engines, each timed in the same rounds
LAYER_SPARSITY, LAYER_BATCH = 0.9, 1
# Whole models: each sample starts after a pause, so that the thread pool of the engine timed before it (ONNX
# Runtime's spins after a run, OpenMP's too) has gone idle: on 2 cores ResNet-50 sparsified took 48 ms alone,
# 122 ms right after an onnxruntime run, 54 ms 50 ms after it; onnxruntime 57 ms alone, 87 ms right after ours.
SETTLE_S = 0.1


def specs(device: str, full: bool) -> list[Spec]:
    if device != "cpu":
        return []
    out = [Spec("sparse_inference", f"{m}{' ' if how else ''}{how} s={s} b{b}", ("sparsified", "sparsified_eager", *DENSE),
                 (m, s, b, how))
           for m, s, b, how in MODELS]
    for cin, cout, hw, stride in _resnet50_1x1():
        out.append(Spec("sparse_conv1x1", f"{cin}->{cout} {hw}x{hw}/{stride} s={LAYER_SPARSITY} b{LAYER_BATCH}",
                        ("sparse", "dense", "csr"), (cin, cout, hw, stride)))
    return out


@functools.lru_cache(maxsize=1)
def _resnet50_1x1() -> list[tuple[int, int, int, int]]:
    """The distinct (in, out, input size, stride) of ResNet-50's 1x1 convs at 224 px, read off one forward."""
    import torchvision

    seen: list[tuple[int, int, int, int]] = []

    def hook(m, args):
        shape = (m.in_channels, m.out_channels, args[0].shape[-1], m.stride[0])
        if shape not in seen:
            seen.append(shape)

    model = torchvision.models.resnet50().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1):
            m.register_forward_pre_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, SIZE, SIZE))
    return seen


def _onnxruntime(model: torch.nn.Module, x: torch.Tensor):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"onnxruntime is not installed ({e})") from None
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, input_names=["x"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: sess.run(None, feed)


def _settle() -> None:
    time.sleep(SETTLE_S)


def _frozen(model: torch.nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    """torch's own inference path: traced, frozen (weights folded as constants) and ``optimize_for_inference``
    (oneDNN prepacked weights, conv-BN-ReLU fusion), run 3 times first (TorchScript's profiling executor
    optimizes the graph over its first calls)."""
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
    with torch.inference_mode():
        for _ in range(3):
            frozen(x)
    return frozen


def pruned_model(name: str, sparsity: float, pointwise: bool = False, how: str = "") -> torch.nn.Module:
    """torchvision's ``name`` (seed 0, eval) masked by ``how`` (``PRUNING``: global magnitude by default, "lamp",
    "uniform" per-layer magnitude, "4x1" global magnitude over blocks); ``pointwise``: its 1x1 convs only."""
    import torchvision

    from nptm.pruning import Masks, prune_unstructured

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    masks = None
    if pointwise:  # depthwise convs and the stem stay dense
        masks = Masks.ones({f"{n}.weight": m.weight for n, m in model.named_modules()
                            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)}).bind(model)
    criterion, per_layer, pattern = PRUNING[how]
    prune_unstructured(model, criterion, sparsity, masks=masks, per_layer=per_layer, pattern=pattern,
                       max_layer_sparsity=1.0).apply(model)  # as measured before the layer floor
    return model


def build_model(spec: Spec) -> Case:
    from nptm.models import count_flops
    from nptm.ops import sparse_conv2d_isa
    from nptm.sparse import freeze, sparsify

    name, sparsity, batch, how = spec.params
    model = pruned_model(name.split()[0], sparsity, pointwise=name.endswith(" 1x1"), how=how)
    x = torch.randn(batch, 3, SIZE, SIZE)
    sparse = sparsify(model, x, batch_sizes=())
    ideal = count_flops(model, x.shape[1:]) / count_flops(model, x.shape[1:], effective=True)
    n_sparse = sum(c.sparse for c in sparse.sparse_layers)
    n_blocks = sum(c.sparse and c.block > 1 for c in sparse.sparse_layers)

    def forward(m):
        with torch.inference_mode():
            m(x)

    ort, frozen = _onnxruntime(model, x), _frozen(model, x)
    try:
        graph, how_run = freeze(sparse, x), "its graph frozen (nptm.sparse.freeze)"
    except ValueError as e:
        graph, how_run = sparse, f"eager ({e})"
    timed = {"sparsified": Timed(lambda _: forward(graph), _settle), "sparsified_eager": Timed(lambda _: forward(sparse), _settle),
             "onnxruntime": Timed(lambda _: ort(), _settle),
             "torch_frozen": Timed(lambda _: forward(frozen), _settle),
             "torch": Timed(lambda _: forward(model), _settle)}
    isa = sparse_conv2d_isa()

    def note(t):
        dense = {n: t[n] for n in DENSE if n in t}
        if "sparsified" not in t or not dense:
            return None
        fastest = min(dense, key=dense.get)
        return (f"fastest dense engine {fastest}; FLOPs ideal {ideal:.2f}x ({dense[fastest] / t['sparsified'] / ideal:.0%}"
                f" of it reached); {n_sparse}/{len(sparse.sparse_layers)} layers sparse ({n_blocks} in blocks); ISA {isa}; "
                f"sparsified: {how_run}")

    return Case(spec, "cpu", timed, note=note, fastest=DENSE, keep=[model, sparse, graph, x, frozen])


def build_layer(spec: Spec) -> Case:
    from nptm.pruning import prune_unstructured
    from nptm.sparse import SparseConv2d

    cin, cout, hw, stride = spec.params
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, 1, stride, bias=False).eval()
    prune_unstructured(conv, "magnitude", LAYER_SPARSITY).apply(conv)
    sparse = SparseConv2d(conv.weight, None, (stride, stride), (0, 0), (1, 1), 1)
    x = torch.randn(LAYER_BATCH, cin, hw, hw)
    w_csr = conv.weight.detach().reshape(cout, cin).to_sparse_csr()

    def csr():  # (cout x cin) CSR @ (cin x pixels) dense, per image
        xs = x[:, :, ::stride, ::stride] if stride > 1 else x
        for xi in xs:
            torch.sparse.mm(w_csr, xi.reshape(cin, -1))

    def run(fn):
        with torch.inference_mode():
            fn()

    timed = {"sparse": Timed(lambda: run(lambda: sparse(x))), "dense": Timed(lambda: run(lambda: F.conv2d(x, conv.weight, None, stride))),
             "csr": Timed(lambda: run(csr))}
    return Case(spec, "cpu", timed, keep=[conv, sparse, x, w_csr])


def build(spec: Spec, device: str) -> Case:
    if device != "cpu":
        raise Unavailable("the sparse engine is CPU-only")
    return build_model(spec) if spec.op == "sparse_inference" else build_layer(spec)


def test_sparse_inference(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)
