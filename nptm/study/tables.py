"""The report's tables, as data: a title, the first column's heading, columns, and rows of formatted cells with the
best cell of each column marked.

- ``schedule_tables``: one table per sparsity target, a row per (pruner, budget T_rt), a column per schedule (and
  BIMP, GMP, SFP, Scratch, ...), cells top-1 mean ± sample std over seeds (Le & Hua 2021's layout);
- ``speed_table``: a row per (pruner, pattern, target): its pattern, the theoretical (FLOPs) speedup beside the
  measured CPU speedup of the deployed model (``nptm.sparsify``'d where that is faster at every batch size, or
  shrunk, or dense) at each batch size with its spread over the timing rounds, and the engine that ran it;
- ``budget_table``: the 2023 paper's Table 2 for studies that run pruning-stable methods: a row per method that
  prunes within the budget T (BIMP, GMP, GSM, DPF, DNW, STR, CS, LC), for each sparsity its top-1, theoretical
  speedup and the sparsity the method reached (before the projection onto the target), and training images/s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from nptm.study.records import (group_runs, mean_std, measured_speedups, pruner_label, shown_pattern, speedup_spread,
                                spread)

WITHIN_BUDGET = ("bimp", "gmp", "sparse-training")  # record kinds that prune within the total budget T


@dataclass
class Table:
    title: str
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of the best cells


def _top1(runs) -> tuple[float, float]:
    return mean_std([100 * r["top1"] for r in runs])


def _mark_best(table: Table, values: dict[tuple[int, int], float]) -> None:
    """Mark the highest value of each column that has more than one."""
    for j in range(len(table.columns)):
        column = {i: v for (i, jj), v in values.items() if jj == j}
        if len(column) > 1:
            top = max(column.values())
            table.best |= {(i, j) for i, v in column.items() if v == top}


def schedule_tables(records: Sequence[dict[str, Any]]) -> list[Table]:
    groups = group_runs([r for r in records if r["kind"] != "dense"])
    tables = []
    for target in dict.fromkeys(k[2] for k in groups):
        here = {k: v for k, v in groups.items() if k[2] == target}
        table = Table(f"target {target}", "pruner, T_rt", list(dict.fromkeys(k[3] for k in here)))
        rows = list(dict.fromkeys((k[1], k[4]) for k in here))
        runs = {(rows.index((k[1], k[4])), table.columns.index(k[3])): v for k, v in here.items()}
        for i, (pruner, budget) in enumerate(rows):
            table.rows.append((pruner + (f", T_rt {budget}" if budget is not None else ""),
                               [spread([100 * r["top1"] for r in runs[i, j]]) if (i, j) in runs else "-"
                                for j in range(len(table.columns))]))
        _mark_best(table, {ij: _top1(v)[0] for ij, v in runs.items()})
        tables.append(table)
    return tables


def _method(record: dict[str, Any], several_budgets: bool) -> str:
    if record["kind"] == "bimp":
        return f"BIMP ({pruner_label(record)}" + (f", T_rt {record.get('retrain_epochs')})" if several_budgets else ")")
    pattern = shown_pattern(record)
    return record["schedule"] + (f" ({pattern})" if pattern else "")


def budget_table(records: Sequence[dict[str, Any]]) -> Table | None:
    runs = [r for r in records if r["kind"] in WITHIN_BUDGET]
    if not any(r["kind"] == "sparse-training" for r in runs):
        return None
    several = len({r.get("retrain_epochs") for r in runs if r["kind"] == "bimp"}) > 1
    targets = list(dict.fromkeys(str(r["sparsity_target"]) for r in runs))
    methods = list(dict.fromkeys(_method(r, several) for r in runs))
    columns = [f"{t}: {q}" for t in targets for q in ("top-1 %", "speedup", "reached")] + ["images/s"]
    table = Table("pruning within the budget T (Zimmer et al. 2023, Table 2)", "method", columns)
    values = {}
    for i, method in enumerate(methods):
        mine = [r for r in runs if _method(r, several) == method]
        cells = []
        for j, target in enumerate(targets):
            here = [r for r in mine if str(r["sparsity_target"]) == target]
            if not here:
                cells += ["-"] * 3
                continue
            values[i, 3 * j] = _top1(here)[0]
            reached = mean_std([r.get("reached_sparsity", r["sparsity"]) for r in here])[0]
            cells += [spread([100 * r["top1"] for r in here]), f"{mean_std([r['speedup'] for r in here])[0]:.2f}x",
                      f"{reached:.4f}"]
        speed = [r["images_per_s"] for r in mine if r.get("images_per_s")]
        cells.append(f"{mean_std(speed)[0]:.0f}" if speed else "-")
        if speed:
            values[i, len(columns) - 1] = mean_std(speed)[0]
        table.rows.append((method, cells))
    _mark_best(table, values)
    return table


def speed_table(records: Sequence[dict[str, Any]]) -> Table | None:
    runs = [r for r in records if r["kind"] != "dense" and measured_speedups(r)]
    if not runs:
        return None
    batches = sorted({b for r in runs for b in measured_speedups(r)})
    table = Table("measured CPU speedup of the deployed model over the dense one (mean over runs of the median ratio; "
                  "in brackets the min-max of the round-by-round ratios)", "pruner, target",
                  ["pattern", "theoretical", *(f"batch {b}" for b in batches), "engine"])
    key = lambda r: (r["pruner"], r.get("pattern", "-"), str(r["sparsity_target"]))  # noqa: E731
    for pruner, pattern, target in dict.fromkeys(map(key, runs)):
        mine = [r for r in runs if key(r) == (pruner, pattern, target)]
        table.rows.append((f"{pruner}, {target}", [pattern, f"{mean_std([r['speedup'] for r in mine])[0]:.2f}x",
                                                   *(speedup_spread(mine, b) for b in batches),
                                                   "/".join(sorted({r.get("inference_engine", "-") for r in mine}))]))
    return table


def report_tables(records: Sequence[dict[str, Any]]) -> list[Table]:
    extra = [t for t in (speed_table(records), budget_table(records)) if t is not None]
    return schedule_tables(records) + extra
