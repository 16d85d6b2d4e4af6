"""The per-layer choice, made so that machine noise does not flip it.

Each float32 conv/linear runs sparse only where its sparse form is clearly faster than its dense form: the best of
its interleaved sparse samples at least ``MARGIN`` times below the best dense sample, on its own input from the
example, at every batch size asked for; a close call stays dense. The samples are CPU time on one thread by default
(a busy machine delays a layer but hardly changes the CPU time it takes), wall-clock time on request, and they are
kept per machine (``nptm.sparse.timings``) so that the same layers decide the same way in a later run. The dense form
of a conv is the faster of ``nn.Conv2d`` and ``DenseConv2d`` (oneDNN called directly, ``nptm.sparse.dense``), timed
the same way first; the sparse form is timed against it. A weight whose nonzeros could also be stored in blocks of
output channels at a modeled cost close to the best (``block_candidates``) times each such packing, and the layers
deciding together keep the packing fastest over their pooled samples (``LayerChoice.block``). Layers of the
same geometry (kind, weight shape, stride, padding, dilation, groups, input shape at every batch size) whose
densities lie within ``DENSITY_TOL`` of the group's sparsest member decide together, on their pooled samples.
Denser layers than ``MAX_DENSITY`` stay dense unmeasured (packed in blocks of 8, a 1x1 conv at 70-80% density still
ran 1.1-1.3x oneDNN's speed; denser, the stored values are the dense weight's); empty layers go sparse unmeasured
(they only write their bias).
``choices=`` replays a saved decision instead."""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from nptm.sparse.dense import DenseConv2d, onednn_available, to_dense
from nptm.sparse.modules import block_candidates, sparse_padding, to_sparse
from nptm.sparse.timings import Timings, layer_key

MAX_DENSITY = 0.85
MARGIN = 1.15  # sparse only when dense median / sparse median >= MARGIN at every batch size
DENSITY_TOL = 0.02  # same-geometry layers within this density of their group's first member decide together
MIN_SAMPLE_S = 2e-4  # fast calls are repeated so that one sample lasts at least this
CLOSE = 1.5  # best times within this factor: a close call, timed longer
CANNOT = "cannot run sparse"  # how the reason of a layer the sparse op cannot run starts


