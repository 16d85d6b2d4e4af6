"""A study's final outputs: results.json/.csv, table.txt and the report, merged from every finished unit.

Many processes write them (each shard, task or process of a study when it ends, and every process after each run it
finishes). They only move forward: a writer takes a lock on ``OUT/.outputs.lock`` and collects the finished units
under it, so whichever writes last writes everything every process had finished by then. ``.outputs.json`` names
the units the last complete write (with the report) was made from: a writer with nothing new writes nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from nptm.study.records import fill_dense_top1, summary_table, write_results
from nptm.study.store import UnitStore
from nptm.study.units import Unit
from nptm.utils.files import atomic_write, atomic_write_json

LOCK, MADE_FROM = ".outputs.lock", ".outputs.json"


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


@contextlib.contextmanager
def locked(out: Path, wait: bool = True) -> Iterator[bool]:
    """Hold ``OUT/.outputs.lock`` (flock: one holder across processes, and hosts on NFS); yields whether it is held:
    False when ``wait`` is off and another process holds it. A file system without locks yields True unlocked."""
    with open(out / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks there; publish still writes only what grew
            pass
        yield True


def _made_from(out: Path) -> set[str]:
    try:
        return set(json.loads((out / MADE_FROM).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def prepare_report() -> None:
    """Import what the report is drawn with (matplotlib): ``--jobs``' parent does it while the workers' server starts,
    rather than after the last unit."""
    from nptm.study.plots import pyplot
    from nptm.study.report import build_report  # noqa: F401

    pyplot()


def publish(out: Path, plan: Sequence[Unit], store: UnitStore, report: bool = True) -> str | None:
    """Write the outputs from every unit finished now (``report``: also table.txt, figures and report.html/.md;
    without it results.json/.csv, skipped when another process is writing); returns the table (None if skipped)."""
    with locked(out, wait=report) as held:
        if not held:
            return None
        records, missing = collect(out, plan, store)
        table = summary_table(records)
        if missing:
            table += f"\n({len(missing)} unit(s) not finished yet, e.g. {missing[0].run} ({missing[0].kind}))"
        done = {u.id for u in plan} - {u.id for u in missing}
        before = _made_from(out)  # under the lock a subset of ``done``; without locks it may not be: never go back
        if not (done > before or done == before and not (out / "report.html").is_file()):
            return table
        write_results(out, records)
        if report:
            from nptm.study.report import build_report

            atomic_write(out / "table.txt", lambda f: f.write((table + "\n").encode()))
            build_report([out], out)  # figures beside results.json, report.html, report.md
            atomic_write_json(out / MADE_FROM, sorted(done))
    return table
