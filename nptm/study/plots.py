"""PNG figures of a study, drawn as the papers draw them (matplotlib, Agg backend).

- ``lr_schedules.png``: the lr per iteration of every schedule;
- ``accuracy.png``: top-1 per schedule and pruner (bars, mean ± std over seeds), one panel per target and budget;
- ``accuracy_vs_budget.png`` (several budgets): top-1 against the retraining budget, one line per schedule
  with the seeds' spread shaded, one panel per pruner and target (Le & Hua 2021, Fig. 2);
- ``accuracy_vs_sparsity.png`` (several targets): top-1 against sparsity, one line per schedule, one panel per
  pruner (Fig. 3/7);
- ``random_vs_methodical.png``: random pruning + restarting schedules against methodical pruning + FT (§4.2);
- ``speedup.png`` (when latency was measured): the measured CPU speedup of each run's deployed model against its
  theoretical (FLOPs) speedup, per batch size, and top-1 against the measured speedup;
- ``front.png`` (when latency was measured): the accuracy/speed front, top-1 against the measured latency of the
  deployed model for every (pruner, pattern, target, schedule), a panel per batch size, the dense model and the
  runs no other beats in both joined by the front line.

Bar charts zoom their y axis onto the bars (the papers' differences vanish on a 0-100 axis) and say so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nptm.study.records import group_runs, mean_std, measured_speedups, pruner_label

MARKERS = "osD^v<>p*h"


def _restarts(schedule: str) -> bool:
    """Whether a retraining schedule restarts at a large lr (asked of the registered schedule)."""
    from nptm.schedules import SCHEDULES, schedule_kind

    return schedule in SCHEDULES and schedule_kind(schedule).restarts


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(plt, n: int, width: float = 5.5, height: float = 3.8, cols: int = 3):
    cols = min(cols, max(n, 1))
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def _top1(runs) -> tuple[float, float]:
    return mean_std([100 * r["top1"] for r in runs])


def _properties(pruner: str) -> tuple[bool, bool]:
    """(random, structured) of a pruner name or label ("magnitude 4x1"); a pruner no longer installed counts as
    methodical unstructured."""
    from nptm.pruning import PRUNERS

    pruner = pruner.split(" ")[0]
    return (PRUNERS[pruner].random, PRUNERS[pruner].structured) if pruner in PRUNERS else (False, False)


def _dense(records) -> float | None:
    dense = [100 * r["top1"] for r in records if r["kind"] == "dense"]
    return mean_std(dense)[0] if dense else None


def _zoom(ax, lows: Sequence[float], highs: Sequence[float]) -> None:
    """A y axis around the plotted values (at least 1 point tall), labelled as not starting at 0."""
    if not lows:
        return
    lo, hi = min(lows), max(highs)
    pad = max(0.15 * (hi - lo), 0.5)
    bottom, top = max(0.0, lo - pad), min(100.0, hi + pad)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("top-1 (%)" + (", axis zoomed" if bottom > 0 or top < 100 else ""))


def plot_lr_schedules(records: Sequence[dict[str, Any]], path: Path) -> None:
    """The lr per iteration (x in epochs of its phase) of every schedule, for the first seed/pruner/target/budget."""
    plt = pyplot()
    first = next((r for r in records if r["kind"] == "retrain"), next((r for r in records if r["kind"] != "dense"), None))
    ident = lambda r: (r["seed"], r["pruner"], r["sparsity_target"], r.get("retrain_epochs"))  # noqa: E731
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        dense = r["kind"] == "dense" and r["seed"] == records[0]["seed"]
        same = r["kind"] != "dense" and (first is None or ident(r) == ident(first)) and r["lr_trace"]["lr"]
        if dense or same:
            t = r["lr_trace"]
            ax.plot([i / r["iters_per_epoch"] for i in t["iteration"]], t["lr"], label=r["schedule"],
                    linestyle="--" if r["kind"] == "dense" else "-")
    ax.set(xlabel="epoch of the phase", ylabel="learning rate", title="learning-rate schedules")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_accuracy(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Grouped bars: top-1 per schedule (x) and pruner (bars), mean ± std over seeds; a panel per target, budget
    and kind (unstructured, structured: their accuracies differ too much to share a zoomed axis). Runs without
    a budget (GMP) appear in every panel of their target and kind."""
    plt = pyplot()
    groups = group_runs([r for r in records if r["kind"] != "dense"])
    kind = lambda k: _properties(k[1])[1]  # noqa: E731
    panels = list(dict.fromkeys((k[2], k[4], kind(k)) for k in groups if k[4] is not None)) or \
        list(dict.fromkeys((k[2], None, kind(k)) for k in groups))
    panels += [(k[2], None, kind(k)) for k in groups if not any(p[0] == k[2] and p[2] == kind(k) for p in panels)]
    dense = _dense(records)
    width = min(14.0, max(5.5, 0.3 * len({k[3] for k in groups}) * len({k[1] for k in groups})))
    fig, axes = _grid(plt, len(panels), width=width, cols=1 if width > 8 else 3)
    for ax, (target, budget, structured) in zip(axes, panels):
        here = {k: v for k, v in groups.items() if k[2] == target and k[4] in (budget, None) and kind(k) == structured}
        schedules = list(dict.fromkeys(k[3] for k in here))
        pruners = list(dict.fromkeys(k[1] for k in here))
        width = 0.8 / len(pruners)
        lows, highs = [], []
        for j, pruner in enumerate(pruners):
            xs, ms, ss = [], [], []
            for i, s in enumerate(schedules):
                runs = next((v for k, v in here.items() if (k[1], k[3]) == (pruner, s)), None)
                if runs:
                    m, sd = _top1(runs)
                    xs.append(i + (j - (len(pruners) - 1) / 2) * width)
                    ms.append(m)
                    ss.append(sd)
                    lows.append(m - sd)
                    highs.append(m + sd)
            ax.bar(xs, ms, width, yerr=ss, capsize=3, label=pruner, color=f"C{j % 10}")
        if dense is not None:
            ax.axhline(dense, color="k", linestyle="--", linewidth=1, label="dense")
            highs.append(dense)
        _zoom(ax, lows, highs)
        ax.set_xticks(range(len(schedules)), schedules, rotation=30 if len(schedules) > 6 else 0)
        ax.set_title(f"{'structured' if structured else 'unstructured'}, target {target}"
                     + (f", T_rt = {budget} epochs" if budget is not None else ""))
        ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def plot_accuracy_vs_budget(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Top-1 against the retraining budget: a line per schedule (BIMP, SFP too) with the seeds' spread shaded;
    one panel per (pruner, target). GMP (no budget) and the dense model are horizontal lines."""
    plt = pyplot()
    groups = group_runs([r for r in records if r["kind"] != "dense"])
    panels = list(dict.fromkeys((k[1], k[2]) for k in groups if k[4] is not None))
    schedules = list(dict.fromkeys(k[3] for k in groups if k[4] is not None))
    dense = _dense(records)
    fig, axes = _grid(plt, len(panels))
    for ax, (pruner, target) in zip(axes, panels):
        for schedule in schedules:
            pts = sorted((k[4], *_top1(v)) for k, v in groups.items()
                         if (k[1], k[2], k[3]) == (pruner, target, schedule) and k[4] is not None)
            if not pts:
                continue
            i = schedules.index(schedule)
            xs, ms, ss = zip(*pts)
            ax.plot(xs, ms, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", label=schedule)
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)],
                            color=f"C{i % 10}", alpha=0.15)
        for k, v in groups.items():
            if k[4] is None and k[2] == target:
                ax.axhline(_top1(v)[0], color="gray", linestyle=":", label=f"{k[3]} ({k[1]}, total budget)")
        if dense is not None:
            ax.axhline(dense, color="k", linestyle="--", linewidth=1, label="dense")
        ax.set(xlabel="retraining budget T_rt (epochs)", ylabel="top-1 (%)", title=f"{pruner}, target {target}")
        ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def plot_accuracy_vs_sparsity(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Top-1 against achieved sparsity, one line per schedule, one panel per pruner (at the largest budget)."""
    plt = pyplot()
    groups = group_runs([r for r in records if r["kind"] != "dense"])
    budgets = [k[4] for k in groups if k[4] is not None]
    top = max(budgets, default=None)
    here = {k: v for k, v in groups.items() if k[4] in (top, None)}
    pruners = list(dict.fromkeys(k[1] for k in here))
    schedules = list(dict.fromkeys(k[3] for k in here))
    fig, axes = _grid(plt, len(pruners))
    for ax, pruner in zip(axes, pruners):
        for i, schedule in enumerate(schedules):
            pts = sorted((mean_std([r["sparsity"] for r in v])[0], *_top1(v)) for k, v in here.items()
                         if (k[1], k[3]) == (pruner, schedule))
            if pts:
                xs, ms, ss = zip(*pts)
                ax.errorbar(xs, ms, yerr=ss, capsize=3, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}",
                            label=schedule)
        ax.set(xlabel="sparsity", ylabel="top-1 (%)",
               title=f"{pruner}" + (f" (T_rt = {top} epochs)" if top is not None else ""))
        ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def plot_random_vs_methodical(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Bars per target and kind (unstructured, structured), largest budget: each methodical pruner retrained with
    FT beside the random pruner of the same kind retrained with each restarting schedule. False (nothing drawn)
    when the study lacks either side."""
    groups = group_runs([r for r in records if r["kind"] == "retrain"])
    top = max((k[4] for k in groups), default=None)
    panels = []
    for target, structured in dict.fromkeys((k[2], _properties(k[1])[1]) for k in groups):
        here = {k: v for k, v in groups.items()
                if k[2] == target and k[4] == top and _properties(k[1])[1] == structured}
        methodical = [(f"{k[1]} + FT", v) for k, v in here.items() if k[3] == "FT" and not _properties(k[1])[0]]
        random = [(f"{k[1]} + {k[3]}", v) for k, v in here.items()
                  if _restarts(k[3]) and _properties(k[1])[0]]
        if methodical and random:
            panels.append((target, methodical, random))
    if not panels:
        return False
    plt = pyplot()
    fig, axes = _grid(plt, len(panels), width=max(5.5, 0.6 * max(len(m) + len(r) for _, m, r in panels)))
    dense = _dense(records)
    for ax, (target, methodical, random) in zip(axes, panels):
        bars = methodical + random
        stats = [_top1(v) for _, v in bars]
        colors = ["C3"] * len(methodical) + ["C0"] * len(random)
        ax.bar(range(len(bars)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, color=colors)
        ax.set_xticks(range(len(bars)), [name for name, _ in bars], rotation=35, ha="right", fontsize=8)
        highs = [m + s for m, s in stats]
        if dense is not None:
            ax.axhline(dense, color="k", linestyle="--", linewidth=1, label="dense")
            highs.append(dense)
            ax.legend(fontsize=7)
        _zoom(ax, [m - s for m, s in stats], highs)
        ax.set_title(f"random + restarting (blue) vs methodical + FT (red), target {target}", fontsize=9)
    _save(plt, fig, path)
    return True


def plot_speedup(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Measured against theoretical speedup (a marker per batch size, a colour per pruner, y = x dashed), and top-1
    against the measured speedup at the largest batch. False (nothing drawn) without measurements."""
    runs = [r for r in records if r["kind"] != "dense" and measured_speedups(r)]
    if not runs:
        return False
    plt = pyplot()
    batches = sorted({b for r in runs for b in measured_speedups(r)})
    pruners = list(dict.fromkeys(map(pruner_label, runs)))
    fig, (ax, acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, pruner in enumerate(pruners):
        mine = [r for r in runs if pruner_label(r) == pruner]
        for j, b in enumerate(batches):
            pts = [(r["speedup"], measured_speedups(r)[b]) for r in mine if b in measured_speedups(r)]
            ax.scatter(*zip(*pts), color=f"C{i % 10}", marker=MARKERS[j % len(MARKERS)], s=22,
                       label=f"{pruner}, batch {b}")
        acc.scatter([measured_speedups(r).get(batches[-1], float("nan")) for r in mine], [100 * r["top1"] for r in mine],
                    color=f"C{i % 10}", s=22, label=pruner)
    top = max(max(r["speedup"] for r in runs), max(v for r in runs for v in measured_speedups(r).values()))
    ax.plot([1, top], [1, top], "k--", linewidth=1, label="measured = theoretical")
    ax.set(xlabel="theoretical speedup (dense / effective FLOPs)", ylabel="measured CPU speedup",
           title="measured against theoretical speedup", xscale="log", yscale="log")
    acc.axvline(1.0, color="gray", linestyle=":", linewidth=1)
    acc.set(xlabel=f"measured CPU speedup at batch {batches[-1]}", ylabel="top-1 (%)", title="accuracy and speed")
    ax.legend(fontsize=7, ncol=2)
    acc.legend(fontsize=7)
    _save(plt, fig, path)
    return True


def latencies(record: dict[str, Any], dense: bool = False) -> dict[int, float]:
    """Batch size -> the measured latency (ms) of a run's deployed model (``dense``: of the dense one beside it)."""
    prefix = "latency_dense_b" if dense else "latency_b"
    return {int(k[len(prefix):-3]): v for k, v in record.items()
            if k.startswith(prefix) and k.endswith("_ms") and k[len(prefix):-3].isdigit()}


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats in both (lower latency and higher top-1), by latency."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:
            out.append((x, y))
    return out


def plot_front(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Top-1 (mean ± std over seeds) against the measured latency of the deployed model (mean, ms) for every
    (pruner, pattern, target, schedule, budget): a colour per pruner and pattern, a marker per schedule, the target
    written beside each point, a panel per batch size; the dense model (its latency measured beside each run) as a
    black star; the front (no other point both faster and more accurate) dashed. False without measurements."""
    runs = [r for r in records if r["kind"] != "dense" and latencies(r)]
    if not runs:
        return False
    plt = pyplot()
    batches = sorted({b for r in runs for b in latencies(r)})
    groups = group_runs(runs)
    labels = list(dict.fromkeys(k[1] for k in groups))
    schedules = list(dict.fromkeys(k[3] for k in groups))
    dense_top1 = _dense(records)
    fig, axes = _grid(plt, len(batches), width=6.5, height=4.8, cols=2)
    for ax, b in zip(axes, batches):
        points, shown = [], set()
        for (_, label, target, schedule, _), mine in groups.items():
            mine = [r for r in mine if b in latencies(r)]
            if not mine:
                continue
            x = mean_std([latencies(r)[b] for r in mine])[0]
            m, s = _top1(mine)
            i, j = labels.index(label), schedules.index(schedule)
            ax.errorbar([x], [m], yerr=[s], color=f"C{i % 10}", marker=MARKERS[j % len(MARKERS)], capsize=2,
                        markersize=5, linestyle="none", label=None if (i, j) in shown else f"{label}, {schedule}")
            ax.annotate(target, (x, m), textcoords="offset points", xytext=(4, 3), fontsize=6, color=f"C{i % 10}")
            shown.add((i, j))
            points.append((x, m))
        dense_ms = [latencies(r, dense=True)[b] for r in runs if b in latencies(r, dense=True)]
        if dense_ms and dense_top1 is not None:
            x = mean_std(dense_ms)[0]
            ax.scatter([x], [dense_top1], color="k", marker="*", s=90, zorder=3, label="dense")
            points.append((x, dense_top1))
        ax.plot(*zip(*_front(points)), "k--", linewidth=1, alpha=0.6, label="front")
        ax.set(xlabel=f"measured CPU latency at batch {b} (ms, deployed model)", ylabel="top-1 (%)",
               title=f"accuracy against measured latency, batch {b}")
        ax.legend(fontsize=6, ncol=2)
    _save(plt, fig, path)
    return True


def write_plots(out: Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    """Every figure that the records can fill, into ``out``; returns their paths."""
    paths = [out / "lr_schedules.png", out / "accuracy.png"]
    plot_lr_schedules(records, paths[0])
    plot_accuracy(records, paths[1])
    runs = [r for r in records if r["kind"] != "dense"]
    if len({r.get("retrain_epochs") for r in runs} - {None}) > 1:
        paths.append(out / "accuracy_vs_budget.png")
        plot_accuracy_vs_budget(records, paths[-1])
    if len({str(r["sparsity_target"]) for r in runs}) > 1:
        paths.append(out / "accuracy_vs_sparsity.png")
        plot_accuracy_vs_sparsity(records, paths[-1])
    for name, plot in (("random_vs_methodical.png", plot_random_vs_methodical), ("speedup.png", plot_speedup),
                       ("front.png", plot_front)):
        if plot(records, out / name):
            paths.append(out / name)
    return paths
