"""Decide whether a message is addressed to the bot, and what it asks: a command or a prompt.

Adapters report *that* the bot was mentioned and the literal mention strings; this module removes
them (and a configured prefix) so the model sees only what the person wrote to it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from core.events import IncomingMessage
from core.settings import BotSettings

BUILTIN_RESET_COMMANDS = ("/reset", "/new")


class CommandName(StrEnum):
    RESET = "reset"
    HELP = "help"
    ID = "id"
    MODEL = "model"
    PERSONA = "persona"
    INSTRUCTIONS = "instructions"
    USAGE = "usage"
    ADMIN = "admin"


_FIXED_COMMANDS = {f"/{name.value}": name for name in CommandName if name is not CommandName.RESET}


@dataclass(frozen=True, slots=True)
class Command:
    """``args`` are the words after the command; ``rest`` is everything after it as written, line
    breaks included (``/instructions`` stores it as it is)."""

    name: CommandName
    args: tuple[str, ...]
    rest: str = ""


@dataclass(frozen=True, slots=True)
class Addressed:
    """A message meant for the bot: ``command`` when it is one, otherwise ``text`` is the prompt."""

    text: str
    command: Command | None


def reset_commands(bot: BotSettings) -> list[str]:
    """The built-in reset commands plus the configured ones, without repeats, in a stable order."""
    return list(_reset_commands(tuple(bot.reset_commands)))


def _reset_commands(configured: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*BUILTIN_RESET_COMMANDS, *configured]))


def address(message: IncomingMessage, bot: BotSettings) -> Addressed | None:
    """None when the bot should stay silent: a group message that does not address it."""
    text = _strip_mentions(message.text, message.mention_texts)
    command = parse_command(text, bot)
    if command is not None:
        return Addressed(text=text, command=command)
    text, had_prefix = _strip_prefix(text, bot.group_prefixes)
    addressed = message.is_private or message.mentioned or message.reply_to_bot or had_prefix
    return Addressed(text=text, command=None) if addressed else None


def parse_command(text: str, bot: BotSettings) -> Command | None:
    # Only the first word decides, and most messages are prompts: the rest is split only for a command.
    parts = text.split(None, 1)
    if not parts:
        return None
    head = parts[0].lower()
    name = CommandName.RESET if head in _reset_heads(tuple(bot.reset_commands)) else _FIXED_COMMANDS.get(head)
    if name is None:
        return None
    rest = parts[1].strip() if len(parts) > 1 else ""
    return Command(name, tuple(rest.split()), rest)


@functools.lru_cache(maxsize=8)
def _reset_heads(configured: tuple[str, ...]) -> frozenset[str]:
    """What a message's first word is looked up in: made once per configuration, not per message."""
    return frozenset(command.lower() for command in _reset_commands(configured))


def _strip_mentions(text: str, mentions: tuple[str, ...]) -> str:
    """Remove each mention with the blanks around it, leaving the rest of the text (and its line
    breaks, which matter in code) untouched."""
    for mention in mentions:
        text = re.sub(rf"[ \t]*{re.escape(mention)}[ \t]*", " ", text)
    return text.strip()


def _strip_prefix(text: str, prefixes: list[str]) -> tuple[str, bool]:
    """A prefix counts only as a whole word, so "!ai" does not fire on "!airplane"."""
    lowered = text.lower()
    for prefix in prefixes:
        if lowered.startswith(prefix.lower()):
            rest = text[len(prefix) :]
            if not rest or not rest[0].isalnum():
                return rest.lstrip(" \t\n:,"), True
    return text, False