@dataclass
class LayerChoice:
    """One conv/linear: its density, the best ms of the dense and sparse forms per batch size (pooled over the
    layers that decided with it, named by ``group``), the choice and why, and for a dense layer the engine that runs
    it (``dense_engine``: "onednn" for ``DenseConv2d``, "torch" for the torch layer)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    density: float
    dense_ms: dict[int, float] = field(default_factory=dict)
    sparse_ms: dict[int, float] = field(default_factory=dict)
    sparse: bool = False
    reason: str = ""
    group: str = ""  # the first layer of the group that decided together ("" when it decided alone)
    dense_engine: str = ""  # a dense layer: "onednn" (DenseConv2d) or "torch"; "" for a sparse one
    block: int = 0  # a sparse layer: output channels per stored entry (1: unstructured); 0: not recorded


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def time_calls(fns: list[Callable[[], Tensor]], rounds: int, clock: Callable[[], float] = time.thread_time,
               close: float = CLOSE) -> list[list[float]]:
    """Seconds per call of each function by ``clock``, one sample each per round, in alternating order (A B C, C B
    A, ...); while the best time of the first (the dense form) and the best of the others are within ``close`` of
    each other (a close call), up to 3 x ``rounds``."""
    for fn in fns:  # first calls build kernels and buffers
        fn()
    t0 = clock()
    for fn in fns:
        fn()
    inner = max(1, min(100, int(MIN_SAMPLE_S / max(clock() - t0, 1e-7) * len(fns))))
    samples: list[list[float]] = [[] for _ in fns]
    r = 0
    while r < rounds or (r < 3 * rounds and 1 / close < min(samples[0]) / min(min(x) for x in samples[1:]) < close):
        for i in range(len(fns)) if r % 2 == 0 else reversed(range(len(fns))):
            t0 = clock()
            for _ in range(inner):
                fns[i]()
            samples[i].append(max(clock() - t0, 1e-9) / inner)
        r += 1
    return samples


def time_pair(dense: Callable[[], Tensor], sparse: Callable[[], Tensor], rounds: int,
              clock: Callable[[], float] = time.thread_time, close: float = CLOSE) -> tuple[list[float], list[float]]:
    """``time_calls`` of two functions: (dense samples, sparse samples)."""
    d, s = time_calls([dense, sparse], rounds, clock, close)
    return d, s


def layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> every Conv2d / Linear of ``model`` (what a choice may name)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _initial(name: str, module: nn.Module) -> tuple[LayerChoice, nn.Module | None]:
    """The choice before any timing (a reason set when it is already decided) and the sparse form, if any."""
    w = module.weight
    density = float(w.count_nonzero()) / w.numel() if w.numel() else 0.0
    choice = LayerChoice(name, "conv" if isinstance(module, nn.Conv2d) else "linear", tuple(w.shape), density)
    if type(module) not in (nn.Conv2d, nn.Linear):
        base = type(module).__mro__[1].__name__
        choice.reason = f"{CANNOT}: {type(module).__name__} subclasses {base} (its forward may differ)"
        return choice, None
    if w.dtype != torch.float32 or w.device.type != "cpu":
        choice.reason = f"{CANNOT}: {str(w.dtype).replace('torch.', '')} on {w.device} (the op runs float32 on CPU)"
        return choice, None
    sparse = to_sparse(module)
    if sparse is None:
        choice.reason = f"{CANNOT}: padding {module.padding_mode} {module.padding}"
    elif density == 0.0:
        choice.sparse, choice.reason = True, "no nonzero weight"
    elif density > MAX_DENSITY:
        choice.reason = f"density {density:.2f} > {MAX_DENSITY}"
    return choice, sparse


def _groups(names: list[str], mods: dict[str, nn.Module], choices: dict[str, LayerChoice],
            shapes: dict[str, dict[int, tuple]], blocks: dict[str, int]) -> list[list[str]]:
    """The layers that decide together: same geometry and sparse block, densities within ``DENSITY_TOL`` of the
    group's first (sparsest) member. Deterministic: the densities are."""
    by_geometry: dict[tuple, list[str]] = {}
    for n in names:
        geometry = tuple(layer_key(mods[n], 0.0, shapes[n][b], blocks[n]) for b in sorted(shapes[n]))
        by_geometry.setdefault(geometry, []).append(n)
    groups = []
    for members in by_geometry.values():
        for n in sorted(members, key=lambda n: (choices[n].density, n)):
            if groups and groups[-1][0] in members and choices[n].density - choices[groups[-1][0]].density <= DENSITY_TOL:
                groups[-1].append(n)
            else:
                groups.append([n])
    return groups


def _decide(group: list[str], choices: dict[str, LayerChoice], samples: dict[str, dict[int, dict[int, tuple[list, list]]]]) -> int:
    """Decide a group on its pooled samples (batch size -> packing -> (dense, sparse) seconds); returns the packing
    (block) whose best sparse times summed over the batch sizes are the least among those every member timed."""
    sizes = sorted(samples[group[0]])
    common = set.intersection(*(set(samples[n][b]) for n in group for b in sizes))
    pooled = lambda b, k, i: [s for n in group for s in samples[n][b][k][i]]  # noqa: E731
    block = min(sorted(common), key=lambda k: sum(min(pooled(b, k, 1)) for b in sizes))
    ratio = {}
    for b in sizes:
        dense, sparse = pooled(b, block, 0), pooled(b, block, 1)
        d, s = min(dense) * 1e3, min(sparse) * 1e3
        ratio[b] = d / s
        for n in group:
            choices[n].dense_ms[b], choices[n].sparse_ms[b] = d, s
    close = [b for b in sizes if ratio[b] < MARGIN]
    for n in group:
        c = choices[n]
        c.sparse, c.group = not close, group[0] if len(group) > 1 else ""
        c.reason = (f"{min(ratio.values()):.2f}x faster" if not close
                    else f"{ratio[close[0]]:.2f}x at batch {close[0]} (< {MARGIN}x)")
    return block


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels > 1


