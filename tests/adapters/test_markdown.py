"""The shared Markdown tree: what every platform renderer can rely on without checking again."""

from __future__ import annotations

import random
import string

import pytest

from adapters.markdown import (
    Block,
    Code,
    CodeBlock,
    Heading,
    Link,
    ListBlock,
    ListItem,
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
from adapters.markdown import _parse_fully as parse_with_markdown_it


def paragraph(*children: Text | Code | Style | Link, gap: bool = False) -> Paragraph:
    return Paragraph(tuple(children), gap)


def markers(block: Block) -> list[str]:
    """Every list marker in ``block``, depth first, to compare numbering and indentation at a glance."""
    found: list[str] = []
    if isinstance(block, ListBlock):
        for item in block.items:
            found.append(item.marker)
            for child in item.children:
                found += markers(child)
    elif isinstance(block, Quote):
        for child in block.children:
            found += markers(child)
    return found


def test_empty_input_has_no_blocks() -> None:
    assert parse("") == ()
    assert parse("\n\n  \n") == ()


def test_styles_nest() -> None:
    assert parse("***both*** **bold *it* bold** ~~gone `code`~~") == (
        paragraph(
            Style("em", (Style("strong", (Text("both"),)),)),
            Text(" "),
            Style("strong", (Text("bold "), Style("em", (Text("it"),)), Text(" bold"))),
            Text(" "),
            Style("strike", (Text("gone "), Code("code"))),
        ),
    )


def test_unclosed_markup_is_literal_text() -> None:
    assert parse("**bold and *it and `code and [link](https://e.org") == (
        paragraph(Text("**bold and *it and `code and [link](https://e.org")),
    )


def test_intraword_underscores_and_spaced_stars_are_text() -> None:
    assert parse("snake_case_name and 2 * 3 * 4") == (paragraph(Text("snake_case_name and 2 * 3 * 4")),)


def test_html_is_text_never_markup() -> None:
    assert parse("<b>x</b> <script>alert(1)</script>\n\n<div>") == (
        paragraph(Text("<b>x</b> <script>alert(1)</script>")),
        paragraph(Text("<div>"), gap=True),
    )


def test_entities_and_backslash_escapes_are_decoded() -> None:
    assert parse(r"\*not it\* &amp; &lt;b&gt;") == (paragraph(Text("*not it* & <b>")),)


def test_soft_and_hard_breaks_are_newlines() -> None:
    assert parse("soft\nhard  \nslash\\\nend") == (paragraph(Text("soft\nhard\nslash\nend")),)


def test_code_spans_keep_their_text() -> None:
    assert parse("`a & <b> **c**`") == (paragraph(Code("a & <b> **c**")),)


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "/relative/path",
        "#fragment",
    ],
)
def test_a_link_to_an_unsafe_or_meaningless_address_keeps_only_its_text(href: str) -> None:
    assert parse(f"see [the **docs**]({href}) now") == (
        paragraph(Text("see the "), Style("strong", (Text("docs"),)), Text(" now")),
    )


@pytest.mark.parametrize(
    "href", ["https://e.com/a?b=1&c=2", "http://e.com", "HTTPS://E.COM", "mailto:me@e.com", "tg://resolve?domain=x"]
)
def test_a_link_to_a_safe_address_stays_a_link(href: str) -> None:
    assert parse(f"[the *docs*]({href})") == (paragraph(Link(href, (Text("the "), Style("em", (Text("docs"),))))),)


def test_autolinks_are_links_and_an_unsafe_one_is_text() -> None:
    assert parse("<https://e.com> <me@e.com> <javascript:alert(1)>") == (
        paragraph(
            Link("https://e.com", (Text("https://e.com"),)),
            Text(" "),
            Link("mailto:me@e.com", (Text("me@e.com"),)),
            Text(" javascript:alert(1)"),
        ),
    )


def test_a_link_without_text_shows_its_address() -> None:
    assert parse("[](https://e.com)") == (paragraph(Link("https://e.com", (Text("https://e.com"),))),)


