"""Imports flow one way: utils -> ops -> {pruning, models, schedules, data} -> train -> study (-> the command-line
tools export and report; a study writes ONNX files through nptm.export's library, which imports no study). Every import in every module counts, also those inside functions; ``__main__`` modules
are entry points (``python -m nptm.train`` runs the study) and may import anything."""
import ast
from pathlib import Path

import pytest

NPTM = Path(__file__).resolve().parents[2] / "nptm"
ALLOWED = {  # package -> the nptm packages it may import (besides itself)
    "utils": set(),
    "ops": {"utils"},
    "pruning": {"ops", "utils"},
    "models": {"ops", "utils"},
    "schedules": {"ops", "utils"},
    "data": {"ops", "utils"},
    "sparse": {"ops", "pruning", "utils"},
    "train": {"ops", "schedules", "utils"},
    "study": {"ops", "pruning", "models", "schedules", "data", "sparse", "train", "export", "utils"},
    "export": {"ops", "pruning", "models", "sparse", "utils"},
    "report": {"study"},
    "": {"pruning", "sparse"},  # nptm/__init__.py: lazy shortcuts
}


def _imports(path: Path) -> set[str]:
    """The nptm packages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "nptm" and len(parts) > 1 and not parts[1].startswith("_"):
                found.add(parts[1])
            elif parts[0] == "nptm" and isinstance(node, ast.ImportFrom):
                found |= {a.name for a in node.names if (NPTM / a.name).is_dir()}
    return found


MODULES = sorted(p for p in NPTM.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(NPTM)))
def test_imports_flow_one_way(path):
    rel = path.relative_to(NPTM)
    package = rel.parts[0] if len(rel.parts) > 1 else ""
    assert package in ALLOWED, f"{rel}: a new top-level package: say where it sits in ALLOWED"
    wrong = {q for q in _imports(path) if q != package and q not in ALLOWED[package]}
    assert not wrong, f"{rel} ({package or 'nptm'}) imports {sorted(wrong)} against the direction of the layers"
