"""The model's Markdown as Telegram HTML, rendered from the shared tree in ``adapters.markdown``.

HTML rather than MarkdownV2: MarkdownV2 makes a dozen punctuation characters special, so one missed
escape rejects the whole message, while HTML needs only ``& < >`` escaped. Telegram rejects a message
whose tags are not closed and properly nested; every tag here is opened and closed by the same call,
so the result is well-formed whatever the input. Telegram cannot nest block quotes, so only the
outermost quote is a ``<blockquote>`` and each deeper level shows a ``> `` at the start of its lines.
There is no underline or spoiler in Markdown, so neither is ever produced.

The conversion adds no visible characters (markers and fence lines disappear, ``- `` bullets become
``• ``), so a chunk cut to ``max_message_chars`` of Markdown stays within Telegram's limit, which
counts text *after* entity parsing. Two rare shapes add a character or two, well within the adapter's
margin: a list written ``1. 1. 1.`` whose numbering reaches 10, and a nested quote, whose ``> ``
marks can be wider than the source's (``>>``) and also start its lazy lines (those written without
``>``). A code block still open at the end (a reply being streamed) is closed, so the partial message
already shows as code. If Telegram still rejects the result the channel resends the plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

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

_TAGS: dict[StyleKind, str] = {"strong": "b", "em": "i", "strike": "s"}


def markdown_to_html(text: str) -> str:
    """Telegram HTML for ``text``: code blocks, inline code, bold, italic, strikethrough, links,
    headings (as bold), block quotes and lists."""
    return _blocks(parse(text), quoted=False)


def _blocks(blocks: Sequence[Block], quoted: bool) -> str:
    return join(blocks, lambda block: _block(block, quoted))


def _block(block: Block, quoted: bool) -> str:
    match block:
        case Paragraph(children):
            return _inline(children)
        case Heading(children):
            return f"<b>{_inline(children)}</b>"
        case CodeBlock(text, language):
            code = escape(text, quote=False)
            if language:
                return f'<pre><code class="language-{escape(language)}">{code}</code></pre>'
            return f"<pre>{code}</pre>"
        case Quote(children) if quoted:
            return prefix_lines(_blocks(children, quoted), "&gt; ")
        case Quote(children):
            return f"<blockquote>{_blocks(children, quoted=True)}</blockquote>"
        case ListBlock():
            return join_items(block, lambda children: _blocks(children, quoted))
        case Rule():
            return "———"


def _inline(nodes: Sequence[Inline]) -> str:
    return "".join(map(_span, nodes))


def _span(node: Inline) -> str:
    match node:
        case Text(text):
            return escape(text, quote=False)
        case Code(text):
            return f"<code>{escape(text, quote=False)}</code>"
        case Style(kind, children):
            return f"<{_TAGS[kind]}>{_inline(children)}</{_TAGS[kind]}>"
        case Link(href, children):
            return f'<a href="{escape(href)}">{_inline(children)}</a>'