def dense_form(module: nn.Module) -> DenseConv2d | None:
    """The ``DenseConv2d`` of a float32 ``nn.Conv2d`` with zero padding, where oneDNN is available (or the conv is
    depthwise: nptm's kernel runs it); else None."""
    ok = isinstance(module, nn.Conv2d) and (onednn_available() or _depthwise(module))
    return to_dense(module, sparse_padding(module)) if ok else None


def default_engine(module: nn.Module) -> str:
    """The dense engine of an untimed choice: ``DenseConv2d`` ("onednn") for ungrouped convs (oneDNN, measured
    1.3-1.5x faster than torch's NCHW 1x1 path on ResNet-50's layers) and depthwise ones (nptm's depthwise kernel,
    faster than torch's on MobileNetV2's layers), torch for other grouped convs (the same oneDNN kernel, no faster)."""
    return "onednn" if isinstance(module, nn.Conv2d) and (module.groups == 1 or _depthwise(module)) else "torch"


def replay_choices(model: nn.Module, given: Mapping[str, bool] | list[LayerChoice]) -> dict[str, tuple[bool, str, int]]:
    """A saved decision (LayerChoice list, or name -> sparse) as name -> (sparse, dense engine or "", block or 0),
    checked against ``model``'s layers."""
    if isinstance(given, (list, tuple)) and all(isinstance(c, LayerChoice) for c in given):
        bad = next((c for c in given if c.block not in (0, 1, 2, 4, 8)), None)
        if bad is not None:
            raise ValueError(f"sparsify: choices give {bad.name} block {bad.block!r}; it must be 1, 2, 4 or 8")
        wanted = {c.name: (bool(c.sparse), c.dense_engine if c.dense_engine in ("onednn", "torch") else "",
                           int(c.block) if c.sparse else 0) for c in given}
    elif isinstance(given, Mapping):
        wanted = {str(k): (bool(v), "", 0) for k, v in given.items()}
    else:
        raise ValueError(f"sparsify: choices must be a list of LayerChoice or a dict layer name -> sparse, got "
                         f"{type(given).__name__}")
    missing = sorted(set(wanted) - set(layers(model)))
    if missing:
        raise ValueError(f"sparsify: choices name layers the model has no Conv2d/Linear for: {', '.join(missing[:5])}"
                         + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    return wanted


def choose_layers(model: nn.Module, batches: dict[int, tuple], rounds: int = 7, measure: bool = True,
                  replay: Mapping[str, tuple[bool, str, int]] | None = None, timing: str = "cpu",
                  cache: bool = True) -> tuple[list[LayerChoice], dict[str, nn.Module]]:
    """Run ``model`` on each batch (batch size -> inputs); each layer times its dense forms (``nn.Conv2d`` against
    ``DenseConv2d``), then the faster against its sparse form(s), on its own input in a forward pre-hook; the sparse
    choice is made with its group, the dense engine alone (oneDNN where it is faster at every batch size). Returns
    the choices and the modules that replace layers (sparse, or ``DenseConv2d``). ``timing``: "cpu" (one thread, its
    CPU time: what the layer costs, whatever else the machine runs) or "wall" (wall-clock time with the current torch
    threads). ``measure=False``: every layer the sparse op runs goes sparse, untimed. ``replay``: name -> (sparse,
    dense engine, block), untimed (a layer it does not name stays dense; one it asks sparse that the op cannot run is
    refused). Untimed dense layers take ``default_engine``. ``cache``: read and keep this machine's timings
    (``nptm.sparse.timings``), so that the same layers decide the same way in a later run."""
    if timing not in CLOCKS:
        raise ValueError(f"timing must be one of {sorted(CLOCKS)}, got {timing!r}")
    kept, cached = Timings(timing, cache and measure and replay is None), set()
    choices, forms, fast, mods, hooks, packings = {}, {}, {}, layers(model), [], {}
    samples: dict[str, dict[int, dict[int, tuple[list, list]]]] = {}  # name -> batch size -> block -> samples
    packs: dict[str, dict[int, nn.Module]] = {}  # name -> block -> the sparse form stored that way
    engines: dict[str, dict[int, bool]] = {}  # name -> batch size -> oneDNN faster
    shapes: dict[str, dict[int, tuple]] = {}
    for name, module in mods.items():
        choices[name], forms[name] = c, form = _initial(name, module)
        fast[name] = dense_form(module)
        if replay is not None:
            sparse, engine, block = replay.get(name, (False, "", 0))
            if sparse and form is None:
                raise ValueError(f"sparsify: choices ask {name} sparse, but {c.reason}")
            if sparse and block and block != form.block:
                forms[name] = to_sparse(module, block)
            c.sparse, c.reason = sparse, "replayed" if name in replay else "not in the replayed choices"
            c.dense_engine = "" if sparse else engine or default_engine(module)
            continue
        if form is not None and not measure:
            c.sparse, c.reason = True, "every layer asked sparse"
        candidate = form is not None and not c.reason
        if candidate:
            packings[name] = block_candidates(module.weight, getattr(module, "groups", 1))
        if not candidate and (fast[name] is None or not measure):
            continue

        def hook(mod, args, name=name, candidate=candidate):
            b = args[0].shape[0] if args and isinstance(args[0], Tensor) and args[0].dim() else None
            if b is None or b in shapes.setdefault(name, {}):
                return
            shapes[name][b] = tuple(tuple(a.shape) for a in args if isinstance(a, Tensor))
            key = layer_key(mod, choices[name].density, shapes[name][b], getattr(forms[name], "block", 1))
            dense = lambda: mod.forward(*args)  # noqa: E731
            if fast[name] is not None:
                hit = kept.get("onednn " + key)
                e, f = ([hit[0]], [hit[1]]) if hit else time_pair(dense, lambda: fast[name](*args), rounds, CLOCKS[timing],
                                                                  close=1.0)  # either engine computes the same
                kept.put("onednn " + key, min(e), min(f))
                engines.setdefault(name, {})[b] = min(f) < min(e)
                dense = (lambda: fast[name](*args)) if min(f) < min(e) else dense
            if not candidate:
                return
            if name not in packs:
                with torch.inference_mode(False):  # buffers with version counters (the op caches offsets by them)
                    packs[name] = {k: forms[name] if k == forms[name].block else to_sparse(mod, k) for k in packings[name]}
            keys = {k: layer_key(mod, choices[name].density, shapes[name][b], k) for k in packs[name]}
            hits = {k: kept.get(key) for k, key in keys.items()}
            if all(hits.values()):
                timed = {k: ([h[0]], [h[1]]) for k, h in hits.items()}
                cached.add(name)
            else:  # the dense form and every packing in one interleaved run: one dense sample per round serves all
                runs = time_calls([dense, *(lambda f=f: f(*args) for f in packs[name].values())], rounds, CLOCKS[timing])
                timed = {k: (runs[0], runs[i + 1]) for i, k in enumerate(packs[name])}
            for k, (d, s) in timed.items():
                kept.put(keys[k], min(d), min(s))
                samples.setdefault(name, {}).setdefault(b, {})[k] = (d, s)

        hooks.append(module.register_forward_pre_hook(hook))
    threads = torch.get_num_threads()
    try:
        if timing == "cpu":
            torch.set_num_threads(1)
        with torch.inference_mode():
            for inputs in batches.values() if hooks else ():
                model(*inputs)
    finally:
        torch.set_num_threads(threads)
        for h in hooks:
            h.remove()
    timed = [n for n in choices if not choices[n].reason and samples.get(n)]
    for n in choices:
        if not choices[n].reason and n not in timed:
            choices[n].reason = "not reached by the example"
    for group in _groups(timed, mods, choices, shapes, {n: getattr(forms[n], "block", 1) for n in timed}):
        block = _decide(group, choices, samples)
        for n in group:
            forms[n] = packs[n][block]
        if cached & set(group):
            for n in group:
                choices[n].reason += " (timings kept from an earlier run)"
    kept.save()
    for n, c in choices.items():
        c.block = forms[n].block if c.sparse and forms[n] is not None else 0
        if replay is None and not c.sparse:
            measured = engines.get(n)
            c.dense_engine = ("onednn" if all(measured.values()) else "torch") if measured else (
                default_engine(mods[n]) if not measure else "torch")
        if not c.sparse and fast[n] is None:
            c.dense_engine = "torch"
    chosen = {n: forms[n] if c.sparse else fast[n] for n, c in choices.items() if c.sparse or c.dense_engine == "onednn"}
    return list(choices.values()), chosen
