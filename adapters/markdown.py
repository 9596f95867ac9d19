"""The model's Markdown, parsed once into a small tree that each platform renders in its own markup.

Telegram wants a subset of HTML and Slack its own mrkdwn, but the model writes one dialect, CommonMark
more or less. Parsing it here with a real parser means every renderer agrees on what is bold, what is
code and where a list ends, and a renderer is only a walk over a handful of node types. The tree keeps
what a chat message can show and settles, once, what every renderer would otherwise decide again:

- A soft break is a newline, as a chat client shows the text it is given (a browser would show a
  space); a hard break is a newline too.
- Only http(s), mailto and tg links survive. Any other address (``javascript:``, ``data:``,
  ``vbscript:``, a relative path that means nothing in a chat) leaves just the link's text, so no
  renderer ever judges a URL. An image becomes a link to it; a link without text shows its address.
- List items carry their marker, numbered here and indented two spaces per enclosing list.
- Every block records whether a blank line came before it, so the reply keeps its layout.
- A fenced code block records its language and whether its closing line has arrived yet: a reply
  still streaming is often in the middle of a code block.

Markup that does not parse (``**bold`` with no closing stars) is text, exactly as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import count, repeat
from typing import Literal, Protocol, TypeVar

from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from markdown_it.tree import SyntaxTreeNode

StyleKind = Literal["strong", "em", "strike"]


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Code:
    text: str


@dataclass(frozen=True, slots=True)
class Style:
    kind: StyleKind
    children: tuple[Inline, ...]


@dataclass(frozen=True, slots=True)
class Link:
    """Always a safe address: see the module docstring."""

    href: str
    children: tuple[Inline, ...]


Inline = Text | Code | Style | Link


@dataclass(frozen=True, slots=True)
class Paragraph:
    children: tuple[Inline, ...]
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Heading:
    children: tuple[Inline, ...]
    gap: bool = False


@dataclass(frozen=True, slots=True)
class CodeBlock:
    text: str
    language: str
    closed: bool
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Quote:
    children: tuple[Block, ...]
    gap: bool = False


@dataclass(frozen=True, slots=True)
class ListItem:
    marker: str
    """What starts the item's first line: its indentation, then ``•`` or its number."""
    children: tuple[Block, ...]
    gap: bool = False


@dataclass(frozen=True, slots=True)
class ListBlock:
    items: tuple[ListItem, ...]
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    gap: bool = False


Block = Paragraph | Heading | CodeBlock | Quote | ListBlock | Rule


