"""The package's shape: no import cycle, and each layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import process_balancer

PACKAGE = Path(process_balancer.__file__).parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (also inside functions and under
    TYPE_CHECKING): a cycle through a lazy import is still a cycle in the design."""
    modules = {_module_name(p)[0]: p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        _, is_package = _module_name(path)
        base = name.split(".") if is_package else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    target = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_package_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def _imports(graph: dict[str, set[str]], layer: str) -> set[str]:
    prefix = f"process_balancer.{layer}"
    return {
        target
        for source, targets in graph.items()
        if source == prefix or source.startswith(prefix + ".")
        for target in targets
    }


def _reaches(found: set[str], layer: str) -> set[str]:
    prefix = f"process_balancer.{layer}"
    return {m for m in found if m == prefix or m.startswith(prefix + ".")}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    graph = import_graph()
    forbidden = {
        "errors": ["config", "backends", "locks", "balancing", "runtime", "client", "ops"],
        "config": ["balancing", "client", "ops", "cli", "web", "locks"],
        "backends": ["balancing", "runtime", "client", "ops", "cli", "web", "locks"],
        "balancing": ["runtime", "client", "ops", "cli", "web"],
        "locks": ["runtime", "client", "ops", "cli", "web"],
        "runtime": ["client", "ops", "cli", "web"],
        "client": ["runtime", "ops", "cli", "web"],
        "ops": ["client", "cli", "web"],
        "web": ["cli", "runtime"],
    }
    # The simulation drives the product; nothing of the product depends on it.
    for layer in ("errors", "config", "backends", "balancing", "locks", "runtime", "client", "ops"):
        forbidden[layer] = [*forbidden[layer], "testing"]
    # Framework integrations sit on top: they use the core, nothing of the core uses them.
    for layer in (*forbidden, "job", "cli", "testing"):
        forbidden[layer] = [*forbidden.get(layer, []), "contrib"]
    wrong = {
        f"{layer} -> {target}"
        for layer, below in forbidden.items()
        for other in below
        for target in _reaches(_imports(graph, layer), other)
    }
    assert wrong == set()


#: Third-party frameworks only an integration under ``contrib/`` may import (optional extras).
FRAMEWORKS = {"django", "asgiref"}


def test_only_the_integrations_import_a_framework() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "contrib":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            wrong += [
                f"{path.relative_to(PACKAGE)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in FRAMEWORKS
            ]
    assert wrong == []


#: What the runtime must take from its kernel (runtime/kernel.py), never from the standard
#: library directly: the deterministic simulation replaces all of it.
KERNEL_ONLY = {
    "time": {"monotonic", "time", "sleep", "perf_counter"},
    "threading": {"Thread", "Event", "Lock", "RLock", "Condition", "Timer", "Semaphore"},
    "random": None,  # any use
}


def test_the_runtime_reads_time_and_starts_threads_only_through_its_kernel() -> None:
    runtime = PACKAGE / "runtime"
    wrong = []
    for path in sorted(runtime.rglob("*.py")):
        if path.name == "kernel.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                banned = KERNEL_ONLY.get(node.value.id, set())
                if banned is None or (banned and node.attr in banned):
                    wrong.append(
                        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value.id}.{node.attr}"
                    )
            elif isinstance(node, ast.ImportFrom) and node.module in KERNEL_ONLY:
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} from {node.module} import")
    assert wrong == []
