"""Where a study's files are, for the tests: each training phase's checkpoint under the flat name it is known by."""
import json
from pathlib import Path

OUTPUTS = ("model", "pruned")  # units' outputs, not training phases


def phase_checkpoints(out: Path) -> dict[str, Path]:
    """``<phase key with / as __>.pt`` -> its checkpoint (``units/<unit>/checkpoint.pt`` is the unit's run itself,
    ``units/<unit>/<phase>.pt`` the phase ``<run>/<phase>``)."""
    found = {}
    for unit in sorted((Path(out) / "units").iterdir()):
        if not (unit / "unit.json").is_file():
            continue
        run = json.loads((unit / "unit.json").read_text())["run"]
        for path in unit.glob("*.pt"):
            if path.stem not in OUTPUTS:
                key = run if path.stem == "checkpoint" else f"{run}/{path.stem}"
                found[key.replace("/", "__") + ".pt"] = path
    return found


def phase_checkpoint(out: Path, name: str) -> Path:
    return phase_checkpoints(out)[name]


def unfinish(checkpoint: Path) -> Path:
    """Make the unit that holds ``checkpoint`` unfinished (as if killed before it wrote its result)."""
    (checkpoint.parent / "result.json").unlink()
    return checkpoint
