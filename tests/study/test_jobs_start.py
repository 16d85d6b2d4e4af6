"""How ``--jobs`` starts: the workers' server before the parent imports torch, told the study's dataset, preloading what
a first unit imports lazily; the command ends through ``exits.end`` (at-exit handlers, flushed output, its status)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nptm.study import jobs

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_jobs_module_imports_no_torch():
    proc = _python("import sys, nptm.study.jobs; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("argv, env, started", [
    (["--jobs", "2"], {}, [None]),
    (["--out", "x", "--jobs=3", "--dataset", "cifar10"], {}, ["cifar10"]),
    (["--jobs", "2", "--dataset=digits", "--resume"], {}, [None]),
    (["--jobs", "1"], {}, []),
    (["--pruner", "random"], {}, []),
    (["--jobs", "two"], {}, []),
    (["--jobs", "2", "--submit", "slurm"], {}, []),
    (["--jobs", "2"], {"WORLD_SIZE": "2"}, []),
])
def test_the_server_starts_early_only_for_local_jobs(argv, env, started, monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "start_workers_server", calls.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    jobs.start_early(argv)
    assert calls == started


def test_the_server_preloads_the_datasets_imports():
    code = ("import sys, nptm.study.preload; "
            "print(all(m in sys.modules for m in ('torch._dynamo', 'sklearn.model_selection', 'nptm.sparse')))")
    proc = _python(code, NPTM_JOBS_DATASET="digits")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    proc = _python("import sys, nptm.study.preload; print('sklearn' in sys.modules)", NPTM_JOBS_DATASET="cifar10")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_end_runs_the_exit_handlers_and_flushes():
    proc = _python("import atexit; from nptm.study.exits import end; atexit.register(print, 'handler'); "
                   "print('out', end=''); end(5)")
    assert proc.returncode == 5
    assert proc.stdout == "outhandler\n"
