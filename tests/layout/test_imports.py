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


def _module_imports(path: Path, package: str) -> set[str]:
    """The modules of ``nptm.<package>`` that a module imports (dotted names), at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(f"nptm.{package}.") and _module_path(n) is not None}
    return found


def _module_path(name: str) -> Path | None:
    path = NPTM.parent / name.replace(".", "/")
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def _cycles(package: str) -> list[list[str]]:
    """The import circles between the modules of ``nptm.<package>`` (a package's ``__init__`` is a module too)."""
    modules = {".".join(p.relative_to(NPTM.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (NPTM / package).rglob("*.py") if p.name != "__main__.py"}
    graph = {m: {n for n in _module_imports(p, package) if n in modules and n != m} for m, p in modules.items()}
    circles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                circles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "closed"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return circles


@pytest.mark.parametrize("package", sorted(p.name for p in NPTM.iterdir() if (p / "__init__.py").is_file()))
def test_no_import_circles_inside_a_package(package):
    """The package reads top-down: no module imports, even lazily, one that imports it back."""
    circles = _cycles(package)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
