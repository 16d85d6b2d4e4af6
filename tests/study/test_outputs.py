"""The final outputs only move forward: shards that finish in a random order, each pausing a random time between
collecting the finished units and writing (where a stale writer would overwrite a fresher one), leave a
results.json, table and report that hold every run of the study."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDY = ["--pruner", "magnitude,random", "--schedules", "FT,LRW", "--seeds", "0,", "--epochs", "1",
         "--retrain-epochs", "1", "--quiet"]
SLOW_COLLECT = """
import random, sys, time
import nptm.study.outputs as outputs
collect = outputs.collect
def slow(*args, **kwargs):
    found = collect(*args, **kwargs)
    time.sleep(random.uniform(0, 1.5))
    return found
outputs.collect = slow
from nptm.study.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_shards_finishing_in_random_order_leave_every_run(tmp_path):
    out, n = tmp_path / "out", 3
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    shards = [subprocess.Popen([sys.executable, "-c", SLOW_COLLECT, "--out", str(out), "--shard", f"{i}/{n}", *STUDY],
                               env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for i in range(n)]
    for shard in shards:
        _, err = shard.communicate(timeout=300)
        assert shard.returncode == 0, err[-2000:]
    runs = {u["run"] for u in json.loads((out / "plan.json").read_text()) if u["kind"] != "prune"}
    assert len(runs) == 5 and {r["run"] for r in json.loads((out / "results.json").read_text())} == runs
    assert "not finished" not in (out / "table.txt").read_text()
    units = {u["id"] for u in json.loads((out / "plan.json").read_text())}
    assert set(json.loads((out / ".outputs.json").read_text())) == units  # the report was made from every unit
