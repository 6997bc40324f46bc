"""The package's module-level imports form no cycle (issue #12: decouple, finetune and detection
import the shared loop pieces from ``longtail.runtime``, not from the classification trainer)."""

import ast
from pathlib import Path

import longtail

PACKAGE = Path(longtail.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The longtail modules ``path`` imports at module level (imports inside functions run
    later, when every module is loaded, so they cannot form an import-time cycle)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from longtail import losses` names a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: top_level_imports(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "longtail.runtime" in graph["longtail.finetune"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_loops_other_than_training_do_not_import_the_trainer():
    graph = import_graph()
    speed = [name for name in graph if name.startswith("longtail.speed")]
    assert "longtail.speed.training" in speed  # a package: each of its modules is checked
    for name in ("longtail.finetune", "longtail.models", "longtail.detection.train", *speed):
        assert "longtail.train" not in graph[name], name
