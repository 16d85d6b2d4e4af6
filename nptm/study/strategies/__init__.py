"""How a study runs each pruning algorithm: a registered ``Strategy`` per ``Pruner.algorithm`` plans the units of
a pruner at one target and checks the config it needs. One file per strategy in this package, discovered."""
from __future__ import annotations

from typing import TYPE_CHECKING

from nptm.utils.registry import Registry

if TYPE_CHECKING:
    from nptm.pruning import Pruner
    from nptm.study.config import StudyConfig
    from nptm.study.planner import Planner
    from nptm.study.units import Target, Unit


class Strategy:
    """Plans the units that prune with ``pruner`` to ``target`` for one seed (after the seed's dense unit)."""

    def units(self, plan: "Planner", seed: int, pruner: "Pruner", target: "Target") -> list["Unit"]:
        raise NotImplementedError

    def targets(self, cfg: "StudyConfig", pruner: "Pruner") -> list["Target"] | None:
        """The targets this way of pruning has of its own (None: each --sparsity, or the --filter-config preset)."""
        return None

    def supports_bimp(self, pruner: "Pruner") -> bool:
        """Whether ``--bimp`` adds BIMP runs of this pruner."""
        return False

    def check(self, cfg: "StudyConfig", pruner: "Pruner") -> str | None:
        """Why ``cfg`` cannot run ``pruner`` this way, or None."""
        return None


STRATEGIES: Registry[Strategy] = Registry("pruning strategy", package="nptm.study.strategies")
