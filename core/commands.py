"""The chat commands of design section 4, the same on every platform.

Admin commands check the caller's ``platform:id`` against the access policy before anything else;
a refused admin command changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core import texts
from core.access import AccessPolicy
from core.events import IncomingMessage
from core.identities import identity_problem
from core.sessions import key_matches
from core.settings import BotSettings, SessionSettings
from core.store import AccessDecision, Store
from core.triggers import Command, CommandName, reset_commands
from core.usage import RunningTotals, describe

SESSIONS_LISTED = 50
STATS_DAYS = 7

ClearSession = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One entry of the command list that platforms show in their menus.

    ``name`` has no slash and is lower case; ``args_hint`` describes the arguments of a command that
    takes any (empty: none), for platforms whose menus declare parameters.
    """

    name: str
    description: str
    admin_only: bool = False
    args_hint: str = ""


def command_list(bot: BotSettings) -> tuple[CommandSpec, ...]:
    """Every command a user can send, the configured reset commands included, each name once."""
    described = texts.COMMAND_DESCRIPTIONS
    resets = [CommandSpec(name.removeprefix("/").lower(), described["reset"]) for name in reset_commands(bot)]
    fixed = [
        CommandSpec("help", described["help"]),
        CommandSpec("id", described["id"]),
        CommandSpec("admin", described["admin"], admin_only=True, args_hint=texts.ADMIN_ARGS_HINT),
    ]
    unique: dict[str, CommandSpec] = {}
    for spec in (*resets, *fixed):
        unique.setdefault(spec.name, spec)
    return tuple(unique.values())


@dataclass(frozen=True, slots=True)
class CommandContext:
    message: IncomingMessage
    session_key: str
    is_admin: bool


class Commands:
    """Answers commands; ``clear_session`` is the engine's lease-holding clear, so a reset waits for
    an in-flight reply of that session instead of racing it."""

    def __init__(
        self,
        *,
        store: Store,
        access: AccessPolicy,
        bot: BotSettings,
        session: SessionSettings,
        totals: RunningTotals,
        clear_session: ClearSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._access = access
        self._bot = bot
        self._session = session
        self._totals = totals
        self._clear_session = clear_session
        self._clock = clock

    async def run(self, command: Command, ctx: CommandContext) -> str:
        match command.name:
            case CommandName.RESET:
                cleared = await self._clear_session(ctx.session_key)
                return texts.SESSION_CLEARED if cleared else texts.SESSION_WAS_EMPTY
            case CommandName.HELP:
                return texts.help_text(
                    reset_commands(self._bot),
                    is_admin=ctx.is_admin,
                    in_group=not ctx.message.is_private,
                    prefixes=self._bot.group_prefixes,
                )
            case CommandName.ID:
                return texts.identity_card(ctx.message.user_id, ctx.message.chat_id, ctx.session_key)
            case CommandName.ADMIN:
                if not ctx.is_admin:
                    return texts.ADMIN_ONLY
                return await self._admin(command.args)

    async def _admin(self, args: tuple[str, ...]) -> str:
        match args:
            case ("sessions",):
                return await self._list_sessions()
            case ("clear", "all"):
                return await self._clear_matching(lambda key: True)
            case ("clear", target):
                problem = identity_problem(target.partition("/")[0])
                if problem is not None:
                    return texts.not_an_identity(problem)
                return await self._clear_matching(lambda key: key_matches(key, target))
            case ("allow" | "deny" as verb, identity):
                return await self._set_access(identity, AccessDecision(verb))
            case ("stats",):
                return await self._stats()
            case _:
                return texts.ADMIN_USAGE

    async def _active_sessions(self) -> list[tuple[str, float, int]]:
        now = self._clock()
        sessions = await self._store.list_sessions()
        active = [
            (info.key, now - info.last_active, info.turn_count)
            for info in sessions
            if now - info.last_active <= self._session.timeout_s
        ]
        return sorted(active, key=lambda row: row[1])

    async def _list_sessions(self) -> str:
        active = await self._active_sessions()
        if not active:
            return texts.NO_ACTIVE_SESSIONS
        lines = [f"{key}: {turns} messages, idle {idle:.0f}s" for key, idle, turns in active[:SESSIONS_LISTED]]
        return texts.sessions_list(lines, len(active))

    async def _clear_matching(self, matches: Callable[[str], bool]) -> str:
        keys = [info.key for info in await self._store.list_sessions() if matches(info.key)]
        count = 0
        for key in keys:
            count += await self._clear_session(key)
        return texts.CLEARED_SESSIONS.format(count=count, plural="" if count == 1 else "s")

    async def _set_access(self, identity: str, decision: AccessDecision) -> str:
        problem = identity_problem(identity)
        if problem is not None:
            return texts.not_an_identity(problem)
        if decision is AccessDecision.DENY and self._access.is_configured_admin(identity):
            return texts.CANNOT_DENY_ADMIN.format(identity=identity)
        await self._store.set_access(identity, decision)
        done = texts.ACCESS_ALLOWED if decision is AccessDecision.ALLOW else texts.ACCESS_DENIED
        return done.format(identity=identity)

    async def _stats(self) -> str:
        days = await self._store.usage_by_day(STATS_DAYS)
        return texts.stats_text(describe(self._totals), [f"{d.day}: {describe(d)}" for d in days])
