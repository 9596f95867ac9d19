"""The model's Markdown as Slack's mrkdwn, rendered from the shared tree in ``adapters.markdown``.

mrkdwn is a different dialect, not a subset: ``*x*`` is bold (Markdown's italics), there are no
headings (they become bold lines), links are ``<url|text>``, and ``&``, ``<`` and ``>`` must be
escaped everywhere, code included. Slack has one quote level, so a nested quote shows its extra
``>`` marks as text, much as the model wrote them. A fence's language is dropped because Slack would
show it as the first code line.

The renderer streams growing prefixes of a reply through this. Like any markup whose end has not
arrived yet (``**bold``), a code block still waiting for its closing fence stays open: it gets no
closing fence of its own, and the edit that brings the real one shows it as code.
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
    StyleKind,
    Text,
    join,
    join_items,
    parse,
    prefix_lines,
)

_MARKS: dict[StyleKind, str] = {"strong": "*", "em": "_", "strike": "~"}
_NONE: frozenset[StyleKind] = frozenset()


def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to mrkdwn, keeping code verbatim apart from the escaping Slack requires."""
    return _blocks(parse(markdown))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(blocks: Sequence[Block]) -> str:
    return join(blocks, _block)


def _block(block: Block) -> str:
    match block:
        case Paragraph(children):
            return _inline(children, _NONE)
        case Heading(children):
            return f"*{_inline(children, frozenset({'strong'}))}*"
        case CodeBlock(text, _, closed):
            return f"```\n{_escape(text)}" + ("\n```" if closed else "")
        case Quote(children):
            return prefix_lines(_blocks(children), "> ")
        case ListBlock():
            return join_items(block, _blocks)
        case Rule():
            return "———"


def _inline(nodes: Sequence[Inline], active: frozenset[StyleKind]) -> str:
    """``active`` holds the styles already open around ``nodes``: Slack cannot nest a style in itself
    (``**a **b** c**`` or bold inside a heading), so an inner repeat adds no second pair of marks."""
    return "".join(_span(node, active) for node in nodes)


def _span(node: Inline, active: frozenset[StyleKind]) -> str:
    match node:
        case Text(text):
            return _escape(text)
        case Code(text):
            return f"`{_escape(text)}`"
        case Style(kind, children):
            inner = _inline(children, active | {kind})
            return inner if kind in active else f"{_MARKS[kind]}{inner}{_MARKS[kind]}"
        case Link(href, children):
            return f"<{_escape(href)}|{_inline(children, active)}>"
