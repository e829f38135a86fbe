"""The package's layering: no import cycle, and the trainer never pulls in an algorithm."""

import ast
import subprocess
import sys
from pathlib import Path

import stableprompt

PACKAGE = Path(stableprompt.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Package modules `path` imports when it is imported (not inside functions or TYPE_CHECKING),
    with the parent packages each import initialises (other than the importer's own)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import mod`
    found = {m for m in found if m in modules}
    own = set(ancestors(name))
    return {a for m in found for a in [*ancestors(m), m] if a in modules and a not in own} - {name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: module_level_imports(p, name, set(paths)) for name, p in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "stableprompt.trainer" in graph and "stableprompt.algorithms.base" in graph
    assert graph["stableprompt.algorithms"] >= {"stableprompt.algorithms.sql"}  # edges are seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_importing_the_trainer_loads_no_algorithm():
    code = (
        "import sys, stableprompt.trainer; "
        "print([m for m in sys.modules if m.startswith(('stableprompt.algorithms', "
        "'stableprompt.agents'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Lower layers never import upper ones, not even inside a function.
FORBIDDEN = {
    "stableprompt.tasks": ("models", "contexts", "agents", "algorithms", "trainer"),
    "stableprompt.models": ("contexts", "agents", "algorithms", "trainer"),
    "stableprompt.contexts": ("agents", "algorithms", "trainer"),
    "stableprompt.agents": ("contexts", "algorithms", "trainer"),
    "stableprompt.algorithms": ("trainer", "cli", "api"),
}


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_lower_layers_never_import_upper_ones():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for layer, above in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                banned = tuple(f"stableprompt.{a}" for a in above)
                wrong += [f"{name} -> {m}" for m in all_imports(path) if m.startswith(banned)]
    assert not wrong, wrong
