"""The model's Markdown as the plain text WeChat shows, rendered from the shared tree in
``adapters.markdown``.

WeChat text messages have no markup at all: ``**bold**`` would arrive with its stars. So markers
go, and what they meant stays readable as text: headings and paragraphs as lines, list items with
their ``•`` or number, quotes with ``> ``, code as its lines (no fences), a link as its text and
its address in brackets (WeChat makes the address tappable), a rule as a line of dashes.

Lengths: the text only shrinks against its Markdown, except that a ``- `` bullet becomes ``• `` (two
bytes more in UTF-8) and a link's address is added where its text differs; the channel measures the
result and asks the renderer to cut smaller when it is still over.
"""

from __future__ import annotations

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
    Text,
    join,
    join_items,
    parse,
    prefix_lines,
)


def to_plain(markdown: str) -> str:
    """Plain text for ``markdown``, laid out as the Markdown was."""
    return _blocks(parse(markdown))


def _blocks(blocks: Sequence[Block]) -> str:
    return join(blocks, _block)


def _block(block: Block) -> str:
    match block:
        case Paragraph(children) | Heading(children):
            return _inline(children)
        case CodeBlock(text):
            return text
        case Quote(children):
            return prefix_lines(_blocks(children), "> ")
        case ListBlock():
            return join_items(block, _blocks)
        case Rule():
            return "———"


def _inline(nodes: Sequence[Inline]) -> str:
    return "".join(map(_span, nodes))


def _span(node: Inline) -> str:
    match node:
        case Text(text) | Code(text):
            return text
        case Style(_, children):
            return _inline(children)
        case Link(href, children):
            text = _inline(children)
            return text if text == href or href == f"mailto:{text}" else f"{text} ({href})"
