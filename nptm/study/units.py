"""Units of a study: each one training or pruning job with explicit inputs (other units) and an id that hashes
everything that determines it, so any process that sees the shared output folder can run it, and running a
finished unit again does nothing. Strategies (``nptm.study.strategies``) plan the units of each pruner."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar


@dataclass(frozen=True)
class Target:
    """A pruning target: ``label`` names it in runs ("0.9", a PFEC preset's "A", an N:M pattern "2:4"), ``value``
    is the records' ``sparsity_target`` (the float, or the name), ``fixed`` a one-shot amount given in another form
    than a sparsity: a preset resolved to (layer, ratio) pairs, or the N:M pattern. ``pattern``: what a masking
    pruner removes together (``nptm.pruning.patterns``: "1x1", "4x1", the N:M pattern; None for channel pruners)."""

    label: str
    value: float | str
    fixed: tuple[tuple[str, float], ...] | str | None = None
    pattern: str | None = None

    @property
    def amount(self) -> float | dict[str, float] | str:
        """What one-shot pruning to this target prunes: the sparsity, a preset's layer ratios, or the pattern."""
        if self.fixed is None:
            return float(self.value)
        return dict(self.fixed) if isinstance(self.fixed, tuple) else self.fixed

    def amounts(self, iterations: int) -> list[float | dict[str, float] | str]:
        """Each IMP cycle's amount (a fixed amount is one-shot)."""
        from nptm.pruning import iterative_amounts

        return [self.amount] if self.fixed is not None else iterative_amounts(float(self.value), iterations)


@dataclass(frozen=True)
class Unit:
    """``run``: the run's name (the record's ``run``, and the root of its phases' names, which seed them);
    ``study``: a digest of the config fields that shape every unit's results (``StudyConfig.unit_digest``)."""

    run: str
    seed: int
    study: str

    kind: ClassVar[str]  # what the folder name ends with, e.g. "retrain"

    def inputs(self) -> tuple["Unit", ...]:
        """The units whose outputs this one reads."""
        return tuple(v for f in dataclasses.fields(self) if isinstance(v := getattr(self, f.name), Unit))

    def identity(self) -> dict[str, Any]:
        """Everything that determines this unit's results, inputs by their ids."""
        def plain(v):
            if isinstance(v, Unit):
                return v.id
            return dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        fields = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"unit": type(self).__name__, **fields}

    @cached_property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.run.replace('/', '__')}.{self.kind}.{digest}"

    def execute(self, ctx) -> dict[str, Any]:
        """Run the unit with ``ctx``, the process's ``nptm.study.context.StudyContext``; returns its result (``{"record": ...}`` for units that finish a run; what later units
        read otherwise), which the executor stores as the unit's ``result.json``."""
        raise NotImplementedError
