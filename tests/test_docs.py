"""Every relative link and image in README.md and docs/ leads to a file that exists, and every
``#anchor`` to a heading of that file, so moving or renaming a page cannot leave dead links behind.

Links are read with the project's Markdown parser (markdown-it-py), so a link written inside code is
not taken for one; anchors are the slugs GitHub gives headings.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.kit import docs

ROOT, PAGES = docs.ROOT, docs.PAGES
_PARSER = MarkdownIt("commonmark").enable("table")
_HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")


def links(text: str) -> list[str]:
    """The targets of the page's links and images, HTML ``src``/``href`` included."""
    found: list[str] = []
    for token in _walk(_PARSER.parse(text)):
        if token.type == "link_open":
            found.append(str(token.attrGet("href")))
        elif token.type == "image":
            found.append(str(token.attrGet("src")))
        elif token.type in ("html_inline", "html_block"):
            found.extend(_HTML_LINK.findall(token.content))
    return found


@cache
def anchors(page: Path) -> frozenset[str]:
    """The slugs GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated heading numbered -1, -2, ..."""
    tokens = _PARSER.parse(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    slugs: set[str] = set()
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children or () if child.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(slugs)


def problem(page: Path, target: str) -> str | None:
    """Why ``target``, written on ``page``, leads nowhere (None when it is fine or not ours to check)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None  # another site: not checked (no internet in tests)
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not path.exists():
        return f"{_shown(path)} does not exist"
    if parts.fragment and path.suffix == ".md" and unquote(parts.fragment) not in anchors(path):
        return f"{_shown(path)} has no heading #{parts.fragment}"
    return None


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def _walk(tokens: list[Token]) -> list[Token]:
    flat: list[Token] = []
    for token in tokens:
        flat.append(token)
        flat.extend(_walk(token.children or []))
    return flat


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = [
        f"{target}: {reason}"
        for target in links(page.read_text(encoding="utf-8"))
        if (reason := problem(page, target)) is not None
    ]
    assert broken == [], f"{page.relative_to(ROOT)} links to what is not there:\n  " + "\n  ".join(broken)


def test_the_checker_finds_a_missing_file_a_missing_heading_and_an_image(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Set-up, step by step\n\n## `model.base_url`\n\n## Notes\n\n## Notes\n", encoding="utf-8")
    text = (
        "[ok](page.md#set-up-step-by-step) [ok](#modelbase_url) [ok](#notes-1) [web](https://example.com/x)\n"
        "[gone](missing.md) [no heading](page.md#nowhere) ![picture](pic.svg) `[in code](nothere.md)`\n"
    )
    reasons = [problem(page, target) for target in links(text)]
    assert reasons[:4] == [None, None, None, None]
    assert reasons[4] is not None and reasons[4].endswith("missing.md does not exist")
    assert reasons[5] is not None and reasons[5].endswith("has no heading #nowhere")
    assert reasons[6] is not None and reasons[6].endswith("pic.svg does not exist")
    assert len(reasons) == 7  # the link inside code is not a link
