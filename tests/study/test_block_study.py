"""--pattern through the study CLI at digits size: every masking pruner (one-shot IMP, GMP) prunes whole 4x1 blocks
beside single weights, pruned blocks stay pruned over IMP cycles, and the pattern is a column of the table, the
records and the report, with the accuracy/latency front figure."""
import json

import pytest
import torch

from nptm.pruning.patterns import Blocks
from nptm.study.cli import main

BLOCKS = Blocks("4x1", 4)


def _whole(mask: torch.Tensor) -> bool:
    rows = mask.reshape(mask.shape[0] // 4, 4, -1)  # digits_net's convs have 16, 32, 64 output channels
    return bool((rows.all(1) | ~rows.any(1)).all())


def _counts(masks: dict) -> tuple[int, int]:
    return BLOCKS.count(list(masks.values()), [1] * len(masks))


def test_block_pattern_study(tmp_path):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--pruner", "magnitude,gmp", "--pattern", "1x1,4x1", "--schedules", "FT",
                 "--iterations", "2", "--epochs", "2", "--retrain-epochs", "1", "--seeds", "0,",
                 "--latency-batches", "1", "--quiet"]) == 0
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert {r: rec["pattern"] for r, rec in records.items()} == {
        "s0/dense": "-", "s0/magnitude-0.9/FT": "1x1", "s0/magnitude-0.9-4x1/FT": "4x1", "s0/gmp-0.9/GMP": "1x1",
        "s0/gmp-0.9-4x1/GMP": "4x1"}
    units = out / "units"
    first = torch.load(next(units.glob("s0__magnitude-0.9-4x1.prune.*/pruned.pt")), weights_only=True)["masks"]
    final = torch.load(next(units.glob("s0__magnitude-0.9-4x1__FT.retrain.*/c2.pt")), weights_only=True)["final_masks"]
    gmp = torch.load(next(units.glob("s0__gmp-0.9-4x1__GMP.gmp.*/checkpoint.pt")), weights_only=True)["final_masks"]
    single = torch.load(next(units.glob("s0__magnitude-0.9.prune.*/pruned.pt")), weights_only=True)["masks"]
    for masks in (first, final, gmp):
        assert all(_whole(m) for m in masks.values())
    assert not all(_whole(m) for m in single.values())  # single weights: blocks broken up
    assert all(not (final[n] & ~first[n]).any() for n in first)  # IMP's second cycle keeps the first's prunes
    step = 1 - 0.1 ** 0.5  # each of the 2 cycles prunes this fraction of the alive blocks
    total, alive = _counts(first)
    assert total - alive == round(step * total)
    assert _counts(final)[1] == alive - round(step * alive)
    total, alive = _counts(gmp)
    assert total - alive == round(0.9 * total)
    table = (out / "table.txt").read_text().splitlines()
    assert table[0].split()[:3] == ["pruner", "target", "pattern"]
    assert any(line.split()[:3] == ["magnitude", "0.9", "4x1"] for line in table)
    assert (out / "front.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| pruner, target | pattern |" in report and "| magnitude, 0.9 | 4x1 |" in report
    assert "magnitude 4x1, T_rt 1" in report  # the schedule table's row


@pytest.mark.parametrize("argv, message", [
    (["--pattern", "1x4"], "--pattern: unknown sparsity pattern '1x4'"),
    (["--pattern", "2:4"], "--pruner nm --nm-pattern 2:4"),
    (["--pattern", "4x1,4x1"], "--pattern lists a value twice"),
    (["--pruner", "l1_filters", "--pattern", "4x1"], "--pattern applies to pruners that mask weights"),
])
def test_bad_patterns_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()
