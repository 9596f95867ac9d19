"""The model's Markdown as the Markdown subset WeCom renders, from the shared tree in
``adapters.markdown``.

WeCom's ``markdown`` messages show headings, bold, links, inline code and quotes; italics,
strikethrough, lists and code blocks are not part of it. So headings become bold lines (the tree
keeps no level, and a chat message needs none), italics and strikethrough keep only their text,
list items are lines with their ``•`` or number, and a code block's lines are inline code each
(WeCom's inline code cannot span lines). Links keep only safe addresses (the tree's rule).
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


def to_wecom_markdown(markdown: str) -> str:
    return _blocks(parse(markdown))


def _blocks(blocks: Sequence[Block]) -> str:
    return join(blocks, _block)


def _block(block: Block) -> str:
    match block:
        case Paragraph(children):
            return _inline(children)
        case Heading(children):
            return f"**{_inline(children, bold=True)}**"
        case CodeBlock(text):
            return "\n".join(_code_line(line) for line in text.split("\n"))
        case Quote(children):
            return prefix_lines(_blocks(children), "> ")
        case ListBlock():
            return join_items(block, _blocks)
        case Rule():
            return "———"


def _code_line(line: str) -> str:
    """A line with a backtick of its own cannot be inline code; it is shown as it is."""
    return f"`{line}`" if line.strip() and "`" not in line else line


def _inline(nodes: Sequence[Inline], bold: bool = False) -> str:
    """``bold``: already inside bold marks, which WeCom cannot nest (bold in a heading, say)."""
    return "".join(_span(node, bold) for node in nodes)


def _span(node: Inline, bold: bool) -> str:
    match node:
        case Text(text):
            return text
        case Code(text):
            return f"`{text}`" if "`" not in text else text
        case Style("strong", children):
            return _inline(children, bold=True) if bold else f"**{_inline(children, bold=True)}**"
        case Style(_, children):
            return _inline(children, bold)
        case Link(href, children):
            return f"[{_inline(children, bold)}]({href})"
