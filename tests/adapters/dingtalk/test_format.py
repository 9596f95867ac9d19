"""DingTalk's markdown from the model's Markdown: what DingTalk's clients show, checked per construct."""

from __future__ import annotations

import pytest

from adapters.dingtalk.format import HARD_BREAK, title, to_dingtalk


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and *soft*", "**bold** and *soft*"),
        ("~~struck~~ text", "struck text"),
        ("line one\nline two", f"line one{HARD_BREAK}line two"),
        ("# Title\nbody", "### Title\n\nbody"),
        ("- a\n- b\n  - c", "- a\n- b\n  - c"),
        ("1. x\n1. y", "1. x\n2. y"),
        ("> quoted\n> more", f"> quoted{HARD_BREAK}> more"),
        ("[docs](https://example.com/a?b=1)", "[docs](https://example.com/a?b=1)"),
        ("[click](javascript:alert(1))", "click"),
        ("```python\nx = 1\n\ny = 2\n```", "```python\nx = 1\n\ny = 2\n```"),
        ("`a*b*c`", "`a*b*c`"),
        ("para one\n\npara two", "para one\n\npara two"),
        ("a\n\n---\n\nb", "a\n\n---\n\nb"),
    ],
)
def test_markdown_becomes_dingtalk_markdown(markdown: str, expected: str) -> None:
    assert to_dingtalk(markdown) == expected


def test_a_code_block_still_streaming_stays_open() -> None:
    assert to_dingtalk("```js\nlet a") == "```js\nlet a"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("## Result\nbody", "Result"),
        ("\n\n**Bold** start", "Bold start"),
        ("x" * 40, "x" * 29 + "…"),
        ("", "…"),
    ],
)
def test_the_title_is_the_first_line_of_plain_text(markdown: str, expected: str) -> None:
    assert title(markdown) == expected
