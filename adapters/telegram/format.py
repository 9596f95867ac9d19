"""The model's Markdown as Telegram HTML.

HTML rather than MarkdownV2: MarkdownV2 makes a dozen punctuation characters special, so one missed
escape rejects the whole message, while HTML needs only ``& < >`` escaped. The conversion never adds
visible characters (markers and fence lines disappear, ``- `` bullets become ``• ``), so a chunk cut to
``max_message_chars`` of Markdown stays within Telegram's limit, which counts text *after* entity
parsing. Anything this does not recognise, or a half-written span while a reply is still streaming,
is shown literally; if Telegram still rejects the result the channel resends the plain text.
"""

from __future__ import annotations

import re
from html import escape

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?(.*)$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(?=\S)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
# Applied in order to text that is already HTML-escaped; each span's content must start and end with
# a non-blank, as in Markdown, so "2 * 3 * 4" and snake_case words stay as they are.
_INLINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\[([^\]\n]+)\]\(((?:https?|tg|mailto):[^\s)]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"<b>\1</b>"),
    (re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"), r"<b>\1</b>"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"<s>\1</s>"),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n<>]+?)(?<=\S)\*(?![\w*])"), r"<i>\1</i>"),
    (re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n<>]+?)(?<=\S)_(?![\w_])"), r"<i>\1</i>"),
)


def markdown_to_html(text: str) -> str:
    """Telegram HTML for ``text``: code blocks, inline code, bold, italic, strikethrough, links,
    headings (as bold), block quotes and bullets. A code block still open at the end (a reply being
    streamed) is closed, so the partial message already shows as code."""
    out: list[str] = []
    prose: list[str] = []
    lines = text.replace("\x00", "").split("\n")
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            prose.append(lines[index])
            index += 1
            continue
        out.extend(_prose(prose))
        prose = []
        end = _closing_line(lines, index + 1, fence.group(1))
        out.append(_code_block(lines[index + 1 : end], fence.group(2)))
        index = end + 1
    out.extend(_prose(prose))
    return "\n".join(out)


def _closing_line(lines: list[str], start: int, marker: str) -> int:
    """Index of the line closing a block opened with ``marker``, or ``len(lines)`` if none does."""
    for index in range(start, len(lines)):
        stripped = lines[index].strip()
        if stripped.startswith(marker) and stripped == stripped[0] * len(stripped):
            return index
    return len(lines)


def _code_block(lines: list[str], language: str) -> str:
    body = escape("\n".join(lines), quote=False)
    if language:
        return f'<pre><code class="language-{escape(language)}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def _prose(lines: list[str]) -> list[str]:
    """Block-level Markdown line by line; consecutive quoted lines become one block quote."""
    out: list[str] = []
    quoted: list[str] = []
    for line in lines:
        quote = _QUOTE.match(line)
        if quote is not None:
            quoted.append(_inline(quote.group(1)))
            continue
        if quoted:
            out.append(_blockquote(quoted))
            quoted = []
        out.append(_line(line))
    if quoted:
        out.append(_blockquote(quoted))
    return out


def _blockquote(lines: list[str]) -> str:
    return "<blockquote>" + "\n".join(lines) + "</blockquote>"


def _line(line: str) -> str:
    heading = _HEADING.match(line)
    if heading is not None:
        return f"<b>{_inline(heading.group(1))}</b>"
    return _inline(_BULLET.sub(r"\1• ", line, count=1))


def _inline(text: str) -> str:
    """Inline spans; code spans are set aside first so nothing inside them is touched."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(f"<code>{escape(match.group(2).strip() or match.group(2), quote=False)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    html = escape(_CODE_SPAN.sub(keep_code, text))
    for pattern, replacement in _INLINE:
        html = pattern.sub(replacement, html)
    return _PLACEHOLDER.sub(lambda match: codes[int(match.group(1))], html)
