"""Sparse CPU inference: ``nptm.sparsify`` on global-magnitude-masked torchvision models against the fastest
dense engines a user could pick for the same masked model (torch eager / oneDNN and ONNX Runtime), and
each ResNet-50 1x1 conv alone against torch's dense conv and ``torch.sparse`` CSR matmul. Random-init
weights (global magnitude then prunes the layers with the smallest init hardest); MobileNetV2 has its pointwise
convs pruned only ("1x1"); fp32, 224 px. The note gives
the FLOPs ideal (dense MACs / nonzero MACs) and the fraction of it reached against the faster dense engine.
"""
from __future__ import annotations

import functools
import io
import time

import torch
import torch.nn.functional as F

from harness import Case, Spec, Timed, Unavailable, pytest_bench

SIZE = 224
MODELS = [("resnet50", 0.9, 1), ("resnet50", 0.95, 1), ("resnet50", 0.9, 16), ("mobilenet_v2 1x1", 0.9, 1)]
LAYER_SPARSITY, LAYER_BATCH = 0.9, 1
# Whole models: each sample starts after a pause, so that the thread pool of the engine timed before it (ONNX
# Runtime's spins after a run, OpenMP's too) has gone idle: on 2 cores ResNet-50 sparsified took 48 ms alone,
# 122 ms right after an onnxruntime run, 54 ms 50 ms after it; onnxruntime 57 ms alone, 87 ms right after ours.
SETTLE_S = 0.1


def specs(device: str, full: bool) -> list[Spec]:
    if device != "cpu":
        return []
    out = [Spec("sparse_inference", f"{m} s={s} b{b}", ("sparsified", "onnxruntime", "torch"), (m, s, b)) for m, s, b in MODELS]
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


def pruned_model(name: str, sparsity: float, pointwise: bool = False) -> torch.nn.Module:
    """torchvision's ``name`` (seed 0, eval) masked by global magnitude; ``pointwise``: its 1x1 convs only."""
    import torchvision

    from nptm.pruning import Masks, prune_unstructured

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    masks = None
    if pointwise:  # depthwise convs and the stem stay dense
        masks = Masks.ones({f"{n}.weight": m.weight for n, m in model.named_modules()
                            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)}).bind(model)
    prune_unstructured(model, "magnitude", sparsity, masks=masks, max_layer_sparsity=1.0).apply(model)  # as measured
    return model


def build_model(spec: Spec) -> Case:
    from nptm.models import count_flops
    from nptm.sparse import sparsify

    name, sparsity, batch = spec.params
    model = pruned_model(name.split()[0], sparsity, pointwise=name.endswith(" 1x1"))
    x = torch.randn(batch, 3, SIZE, SIZE)
    sparse = sparsify(model, x, batch_sizes=())
    ideal = count_flops(model, x.shape[1:]) / count_flops(model, x.shape[1:], effective=True)
    n_sparse = sum(c.sparse for c in sparse.sparse_layers)

    def forward(m):
        with torch.inference_mode():
            m(x)

    ort = _onnxruntime(model, x)
    timed = {"sparsified": Timed(lambda _: forward(sparse), _settle), "onnxruntime": Timed(lambda _: ort(), _settle),
             "torch": Timed(lambda _: forward(model), _settle)}

    def note(t):
        if not {"sparsified", "onnxruntime", "torch"} <= set(t):
            return None
        best = min(t["onnxruntime"], t["torch"])
        return (f"vs fastest dense {best / t['sparsified']:.2f}x; FLOPs ideal {ideal:.2f}x "
                f"({best / t['sparsified'] / ideal:.0%} of it); {n_sparse}/{len(sparse.sparse_layers)} layers sparse")

    return Case(spec, "cpu", timed, note=note, keep=[model, sparse, x])


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