def test_images_become_links_to_them() -> None:
    assert parse("![a diagram](https://e.com/d.png) ![](https://e.com/e.png) ![x](data:image/png;base64,AAAA)") == (
        paragraph(
            Link("https://e.com/d.png", (Text("a diagram"),)),
            Text(" "),
            Link("https://e.com/e.png", (Text("https://e.com/e.png"),)),
            Text(" x"),
        ),
    )


def test_an_image_inside_a_link_is_only_its_alt_text() -> None:
    assert parse("[![badge](https://e.com/b.svg)](https://e.com)") == (
        paragraph(Link("https://e.com", (Text("badge"),))),
    )


def test_headings_and_rules() -> None:
    assert parse("# Title *x*\ntext\n\n---\nSetext\n===") == (
        Heading((Text("Title "), Style("em", (Text("x"),)))),
        paragraph(Text("text")),
        Rule(gap=True),
        Heading((Text("Setext"),)),
    )


def test_fenced_code_keeps_its_language_and_text() -> None:
    assert parse("```python extra words\nif a < b:\n    pass\n```") == (
        CodeBlock("if a < b:\n    pass", "python", closed=True),
    )
    assert parse("~~~c\\+\\+\nx\n~~~") == (CodeBlock("x", "c++", closed=True),)
    assert parse("```\n```") == (CodeBlock("", "", closed=True),)


@pytest.mark.parametrize(
    ("markdown", "block"),
    [
        ("```py\nx = 1", CodeBlock("x = 1", "py", closed=False)),
        ("```py\nx = 1\n", CodeBlock("x = 1", "py", closed=False)),
        ("```py\nx = 1\n\n", CodeBlock("x = 1\n", "py", closed=False)),
        ("```py", CodeBlock("", "py", closed=False)),
        ("````\n```\n", CodeBlock("```", "", closed=False)),
    ],
)
def test_a_fence_still_waiting_for_its_closing_line_is_not_closed(markdown: str, block: CodeBlock) -> None:
    assert parse(markdown) == (block,)


def test_indented_text_is_not_code() -> None:
    assert parse("    x = 1") == (paragraph(Text("x = 1")),)


def test_tables_are_text_with_their_inline_markup() -> None:
    assert parse("| a | b |\n|---|---|\n| 1 | **2** |") == (
        paragraph(Text("| a | b |\n|---|---|\n| 1 | "), Style("strong", (Text("2"),)), Text(" |")),
    )


def test_nested_quotes() -> None:
    assert parse("> outer\n>\n> > inner\n>\n> back") == (
        Quote(
            (paragraph(Text("outer")), Quote((paragraph(Text("inner")),), gap=True), paragraph(Text("back"), gap=True))
        ),
    )


def test_list_items_hold_their_blocks() -> None:
    assert parse("- a\n- b\n  > q") == (
        ListBlock(
            (
                ListItem("•", (paragraph(Text("a")),)),
                ListItem("•", (paragraph(Text("b")), Quote((paragraph(Text("q")),)))),
            )
        ),
    )


def test_ordered_lists_count_from_their_first_number() -> None:
    [block] = parse("3. a\n3. b\n3. c")
    assert markers(block) == ["3.", "4.", "5."]
    [block] = parse("9) a\n1) b")
    assert markers(block) == ["9)", "10)"]


def test_nested_lists_are_indented_two_spaces_a_level() -> None:
    [block] = parse("1. one\n2. two\n   - sub\n     1. deep\n     2. deeper\n   - sub2\n3. three")
    assert markers(block) == ["1.", "2.", "  •", "    1.", "    2.", "  •", "3."]


def test_a_list_that_opens_its_item_starts_on_the_item_line() -> None:
    [block] = parse("- - x\n  - y")
    assert markers(block) == ["•", "•", "  •"]
    [block] = parse("- > - x\n  > - y")
    assert markers(block) == ["•", "•", "  •"]


