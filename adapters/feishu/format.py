"""The model's Markdown as the markdown of a Feishu/Lark message card, rendered from the shared tree
in ``adapters.markdown``.

Card markdown knows bold, italics, strikethrough, links, lists, inline code, code blocks and rules.
Its headings other than the smallest levels break the card's layout, so a heading is a bold line.
It reads ``<at>``, ``<font>`` and a few more tags in the text, so ``&``, ``<`` and ``>`` outside code
become HTML entities, and nothing the model writes can mention people or restyle the card. A
quote is marked ``>`` line by line, as the model wrote it. Line breaks show as written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from adapters.markdown import (
    Block,
    Code,
    CodeBlock,
    Heading,
    Inline,
    Link,
    ListBlock,
    Paragraph,
    Quote,
    Rule,
    Style,
    StyleKind,
    Text,
    join,
    join_items,
    parse,
    prefix_lines,
    with_bullet,
)

_MARKS: dict[StyleKind, str] = {"strong": "**", "em": "*", "strike": "~~"}


def to_card_markdown(markdown: str) -> str:
    return _blocks(parse(markdown))


def card(markdown: str) -> str:
    """The card JSON that shows ``markdown``; ``update_multi`` lets an edit reach every reader."""
    return json.dumps(
        {
            "config": {"wide_screen_mode": True, "update_multi": True},
            "elements": [{"tag": "markdown", "content": to_card_markdown(markdown)}],
        },
        ensure_ascii=False,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(blocks: Sequence[Block]) -> str:
    return join(blocks, _block)


def _block(block: Block) -> str:
    match block:
        case Paragraph(children):
            return _inline(children)
        case Heading(children):
            return f"**{_inline(children)}**"
        case CodeBlock(text, language, closed):
            return f"```{language}\n{text}" + ("\n```" if closed else "")
        case Quote(children):
            return prefix_lines(_blocks(children), "> ")
        case ListBlock():
            return join_items(with_bullet(block, "-"), _blocks)
        case Rule():
            return "---"


def _inline(nodes: Sequence[Inline]) -> str:
    return "".join(_span(node) for node in nodes)


def _span(node: Inline) -> str:
    match node:
        case Text(text):
            return _escape(text)
        case Code(text):
            return f"`{text}`"
        case Style(kind, children):
            return f"{_MARKS[kind]}{_inline(children)}{_MARKS[kind]}"
        case Link(href, children):
            return f"[{_inline(children)}]({href})"
