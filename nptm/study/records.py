"""A run's ``Record`` (built in one place, stored as the JSON object results.json has always held), results.json
and results.csv (its scalar columns), and the printed summary table. Readers (tables, plots, the report) work on
the JSON objects, so folders written by earlier versions report too."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nptm.utils.files import atomic_write

CSV_SKIP = ("per_layer_sparsity", "history", "lr_trace", "cycles", "config", "sparse_choices", "empty_layers")
TIME_KEYS = ("time_prune_s", "time_train_s", "time_eval_s", "time_total_s", "images_per_s", "time_latency_s")


def is_timing(key: str) -> bool:
    """Whether a record's field is a measurement of time (it differs from one run of the same study to the next)."""
    return (key in TIME_KEYS or key.startswith(("latency_", "measured_speedup_"))
            or key in ("inference_engine", "deployed_note", "sparse_choices"))


@dataclass
class Record:
    """One finished run. ``measures``: what ``nptm.study.measure.measure`` reports of the final model (sparsity,
    params, FLOPs, speedup, ...); ``summary``: the training summary of its last phase (top1, loss, history, ...);
    ``details``: what only its kind has (cycles, d, BIMP's initial epochs, ...). ``to_json`` flattens them."""

    run: str
    kind: str  # dense, retrain, scratch-e, scratch-b, bimp, or a during-training method's own kind
    seed: int
    pruner: str  # "-" for the dense model
    sparsity_target: float | str  # a PFEC preset's name for filter pruners given one
    schedule: str
    epochs: int
    iters_per_epoch: int
    measures: dict[str, Any]
    summary: dict[str, Any]
    retrain_epochs: int | None = None
    time_prune_s: float = 0.0
    time_train_s: float = 0.0
    time_eval_s: float = 0.0
    lr_trace: dict[str, list] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)  # measured CPU inference (nptm.study.measure)
    pattern: str | None = None  # what the pruner removed together: "1x1", "4x1", "2:4" (None: dense, channels)

    def to_json(self, world_size: int, config: dict[str, Any]) -> dict[str, Any]:
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("measures", "summary", "details", "lr_trace", "retrain_epochs", "latency", "pattern")}
        items = list(base.items())  # the pattern right after the sparsity target
        base = {**dict(items[:5]), "pattern": self.pattern or "-", **dict(items[5:])}
        if self.retrain_epochs is not None:
            base["retrain_epochs"] = self.retrain_epochs
        times = {k: base.pop(k) for k in ("time_prune_s", "time_train_s", "time_eval_s")}
        rec = {**base, **self.measures, **self.latency,
               **{k: v for k, v in self.summary.items() if not k.startswith("time")}, **times, **self.details, "lr_trace": self.lr_trace, "world_size": world_size, "config": config}
        rec["time_total_s"] = sum(times.values())
        return rec


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_results(out: Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically (re)write OUT/results.json and OUT/results.csv."""
    text = json.dumps(_json_safe(list(records)), indent=1)
    atomic_write(out / "results.json", lambda f: f.write(text.encode()))
    columns = list(dict.fromkeys(k for r in records for k in r if k not in CSV_SKIP))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic_write(out / "results.csv", lambda f: f.write(buf.getvalue().encode()))


def load_results(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "results.json").read_text())


def fill_dense_top1(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pruned run's ``dense_top1``: the top-1 of its seed's dense model, when that has finished."""
    dense = {r["seed"]: r["top1"] for r in records if r["kind"] == "dense"}
    return [r if r["kind"] == "dense" or r["seed"] not in dense else {**r, "dense_top1": dense[r["seed"]]}
            for r in records]


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def spread(xs: Sequence[float], digits: int = 2) -> str:
    """``mean ± sample std`` over two or more values; one value alone, as it is."""
    m, sd = mean_std(xs)
    return f"{m:.{digits}f} ± {sd:.{digits}f}" if len(xs) > 1 else f"{m:.{digits}f}"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def shown_pattern(record: dict[str, Any]) -> str | None:
    """A run's pattern where tables and figures name it: None for single weights, channels or an N:M target."""
    pattern = record.get("pattern", "-")
    return None if pattern in ("-", "1x1", str(record["sparsity_target"])) else pattern


def pruner_label(record: dict[str, Any]) -> str:
    """The pruner as tables and figures name it: with its pattern unless that is single weights ("magnitude 4x1")."""
    pattern = shown_pattern(record)
    return record["pruner"] if pattern is None else f"{record['pruner']} {pattern}"


def group_runs(records: Sequence[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """(kind, pruner label, sparsity target, schedule, retraining budget or None) -> the runs of every seed, in
    first-seen order (the label carries a block pattern: ``pruner_label``)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["kind"], pruner_label(r), str(r["sparsity_target"]), r["schedule"], r.get("retrain_epochs"))].append(r)
    return groups


def measured_speedups(record: dict[str, Any]) -> dict[int, float]:
    """Batch size -> the measured CPU speedup of a run's deployed model over the dense one (``--latency-batches``):
    the ratio of the median latencies."""
    return {int(m[1]): v for k, v in record.items() if (m := re.fullmatch(r"measured_speedup_b(\d+)", k))}


def speedup_spread(records: Sequence[dict[str, Any]], batch: int) -> str:
    """The measured speedup of runs at ``batch`` as text: the mean of their medians and the min-max over every run's
    rounds (``2.10x (1.85-2.31)``; no range for records written before the spread was kept)."""
    here = [r for r in records if batch in measured_speedups(r)]
    if not here:
        return "-"
    text = f"{sum(measured_speedups(r)[batch] for r in here) / len(here):.2f}x"
    lo = [r.get(f"measured_speedup_b{batch}_min") for r in here]
    hi = [r.get(f"measured_speedup_b{batch}_max") for r in here]
    return text if None in lo + hi else f"{text} ({min(lo):.2f}-{max(hi):.2f})"


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per (pruner, sparsity, pattern, schedule): top-1 mean ± sample std over seeds (the mean alone for one
    seed), the top-1 right after pruning, before retraining, and costs (means); the theoretical speedup
    (dense/effective FLOPs) beside the measured one (CPU, the deployed model, per batch size: mean of the runs'
    median ratios, with the min-max of the round-by-round ratios in brackets)."""
    batches = sorted({b for r in records for b in measured_speedups(r)})
    head = ("pruner", "target", "pattern", "schedule", "T_rt", "seeds", "top-1 %", "top-1 after pruning %", "sparsity",
            "params", "eff. FLOPs", "speedup", *(["measured " + "/".join(f"b{b}" for b in batches)] if batches else []),
            "epochs", "time s")
    rows = []
    for (kind, _, target, schedule, budget), runs in group_runs(records).items():
        pruned = [100 * r["pruned_top1"] for r in runs if "pruned_top1" in r]
        avg = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
        measured = [speedup_spread(runs, b) if all(b in measured_speedups(r) for r in runs) else "-" for b in batches]
        cells = ["/".join(measured)] if batches else []
        rows.append((runs[0]["pruner"], target if kind != "dense" else "-", runs[0].get("pattern", "-"), schedule,
                     "-" if budget is None else str(budget),
                     str(len(runs)), spread([100 * r["top1"] for r in runs]), f"{sum(pruned) / len(pruned):.2f}" if pruned else "-",
                     f"{avg('sparsity'):.4f}", _si(avg("params_nonzero")), _si(avg("flops_effective")),
                     f"{avg('speedup'):.2f}x", *(c if kind != "dense" else "-" for c in cells), str(runs[0]["epochs"]),
                     f"{avg('time_total_s'):.1f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i >= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])