def test_blank_lines_between_blocks_are_recorded_once() -> None:
    assert parse("a\n\n\n\nb\nc\n# T\n> q\n\n- i") == (
        paragraph(Text("a")),
        paragraph(Text("b\nc"), gap=True),
        Heading((Text("T"),)),
        Quote((paragraph(Text("q")),)),
        ListBlock((ListItem("•", (paragraph(Text("i")),)),), gap=True),
    )


def test_a_blank_line_after_a_nested_list_counts_before_the_next_block() -> None:
    """markdown-it's map of the nested list covers the blank line; the gap must still be seen."""
    [block] = parse("1. a\n2. b\n   - c\n\n   d")
    assert isinstance(block, ListBlock)
    assert [child.gap for child in block.items[1].children] == [False, False, True]


def test_loose_list_items_are_spaced() -> None:
    [block] = parse("- a\n\n- b\n- c")
    assert isinstance(block, ListBlock)
    assert [item.gap for item in block.items] == [False, True, False]


def test_join_keeps_blank_lines_only_where_the_source_had_them() -> None:
    blocks = (Rule(), Rule(gap=True), Rule(), Rule())
    assert join(blocks, lambda block: "—") == "—\n\n—\n—\n—"
    assert join((), lambda block: "—") == ""


def test_join_items_puts_each_body_after_its_marker() -> None:
    block = ListBlock((ListItem("•", (Rule(), Rule())), ListItem("  2.", ()), ListItem("3.", (Rule(),), gap=True)))
    assert join_items(block, lambda blocks: "x" * len(blocks)) == "• xx\n  2.\n\n3. x"


def test_prefix_lines_marks_every_line_including_blank_ones() -> None:
    assert prefix_lines("a\n\nb", "> ") == "> a\n> \n> b"


PLAIN_LINES = [
    "echo: hello 17",
    "Sure! It is 4 (2+2), see https://e.org/a-b?c=d#e.",
    "Ja, gern. Héllo 😀 — 100% sure; a|b {c} \"quoted\" 'too'",
    "a-b +c =d #e >f 1. 2) g",
    "tab\tinside",
]
"""One plain line each: its own paragraph, however much punctuation it has."""

NEAR_MISSES = [
    "# heading",
    "> quote",
    "- item",
    "+ item",
    "1. item",
    "2) item",
    "---",
    "===",
    " lead",
    "trail ",
    "a\nb",
    "a\rb",
    "*em*",
    "_em_",
    "`c`",
    "~~s~~",
    "[l](https://e.org)",
    "<https://e.org>",
    "&amp;",
    "a\\*b",
    "\u00a0nbsp",
    "nbsp\u00a0",
    "a\x00b",
    "\u3000wide",
]
"""Lines that markdown-it reads as something else than themselves, or alters."""


@pytest.mark.parametrize("line", PLAIN_LINES + NEAR_MISSES)
def test_a_plain_line_parses_as_markdown_it_reads_it(line: str) -> None:
    assert parse(line) == parse_with_markdown_it(line)


@pytest.mark.parametrize("line", PLAIN_LINES)
def test_a_plain_line_is_one_paragraph_of_itself(line: str) -> None:
    assert parse(line) == (paragraph(Text(line)),)


def test_short_lines_parse_as_markdown_it_reads_them() -> None:
    """Random short lines, mostly words, with every ASCII punctuation mark, whitespace of several
    kinds and a few non-ASCII letters: whatever shortcut ``parse`` takes, the blocks are the same."""
    alphabet = string.ascii_letters * 4 + string.digits + string.punctuation + " \t\n\r\x0b\x0c\x00\u00a0\u2028éß😀"
    rng = random.Random(15)
    lines = ["".join(rng.choices(alphabet, k=rng.randint(1, 14))) for _ in range(4_000)]
    differing = [line for line in lines if parse(line) != parse_with_markdown_it(line)]
    assert differing == []
    one_paragraph = [line for line in lines if parse(line) == (paragraph(Text(line)),)]
    assert len(one_paragraph) > 1_000, "the lines must include many plain ones, or the shortcut goes untested"
