"""--submit: the study as job arrays through submitit, on its local executor and on a real one-node Slurm
(munge and slurmctld/slurmd started here on private ports and paths, stopped after); --shard auto in Slurm's
array forms, and a sbatch array of shards with one task killed and requeued."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nptm.study.cli import main
from nptm.study.records import is_timing

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--pruner", "magnitude,random", "--schedules", "FT,ALLR", "--seeds", "0,", "--epochs", "2",
         "--retrain-epochs", "1", "--quiet"]


def _runs(out):
    return {r["run"]: {k: v for k, v in r.items() if not is_timing(k) and k != "config"}
            for r in json.loads((out / "results.json").read_text())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["--out", str(out), *SMALL]) == 0
    return _runs(out)


def test_submit_local_runs_the_study_through_submitit(reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--submit", "local", "--array-size", "2", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "submitted first array of 1 task(s)" in printed and "submitted rest array of 2 task(s)" in printed
    assert _runs(out) == reference
    assert (out / "report.html").is_file() and "ALLR" in (out / "table.txt").read_text()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm (SPEC's recipe) with its own munge socket, ports, state and config."""
    d = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=nptmtest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={d / 'munge.socket'}", "CredType=cred/munge", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}", f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={d / 'munge.socket'}",
                    f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munged.seed'}"],
                   check=True)
    try:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout:
            assert time.monotonic() < deadline, (d / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield env
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = d / f"{name}.pid"
            if pid.is_file():
                subprocess.run(["kill", pid.read_text().strip()])


def test_submit_slurm_submits_arrays_with_dependencies_and_returns(reference, slurm, tmp_path):
    out = tmp_path / "out"
    env = {**slurm, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nptm.train", "--out", str(out), "--submit", "slurm",
                           "--slurm", "timeout_min=30,cpus_per_task=1", "--array-size", "2", *SMALL],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, rest = (line.split(" job ")[1].split()[0] for line in proc.stdout.splitlines() if "submitted" in line)
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=slurm).stdout.strip()  # returned early
    script = next((out / "jobs").glob(f"{rest}*submission.sh")).read_text()
    assert f"--dependency=afterok:{first}" in script  # the retraining array waits for the dense models
    deadline = start + 600
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=slurm).stdout.strip():
        assert time.monotonic() < deadline, "the Slurm jobs did not finish in 10 minutes"
        time.sleep(1)
    logs = "\n".join(p.read_text()[-500:] for p in (out / "jobs").glob("*.err"))
    assert (out / "results.json").is_file() and _runs(out) == reference, logs


def _wait_for_empty_queue(env, seconds, what):
    deadline = time.monotonic() + seconds
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
        assert time.monotonic() < deadline, f"{what} did not finish in {seconds} s"
        time.sleep(0.5)


def test_shard_auto_in_stepped_and_listed_arrays(slurm, tmp_path):
    """Each array form's tasks, as Slurm sets their variables: every task of a range or a stepped range gets its
    own position, 0..N-1; a list (Slurm's step is 1 whatever its ids) is refused with one line."""
    from nptm.study.execute import Shard
    from nptm.utils.errors import UserError

    forms = {"stepped": ("0-6:2", [0, 2, 4, 6]), "range": ("3-5", [3, 4, 5]), "listed": ("1,5,9", [1, 5, 9])}
    for name, (spec, _) in forms.items():
        (tmp_path / name).mkdir()
        subprocess.run(["sbatch", "-Q", f"--array={spec}", "-o", "/dev/null", "--chdir", str(tmp_path / name),
                        "--wrap", "env > env.$SLURM_ARRAY_TASK_ID"], check=True, env=slurm)
    _wait_for_empty_queue(slurm, 120, "the arrays")
    for name, (spec, expected) in forms.items():
        envs = {int(p.suffix[1:]): dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)
                for p in (tmp_path / name).glob("env.*")}
        ids = sorted(envs)
        assert ids == expected, name
        if name == "listed":
            for i in ids:
                with pytest.raises(UserError, match="not a range"):
                    Shard.parse("auto", envs[i])
            continue
        shards = [Shard.parse("auto", envs[i]) for i in ids]
        assert [(s.index, s.count) for s in shards] == [(i, len(ids)) for i in range(len(ids))], (name, ids)


def _claim(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # released meanwhile, or being written
        return None


def _running(owner):
    return os.path.exists(f"/proc/{owner['pid']}")


def test_four_shard_array_with_a_task_killed_and_requeued(reference, slurm, tmp_path):
    """Done when: a 4-task array (stepped ids, ``--shard auto``) on the real Slurm, one task killed mid-unit and
    requeued by ``scontrol requeue``, ends with the one-process study's results, complete and identical."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    env = {**slurm, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = f"echo start; exec {sys.executable} -m nptm.train --out {out} --shard auto {' '.join(SMALL)}"
    subprocess.run(["sbatch", "-Q", "--array=0-6:2", "--cpus-per-task=1", "--open-mode=append", "-o",
                    str(logs / "%a.log"), "--chdir", str(ROOT), "--wrap", command], check=True, env=env)
    deadline = time.monotonic() + 120
    while not (owners := [o for p in out.glob("units/*/claim") if (o := _claim(p)) and _running(o)]):
        assert time.monotonic() < deadline, "no task claimed a unit"  # wait for a task inside a unit
        time.sleep(0.1)
    job = owners[0]["who"].split("slurm job ")[1]  # its claim names its Slurm job
    subprocess.run(["scontrol", "requeue", job], check=True, env=slurm)  # kills it, then pending with a begin time
    while subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm,  # not in 2 minutes
                         capture_output=True).returncode:
        assert time.monotonic() < deadline + 60, "the requeued task did not become pending"
        time.sleep(0.5)
    _wait_for_empty_queue(slurm, 300, "the array")
    starts = {p.stem: p.read_text().count("start") for p in logs.glob("*.log")}
    assert sorted(starts) == ["0", "2", "4", "6"] and sorted(starts.values()) == [1, 1, 1, 2], starts  # one rerun
    errors = "\n".join(p.read_text()[-800:] for p in logs.glob("*.log"))
    assert _runs(out) == reference, errors
    assert "not finished" not in (out / "table.txt").read_text() and (out / "report.html").is_file()