class _Parser(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        """Accept every address, so an unsafe link still parses and can be reduced to its text.

        markdown-it's own check would leave ``[x](javascript:...)`` as literal source instead."""
        return True


_PARSER = (
    # html off: a tag the model writes is text, never markup. linkify off: the platforms link bare
    # URLs themselves. Tables stay off: no platform here draws one, and a table shown as its text
    # (pipes and all) reads as the model wrote it. Indented code is off: models fence their code, and
    # an indented line is far more often a list continuation that lost its place than code.
    _Parser("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable("strikethrough")
    .disable("code")
)
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tg"})
_STYLES: dict[str, StyleKind] = {"strong": "strong", "em": "em", "s": "strike"}
_CONTAINERS = frozenset({"blockquote", "bullet_list", "ordered_list", "list_item"})


_INLINE_MARKUP = frozenset("\\`*_[]<&~\n\r\0")
"""What can open inline markup (an escape, code, emphasis, a link, an autolink, an entity,
strikethrough) or change the text as markdown-it reads it (a line break, a NUL)."""
_BLOCK_OPENERS = frozenset("#>-+=0123456789")
"""What can make a line's first character start a block other than a paragraph (a heading, a quote,
a list, a rule, an ordered list's number)."""


def parse(markdown: str) -> tuple[Block, ...]:
    """The blocks of ``markdown``. Any text parses; nesting is bounded by markdown-it's ``maxNesting``.

    A short answer is often one plain line, which markdown-it would read as one paragraph of exactly
    that text: it is that paragraph at once. markdown-it and the walk over its tree cost about 65 us
    for such a line here, a few percent of a bridge's CPU per message in a burst of short answers,
    and the tree it leaves is reference cycles for the garbage collector to find.
    """
    if _is_plain_line(markdown):
        return (Paragraph((Text(markdown),)),)
    return _parse_fully(markdown)


def _is_plain_line(text: str) -> bool:
    """Whether markdown-it would read ``text`` as one paragraph holding exactly ``text``: one line,
    no markup, no block opener in front and no space around it (a paragraph is stripped)."""
    return bool(text) and text[0] not in _BLOCK_OPENERS and text == text.strip() and _INLINE_MARKUP.isdisjoint(text)


def _parse_fully(markdown: str) -> tuple[Block, ...]:
    return _blocks(SyntaxTreeNode(_PARSER.parse(markdown)).children, lists=0)


class _Spaced(Protocol):
    @property
    def gap(self) -> bool: ...


_Node = TypeVar("_Node", bound=_Spaced)


def join(nodes: Sequence[_Node], render: Callable[[_Node], str]) -> str:
    """Rendered blocks (or list items) one per line, with a blank line wherever the source had one."""
    out: list[str] = []
    for index, node in enumerate(nodes):
        if index:
            out.append("\n\n" if node.gap else "\n")
        out.append(render(node))
    return "".join(out)


def join_items(block: ListBlock, render: Callable[[Sequence[Block]], str]) -> str:
    """Each item as its marker, then its rendered blocks from the same line on."""

    def item(item: ListItem) -> str:
        body = render(item.children)
        return f"{item.marker} {body}" if body else item.marker

    return join(block.items, item)


def with_bullet(block: ListBlock, bullet: str) -> ListBlock:
    """The list with ``bullet`` in place of ``•``, for markups whose lists need Markdown's own mark."""
    items = tuple(
        replace(item, marker=item.marker.removesuffix("•") + bullet) if item.marker.endswith("•") else item
        for item in block.items
    )
    return replace(block, items=items)


def prefix_lines(text: str, prefix: str) -> str:
    """``prefix`` at the start of every line: how a quote is marked where it cannot be a tag."""
    return "\n".join(prefix + line for line in text.split("\n"))


def _blocks(nodes: Sequence[SyntaxTreeNode], lists: int) -> tuple[Block, ...]:
    return tuple(_block(node, lists, gap) for node, gap in zip(nodes, _gaps(nodes), strict=True))


def _gaps(nodes: Sequence[SyntaxTreeNode]) -> list[bool]:
    return [index > 0 and _lines(node)[0] > _lines(nodes[index - 1])[1] for index, node in enumerate(nodes)]


def _lines(node: SyntaxTreeNode) -> tuple[int, int]:
    """The source lines ``[start, end)`` of a block's content. A container's own map also takes in
    the blank lines after it, which are not its content, so its end is its last child's."""
    assert node.map is not None, "markdown-it maps every block"
    if node.type in _CONTAINERS and node.children:
        return node.map[0], _lines(node.children[-1])[1]
    return node.map


def _block(node: SyntaxTreeNode, lists: int, gap: bool) -> Block:
    match node.type:
        case "paragraph":
            return Paragraph(_inline(node.children[0].children), gap)
        case "heading":
            return Heading(_inline(node.children[0].children), gap)
        case "fence":
            language = unescapeAll(node.info).split(maxsplit=1)
            return CodeBlock(node.content.removesuffix("\n"), language[0] if language else "", _closed(node), gap)
        case "blockquote":
            return Quote(_blocks(node.children, lists), gap)
        case "bullet_list" | "ordered_list":
            return ListBlock(_items(node, lists), gap)
        case "hr":
            return Rule(gap)
    raise ValueError(f"no rule this parser enables makes a {node.type!r} block")


def _closed(fence: SyntaxTreeNode) -> bool:
    """markdown-it keeps no flag for this, so count lines: a closed fence spans its opening line, its
    content and its closing line. Only the document's last line can lack its newline."""
    start, end = _lines(fence)
    content = fence.content
    content_lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
    return end - start == content_lines + 2


def _items(node: SyntaxTreeNode, lists: int) -> tuple[ListItem, ...]:
    """Numbered from the list's first number up, as CommonMark reads it: the numbers after the first
    are ignored, so a list written as ``1. 1. 1.`` still counts 1, 2, 3."""
    markers: Iterator[str]
    if node.type == "bullet_list":
        markers = repeat("•")
    else:
        markers = (f"{number}{node.markup}" for number in count(int(node.attrs.get("start", 1))))
    indent = "  " * lists
    first_indent = "" if _opens_item(node) else indent
    return tuple(
        ListItem((indent if index else first_indent) + marker, _blocks(item.children, lists + 1), gap)
        for index, (item, gap, marker) in enumerate(zip(node.children, _gaps(node.children), markers, strict=False))
    )


def _opens_item(node: SyntaxTreeNode) -> bool:
    """Whether ``node`` starts on the marker line of a list item (``- - x``, ``- > - x``), where an
    indentation would only push it away from the marker."""
    parent = node.parent
    while parent is not None and parent.children[0] is node:
        if parent.type == "list_item":
            return True
        node, parent = parent, parent.parent
    return False


def _inline(nodes: Sequence[SyntaxTreeNode], in_link: bool = False) -> tuple[Inline, ...]:
    out: list[Inline] = []
    for node in nodes:
        match node.type:
            case "text":
                _append(out, Text(node.content))
            case "softbreak" | "hardbreak":
                _append(out, Text("\n"))
            case "code_inline":
                _append(out, Code(node.content))
            case "strong" | "em" | "s":
                _append(out, Style(_STYLES[node.type], _inline(node.children, in_link)))
            case "link":
                _link(out, str(node.attrs["href"]), _inline(node.children, in_link=True), in_link)
            case "image":
                _link(out, str(node.attrs["src"]), (Text(node.content),) if node.content else (), in_link)
            case _:
                raise ValueError(f"no rule this parser enables makes a {node.type!r} inline node")
    return tuple(out)


def _link(out: list[Inline], href: str, children: tuple[Inline, ...], in_link: bool) -> None:
    """A link, or only its text where the address is unsafe or it sits in a link already (an image)."""
    scheme, colon, _ = href.partition(":")
    if in_link or not colon or scheme.lower() not in _SAFE_SCHEMES:
        for child in children:
            _append(out, child)
    else:
        out.append(Link(href, children or (Text(href),)))


def _append(out: list[Inline], node: Inline) -> None:
    """Adjacent text joined into one node, empty text dropped: markdown-it splits text at every
    delimiter it tried, which says nothing about the text."""
    if isinstance(node, Text) and out and isinstance(out[-1], Text):
        out[-1] = Text(out[-1].text + node.text)
    elif not isinstance(node, Text) or node.text:
        out.append(node)
