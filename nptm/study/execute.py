"""Running a study's units: in plan order in one process, by several local processes (``--jobs``), or as one
shard of many (``--shard I/N``, e.g. the tasks of a Slurm array), all sharing the output folder.

A process takes the first unit whose inputs are done and that no live process holds (``UnitStore.claim``),
preferring its own share when it is a shard (every N-th unit of the plan, from the I-th), and waits while the
units it still needs are being made elsewhere. A shard stops once its share is done and nothing else is ready;
every process then merges what is finished into results.json, the table and the report.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nptm.study.outputs import publish
from nptm.study.store import PLAN_FILE, UnitStore
from nptm.study.units import Unit
from nptm.train import distributed
from nptm.utils.errors import UserError
from nptm.utils.files import atomic_write_json


class StudyIncomplete(RuntimeError):
    """A process waited longer than --wait-timeout for units that others were making (exit status 4)."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str, env: dict[str, str] | None = None) -> "Shard":
        """``I/N`` (0 <= I < N), or ``auto``: a Slurm array task (``slurm_shard``) or a Kubernetes indexed Job
        (JOB_COMPLETION_INDEX of NPTM_SHARDS)."""
        env = os.environ if env is None else env
        if text == "auto":
            if "SLURM_ARRAY_TASK_ID" in env:
                return slurm_shard(env)
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


def slurm_shard(env: dict[str, str]) -> Shard:
    """This Slurm array task's shard: its position in the array, of SLURM_ARRAY_TASK_COUNT. Slurm sets the ids'
    SLURM_ARRAY_TASK_MIN, _MAX and _STEP for a range (``--array=0-9``) or a stepped one (``--array=0-6:2``); for a
    list (``--array=1,5,9``) _STEP is 1 whatever the ids, which does not tell a task its position: refused."""
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        first, step = int(env.get("SLURM_ARRAY_TASK_MIN", 0)), int(env.get("SLURM_ARRAY_TASK_STEP", 1))
        last = int(env.get("SLURM_ARRAY_TASK_MAX", task))
        count = int(env["SLURM_ARRAY_TASK_COUNT"]) if env.get("SLURM_ARRAY_TASK_COUNT") else (last - first) // step + 1
    except (KeyError, ValueError) as e:
        raise UserError(f"--shard auto: unreadable Slurm array variables ({e}); give --shard I/N") from None
    if step < 1 or (task - first) % step or last - first != step * (count - 1) or not first <= task <= last:
        raise UserError(f"--shard auto: Slurm array task {task} is one of {count} with ids {first} to {last}, not a "
                        f"range (a list such as --array=1,5,9?), so it cannot tell its position; submit a range "
                        f"(--array=0-{count - 1}, or stepped as 0-{2 * (count - 1)}:2), or give each task "
                        f"--shard I/{count}")
    return Shard((task - first) // step, count)


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
                    publish(ctx.out, self.plan, ctx.store, report=False)
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


def write_plan(out: Path, plan: Sequence[Unit]) -> None:
    atomic_write_json(out / PLAN_FILE, describe_plan(plan))
