"""``--submit slurm|local``: a study as job arrays through submitit (an optional dependency).

``--slurm KEY=VALUE,...`` passes submitit's parameters (``timeout_min`` defaults to a day; ``slurm_partition``,
``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_account``, ...).

The first array has one task per unit that needs no other (each seed's dense model, and BIMP, GMP and SFP runs,
which start from an init), the second one ``--array-size`` tasks for everything else; each task is a shard
(``nptm.study.execute``) of its array's units. On Slurm the second array depends on the first
(``afterok``) and ``--submit`` returns after submitting; ``local`` runs the same arrays on this machine through
submitit's local executor and waits for them. Every task merges what has finished when it ends, so the last one
leaves the complete results.json, table and report in --out; ``python -m nptm.report --out`` shows progress.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nptm.study.config import StudyConfig
from nptm.study.execute import StudyIncomplete
from nptm.study.exits import Process, exit_status, interruptible
from nptm.study.folder import create
from nptm.study.outputs import publish
from nptm.study.part import run_part
from nptm.study.plan import plan_study
from nptm.train.distributed import resolve_device
from nptm.utils.errors import ConfigError

STAGES = ("first", "rest")  # units without inputs; the others


def _stage(plan, stage: str):
    return [u for u in plan if bool(u.inputs()) == (stage == "rest")]


def run_shard(config: dict[str, Any], out: str, shard: str, stage: str) -> int:
    """One array task: shard ``shard`` of the ``stage`` units of the study (what submitit runs)."""
    cfg = StudyConfig.from_dict(config).updated({"shard": shard})
    plan = plan_study(cfg)

    def body():
        store = run_part(cfg, Path(out), _stage(plan, stage), resolve_device(cfg.training.device))
        publish(Path(out), plan, store)

    with interruptible():
        status = exit_status(body, Process(out=Path(out)))
    if status:
        raise SystemExit(status)
    return status


def _parameters(items) -> dict[str, Any]:
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        params[key.strip()] = value
    return params


def _wait(job) -> None:
    """A local task's end; its failure as one line naming its log (the task printed why there)."""
    try:
        job.result()
    except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the whole log
        raise StudyIncomplete(f"--submit local: task {job.job_id} failed ({type(e).__name__}); its log: "
                              f"{job.paths.stderr}") from None


def submit(cfg: StudyConfig, out: Path) -> list:
    """Submit the study's arrays (and, for ``local``, wait for them and print the table); returns the jobs."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--submit needs submitit (pip install submitit)") from None
    e = cfg.execution
    plan = plan_study(cfg)
    create(cfg, out, plan)
    executor = submitit.AutoExecutor(folder=out / "jobs", cluster="local" if e.submit == "local" else "slurm")
    executor.update_parameters(name=f"nptm-{out.name}", **{"timeout_min": 24 * 60, **_parameters(e.slurm)})
    config = cfg.updated({"submit": None, "array_size": None, "slurm": ()}).to_dict()
    jobs = []
    for stage in STAGES:
        units = _stage(plan, stage)
        if not units:
            continue
        size = len(units) if stage == "first" else min(len(units), e.array_size or (os.cpu_count() or 1)
                                                       if e.submit == "local" else e.array_size or 64)
        if e.submit == "slurm" and jobs:
            executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{jobs[-1][0].job_id.split('_')[0]}"})
        batch = executor.map_array(run_shard, [config] * size, [str(out)] * size, [f"{i}/{size}" for i in range(size)],
                                   [stage] * size)
        print(f"submitted {stage} array of {size} task(s): job {batch[0].job_id.split('_')[0]} "
              f"({len(units)} unit(s))", flush=True)
        if e.submit == "local":
            for job in batch:
                _wait(job)
        jobs.append(batch)
    if e.submit == "local":
        print((out / "table.txt").read_text(), end="")
    else:
        print(f"follow it with: squeue --me; python -m nptm.report {out} (logs: {out / 'jobs'})")
    return jobs
