"""The README's and docs' examples are real: shell blocks parse, every `nptm.train` command line in them parses
with the study's own parser, and the Kubernetes manifest is valid YAML that runs a shard per index."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from nptm.study.config import parse_args

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    return [(p.name, m.group(2)) for p in DOCS for m in BLOCK.finditer(p.read_text()) if m.group(1) == lang]


def study_argvs(script: str) -> list[list[str]]:
    """The arguments after ``-m nptm.train`` of each command in a shell block (``...`` placeholders dropped)."""
    argvs = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "nptm.train":
                argvs.append([w for w in words[i + 2:] if w != "..." and w not in ("&&", "|")])
    return argvs


def test_docs_have_examples():
    assert len(blocks("bash")) >= 10 and len(blocks("yaml")) >= 1
    assert sum(len(study_argvs(s)) for _, s in blocks("bash")) >= 15


@pytest.mark.parametrize("name,script", blocks("bash"), ids=lambda v: v if v.endswith(".md") else "")
def test_shell_examples_parse(name, script):
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}: {proc.stderr}"
    for argv in study_argvs(script):
        parse_args(argv)  # raises ConfigError on an unknown flag or a bad value


def test_kubernetes_manifest_runs_one_shard_per_index():
    jobs = [doc for _, text in blocks("yaml") for doc in yaml.safe_load_all(text) if doc and doc.get("kind") == "Job"]
    assert jobs
    for job in jobs:
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        container = spec["template"]["spec"]["containers"][0]
        command, env = container["command"], {e["name"]: e["value"] for e in container["env"]}
        assert command[:3] == ["python", "-m", "nptm.train"] and int(env["NPTM_SHARDS"]) == spec["completions"]
        cfg, _ = parse_args(command[3:])
        assert cfg.execution.shard == "auto"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert any(cfg.output.out.startswith(m) for m in mounts), "--out must be on a mounted volume"
