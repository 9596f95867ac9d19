"""Discord text: Markdown passes through, mentions outside code are defused."""

from __future__ import annotations

import pytest

from adapters.discord.format import to_discord

ZWSP = "\u200b"

MENTIONS = ["@everyone", "@here", "<@123>", "<@!123>", "<@&123>", "<#123>"]
DEFUSED = [f"@{ZWSP}everyone", f"@{ZWSP}here", f"<{ZWSP}@123>", f"<{ZWSP}@!123>", f"<{ZWSP}@&123>", f"<{ZWSP}#123>"]


@pytest.mark.parametrize(("mention", "defused"), list(zip(MENTIONS, DEFUSED, strict=True)))
def test_each_mention_outside_code_is_defused(mention: str, defused: str) -> None:
    assert to_discord(f"hi {mention}, and **{mention}**") == f"hi {defused}, and **{defused}**"


@pytest.mark.parametrize("mention", MENTIONS)
@pytest.mark.parametrize(
    "template",
    [
        "`{}`",
        "``a ` and {}``",
        "```\n{}\n```",
        "```py\nx = '{}'\n```",
        "before ```{}``` after",
    ],
)
def test_mentions_inside_code_are_left_alone(template: str, mention: str) -> None:
    assert to_discord(template.format(mention)) == template.format(mention)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("`<@1>` <@2> `<@3>`", f"`<@1>` <{ZWSP}@2> `<@3>`"),
        ("```\n@here\n``` @here", f"```\n@here\n``` @{ZWSP}here"),
        ("```\n@everyone still streaming", f"```\n@{ZWSP}everyone still streaming"),
        ("~~~\n@everyone\n~~~", f"~~~\n@{ZWSP}everyone\n~~~"),
        ("    @everyone", f"    @{ZWSP}everyone"),
        ("\\`@here\\`", f"\\`@{ZWSP}here\\`"),
        ("\\@everyone \\<@123>", f"\\@{ZWSP}everyone \\<{ZWSP}@123>"),
        ("\\\\`@here`", "\\\\`@here`"),
        ("`@here", f"`@{ZWSP}here"),
    ],
)
def test_code_is_what_discord_shows_as_code(text: str, expected: str) -> None:
    """Discord has no ``~~~`` fences or indented code and shows unclosed or escaped backticks as
    text, so a mention there would look live."""
    assert to_discord(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "**bold** _it_ ~~s~~ > quote\n- item\n[link](https://e.com) <https://e.com> <:emoji:123>",
        "<@abc> <@12 <@ 12> <#x> </cmd:123> user@example.com @someone",
    ],
)
def test_everything_else_passes_through_unchanged(text: str) -> None:
    assert to_discord(text) == text
