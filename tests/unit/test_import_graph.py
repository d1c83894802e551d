"""The rooms of the code import one way: the domain knows no Kafka, the client and the worker know
nothing of each other, and only the command line sees every room.

Every `import` (at module level or inside a function) of every module under models/ and streams/
is read from its syntax tree, so a lazy import counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"models": "sendgate.models", "streams": "sendgate.streams"}

# room -> the rooms it may import (its own room always)
SHARED = "sendgate.streams.shared"  # config, kafka, progress: what every room of streams/ uses
ALLOWED = {
    "sendgate.models": set(),
    SHARED: {"sendgate.models"},
    "sendgate.streams.client": {"sendgate.models", SHARED},
    "sendgate.streams.worker": {"sendgate.models", SHARED},
    "sendgate.streams.ops": {"sendgate.models", SHARED, "sendgate.streams.worker"},
    "sendgate.streams.local": {"sendgate.models", SHARED, "sendgate.streams.client"},
    "sendgate.streams.api": {"sendgate.models", SHARED, "sendgate.streams.client"},
    "sendgate.streams.cli": {
        "sendgate.models",
        SHARED,
        "sendgate.streams.client",
        "sendgate.streams.worker",
        "sendgate.streams.ops",
        "sendgate.streams.local",
        "sendgate.streams.api",
    },
}
SHARED_MODULES = {
    "sendgate.streams.config",
    "sendgate.streams.kafka",
    "sendgate.streams.progress",
    "sendgate.streams.identity",
    "sendgate.streams.logs",
    "sendgate.streams",
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def room(module: str) -> str:
    if module in SHARED_MODULES:
        return SHARED
    for name in sorted(ALLOWED, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} belongs to no room: add it to a room in tests/unit/test_import_graph.py")


def imports(module: str, path: Path) -> set[str]:
    """The sendgate modules `module` imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # `from sendgate.streams import kafka` imports a module, not a name
            names.update(f"{target}.{alias.name}" for alias in node.names)
    known = modules()
    return {name for name in names if name in known}


def edges() -> list[tuple[str, str]]:
    return [(module, target) for module, path in modules().items() for target in sorted(imports(module, path))]


def test_every_module_belongs_to_a_room():
    for module in modules():
        room(module)


def test_the_rooms_import_one_way():
    wrong = [
        f"{module} imports {target}"
        for module, target in edges()
        if room(target) != room(module) and room(target) not in ALLOWED[room(module)]
    ]
    assert wrong == []


def test_the_graph_is_read_for_real():
    """The reader finds the imports it must: a check that reads nothing would pass anything."""
    found = set(edges())
    assert ("sendgate.streams.worker.batch", "sendgate.models.gate") in found
    assert ("sendgate.streams.cli", "sendgate.streams.worker.lifecycle") in found  # a lazy import
    assert ("sendgate.streams.client", "sendgate.streams.config") in found
    assert ("sendgate.streams.ops.rebuild", "sendgate.streams.worker.checkpoint") in found


@pytest.mark.parametrize(
    "module,target,allowed",
    [
        ("sendgate.streams.client", "sendgate.streams.worker.app", False),
        ("sendgate.models.gate", "sendgate.streams.config", False),
        ("sendgate.streams.worker.app", "sendgate.streams.client", False),
        ("sendgate.streams.worker.lifecycle", "sendgate.streams.cli", False),
        ("sendgate.streams.local.demo", "sendgate.streams.client", True),
    ],
)
def test_the_rule_itself(module, target, allowed):
    assert (room(target) == room(module) or room(target) in ALLOWED[room(module)]) is allowed
