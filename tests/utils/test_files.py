"""Atomic writes: a write cut short leaves a temp file naming its writer; the next run removes it once the writer
is gone, and never one a live writer still fills."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nptm.study.store import UnitStore
from nptm.utils.files import TEMP_MAX_AGE_S, atomic_write, remove_temps

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys, time
from nptm.utils.files import atomic_write
def write(f):
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def _writer(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == "writing\n"
    return proc


def test_a_killed_writers_temp_is_removed_a_live_ones_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    live, dead = _writer(tmp_path / "a.json"), _writer(tmp_path / "sub" / "b.json")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        [live_tmp] = list(tmp_path.glob(".a.json.*.tmp"))
        [dead_tmp] = list(tmp_path.glob("sub/.b.json.*.tmp"))
        assert f".w{dead.pid}-" in dead_tmp.name
        remove_temps(tmp_path)
        assert live_tmp.exists() and not dead_tmp.exists()
        old = time.time() - TEMP_MAX_AGE_S - 1  # a writer elsewhere that left it long ago
        os.utime(live_tmp, (old, old))
        remove_temps(tmp_path)
        assert not live_tmp.exists()
    finally:
        live.kill()
        live.wait()
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "sub" / "b.json").exists()


def test_a_temp_of_another_host_is_kept_until_old_and_everything_goes_when_asked(tmp_path):
    other = tmp_path / ".x.json.w1-123@elsewhere.abc_9.tmp"
    unnamed = tmp_path / ".y.json.abc.tmp"  # an older release's name: only its age tells
    for p in (other, unnamed):
        p.write_bytes(b"x")
    remove_temps(tmp_path)
    assert other.exists() and unnamed.exists()
    remove_temps(tmp_path, orphans_only=False)
    assert not other.exists() and not unnamed.exists()


def test_a_write_that_fails_leaves_nothing(tmp_path):
    def fail(f):
        f.write(b"x")
        raise OSError("disk full")

    try:
        atomic_write(tmp_path / "a", fail)
    except OSError:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert list(tmp_path.iterdir()) == []


def test_claiming_a_unit_removes_its_earlier_owners_temps(tmp_path):
    store = UnitStore(tmp_path)
    folder = store.folder("u")
    folder.mkdir(parents=True)
    tmp = folder / ".checkpoint.pt.w1-123@elsewhere.abc.tmp"  # an owner on another host, taken over
    tmp.write_bytes(b"x")
    claim = store.claim("u")
    assert claim is not None and not tmp.exists()
    claim.release()
