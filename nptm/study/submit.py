"""``--submit slurm|local``: the study as job arrays through submitit (placeholder)."""
from __future__ import annotations


def submit(cfg, out) -> None:
    raise NotImplementedError
