"""The final outputs only move forward. Four shards (threads here: the lock is per open file, as between processes)
finish the units of a real study in a random order and each then writes the outputs; the first to finish is slow
between collecting the finished units and writing (the window in which a stale writer overwrites fresher files).
Whatever the order, results.json, the table and the report hold every run."""
import json
import random
import shutil
import threading
import time

import pytest

import nptm.study.outputs as outputs
from nptm.study.cli import main
from nptm.study.config import StudyConfig
from nptm.study.plan import plan_study
from nptm.study.store import UnitStore

STUDY = ["--pruner", "magnitude,random", "--schedules", "FT,LRW", "--seeds", "0,", "--epochs", "1",
         "--retrain-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    assert main(["--out", str(out), *STUDY]) == 0
    return out


def _runs(out):
    try:
        return {r["run"] for r in json.loads((out / "results.json").read_text())}
    except (OSError, ValueError):
        return set()


def test_shards_finishing_in_random_order_leave_every_run(finished, tmp_path, monkeypatch):
    rng = random.Random()
    out = tmp_path / "out"
    (out / "units").mkdir(parents=True)
    for name in ("config.json", "plan.json"):
        shutil.copy(finished / name, out / name)
    plan = plan_study(StudyConfig.from_dict(json.loads((out / "config.json").read_text())))
    units = [u.id for u in plan]
    rng.shuffle(units)
    shares = [units[i::4] for i in range(4)]
    collect, slow_done = outputs.collect, threading.Event()

    def slow_collect(*args, **kwargs):  # the first shard to finish pauses after collecting, once: until another
        found = collect(*args, **kwargs)  # shard has written every run (which a lock prevents), at most 3 s
        if threading.current_thread().name == "shard-0" and not slow_done.is_set():
            slow_done.set()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and len(_runs(out)) < len(plan) - 2:
                time.sleep(0.02)
        return found

    monkeypatch.setattr(outputs, "collect", slow_collect)
    errors = []

    def shard(i):
        try:
            if i:
                slow_done.wait(10)  # the others finish while shard 0 is between collecting and writing
            for unit in shares[i]:
                time.sleep(rng.uniform(0, 0.05))
                shutil.copytree(finished / "units" / unit, out / "units" / unit)
            outputs.publish(out, plan, UnitStore(out, who=f"shard {i}"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=shard, args=(i,), name=f"shard-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    runs = _runs(finished)
    assert len(runs) == len(plan) - 2 == 5 and _runs(out) == runs  # every run (the 2 pruning units have none)
    assert "not finished" not in (out / "table.txt").read_text()
    assert set(json.loads((out / outputs.MADE_FROM).read_text())) == {u.id for u in plan}
    assert all(r in (out / "report.md").read_text() for r in ("FT", "LRW"))
