"""WeChat's plain text, rendered from the shared Markdown tree."""

from __future__ import annotations

from adapters.wechat.format import to_plain


def test_markers_go_and_their_meaning_stays_readable() -> None:
    markdown = (
        "# Title\n\nSome **bold**, _em_, ~~gone~~ and `code`.\n\n- one\n- two\n  1. nested\n\n"
        "> quoted\n\n```python\nprint('x')\n```\n\n---\n\n[docs](https://example.com) <https://example.com/a>"
    )
    assert to_plain(markdown) == (
        "Title\n\nSome bold, em, gone and code.\n\n• one\n• two\n  1. nested\n\n> quoted\n\nprint('x')\n\n"
        "———\n\ndocs (https://example.com) https://example.com/a"
    )


def test_unsafe_links_keep_only_their_text() -> None:
    assert to_plain("[click](javascript:alert(1))") == "click"


def test_text_without_markup_is_unchanged() -> None:
    assert to_plain("你好，世界\n第二行") == "你好，世界\n第二行"
