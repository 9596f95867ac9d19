"""The rooms of design section 1 import one way only: chatbridge -> adapters -> core -> bots.

Read from the source with ``ast``, so an import hidden inside a function (the registry's lazy
platform imports, say) counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("chatbridge", "adapters", "core", "bots")
"""Highest first: a room may import the rooms after it, never one before it."""
PLATFORM_LIBRARIES = frozenset({"telegram", "discord", "slack_bolt", "slack_sdk", "aiohttp"})
"""What only an adapter (or the shell's HTTP server) may touch."""


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            yield node.lineno, node.module


def upward_imports(room: str, root: Path = ROOT) -> list[str]:
    above = set(ROOMS[: ROOMS.index(room)])
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in sorted((root / room).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.partition(".")[0] in above
    ]


@pytest.mark.parametrize("room", ROOMS[1:])
def test_no_room_imports_a_room_above_it(room: str) -> None:
    assert upward_imports(room) == []


@pytest.mark.parametrize("room", ["core", "bots"])
def test_the_engine_and_the_model_room_use_no_platform_library(room: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.partition(".")[0] in PLATFORM_LIBRARIES
    ]
    assert found == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a core module importing the shell is reported."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from chatbridge.cli import main\n", encoding="utf-8")
    assert upward_imports("core", tmp_path) == ["core/bad.py:2 imports chatbridge.cli"]
