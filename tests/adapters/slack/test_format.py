"""Slack mrkdwn from the shared Markdown tree."""

from __future__ import annotations

import pytest

from adapters.slack.format import to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("", ""),
        ("**b** *i* ~~s~~ `c` __b2__ _i2_", "*b* _i_ ~s~ `c` *b2* _i2_"),
        ("***both*** **bold *it* bold**", "_*both*_ *bold _it_ bold*"),
        ("**a **b** c** ~~x ~~y~~ z~~", "*a b c* ~x y z~"),
        ("**bold & <b> *it", "**bold &amp; &lt;b&gt; *it"),
        ("<script>alert(1)</script> a > b", "&lt;script&gt;alert(1)&lt;/script&gt; a &gt; b"),
        ("`a & <b> **c**`", "`a &amp; &lt;b&gt; **c**`"),
        ("```python\nif a < b && c:\n    pass\n```", "```\nif a &lt; b &amp;&amp; c:\n    pass\n```"),
        ("text\n```py\nx = 1", "text\n```\nx = 1"),
    ],
)
def test_inline_markup_and_code(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("[click](javascript:alert(1)) me", "click me"),
        ("[x](vbscript:msgbox(1)) [y](data:text/html,hi)", "x y"),
        ("[**bold** and *it*](https://e.com/?a=1&b=2)", "<https://e.com/?a=1&amp;b=2|*bold* and _it_>"),
        ("[a > b](https://e.com/<x>)", "<https://e.com/%3Cx%3E|a &gt; b>"),
        ("<me@e.com>", "<mailto:me@e.com|me@e.com>"),
        ("![diagram](https://e.com/d.png)", "<https://e.com/d.png|diagram>"),
    ],
)
def test_links(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("# Title *x*\ntext", "*Title _x_*\ntext"),
        ("## **Title** and more", "*Title and more*"),
        ("> a\n> **b**", "> a\n> *b*"),
        ("> a\n>\n> > b\n>\n> c", "> a\n> \n> > b\n> \n> c"),
        ("> ```\n> <x>\n> ```", "> ```\n> &lt;x&gt;\n> ```"),
        ("1. one\n2. two\n   - sub\n     1. deep\n- bullet", "1. one\n2. two\n  • sub\n    1. deep\n• bullet"),
        ("4) a\n4) b", "4) a\n5) b"),
        ("---", "———"),
        ("a\n\n\n\nb\nc", "a\n\nb\nc"),
        ("| a | b |\n|---|---|\n| 1 | **2** |", "| a | b |\n|---|---|\n| 1 | *2* |"),
    ],
)
def test_blocks(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_mrkdwn_conversion_keeps_code_and_converts_prose() -> None:
    assert to_mrkdwn("- one\n* two\n~~old~~ __new__") == "• one\n• two\n~old~ *new*"
    assert to_mrkdwn("`**not bold**` and **bold**") == "`**not bold**` and *bold*"
    assert to_mrkdwn("```\nunclosed <code>") == "```\nunclosed &lt;code&gt;"
