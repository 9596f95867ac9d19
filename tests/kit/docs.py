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
    """Every ``CHATBRIDGE_...`` name written in these files, the typo examples left out."""
    names = {
        name
        for path in paths
        for name in re.findall(r"CHATBRIDGE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8"))
    }
    return names - TYPO_EXAMPLES
