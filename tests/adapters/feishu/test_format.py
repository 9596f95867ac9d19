"""Card markdown from the model's Markdown, checked per construct."""

from __future__ import annotations

import json

import pytest

from adapters.feishu.format import card, to_card_markdown


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold**, *soft* and ~~struck~~", "**bold**, *soft* and ~~struck~~"),
        ("# Title\nbody", "**Title**\nbody"),
        ("- a\n- b", "- a\n- b"),
        ("3. x\n4. y", "3. x\n4. y"),
        ("[docs](https://example.com)", "[docs](https://example.com)"),
        ("[x](javascript:alert(1))", "x"),
        ("<at id=all></at> & <font color=red>", "&lt;at id=all&gt;&lt;/at&gt; &amp; &lt;font color=red&gt;"),
        ("```html\n<b>kept</b>\n```", "```html\n<b>kept</b>\n```"),
        ("`a<b`", "`a<b`"),
        ("> quoted", "> quoted"),
        ("a\n\n---\n\nb", "a\n\n---\n\nb"),
    ],
)
def test_markdown_becomes_card_markdown(markdown: str, expected: str) -> None:
    assert to_card_markdown(markdown) == expected


def test_the_card_holds_the_markdown_and_updates_for_everyone() -> None:
    shown = json.loads(card("**hi**"))
    assert shown["config"]["update_multi"] is True
    assert shown["elements"] == [{"tag": "markdown", "content": "**hi**"}]
