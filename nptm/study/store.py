"""A study's units on disk: ``OUT/units/<run>.<hash>/`` per unit, claimed by one process at a time.

Inside a unit's folder: ``unit.json`` (what it is), ``claim`` while a process works on it, its phases'
checkpoints, its outputs, and ``result.json``, written last and atomically: a unit is done when that exists.

Claims are files created with O_CREAT|O_EXCL, which exactly one process wins on local file systems, NFSv3 and
later, Lustre, GPFS and BeeGFS (not on object-store mounts such as s3fs or gcsfuse, which a shared --out must not
be). The owner touches its claim every ``HEARTBEAT_S`` seconds; a claim is stale, and is taken over by renaming it
away (which again only one process wins), when its owner ran on this host and is gone (kill -9), or when it has
not been touched for ``lease_s`` seconds (a dead process on another host; clocks must agree within that).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nptm.utils.files import atomic_write_json, remove_temps
from nptm.utils.processes import process_start, running

HEARTBEAT_S = 20.0
RETRY_S = 1.0  # a failed heartbeat is retried this soon
LEASE_S = float(os.environ.get("NPTM_CLAIM_LEASE_S", 180))
RESULT, CLAIM, UNIT, PLAN_FILE = "result.json", "claim", "unit.json", "plan.json"


def _alive(owner: dict[str, Any]) -> bool:
    """Whether a claim's owner on this host still runs (same pid, same start time)."""
    try:
        return running(int(owner.get("pid", -1)), owner.get("start"))
    except (TypeError, ValueError):
        return False


class Claim:
    """A held claim: a heartbeat thread touches the file until ``release()``."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        """Touch the claim every ``HEARTBEAT_S`` seconds until released; a failed touch (a file server's hiccup,
        another process renaming the claim for a moment in ``_take_over``) is retried each second, never given up."""
        wait = HEARTBEAT_S
        while not self._stop.wait(wait):
            try:
                os.utime(self.path)
                wait = HEARTBEAT_S
            except OSError:
                wait = min(HEARTBEAT_S, RETRY_S)

    def release(self) -> None:
        self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass


@dataclass
class UnitStore:
    """Unit folders under ``out/units``; ``who`` describes this process in its claims (e.g. its shard)."""

    out: Path
    who: str = ""
    lease_s: float = LEASE_S

    def __post_init__(self):
        self._done: set[str] = set()

    def folder(self, unit_id: str) -> Path:
        return self.out / "units" / unit_id

    def done(self, unit_id: str) -> bool:
        if unit_id not in self._done and (self.folder(unit_id) / RESULT).is_file():
            self._done.add(unit_id)
        return unit_id in self._done

    def result(self, unit_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder(unit_id) / RESULT).read_text())
        except FileNotFoundError:
            return None

    def finish(self, unit_id: str, result: dict[str, Any]) -> None:
        atomic_write_json(self.folder(unit_id) / RESULT, result)
        self._done.add(unit_id)

    def describe(self, unit_id: str, description: dict[str, Any]) -> None:
        path = self.folder(unit_id) / UNIT
        if not path.is_file():
            atomic_write_json(path, description)

    def owner(self, unit_id: str) -> dict[str, Any] | None:
        """Who holds the claim on a unit (host, pid, who, token, age_s), or None when nobody does."""
        path = self.folder(unit_id) / CLAIM
        try:
            age = time.time() - path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return {**json.loads(text), "age_s": age}
        except ValueError:  # being written (or left half-written by a crash)
            return {"age_s": age, "unreadable": True}

    def stale(self, owner: dict[str, Any]) -> bool:
        if owner.get("unreadable"):
            return owner["age_s"] > 10.0
        if owner.get("host") == socket.gethostname() and not _alive(owner):
            return True
        return owner["age_s"] > self.lease_s

    def _take_over(self, path: Path, owner: dict[str, Any], token: str) -> None:
        """Move a stale claim away; a fresh claim that replaced it since we looked goes back."""
        grave = path.with_name(f".stale-claim.{token}")
        try:
            os.rename(path, grave)  # of several processes, one succeeds
        except FileNotFoundError:
            return
        try:
            moved = json.loads(grave.read_text())
        except ValueError:
            moved = {}
        try:
            if moved.get("token") != owner.get("token"):
                try:
                    os.link(grave, path)
                except FileExistsError:
                    pass
        finally:
            grave.unlink(missing_ok=True)

    def claim(self, unit_id: str) -> Claim | None:
        """Claim a unit that is not done; None when another live process holds it (or it is done)."""
        folder = self.folder(unit_id)
        folder.mkdir(parents=True, exist_ok=True)
        path, token = folder / CLAIM, uuid.uuid4().hex
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = self.owner(unit_id)
                if owner is not None and not self.stale(owner):
                    return None
                if owner is not None:
                    self._take_over(path, owner, token)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
                           "who": self.who, "token": token, "since": time.time()}, f)
            if self.done(unit_id):  # finished by another process between our look and our claim
                Claim(path, token).release()
                return None
            remove_temps(folder, orphans_only=False)  # a write of an earlier owner, cut short (it is gone)
            return Claim(path, token)
        return None
