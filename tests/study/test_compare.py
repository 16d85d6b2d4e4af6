"""The README's method comparison at digits size (CI): criteria under every schedule at two budgets, BIMP
and GMP at the same total budget, the report; GMP and budgets survive a kill."""
import json
import re

import pytest

from nptm.report.__main__ import main as report_main
from nptm.study.cli import main
from nptm.train.checkpoint import load_checkpoint
from study_files import phase_checkpoint  # noqa: I001  (tests/study is on sys.path)
from test_study import Kill, _metrics  # noqa: I001

SCHEDULES = ["FT", "LRW", "SLR", "CLR", "LLR", "ALLR"]
PRUNERS = ["magnitude", "lamp", "l1_filters", "taylor", "random"]
COMPARE = ["--pruner", ",".join(PRUNERS + ["gmp"]), "--retrain-epochs", "1,2", "--bimp", "--epochs", "3", "--seeds", "0,",
           "--batch-size", "128", "--calibration-batches", "2", "--quiet"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    assert main(["--out", str(out), *COMPARE]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_every_pruner_schedule_and_budget(comparison):
    out, records = comparison
    runs = {r["run"]: r for r in records}
    expected = ["s0/dense"] + [f"s0/{p}-0.9/{s}-rt{b}" for p in PRUNERS for b in (1, 2) for s in SCHEDULES] \
        + [f"s0/{p}-0.9/bimp-rt{b}" for p in ("magnitude", "lamp", "random") for b in (1, 2)] + ["s0/gmp-0.9/GMP"]
    assert sorted(runs) == sorted(expected)
    for p in PRUNERS:  # every schedule and budget retrains the same pruned weights
        retrained = [r for r in records if r["pruner"] == p and r["kind"] == "retrain"]
        assert len({r["pruned_top1"] for r in retrained}) == 1 and len({r["d1"] for r in retrained}) == 1
        for r in retrained:
            assert r["epochs"] == r["retrain_epochs"] == len(r["history"]) and r["d2"] == r["retrain_epochs"] / 3
            assert phase_checkpoint(out, f"s0__{p}-0.9__{r['schedule']}-rt{r['retrain_epochs']}__c1.pt").is_file()
    dense = runs["s0/dense"]
    for p in ("l1_filters", "taylor"):
        assert runs[f"s0/{p}-0.9/FT-rt1"]["params_total"] < dense["params_total"]
    for b in (1, 2):
        bimp = runs[f"s0/lamp-0.9/bimp-rt{b}"]
        assert (bimp["epochs"], bimp["bimp_initial_epochs"], bimp["retrain_epochs"]) == (3, 3 - b, b)
    gmp = runs["s0/gmp-0.9/GMP"]
    n = runs["s0/magnitude-0.9/FT-rt1"]
    assert gmp["epochs"] == 3 == len(gmp["history"]) and gmp["sparsity"] == n["sparsity"]  # round(0.9 N) pruned
    state = load_checkpoint(phase_checkpoint(out, "s0__gmp-0.9__GMP.pt"))
    assert all(int(state["model"][k][~m].count_nonzero()) == 0 for k, m in state["final_masks"].items())


def _md_tables(text):
    """Markdown tables -> list of (columns, rows of cells)."""
    tables, rows = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if rows is None:
                rows, columns = [], cells
            elif not set(line) <= set("|-"):
                rows.append(cells)
        elif rows is not None:
            tables.append((columns, rows))
            rows = None
    return tables


def test_report_tables_figures_and_best_marks(comparison, tmp_path):
    out, records = comparison
    for name in ["report.html", "report.md", "accuracy.png", "lr_schedules.png", "accuracy_vs_budget.png",
                 "random_vs_methodical.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    (columns, rows), (speed_columns, speed_rows), (model_columns, model_rows) = _md_tables(md)
    assert model_columns == ["run", "top-1 %", "model file", "deploy with"]
    assert len(model_rows) == sum(r["kind"] != "dense" for r in records)
    assert speed_columns == ["pruner, target", "pattern", "theoretical", "batch 1", "batch 64", "engine"]
    assert len(speed_rows) == len(PRUNERS) + 1  # and GMP
    assert columns[1:] == SCHEDULES + ["BIMP", "GMP"] and len(rows) == 2 * len(PRUNERS) + 1
    for j, col in enumerate(columns[1:], 1):
        values = [(float(re.sub(r"[*]", "", r[j]).split(" ± ")[0]), r[j].startswith("**")) for r in rows if r[j] != "-"]
        if len(values) > 1:
            top = max(v for v, _ in values)
            assert [bold for _, bold in values] == [v == top for v, _ in values], col
    by_run = {r["run"]: r for r in records}
    cell = next(r for r in rows if r[0] == "taylor, T_rt 2")[columns.index("CLR")]
    assert cell.strip("*") == f"{100 * by_run['s0/taylor-0.9/CLR-rt2']['top1']:.2f}"  # one seed: no ±
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 4 and "data:image/png;base64," in html and "calibration_batches" in html
    # an interrupted study and a second folder with the same study merge into one report
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((out / "config.json").read_text())
    (part / "results.json").write_text(json.dumps(records[:3]))
    assert report_main([str(part), "--out", str(tmp_path / "r1")]) == 0
    text = (tmp_path / "r1" / "report.md").read_text()
    assert "3 run(s) recorded, INTERRUPTED" in text and len(_md_tables(text)[0][1]) == 1
    assert report_main([str(out), str(part), "--out", str(tmp_path / "r2")]) == 0
    assert f"{len(records)} run(s) recorded" in (tmp_path / "r2" / "report.md").read_text()


def test_report_bad_input(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_gmp_sfp_and_budgets_resume_to_the_same_results(tmp_path):
    argv = ["--pruner", "gmp,magnitude,sfp", "--retrain-epochs", "1,2", "--schedules", "FT", "--epochs", "3",
            "--seeds", "0,", "--batch-size", "128", "--quiet"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["--out", str(whole), *argv]) == 0
    assert main(["--out", str(cut), *argv], callbacks=[Kill(5)]) == 130  # inside GMP, after its first prune
    assert main(["--out", str(cut), "--resume"], callbacks=[Kill(2)]) == 130  # GMP done, inside the rt1 retraining
    assert main(["--out", str(cut), "--resume"]) == 0
    assert _metrics(cut) == _metrics(whole)
    runs = {r["run"]: r for r in _metrics(whole)}
    for b in (1, 2):  # SFP: T - T_rt epochs of soft pruning, the zero filters removed, T_rt epochs of CLR
        sfp = runs[f"s0/sfp-0.9/SFP-rt{b}"]
        assert (sfp["schedule"], sfp["epochs"], sfp["sfp_initial_epochs"], len(sfp["history"])) == ("SFP+CLR", 3, 3 - b, b)
        assert sfp["params_total"] < runs["s0/dense"]["params_total"]
