"""The model's Markdown as DingTalk's markdown message, rendered from the shared tree in
``adapters.markdown``.

DingTalk's markdown is a small dialect: headings, bold, italics, links, images, quotes and lists.
It has no strikethrough (the text stays, unmarked) and its clients show a lone newline as a space,
so every line break inside a block becomes a Markdown hard break (two spaces, then the newline).
Code keeps its backticks: current clients show fenced blocks as code, older ones show the fence
lines as text around it, which still reads as code. Text is left as the model wrote it, since
DingTalk renders it as Markdown anyway.

A markdown message also needs a ``title``, which DingTalk shows in notifications and the chat list:
the first line of the answer's plain text, cut short.
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
    with_bullet,
)

HARD_BREAK = "  \n"
TITLE_CHARS = 30
_MARKS = {"strong": "**", "em": "*", "strike": ""}


def to_dingtalk(markdown: str) -> str:
    """Convert Markdown to DingTalk's markdown."""
    return _blocks(parse(markdown))


def title(markdown: str) -> str:
    """The first non-empty line of the answer, without its markup, at most ``TITLE_CHARS`` long."""
    for line in _plain(parse(markdown)).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"
    return "…"


def _blocks(blocks: Sequence[Block]) -> str:
    """Blocks are separated by a blank line whatever the source had: DingTalk joins lines that are
    only a newline apart, and a list item or heading glued to the next paragraph reads as one."""
    return "\n\n".join(_block(block) for block in blocks)


def _block(block: Block) -> str:
    match block:
        case Paragraph(children):
            return _inline(children).replace("\n", HARD_BREAK)
        case Heading(children):
            return f"### {_inline(children)}"
        case CodeBlock(text, language, closed):
            return f"```{language}\n{text}" + ("\n```" if closed else "")
        case Quote(children):
            return prefix_lines(_blocks(children), "> ")
        case ListBlock():
            return join_items(with_bullet(block, "-"), lambda children: join(children, _block))
        case Rule():
            return "---"


def _inline(nodes: Sequence[Inline]) -> str:
    return "".join(_span(node) for node in nodes)


def _span(node: Inline) -> str:
    match node:
        case Text(text):
            return text
        case Code(text):
            return f"`{text}`"
        case Style(kind, children):
            mark = _MARKS[kind]
            return f"{mark}{_inline(children)}{mark}"
        case Link(href, children):
            return f"[{_inline(children)}]({href})"


def _plain(blocks: Sequence[Block]) -> str:
    """The text a reader sees, for the title."""
    return "\n".join(_plain_block(block) for block in blocks)


def _plain_block(block: Block) -> str:
    match block:
        case Paragraph(children) | Heading(children):
            return _plain_inline(children)
        case CodeBlock(text):
            return text
        case Quote(children):
            return _plain(children)
        case ListBlock(items):
            return "\n".join(_plain(item.children) for item in items)
        case Rule():
            return ""


def _plain_inline(nodes: Sequence[Inline]) -> str:
    parts: list[str] = []
    for node in nodes:
        match node:
            case Text(text) | Code(text):
                parts.append(text)
            case Style(_, children) | Link(_, children):
                parts.append(_plain_inline(children))
    return "".join(parts)
