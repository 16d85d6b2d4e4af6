"""Timing, copy bandwidth, machine description, result records and targets shared by the benchmarks.

Each ``bench_*.py`` module exposes ``specs(device, full) -> list[Spec]`` (cheap, no tensors) and
``build(spec, device) -> Case`` (allocates the workload). ``run.py`` and the pytest-benchmark tests
both time a ``Case``: its first implementation is ours, the others are baselines.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


class Unavailable(Exception):
    """A workload cannot be built here (a missing module, no GPU, ...); the case is skipped."""


@dataclass(frozen=True)
class Spec:
    op: str  # e.g. "global_magnitude_masks"
    workload: str  # e.g. "resnet50 fp32 s=0.9"
    impls: tuple[str, ...]  # ours first, then the baselines
    params: tuple = ()  # module-specific, hashable
    interleave: bool = False  # kept for old callers: every case is now timed round-robin

    @property
    def id(self) -> str:
        return re.sub(r"[^\w.=+-]+", "-", f"{self.op}-{self.workload}")


@dataclass
class Timed:
    """``fn()`` is timed; ``setup()``, when given, runs untimed before each call and its result is fn's argument."""

    fn: Callable[..., Any]
    setup: Callable[[], Any] | None = None


@dataclass
class Case:
    spec: Spec
    device: str
    timed: dict[str, Timed]
    bytes: int | None = None  # SPEC floor bytes of our op
    note: Callable[[dict[str, float]], str] | None = None  # extra column text from the measured times
    fastest: tuple[str, ...] = ()  # baselines whose per-round fastest is one more baseline, FASTEST
    keep: list = field(default_factory=list)  # tensors the closures need alive


@dataclass(frozen=True)
class Budget:
    rounds: int  # interleaved rounds: every impl (and the copy reference) takes one sample per round
    warmup: int
    max_s: float  # no more rounds once the case's samples sum past this (after min_rounds)
    min_sample_s: float  # fast calls are batched so that one sample lasts at least this
    min_rounds: int = 7

    @property
    def repeats(self) -> int:  # samples per impl for pytest-benchmark
        return self.rounds

    @staticmethod
    def for_run(quick: bool, device: str) -> "Budget":
        if quick:
            return Budget(rounds=7, warmup=1, max_s=4.0, min_sample_s=2e-2)  # long samples: preemption averages out
        return Budget(rounds=15, warmup=2, max_s=60.0, min_sample_s=5e-3 if device == "cuda" else 1e-2)


SLOW_S = 1.0  # a call this slow is not warmed up: its first call counts as a sample
COPY = "copy_"  # the copy-bandwidth reference timed in every case's rounds
FASTEST = "fastest_dense"  # per round, the fastest of a case's ``fastest`` baselines (what a user would pick)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _sample(t: Timed, device: str, inner: int) -> float:
    arg = t.setup() if t.setup is not None else None
    sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        t.fn(arg) if t.setup is not None else t.fn()
    sync(device)
    return (time.perf_counter() - t0) / inner


def _probe(t: Timed, device: str, budget: Budget) -> tuple[int, float]:
    """One call (the first warm-up): calls per sample to last min_sample_s (1 with a setup), and its time."""
    est = _sample(t, device, 1)
    inner = 1 if t.setup is not None else max(1, min(1000, int(budget.min_sample_s / max(est, 1e-7)) + 1))
    return inner, est


