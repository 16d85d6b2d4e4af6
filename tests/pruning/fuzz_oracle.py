"""The fuzzing oracle: a generated model is refused (one line), kept whole (with reasons), or pruned into a model
that runs at two batch sizes and equals the dense model with the removed channels zeroed in every sliced tensor
(only shapes and parameter counts where a LayerNorm mixes pruned channels); pruned models also round-trip
through save_pruned/load_pruned and, on request, ONNX (onnxruntime)."""
from __future__ import annotations

import copy
import os
import tempfile

import torch
from graph_gen import random_net

from nptm import load_pruned, save_pruned
from nptm.pruning.structured import UnsupportedModel, select_channels, trace_channels
from nptm.pruning.structured.graph import canonical_names
from nptm.pruning.structured.shrink import _check_keep, _positions, shrink_graph


def zeroed_reference(model, graph, keep):
    """A copy of ``model`` whose removed channels are zero in every tensor the engine slices."""
    ref, kept = copy.deepcopy(model), _check_keep(graph, keep)
    canon = canonical_names(ref)
    tensors = {canon[n]: t for n, t in [*ref.named_parameters(), *ref.named_buffers()]}
    with torch.no_grad():
        for s in graph.slices:
            idx = _positions(s, graph, kept)
            if idx is None:
                continue
            t = tensors[s.tensor]
            mask = torch.zeros(s.label.size, dtype=torch.bool)
            mask[idx] = True
            if s.conv_groups > 1:  # grouped conv weight dim 1: output o sees block o // (O/g) of the inputs
                g = s.conv_groups
                local = mask.reshape(g, -1)[torch.arange(t.shape[0]) // (t.shape[0] // g)]
                t.mul_(local.reshape(*local.shape, *(1,) * (t.dim() - 2)))
            else:
                t.mul_(mask.reshape(-1, *(1,) * (t.dim() - 1 - s.dim)))
    return ref


def count(model):
    return sum(p.numel() for p in model.parameters())


def check(seed: int, onnx: bool = False) -> str:
    """'refused', 'kept whole' or 'pruned'; AssertionError on a mismatch (other exceptions: crashes)."""
    model, x, mixes = random_net(seed)
    x2 = torch.randn(3, *x.shape[1:], dtype=x.dtype, generator=torch.Generator().manual_seed(seed + 1))
    try:
        graph = trace_channels(model, x)
    except UnsupportedModel as e:
        assert str(e) and "\n" not in str(e), f"seed {seed}: refusal is not one line: {e!r}"
        return "refused"
    assert all(g.reason for g in graph.groups if not g.prunable)
    keep = select_channels(model, "random_filters", 0.5, graph=graph, generator=torch.Generator().manual_seed(seed))
    if not keep:
        return "kept whole"
    pruned = shrink_graph(model, graph, keep).eval()
    ref = zeroed_reference(model, graph, keep).eval()
    assert count(pruned) < count(model), f"seed {seed}: nothing removed"
    with torch.no_grad():
        for inp in (x, x2):
            got, want = pruned(inp), ref(inp)
            assert got.shape == want.shape, f"seed {seed}: output shape {tuple(got.shape)} != {tuple(want.shape)}"
            if not mixes:
                torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-7, msg=lambda m: f"seed {seed}: {m}")
    with tempfile.TemporaryDirectory() as d:
        save_pruned(pruned, os.path.join(d, "m.pt"))
        loaded = load_pruned(random_net(seed)[0], os.path.join(d, "m.pt"), example_input=x).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x2), pruned(x2), atol=0, rtol=0, msg=lambda m: f"seed {seed}: loaded: {m}")
        if onnx:
            check_onnx(pruned, x, x2, os.path.join(d, "m.onnx"), seed)
    return "pruned"


def check_onnx(model, x, x2, path, seed):
    import onnxruntime as ort

    from nptm.export import export_onnx

    model = model.float()
    export_onnx(model, x.float(), path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x2.float().numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x2.float()), atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"seed {seed}: onnx: {m}")
