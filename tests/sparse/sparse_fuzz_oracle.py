"""The oracle of the sparsify fuzzer: a generated model (sparse_graph_gen.py) sparsified with ``measure=False``
(every third seed: every other layer dense through ``DenseConv2d``, replayed) from its batch-1 example equals the masked dense model within ``TOL`` of its largest output at batch 1, 3 and 8,
contiguous and channels_last, or is refused with one line; a traced one is saved with ``save_sparse`` (with the
inputs and the dense outputs beside it) and ``python sparse_fuzz_oracle.py DIR`` loads every file of DIR in
a fresh process (nothing but nptm imported) and compares again, one JSON line per file."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections import Counter

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOL = 1e-4


def close(got, want) -> str | None:
    """None when ``got`` equals ``want`` within TOL of its largest magnitude, else why not."""
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    err, scale = (got.double() - want.double()).abs().max().item(), want.abs().max().item()
    if not err <= TOL * max(scale, 1e-12):
        return f"max error {err:.3g} vs largest output {scale:.3g}"
    return None


def inputs_of(x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    xs = [x] + [torch.randn(b, *x.shape[1:], generator=gen) for b in (3, 8)]
    return xs + [t.contiguous(memory_format=torch.channels_last) for t in xs] if x.dim() == 4 else xs


def run(model, x):
    with torch.no_grad():
        return model(x.clone(memory_format=torch.preserve_format))  # models write to their inputs


def mixed_choices(model, seed: int) -> list:
    """Every other conv/linear sparse (where the op can run it), the rest dense through oneDNN (``DenseConv2d``)."""
    from torch import nn

    from nptm.sparse import LayerChoice
    from nptm.sparse.modules import sparse_padding

    out = []
    for i, (name, m) in enumerate((n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        can = type(m) in (nn.Conv2d, nn.Linear) and m.weight.dtype == torch.float32 and (
            type(m) is nn.Linear or sparse_padding(m) is not None)
        sparse = can and (i + seed) % 2 == 0
        out.append(LayerChoice(name, "", tuple(m.weight.shape), 0.0, sparse=sparse, dense_engine="" if sparse else "onednn"))
    return out


def check(seed: int, save_dir: str | None = None) -> tuple[str, dict]:
    """('sparsified' | 'per-layer' | 'refused', facts); AssertionError on a mismatch (other exceptions: crashes).
    With ``save_dir``, a traced model is saved as SEED.pt with SEED.ref.pt (inputs and dense outputs)."""
    from sparse_graph_gen import random_net

    from nptm.sparse import DenseConv2d, SparseConv2d, SparseLinear, save_sparse, sparsify
    from nptm.pruning.masks import unwrap

    model, x, masks = random_net(seed)
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in dense.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    try:
        choices = mixed_choices(unwrap(model), seed) if seed % 3 == 2 else None
        sparse = sparsify(model, x, masks, batch_sizes=(), measure=False, choices=choices)
    except ValueError as e:
        assert str(e) and "\n" not in str(e), f"seed {seed}: refusal is not one line: {e!r}"
        return "refused", {"reason": str(e)}
    layers = [m for m in sparse.modules() if isinstance(m, (SparseConv2d, SparseLinear, DenseConv2d))]
    facts = {"sparse layers": sum(not isinstance(m, DenseConv2d) for m in layers), "fused": sum(
        m.clamp_min is not None or m.clamp_max is not None for m in layers), "onednn layers": sum(isinstance(m, DenseConv2d) for m in layers)}
    xs, wants = inputs_of(x, seed), []
    for i, inp in enumerate(xs):
        want = run(dense, inp)
        why = close(run(sparse, inp), want)
        assert why is None, f"seed {seed}: input {i} {tuple(inp.shape)}{' channels_last' if i >= 3 else ''}: {why}"
        wants.append(want)
    if not isinstance(sparse, torch.fx.GraphModule):
        return "per-layer", facts
    facts["residuals"] = sum(n.op == "call_module" and len(n.args) == 2 for n in sparse.graph.nodes)
    if save_dir is not None:
        try:
            save_sparse(sparse, os.path.join(save_dir, f"{seed}.pt"))
        except ValueError as e:
            assert str(e) and "\n" not in str(e), f"seed {seed}: save refusal is not one line: {e!r}"
            return "not saved", {"reason": str(e)}
        torch.save({"inputs": xs, "outputs": wants}, os.path.join(save_dir, f"{seed}.ref.pt"))
    return "sparsified", facts


def load_and_compare(directory: str) -> dict[int, str | None]:
    """Seed -> None (the loaded model matches) or what went wrong, for every SEED.pt in ``directory``."""
    from nptm.sparse import load_sparse

    results = {}
    for f in sorted(os.listdir(directory)):
        if not f.endswith(".pt") or f.endswith(".ref.pt"):
            continue
        seed = int(f[:-3])
        try:
            model = load_sparse(os.path.join(directory, f))
            ref = torch.load(os.path.join(directory, f"{seed}.ref.pt"), weights_only=True)
            why = None
            for i, (inp, want) in enumerate(zip(ref["inputs"], ref["outputs"])):
                why = why or (lambda w: w and f"input {i} {tuple(inp.shape)}: {w}")(close(run(model, inp), want))
            results[seed] = why
        except Exception as e:  # noqa: BLE001  (reported, not raised: one file's crash must not hide the others)
            results[seed] = f"crash: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return results


def load_in_fresh_process(directory: str) -> dict[int, str | None]:
    """``load_and_compare`` run by a new Python process (only nptm imported there)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), directory], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=3600)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0:
        raise RuntimeError(f"the loading process failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return {d["seed"]: d["error"] for d in lines}


def fuzz(seeds, per_process: int = 500, log=None) -> tuple[Counter, list[str]]:
    """Counts of outcomes over ``seeds`` (generated, sparsified, per-layer, refused, not saved, loaded, mismatch,
    load mismatch, crash) and a line per mismatch or crash; saved models are loaded ``per_process`` at a time."""
    seen, bad = Counter(), []

    def note(line):
        bad.append(line)
        if log:
            log(line)

    seeds = list(seeds)
    for start in range(0, len(seeds), per_process):
        with tempfile.TemporaryDirectory() as d:
            for seed in seeds[start:start + per_process]:
                seen["generated"] += 1
                try:
                    outcome, facts = check(seed, d)
                    seen[outcome] += 1
                    seen["sparse layers"] += facts.get("sparse layers", 0)
                    seen["fused"] += facts.get("fused", 0)
                    seen["onednn layers"] += facts.get("onednn layers", 0)
                    seen["residuals"] += facts.get("residuals", 0)
                    if "reason" in facts:
                        seen[f"{outcome}: {facts['reason'][:80]}"] += 1
                except AssertionError as e:
                    seen["mismatch"] += 1
                    note(f"seed {seed}: mismatch: {str(e).splitlines()[0]}")
                except Exception as e:  # noqa: BLE001  (a crash of sparsify)
                    seen["crash"] += 1
                    where = traceback.extract_tb(e.__traceback__)[-1]
                    note(f"seed {seed}: crash: {type(e).__name__}: {(str(e).splitlines() or [''])[0]} "
                         f"({os.path.basename(where.filename)}:{where.lineno})")
            for seed, why in load_in_fresh_process(d).items():
                seen["loaded" if why is None else "load mismatch"] += 1
                if why is not None:
                    note(f"seed {seed}: loaded: {why}")
    return seen, bad


if __name__ == "__main__":
    torch.set_num_threads(1)
    for seed, why in load_and_compare(sys.argv[1]).items():
        print(json.dumps({"seed": seed, "error": why}), flush=True)
