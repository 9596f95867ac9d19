"""Telegram HTML from the shared Markdown tree: exact output, and always HTML Telegram accepts."""

from __future__ import annotations

import random

import pytest

from adapters.telegram.format import markdown_to_html
from tests.fakes.telegram_api import visible_html


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("", ""),
        ("**b** *i* ~~s~~ `c` __b2__ _i2_", "<b>b</b> <i>i</i> <s>s</s> <code>c</code> <b>b2</b> <i>i2</i>"),
        ("***both*** **bold *it* bold**", "<i><b>both</b></i> <b>bold <i>it</i> bold</b>"),
        ("**bold & <b> *it", "**bold &amp; &lt;b&gt; *it"),
        ("<script>alert('x')</script>", "&lt;script&gt;alert('x')&lt;/script&gt;"),
        ("`a & <b>`", "<code>a &amp; &lt;b&gt;</code>"),
        (
            "```python\nif a < b && c:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b &amp;&amp; c:\n    pass</code></pre>',
        ),
        ("```\nplain\n```", "<pre>plain</pre>"),
        ('```a"b\nx\n```', '<pre><code class="language-a&quot;b">x</code></pre>'),
        ("text\n```py\nx = 1", 'text\n<pre><code class="language-py">x = 1</code></pre>'),
    ],
)
def test_inline_markup_and_code(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("[click](javascript:alert(1)) me", "click me"),
        ("[**x**](data:text/html,hi)", "<b>x</b>"),
        (
            "[**bold** and *it*](https://e.com/?a=1&b='2')",
            '<a href="https://e.com/?a=1&amp;b=&#x27;2&#x27;"><b>bold</b> and <i>it</i></a>',
        ),
        ('[q](https://e.com/"x)', '<a href="https://e.com/%22x">q</a>'),
        ("<https://e.com>", '<a href="https://e.com">https://e.com</a>'),
        ("![diagram](https://e.com/d.png)", '<a href="https://e.com/d.png">diagram</a>'),
    ],
)
def test_links(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("# Title *x*\ntext", "<b>Title <i>x</i></b>\ntext"),
        ("> a\n> **b**", "<blockquote>a\n<b>b</b></blockquote>"),
        ("> a\n>\n> > b\n>\n> c", "<blockquote>a\n\n&gt; b\n\nc</blockquote>"),
        ("> > > x\n> > > y", "<blockquote>&gt; &gt; x\n&gt; &gt; y</blockquote>"),
        ("1. one\n2. two\n   - sub\n     1. deep\n- bullet", "1. one\n2. two\n  • sub\n    1. deep\n• bullet"),
        ("1. a\n1. b\n1. c", "1. a\n2. b\n3. c"),
        ("- a\n\n  more\n- b\n  > q", "• a\n\nmore\n• b\n<blockquote>q</blockquote>"),
        ("---\n\n***", "———\n\n———"),
        ("a\n\n\n\nb\nc", "a\n\nb\nc"),
        ("| a | b |\n|---|---|\n| 1 | **2** |", "| a | b |\n|---|---|\n| 1 | <b>2</b> |"),
    ],
)
def test_blocks(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html


_PIECES = [
    *["**", "*", "_", "__", "~~", "`", "```", "```py", "~~~", "\n", "\n\n", "> ", ">", "- ", "* ", "1. ", "10) "],
    *["  ", "    ", "# ", "[", "](", ")", "![", "https://e.com/?a&b", "javascript:x", "<https://e.com>"],
    *["<b>", "</i>", "<", "&", "&amp;", '"', "'", "\\", "---", "|", "word", " ", "\t", "\r\n", "\x00"],
]


def _samples(count: int, pieces: list[str]) -> list[str]:
    rng = random.Random(20240601)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def test_any_text_becomes_html_telegram_accepts() -> None:
    for markdown in _samples(1000, _PIECES):
        assert visible_html(markdown_to_html(markdown)) is not None, markdown


def test_the_visible_text_is_never_longer_than_the_markdown() -> None:
    """Outside nested quotes (see the module docstring), what lets the renderer cut Markdown at
    max_message_chars and stay under Telegram's limit."""
    for markdown in _samples(1000, [piece for piece in _PIECES if ">" not in piece]):
        visible = visible_html(markdown_to_html(markdown))
        assert visible is not None and len(visible) <= len(markdown), markdown


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("**bold**, *italic*, _also_, ~~gone~~", "<b>bold</b>, <i>italic</i>, <i>also</i>, <s>gone</s>"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("x < y & `a<b>` **half", "x &lt; y &amp; <code>a&lt;b&gt;</code> **half"),
        ("## Title\n- item\n> quoted", "<b>Title</b>\n• item\n<blockquote>quoted</blockquote>"),
        ("[docs](https://x.org/?a=1&b=2)", '<a href="https://x.org/?a=1&amp;b=2">docs</a>'),
        ("```py\nif a < b:\n```", '<pre><code class="language-py">if a &lt; b:</code></pre>'),
        ("```\nstill streaming", "<pre>still streaming</pre>"),
    ],
)
def test_markdown_becomes_telegram_html(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html


def test_formatting_never_makes_the_visible_text_longer() -> None:
    """What lets the renderer cut Markdown at max_message_chars and stay under Telegram's limit."""
    samples = [
        "# Heading\n\nSome **bold** and *it* with `code` and a [link](https://example.com).",
        "- one\n- two\n  * nested\n> quote **b**\n\n```python\nprint('<&>')\n```\n~~x~~ __y__",
        "unclosed **bold and `code and [link](https://e.org",
    ]
    for text in samples:
        visible = visible_html(markdown_to_html(text))
        assert visible is not None and len(visible) <= len(text)
