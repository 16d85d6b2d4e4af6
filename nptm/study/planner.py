"""What strategies plan a study's units with: the config, the digest in every unit's id, run names, and each
seed's dense unit (``nptm.study.plan`` fills it in)."""
from __future__ import annotations

import hashlib
import json

from nptm.pruning import Pruner
from nptm.study.config import StudyConfig
from nptm.study.units import Target, Unit

# fields that decide which units a study has, not what any unit computes; the options of pruning-stable methods
# are part of the units that use them
SET_FIELDS = {"pruning": ("pruner", "sparsity", "pattern", "filter_config", "bimp"), "schedule": ("schedules",),
              "training": ("seeds", "retrain_epochs", "scratch")}

# fields added after studies were run, with the default that computes what those studies computed
LATER_FIELDS = {("pruning", "spare_classifier"): False, ("pruning", "max_layer_sparsity"): None}


def unit_digest(cfg: StudyConfig) -> str:
    """A digest of the config fields that shape the units' results (part of every unit's id)."""
    d = cfg.study_dict()
    d.pop("methods", None)
    for section, names in SET_FIELDS.items():
        for name in names:
            d[section].pop(name, None)
    for (section, name), default in LATER_FIELDS.items():  # at their default: the ids of studies made before them
        if d[section].get(name, default) == default:
            d[section].pop(name, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class Planner:
    """What strategies plan with: the config, its unit digest, run names and each seed's dense unit."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.digest = cfg, unit_digest(cfg)
        self.budgets = tuple(cfg.training.retrain_epochs)
        self.dense: dict[int, Unit] = {}  # seed -> its DenseTraining unit

    def run_name(self, seed: int, pruner: Pruner, target: Target, name: str, budget: int | None = None) -> str:
        """A run's name: ``s<seed>/<pruner>-<target>/<name>``, with ``-rt<budget>`` when the study has several."""
        several = budget is not None and len(self.budgets) > 1
        return f"s{seed}/{pruner.name}-{target.label}/{name}" + (f"-rt{budget}" if several else "")
