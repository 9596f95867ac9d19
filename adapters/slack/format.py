"""The model's Markdown rewritten as Slack's mrkdwn, which is a different dialect, not a subset.

Slack reads ``*x*`` as bold (Markdown's italics), has no headings, writes links as ``<url|text>``
and needs ``&``, ``<`` and ``>`` escaped everywhere, code included. Code is otherwise left exactly
as written; a fence's language tag is dropped because Slack would show it as the first code line.
The conversion works on any prefix of a reply (the renderer streams growing text through it), so it
never needs the whole text: unclosed markup simply stays as it is.
"""

from __future__ import annotations

import re

# Fenced blocks (closed, or still open at the end of a streamed prefix) and inline code spans.
_CODE = re.compile(r"(^[ \t]*(`{3,}|~{3,})[^\n]*\n?.*?(?:^[ \t]*\2[ \t]*$|\Z))|(`[^`\n]+`)", re.MULTILINE | re.DOTALL)
_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})[^\n]*")
_FENCE_CLOSE = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*$", re.MULTILINE)

_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+", re.MULTILINE)
_LINK = re.compile(r"!?\[([^\]\n]+)\]\((https?://[^)\s]+|mailto:[^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
# A private-use character marks bold while italics are converted, so neither pass sees the other's stars.
_BOLD_MARK = "\ue000"


def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to mrkdwn, keeping code verbatim apart from the escaping Slack requires."""
    parts: list[str] = []
    done = 0
    for match in _CODE.finditer(markdown):
        parts.append(_prose(markdown[done : match.start()]))
        parts.append(_code(match.group(0)))
        done = match.end()
    parts.append(_prose(markdown[done:]))
    return "".join(parts)


def escape(text: str) -> str:
    """The three characters Slack treats as markup in any text it receives."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(block: str) -> str:
    if not block.startswith("`") or block.startswith("```"):
        block = _FENCE_OPEN.sub(r"\1```", block, count=1)
        block = _FENCE_CLOSE.sub(r"\1```", block)
    return escape(block)


def _prose(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match[str]) -> str:
        links.append(f"<{escape(match.group(2))}|{escape(match.group(1))}>")
        return f"\ue001{len(links) - 1}\ue001"

    text = _LINK.sub(keep_link, text)
    text = escape(text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _BULLET.sub(r"\1• ", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return re.sub("\ue001(\\d+)\ue001", lambda m: links[int(m.group(1))], text)