def time_case(case: Case, budget: Budget, progress: Callable[[str], None] | None = None,
              copy: Case | None = None) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per call of every impl in each round, and the impls that raised.

    Impls are timed interleaved (A B C, C B A, A B C, ...: load drift hits all alike) for at least
    ``min_rounds`` rounds; ``copy``'s op joins every round under COPY so that bandwidth fractions
    compare samples taken side by side.
    """
    timed = dict(case.timed)
    if copy is not None:
        timed[COPY] = copy.timed[copy.spec.impls[0]]
    inner, samples, errors = {}, {}, {}
    for n, t in timed.items():  # warm-up; its first call is the probe that sizes the batches
        try:
            inner[n], est = _probe(t, case.device, budget)
            samples[n] = [est] if est >= SLOW_S else []  # slow: the probe is the first sample
            for _ in range(0 if est >= SLOW_S else budget.warmup - 1):
                _sample(t, case.device, inner[n])
        except Exception as e:  # a baseline this torch/device cannot run: reported, not fatal
            errors[n] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    impls = [n for n in timed if n not in errors]
    spent = 0.0
    r = 0
    while r < budget.rounds and (r < budget.min_rounds or spent < budget.max_s):
        for n in impls if r % 2 == 0 else impls[::-1]:
            if len(samples[n]) > r:
                continue
            if progress:
                progress(n)
            samples[n].append(_sample(timed[n], case.device, inner[n]))
            spent += samples[n][-1] * inner[n]
        r += 1
    return samples, errors


def ratio_stats(num: list[float], den: list[float]) -> tuple[float, float, float] | None:
    """Median, min and max of the per-round ratios num[i] / den[i]."""
    rs = [a / b for a, b in zip(num, den) if a and b]
    return (statistics.median(rs), min(rs), max(rs)) if rs else None


# ---------------------------------------------------------------------------------------------
# Machine


def copy_case(device: str, mbytes: int = 100) -> Case:
    """``dst.copy_(src)`` over ~100 MB fp32: the machine's copy bandwidth (bytes = read + write)."""
    src = torch.rand(mbytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    spec = Spec("copy", f"{mbytes} MiB fp32", ("copy_",))
    return Case(spec, device, {"copy_": Timed(lambda: dst.copy_(src))}, bytes=2 * src.nbytes, keep=[src, dst])


def keep_heap() -> dict[str, int] | None:
    """glibc: never hand freed heap back to the OS, and serve allocations up to 32 MiB from the heap.

    Otherwise whether an op's fresh outputs land on memory glibc just trimmed (page faults on every
    call: ~6 ms for ResNet-50's 25 MB of masks) changes from process to process, and timings with it.
    Applies to every implementation alike. Returns the settings, or None where mallopt is absent."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        settings = {"M_TRIM_THRESHOLD": (-1, 2**31 - 1), "M_MMAP_THRESHOLD": (-3, 32 * 2**20)}
        ok = all(libc.mallopt(code, value) == 1 for code, value in settings.values())
    except (OSError, AttributeError):
        return None
    return {k: v for k, (_, v) in settings.items()} if ok else None


KEPT_HEAP: dict[str, int] | None = None  # set by run.py (keep_heap)


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from nptm.ops import has_cuda_kernels

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": os.getloadavg(),
        "malloc": KEPT_HEAP,
        "torch": torch.__version__,
        "cuda_kernels": has_cuda_kernels(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------------------------------------
# Records and targets

# (device, op regex, workload regex, baseline or None for the case itself, quantity, threshold)
TARGETS = [
    ("cpu", r"global_magnitude_masks", r"resnet50 fp32 s=0\.9$", "prune.global_unstructured", "speedup", 20.0),
    ("cpu", r"global_magnitude_masks", r"resnet50 fp32 s=0\.9$", "kthvalue", "speedup", 20.0),
    ("cpu", r"global_magnitude_masks", r"resnet50 fp32 s=0\.9$", None, "frac_bw", 0.5),
    ("cpu", r"global_magnitude_masks", r"resnet50 fp32 s=0\.9 from 0\.5$", None, "frac_bw", 0.3),
    ("cpu", r"apply_masks(_step)?", r"resnet50 fp32", None, "frac_bw", 0.6),
    ("cpu", r"apply_masks(_step)?", r"resnet50 fp32", "foreach_mul_", "speedup", 1.0),
    ("cpu", r"train_step", r".*", "dense", "speedup", 1 / 1.03),  # masked step <= 3% slower than dense
    ("cpu", r"gather_channels", r".*", "index_select_loop", "speedup", 1.0),
    *[("cpu", r"sparse_inference", wl, base, "speedup", thr) for wl, thr in
      ((r"resnet50 s=0\.9 b1$", 2.0), (r"resnet50 s=0\.95 b1$", 3.0), (r"resnet50 s=0\.9 b16$", 1.5),
       (r"resnet50 4x1 s=0\.9 b1$", 3.0), (r"resnet50 4x1 s=0\.9 b16$", 2.0),
       (r"mobilenet_v2 1x1 s=0\.9 b1$", 1.0), (r"mobilenet_v2 1x1 4x1 s=0\.9 b1$", 1.3))
      for base in ("fastest_dense",)],  # per round the fastest of ORT, frozen torch, eager torch (issue 26)
    ("cpu", r"sparse_conv1x1", r".*", "dense", "speedup", 3.0),
    ("cuda", r"global_magnitude_masks", r"resnet50", None, "frac_bw", 0.5),
    ("cuda", r"apply_masks(_step)?", r"resnet50", None, "frac_bw", 0.5),
    ("cuda", r"apply_masks(_step)?", r"resnet50", "mul_loop", "speedup", 5.0),
    ("cuda", r"gather_channels", r"resnet50", "index_select_loop", "speedup", 5.0),
]


def _targets(rec: dict, first: bool) -> str | None:
    out = []
    for dev, op, wl, base, qty, thr in TARGETS:
        if dev != rec["device"] or not re.fullmatch(op, rec["name"]) or not re.search(wl, rec["workload"]):
            continue
        if (base is None and not first) or (base is not None and base != rec["baseline"]):
            continue
        val = rec[qty]
        label = f"{qty}>={thr:.3g}" if not (qty == "speedup" and thr < 1) else f"<={(1 / thr - 1) * 100:.0f}% slower"
        out.append(f"{label} {'n/a' if val is None else 'met' if val >= thr else 'MISSED'}")
    return "; ".join(out) or None


def records(case: Case, samples: dict[str, list[float]], copy_gbps: float | None, errors: dict[str, str] | None = None,
            copy_bytes: int | None = None) -> list[dict]:
    """One record per baseline (one with baseline None when the case has none). Times are medians over
    rounds; speedup and frac_bw are medians of per-round ratios (spread: their min and max). frac_bw
    divides by the copy samples of the same rounds when the case timed COPY, else by copy_gbps."""
    ours, *bases = case.spec.impls
    times = {n: statistics.median(s) for n, s in samples.items() if s}
    ours_s = times.get(ours)
    gbps = case.bytes / ours_s / 1e9 if case.bytes and ours_s else None
    frac = None
    if gbps and samples.get(COPY) and copy_bytes:  # (bytes/ours) / (copy_bytes/copy) per round
        frac = ratio_stats([case.bytes * c for c in samples[COPY]], [copy_bytes * o for o in samples[ours]])
    elif gbps and copy_gbps:
        frac = (gbps / copy_gbps,) * 3
    notes = [case.note(times) if case.note else None] + [f"{n} failed: {e}" for n, e in (errors or {}).items()]
    note = "; ".join(filter(None, notes)) or None
    out = []
    engines = [n for n in case.fastest if samples.get(n)]
    if engines:  # round i's fastest engine against our round i sample
        samples = {**samples, FASTEST: [min(r) for r in zip(*(samples[n] for n in engines))]}
        times[FASTEST] = statistics.median(samples[FASTEST])
        bases = [FASTEST, *bases]
    for i, b in enumerate(bases or [None]):
        sp = ratio_stats(samples[b], samples[ours]) if b and samples.get(b) and samples.get(ours) else None
        rec = {
            "name": case.spec.op,
            "device": case.device,
            "workload": case.spec.workload,
            "ours": ours,
            "ours_s": ours_s,
            "baseline": b,
            "baseline_s": times.get(b) if b else None,
            "rounds": min(len(samples.get(ours, [])), len(samples.get(b, []))) if b else len(samples.get(ours, [])),
            "speedup": sp[0] if sp else None,
            "speedup_min": sp[1] if sp else None,
            "speedup_max": sp[2] if sp else None,
            "bytes": case.bytes,
            "gbps": gbps,
            "frac_bw": frac[0] if frac else None,
            "frac_bw_min": frac[1] if frac else None,
            "frac_bw_max": frac[2] if frac else None,
            "note": note if i == 0 else None,
        }
        rec["target"] = _targets(rec, first=i == 0)
        out.append(rec)
    return out


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _spread(r: dict, key: str, unit: str) -> str:
    """Median with its min-max spread over rounds, e.g. 12.3x (11.9-12.8)."""
    if r.get(key) is None:
        return "-"
    lo, hi = r.get(f"{key}_min"), r.get(f"{key}_max")
    spread = f" ({lo:.2f}–{hi:.2f})" if lo is not None and hi is not None and lo != hi else ""
    return f"{r[key]:.2f}{unit}{spread}"


COLUMNS = ["op", "workload", "ours", "baseline", "baseline time", "speedup (min–max)", "GB/s", "of copy BW (min–max)", "target / note"]


def rows(recs: list[dict]) -> list[list[str]]:
    out = []
    for r in recs:
        extra = "; ".join(x for x in (r.get("target"), r.get("note")) if x)
        out.append([
            r["name"], r["workload"], f"{r['ours']} {_fmt_s(r['ours_s'])}", r["baseline"] or "-", _fmt_s(r["baseline_s"]),
            _spread(r, "speedup", "x"), _fmt(r["gbps"], ".1f"), _spread(r, "frac_bw", ""), extra,
        ])
    return out


def text_table(recs: list[dict]) -> str:
    data = [COLUMNS] + rows(recs)
    widths = [max(len(r[i]) for r in data) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in data]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(recs: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows(recs)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# pytest-benchmark glue (the same cases and budgets as run.py)

_built: dict[str, Any] = {}


def pytest_bench(benchmark, build: Callable[[Spec, str], Case], spec: Spec, device: str, impl: str, budget: Budget) -> None:
    """Time one impl of a case with pytest-benchmark; the case is built once for its consecutive impls."""
    import pytest

    key = (build, spec, device)
    if _built.get("key") != key:
        _built.clear()
        try:
            _built["case"] = build(spec, device)
        except Unavailable as e:
            _built["skip"] = str(e)
        _built["key"] = key
    if "skip" in _built:
        pytest.skip(_built["skip"])
    case: Case = _built["case"]
    t = case.timed[impl]
    benchmark.group = f"{spec.op} {device} {spec.workload}"
    benchmark.extra_info.update(impl=impl, bytes=case.bytes)
    if t.setup is not None:
        benchmark.pedantic(lambda a: (t.fn(a), sync(device)), setup=lambda: ((t.setup(),), {}),
                           rounds=budget.repeats, warmup_rounds=budget.warmup)
    else:
        benchmark.pedantic(lambda: (t.fn(), sync(device)), iterations=_probe(t, device, budget)[0],
                           rounds=budget.repeats, warmup_rounds=max(0, budget.warmup - 1))
