"""Texts shaped like model answers, for the tests of splitting and streaming."""

from __future__ import annotations

import random


def code_block(lang: str, lines: int, width: int = 20) -> str:
    body = "\n".join(f"line_{i:03d} = {'x' * (width - 11)}" for i in range(lines))
    return f"```{lang}\n{body}\n```"


def long_reply(seed: int = 7) -> str:
    """Prose, lists and code blocks of every size, as a model might answer."""
    rng = random.Random(seed)
    words = ["the", "renderer", "splits", "long", "replies", "at", "paragraphs", "lines", "and", "words", "x" * 45]
    parts: list[str] = []
    for index in range(40):
        kind = index % 5
        if kind == 3:
            parts.append(code_block(rng.choice(["python", "js", ""]), rng.randint(1, 15)))
        elif kind == 4:
            parts.append("\n".join(f"- {' '.join(rng.choices(words, k=rng.randint(2, 9)))}" for _ in range(4)))
        else:
            parts.append(" ".join(rng.choices(words, k=rng.randint(3, 60))))
    return "\n\n".join(parts)
