"""The 2023 paper's Table 2 at digits size: BIMP, GMP and every pruning-stable method within the same budget T, at
each target sparsity exactly, reported in Table 2's layout; their options are flags."""
import json
import re

import pytest

from nptm.models import build_model
from nptm.pruning import prunable_weights
from nptm.pruning.sparse_training import SPARSE_TRAINING
from nptm.study.cli import main
from nptm.study.config import build_parser

METHODS = list(SPARSE_TRAINING.names())
TARGETS = (0.9, 0.95)


@pytest.fixture(scope="module")
def table2(tmp_path_factory):
    out = tmp_path_factory.mktemp("table2") / "out"
    assert main(["--out", str(out), "--pruner", ",".join(["gmp", *METHODS]), "--bimp", "--sparsity", "0.9,0.95",
                 "--seeds", "0,", "--epochs", "2", "--retrain-epochs", "1", "--batch-size", "128", "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_every_method_ends_at_its_target_exactly_and_records_what_it_reached(table2):
    _, records = table2
    n = sum(w.numel() for w in prunable_weights(build_model("digits_net", 10, 1)).values())
    runs = {(r["pruner"], r["sparsity_target"], r["kind"]): r for r in records}
    for target in TARGETS:
        for key in [*((m, target, "sparse-training") for m in METHODS), ("gmp", target, "gmp"),
                    ("magnitude", target, "bimp")]:
            r = runs[key]
            assert r["sparsity"] == 1 - (n - round(target * n)) / n, key  # round(s * N) weights pruned
            assert r["epochs"] == 2 and r["images_per_s"] > 0, key
        for m in METHODS:
            r = runs[m, target, "sparse-training"]
            assert r["final_sparsity"] == r["sparsity"] and len(r["history"]) == 2
            assert 0 <= r["reached_sparsity"] <= r["sparsity"] and 0 <= r["projection_change"] <= 1
            if m in ("dpf", "dnw"):  # measured on w * m: the masks of the forward pass are the target's
                assert r["reached_sparsity"] == r["sparsity"] and r["projection_change"] == 0
            assert r["method_options"] == {f.name: _plain(f.default) for f in SPARSE_TRAINING[m].options()}


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def test_report_has_table_2(table2):
    out, _ = table2
    md = (out / "report.md").read_text()
    section = md.split("Table 2)")[1].split("\n\n")[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["method", *[f"{t}: {q}" for t in TARGETS for q in ("top-1 %", "speedup", "reached")], "images/s"]
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[2:])}
    assert set(rows) == {"BIMP (magnitude)", "GMP", *[m.upper() for m in METHODS]}
    for column in (1, 4):  # the best top-1 of each target is bold, and only it
        values = {k: float(re.sub(r"[*]", "", r[column]).split(" ± ")[0]) for k, r in rows.items()}
        best = max(values.values())
        assert {k for k, r in rows.items() if r[column].startswith("**")} == {k for k, v in values.items() if v == best}


def test_method_options_are_flags():
    text = " ".join(build_parser().format_help().split())
    for name, method in SPARSE_TRAINING.items():
        for f in method.options():
            assert f"--{name}-{f.name.replace('_', '-')}" in text


def test_methods_sparsify_within_a_short_budget(tmp_path):
    """At their defaults, 4 digits epochs: STR reaches about the target on its own, GSM and LC leave the
    projection almost nothing to remove, and none loses more than a few points to it."""
    out = tmp_path / "out"
    assert main(["--out", str(out), "--pruner", "str,gsm,lc", "--sparsity", "0.9", "--seeds", "0,", "--epochs", "4",
                 "--retrain-epochs", "1", "--quiet"]) == 0
    runs = {r["pruner"]: r for r in json.loads((out / "results.json").read_text()) if r["kind"] == "sparse-training"}
    assert abs(runs["str"]["reached_sparsity"] - 0.9) < 0.03
    for m in ("gsm", "lc"):
        assert runs[m]["projection_change"] < 0.05  # trained densely it is far more
    for r in runs.values():
        assert r["top1"] > r["top1_before_projection"] - 0.03 and r["top1"] > 0.8
