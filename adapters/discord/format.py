"""The model's text for Discord, which renders Markdown itself: only mentions are defused.

The adapter sends with ``AllowedMentions.none()``, so nothing can ping anyone; this makes sure nothing
the model writes *looks* like a ping either, or becomes one if that setting ever changes. A zero-width
space (U+200B) goes after the ``@`` of ``@everyone`` and ``@here`` and after the ``<`` of ``<@id>``,
``<@!id>``, ``<@&id>`` and ``<#id>``: Discord no longer reads a mention there, and the reader sees the
same characters. Each one adds a character to the message.

Code is left alone: a mention shown as code is harmless, and changing it would change the code.
What counts as code is what Discord shows as code, so it is found with Discord's own rules rather
than CommonMark's (``adapters.markdown``): Discord has no ``~~~`` fences and no indented code, and
it shows a fence that is never closed as plain text, where a mention would look live.
"""

from __future__ import annotations

import re

ZERO_WIDTH_SPACE = "\u200b"

_CODE = re.compile(
    r"""
      \\[^0-9A-Za-z\s]                       # a backslash escape: text, and no code starts at its backtick
    | (?P<code>
          ```.+?```                          # a block: from ``` to the next ```
        | (?P<run>`+).*?[^`](?P=run)(?!`)    # a span: a run of backticks to the next run as long
      )
    """,
    re.DOTALL | re.VERBOSE,
)
_MENTION = re.compile(r"@(?=everyone|here)|<(?=@[!&]?\d+>|#\d+>)")


def to_discord(text: str) -> str:
    """``text`` unchanged but for a zero-width space in every mention outside code."""
    parts: list[str] = []
    done = 0
    for match in _CODE.finditer(text):
        if match.group("code") is not None:
            parts += [_defuse(text[done : match.start()]), match.group()]
            done = match.end()
    parts.append(_defuse(text[done:]))
    return "".join(parts)


def _defuse(prose: str) -> str:
    return _MENTION.sub(lambda match: match.group() + ZERO_WIDTH_SPACE, prose)
