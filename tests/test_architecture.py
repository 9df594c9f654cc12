"""The rooms of src/roost keep to the house rules (docs/architecture.md).

* no import circle between rooms (top-level packages and modules of ``roost``), counting every
  import, lazy ones inside functions and ``TYPE_CHECKING`` ones included;
* platform rooms (store, bus, mqtt, http, core, sim, config, errors) import no capability room
  and nothing of the composition (runtime, app, cli); capability rooms import no composition;
* the MQTT session does not import its gateway back;
* no module grows far above the 100–600-line range.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "roost"
PLATFORM = frozenset({"store", "bus", "mqtt", "http", "core", "sim", "config", "errors", "console"})
COMPOSITION = frozenset({"runtime", "app", "cli", "__main__"})
#: A module may pass 600 lines a little while it stays one concept; beyond this it is split.
MAX_LINES = 650
#: Modules allowed above MAX_LINES, each with the reason it stays whole.
LONG_MODULES: Mapping[str, str] = {}


def module_name(path: Path) -> str:
    """``roost.a.b`` for src/roost/a/b.py (``roost.a`` for its ``__init__``)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``roost`` module ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("roost"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "roost":
                found.update(f"roost.{alias.name}" for alias in node.names)
            elif node.module.startswith("roost."):
                found.add(node.module)
    return found


def room_of(module: str) -> str | None:
    """The room a module belongs to: its top-level package or module under ``roost``."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__version__":
        return None
    return parts[1]


def modules() -> dict[str, Path]:
    """Every module of the package."""
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def room_graph() -> dict[str, dict[str, set[str]]]:
    """room → room it imports → the modules whose imports make that edge."""
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in modules().items():
        source = room_of(name)
        if source is None:
            continue
        for target in map(room_of, imports_of(path)):
            if target is not None and target != source:
                graph.setdefault(source, {}).setdefault(target, set()).add(name)
    return graph


def circles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    nodes = set(edges) | {n for targets in edges.values() for n in targets}
    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert circles({"a": ["b"], "b": ["c"], "d": ["a"]}) == []


def test_no_import_circle_between_rooms() -> None:
    graph = room_graph()
    found = circles({room: set(targets) for room, targets in graph.items()})
    detail = [
        f"{a} -> {b} (in {sorted(graph[a][b])})"
        for component in found
        for a in component
        for b in component
        if b in graph.get(a, {})
    ]
    assert found == [], "\n".join(detail)


def test_platform_rooms_know_no_capability_and_capabilities_know_no_composition() -> None:
    graph = room_graph()
    rooms = {room_of(name) for name in modules()} - {None}
    capabilities = rooms - PLATFORM - COMPOSITION
    assert {"identity", "inventory", "telemetry", "commands", "jobs"} <= capabilities
    wrong = []
    for source, targets in graph.items():
        for target, why in targets.items():
            platform_reaches_up = source in PLATFORM and target not in PLATFORM
            capability_reaches_up = source in capabilities and target in COMPOSITION
            if platform_reaches_up or capability_reaches_up:
                wrong.append(f"{source} -> {target} (in {sorted(why)})")
    assert wrong == []


def test_the_mqtt_session_does_not_import_its_gateway() -> None:
    for name in ("roost.mqtt.session", "roost.mqtt.inbound", "roost.mqtt.outbound"):
        assert "roost.mqtt.gateway" not in imports_of(modules()[name]), name


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_in_the_house_size(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    if name in LONG_MODULES:
        return
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concept"
