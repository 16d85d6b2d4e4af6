"""--submit: the study as job arrays through submitit, on its local executor and on a real one-node Slurm
(munge and slurmctld/slurmd started here on private ports and paths, stopped after)."""
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
