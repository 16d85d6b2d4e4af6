"""Running a study's units: in plan order in one process, by several local processes (``--jobs``), or as one
shard of many (``--shard I/N``, e.g. the tasks of a Slurm array), all sharing the output folder.

A process takes the first unit whose inputs are done and that no live process holds (``UnitStore.claim``),
preferring its own share when it is a shard (every N-th unit of the plan, from the I-th), and waits while the
units it still needs are being made elsewhere. A shard stops once its share is done and nothing else is ready;
every process then merges what is finished into results.json, the table and the report.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nptm.study.records import fill_dense_top1, summary_table, write_results
from nptm.study.store import PLAN_FILE, UnitStore
from nptm.study.units import Unit
from nptm.train import distributed
from nptm.utils.errors import UserError
from nptm.utils.files import atomic_write, atomic_write_json


class StudyIncomplete(RuntimeError):
    """A process waited longer than --wait-timeout for units that others were making (exit status 4)."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str, env: dict[str, str] | None = None) -> "Shard":
        """``I/N`` (0 <= I < N), or ``auto``: Slurm's array task (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT,
        counted from SLURM_ARRAY_TASK_MIN) or a Kubernetes indexed Job (JOB_COMPLETION_INDEX of NPTM_SHARDS)."""
        env = os.environ if env is None else env
        if text == "auto":
            if "SLURM_ARRAY_TASK_ID" in env:
                first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
                count = env.get("SLURM_ARRAY_TASK_COUNT") or str(int(env["SLURM_ARRAY_TASK_MAX"]) - first + 1)
                text = f"{int(env['SLURM_ARRAY_TASK_ID']) - first}/{count}"
            elif "JOB_COMPLETION_INDEX" in env:
                if "NPTM_SHARDS" not in env:
                    raise UserError("--shard auto: JOB_COMPLETION_INDEX is set but NPTM_SHARDS (the Job's completions) "
                                    "is not; set it in the Job's environment")
                text = f"{env['JOB_COMPLETION_INDEX']}/{env['NPTM_SHARDS']}"
            else:
                raise UserError("--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm array task) nor "
                                "JOB_COMPLETION_INDEX (a Kubernetes indexed Job) is set; give --shard I/N")
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise UserError(f"--shard: expected I/N or auto, got {text!r}") from None
        if not 0 <= index < count:
            raise UserError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def describe_plan(plan: Sequence[Unit]) -> list[dict[str, Any]]:
    """plan.json: every unit's id, run, kind and inputs, in plan order."""
    return [{"id": u.id, "run": u.run, "kind": u.kind, "inputs": [i.id for i in u.inputs()]} for u in plan]


class Executor:
    """Runs units of ``plan`` in this process (and, under torchrun, with its peers: rank 0 decides)."""

    def __init__(self, ctx, plan: Sequence[Unit], shard: Shard | None = None, wait_timeout: float = 86400.0,
                 poll_s: float = 2.0):
        self.ctx, self.plan, self.shard = ctx, list(plan), shard
        self.position = {u.id: i for i, u in enumerate(self.plan)}
        self.wait_timeout, self.poll_s = wait_timeout, poll_s
        self.executed: list[str] = []

    def mine(self, unit: Unit) -> bool:
        return self.shard is None or self.position[unit.id] % self.shard.count == self.shard.index

    def run(self) -> None:
        store, since = self.ctx.store, None
        while True:
            action, unit_id = distributed.from_rank0(self._decide)
            if action == "stop":
                return
            if action == "run":
                self._execute(next(u for u in self.plan if u.id == unit_id))
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since > self.wait_timeout:
                raise StudyIncomplete(self._waiting_message(time.monotonic() - since))
            time.sleep(min(self.poll_s, 0.05 + 0.5 * (time.monotonic() - since)))

    def _decide(self) -> tuple[str, str | None]:
        """(run, id) with the unit claimed, (wait, None), or (stop, None)."""
        store = self.ctx.store
        pending = [u for u in self.plan if not store.done(u.id)]
        if not pending:
            return "stop", None
        ready = [u for u in pending if all(store.done(i.id) for i in u.inputs())]
        for unit in sorted(ready, key=lambda u: (not self.mine(u), self.position[u.id])):
            claim = store.claim(unit.id)
            if claim is not None:
                self._claim = claim
                return "run", unit.id
        if self.shard is not None and not any(self.mine(u) for u in pending):
            return "stop", None
        return "wait", None

    def _execute(self, unit: Unit) -> None:
        ctx, claim = self.ctx, getattr(self, "_claim", None)
        try:
            if ctx.rank == 0:
                ctx.store.describe(unit.id, {"id": unit.id, "run": unit.run, "kind": unit.kind,
                                             "position": self.position[unit.id], "identity": unit.identity()})
            start = time.perf_counter()
            result = unit.execute(ctx)
            if ctx.rank == 0:
                ctx.store.finish(unit.id, {"position": self.position[unit.id], "wall_s": time.perf_counter() - start,
                                           **result})
                if result.get("record") is not None:  # results.json follows the study as it runs
                    write_results(ctx.out, collect(ctx.out, self.plan, ctx.store)[0])
            self.executed.append(unit.id)
        finally:
            if claim is not None:
                claim.release()
                self._claim = None

    def _waiting_message(self, waited: float) -> str:
        store = self.ctx.store
        needed = [u for u in self.plan if not store.done(u.id) and self.mine(u)]
        blockers = {i.id: i for u in needed for i in u.inputs() if not store.done(i.id)} or {u.id: u for u in needed}
        unit = next(iter(blockers.values()))
        owner = store.owner(unit.id)
        held = (f"claimed by {owner.get('who') or 'a process'} on {owner.get('host')} (pid {owner.get('pid')}), "
                f"touched {owner['age_s']:.0f} s ago") if owner else "not claimed by anyone"
        return (f"{'shard ' + str(self.shard) if self.shard else 'this process'} waited {waited:.0f} s for "
                f"{len(blockers)} unit(s) that others are making, e.g. {unit.run} ({unit.kind}), {held}; run the "
                f"shards that make them, then this one again (finished units are kept)")


def collect(out: Path, plan: Sequence[Unit], store: UnitStore) -> tuple[list[dict[str, Any]], list[Unit]]:
    """The records of the finished units in plan order (each run's dense_top1 filled in), and the missing units."""
    records, missing = [], []
    for unit in plan:
        result = store.result(unit.id) if store.done(unit.id) else None
        if result is None:
            missing.append(unit)
        elif result.get("record") is not None:
            records.append(result["record"])
    return fill_dense_top1(records), missing


def write_outputs(out: Path, records: list[dict[str, Any]], missing: Sequence[Unit], report: bool = True) -> str:
    """results.json/.csv, table.txt, and (``report``) figures and report.html/.md; returns the table."""
    from nptm.study.report import build_report

    table = summary_table(records)
    if missing:
        table += f"\n({len(missing)} unit(s) not finished yet, e.g. {missing[0].run} ({missing[0].kind}))"
    unchanged = (out / "results.json").is_file() and json.loads((out / "results.json").read_text()) == \
        json.loads(json.dumps(records)) and (out / "report.html").is_file() and not missing
    if not unchanged:
        write_results(out, records)
        atomic_write(out / "table.txt", lambda f: f.write((table + "\n").encode()))
        if report:
            build_report([out], out)  # figures beside results.json, report.html, report.md
    return table


def write_plan(out: Path, plan: Sequence[Unit]) -> None:
    atomic_write_json(out / PLAN_FILE, describe_plan(plan))
