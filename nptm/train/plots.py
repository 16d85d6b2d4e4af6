"""PNG plots of a study (matplotlib, Agg backend): lr schedules, accuracy per schedule, accuracy vs sparsity."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nptm.train.results import _mean_std, group_runs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lr_schedules(records: Sequence[dict[str, Any]], path: Path) -> None:
    """The lr per iteration (x in epochs) of every schedule used, for the first seed/pruner/target."""
    plt = _pyplot()
    first = next((r for r in records if r["kind"] != "dense"), None)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        same = first is None or (r["seed"], r["pruner"], r["sparsity_target"]) == (first["seed"], first["pruner"], first["sparsity_target"])
        if r["kind"] == "dense" and r["seed"] == records[0]["seed"] or r["kind"] != "dense" and same and r["lr_trace"]["lr"]:
            t = r["lr_trace"]
            ax.plot([i / r["iters_per_epoch"] for i in t["iteration"]], t["lr"], label=r["schedule"],
                    linestyle="--" if r["kind"] == "dense" else "-")
    ax.set(xlabel="epoch of the phase", ylabel="learning rate", title="learning-rate schedules")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_accuracy(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Grouped bars: top-1 per schedule (x) and pruner (bars), mean ± std over seeds; one panel per target."""
    plt = _pyplot()
    groups = group_runs([r for r in records if r["kind"] != "dense"])
    targets = list(dict.fromkeys(k[2] for k in groups))
    pruners = list(dict.fromkeys(k[1] for k in groups))
    dense = [r["top1"] for r in records if r["kind"] == "dense"]
    fig, axes = plt.subplots(1, max(len(targets), 1), figsize=(7 * max(len(targets), 1), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        schedules = list(dict.fromkeys(k[3] for k in groups if k[2] == target))
        width = 0.8 / len(pruners)
        for j, pruner in enumerate(pruners):
            stats = [_mean_std([100 * r["top1"] for r in runs]) if (runs := next((v for k, v in groups.items() if k[1:] == (pruner, target, s)), None)) else (0.0, 0.0)
                     for s in schedules]
            xs = [i + (j - (len(pruners) - 1) / 2) * width for i in range(len(schedules))]
            ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=pruner)
        if dense:
            ax.axhline(100 * _mean_std(dense)[0], color="k", linestyle="--", linewidth=1, label="dense")
        ax.set_xticks(range(len(schedules)), schedules)
        ax.set(ylabel="top-1 (%)", title=f"target sparsity {target}")
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_accuracy_vs_sparsity(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Top-1 against achieved sparsity, one line per (pruner, schedule)."""
    plt = _pyplot()
    lines: dict[tuple, list] = {}
    for (kind, pruner, target, schedule), runs in group_runs([r for r in records if r["kind"] != "dense"]).items():
        m, s = _mean_std([100 * r["top1"] for r in runs])
        lines.setdefault((pruner, schedule), []).append((_mean_std([r["sparsity"] for r in runs])[0], m, s))
    fig, ax = plt.subplots(figsize=(7, 4))
    schedules = list(dict.fromkeys(k[1] for k in lines))
    pruners = list(dict.fromkeys(k[0] for k in lines))
    styles, markers = ["-", "--", ":", "-."], "osD^v"
    for (pruner, schedule), pts in lines.items():  # colour: schedule; line and marker: pruner
        pts.sort()
        i = pruners.index(pruner)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=3,
                    color=f"C{schedules.index(schedule) % 10}", linestyle=styles[i % 4], marker=markers[i % 5],
                    label=f"{pruner} {schedule}")
    ax.set(xlabel="sparsity", ylabel="top-1 (%)", title="accuracy vs sparsity")
    ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def write_plots(out: Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    paths = [out / "lr_schedules.png", out / "accuracy.png"]
    plot_lr_schedules(records, paths[0])
    plot_accuracy(records, paths[1])
    if len({str(r["sparsity_target"]) for r in records if r["kind"] != "dense"}) > 1:
        paths.append(out / "accuracy_vs_sparsity.png")
        plot_accuracy_vs_sparsity(records, paths[-1])
    return paths


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
