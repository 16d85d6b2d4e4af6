"""nptm.data's imports flow one way: no cycle among its modules, nothing from models/pruning/schedules/train."""
import ast
from pathlib import Path

import nptm.data

DATA = Path(nptm.data.__file__).parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("nptm.")}


def _module(path: Path) -> str:
    parts = path.relative_to(DATA.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_and_no_upward_import():
    files = {_module(p): p for p in DATA.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in files and i != m and not m.startswith(i + ".")}
             for m, p in files.items() if not m.endswith("__main__")}
    for m, p in files.items():
        bad = {i for i in _imports(p) if i.split(".")[1] in ("models", "pruning", "schedules", "train")}
        assert not bad, f"{m} imports {bad}"
    graph = {m: {i for i in deps if i != "nptm.data"} for m, deps in graph.items() if m != "nptm.data"}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            assert state.get(d) != 1, " -> ".join([*stack, m, d])
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
