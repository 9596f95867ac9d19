"""The documentation pages, and the ``CHATBRIDGE_`` variables they name, for the tests that hold the
docs to the code and the container files."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

TYPO_EXAMPLES = frozenset({"CHATBRIDGE_MODEL_API_KEY"})
"""Variables the docs show as mistakes (one underscore), to explain the error they cause."""


def variables_named(paths: Iterable[Path]) -> set[str]:
    """Every ``CHATBRIDGE_...`` name written in these files, the typo examples left out, and so are
    patterns with a placeholder (``CHATBRIDGE_MCP_SERVERS__<NAME>__HEADERS__<HEADER>``): a name the
    user chooses cannot be passed on by name."""
    names = set()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"CHATBRIDGE_[A-Z0-9_]*[A-Z0-9]", text):
            if not text.startswith("__<", found.end()):
                names.add(found.group())
    return names - TYPO_EXAMPLES
