"""The chat commands of design section 4, the same on every platform.

Admin commands check the caller's ``platform:id`` against the access policy before anything else;
a refused admin command, and any command with bad input, changes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core import texts
from core.access import AccessPolicy
from core.calendar import BudgetCalendar
from core.choices import Choices
from core.events import IncomingMessage
from core.identities import identity_problem
from core.sessions import key_matches
from core.settings import BotSettings, GroupSettings, LimitsSettings, SessionSettings
from core.store import ALL_SUBJECTS, AccessDecision, ChatSetting, ModelUsage, Store
from core.triggers import Command, CommandName, reset_commands
from core.usage import RunningTotals, describe

SESSIONS_LISTED = 50
STATS_DAYS = 7
_TOKEN_COUNT = re.compile(r"[0-9]{1,3}(?:[,_]?[0-9]{3})*|[0-9]{1,12}")
"""A budget as an admin writes it: 50000, 50,000 or 50_000."""

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
        CommandSpec("model", described["model"], args_hint=texts.MODEL_ARGS_HINT),
        CommandSpec("persona", described["persona"], args_hint=texts.PERSONA_ARGS_HINT),
        CommandSpec("instructions", described["instructions"], args_hint=texts.INSTRUCTIONS_ARGS_HINT),
        CommandSpec("usage", described["usage"]),
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
        limits: LimitsSettings,
        choices: Choices,
        totals: RunningTotals,
        clear_session: ClearSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._access = access
        self._bot = bot
        self._session = session
        self._limits = limits
        self._choices = choices
        self._calendar = BudgetCalendar(limits.zone)
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
                    may_switch=self._may_switch(ctx),
                )
            case CommandName.ID:
                return texts.identity_card(ctx.message.user_id, ctx.message.chat_id, ctx.session_key)
            case CommandName.MODEL | CommandName.PERSONA:
                return await self._choose(ChatSetting(command.name.value), command.args, ctx)
            case CommandName.INSTRUCTIONS:
                return await self._instructions(command.rest, ctx)
            case CommandName.USAGE:
                return await self._usage_report(ctx.message.user_id, chat_id=ctx.message.chat_id)
            case CommandName.ADMIN:
                if not ctx.is_admin:
                    return texts.ADMIN_ONLY
                return await self._admin(command.args)

    # --- models and personas --------------------------------------------------------------------

    def _may_switch(self, ctx: CommandContext) -> bool:
        """Anyone in a private chat; in a group the bridge's admins, or anyone with ``group_settings:
        everyone`` (a platform's group administrators are not the bridge's admins)."""
        return ctx.message.is_private or ctx.is_admin or self._bot.group_settings is GroupSettings.EVERYONE

    async def _choose(self, setting: ChatSetting, args: tuple[str, ...], ctx: CommandContext) -> str:
        chat_id = ctx.message.chat_id
        current = self._choices.of_turn(await self._store.turn_settings(chat_id, ctx.message.user_id))
        is_model = setting is ChatSetting.MODEL
        names = self._choices.model_names if is_model else self._choices.persona_names
        if not args:
            chosen = current.model if is_model else current.persona.name
            rows = [(name, self._describe(setting, name), name == chosen) for name in names]
            hint = f"Switch with /{setting.value} <name>." if self._may_switch(ctx) else ""
            return texts.choice_list("Models" if is_model else "Personas", rows, hint)
        name = args[0].lower()
        if name not in names or len(args) > 1:
            return texts.UNKNOWN_CHOICE.format(what=setting.value, name=" ".join(args), names=", ".join(names))
        if not self._may_switch(ctx):
            return texts.GROUP_SETTINGS_ADMINS_ONLY.format(what=setting.value)
        await self._store.set_chat_setting(chat_id, setting, name)
        return (texts.MODEL_SWITCHED if is_model else texts.PERSONA_SWITCHED).format(name=name)

    def _describe(self, setting: ChatSetting, name: str) -> str:
        if setting is ChatSetting.PERSONA:
            persona = self._choices.persona(name)
            prompt = persona.system.content
            shown = prompt if len(prompt) <= 60 else f"{prompt[:57]}..."
            return shown + (f" (model {persona.model})" if persona.model else "")
        card = self._choices.card(name)
        assert card is not None  # listed from the configured names
        can = [what for what, has in (("images", card.vision), ("tools", card.tools)) if has]
        extra = f", reads {' and '.join(can)}" if can else ""
        priced = card.price_in_per_mtok or card.price_out_per_mtok
        price = f", ${card.price_in_per_mtok:g}/${card.price_out_per_mtok:g} per M tokens in/out" if priced else ""
        return f"{card.served_name}{extra}{price}"

    # --- custom instructions --------------------------------------------------------------------

    async def _instructions(self, text: str, ctx: CommandContext) -> str:
        user_id = ctx.message.user_id
        if not text:
            stored = (await self._store.turn_settings(ctx.message.chat_id, user_id)).instructions
            return texts.INSTRUCTIONS_SHOWN.format(text=stored) if stored else texts.INSTRUCTIONS_NONE
        if text.lower() == "clear":
            await self._store.set_instructions(user_id, "")
            return texts.INSTRUCTIONS_CLEARED
        limit = self._bot.max_instructions_chars
        if len(text) > limit:
            return texts.INSTRUCTIONS_TOO_LONG.format(size=len(text), limit=limit)
        await self._store.set_instructions(user_id, text)
        return texts.INSTRUCTIONS_SET.format(size=len(text))

    # --- usage and budgets ----------------------------------------------------------------------

    def _cost(self, usage: list[ModelUsage]) -> float:
        """Models no longer configured have no known price and count as free."""
        total = 0.0
        for row in usage:
            card = self._choices.card(row.model)
            if card is not None:
                total += card.cost(row.prompt_tokens, row.completion_tokens)
        return total

    def _usage_lines(self, usage: list[ModelUsage]) -> list[str]:
        if not usage:
            return ["  nothing yet"]
        lines = []
        for row in usage:
            card = self._choices.card(row.model)
            priced = card is not None and (card.price_in_per_mtok or card.price_out_per_mtok)
            cost = f", {texts.dollars(card.cost(row.prompt_tokens, row.completion_tokens))}" if card and priced else ""
            total = row.prompt_tokens + row.completion_tokens
            lines.append(
                f"  {row.model}: {texts.tokens(total)} tokens ({texts.tokens(row.prompt_tokens)} in, "
                f"{texts.tokens(row.completion_tokens)} out){cost}"
            )
        if len(usage) > 1:
            lines.append(f"  all models: {texts.dollars(self._cost(usage))}")
        return lines

    async def _used_today(self, subject: str, day: str) -> int:
        newest = await self._store.usage_by_day(1, subject)
        return newest[0].prompt_tokens + newest[0].completion_tokens if newest and newest[0].day == day else 0

    async def _usage_report(self, subject: str, *, chat_id: str | None) -> str:
        """Today's and this month's tokens and cost of ``subject`` per model, then what is left of each
        budget that applies: with ``chat_id`` (the caller's own /usage) the user's, the chat's and the
        bridge's; without (``/admin usage``) the identity's as a user and as a chat."""
        now = self._clock()
        day, month = self._calendar.day_of(now), self._calendar.month_of(now)
        who = "Your" if chat_id is not None else f"{subject}'s"
        lines = [f"{who} usage today ({day}):", *self._usage_lines(await self._store.usage_by_model(day, subject))]
        lines += [f"This month ({month}):", *self._usage_lines(await self._store.usage_by_model(month, subject))]
        limits = self._limits
        identities = [subject] if chat_id is None else [subject, chat_id]
        runtime = await self._store.budgets(identities)
        if chat_id is not None:
            budgets = [
                ("you", subject, runtime.get(subject, limits.user_tokens_per_day)),
                ("this chat", chat_id, runtime.get(chat_id, limits.chat_tokens_per_day)),
                ("the whole bridge", ALL_SUBJECTS, limits.total_tokens_per_day),
            ]
        else:
            budgets = [
                ("as a user", subject, runtime.get(subject, limits.user_tokens_per_day)),
                ("as a chat", subject, runtime.get(subject, limits.chat_tokens_per_day)),
            ]
        left = []
        for label, identity, limit in budgets:
            if limit > 0:
                used = await self._used_today(identity, day)
                left.append(
                    f"  {label}: {texts.tokens(max(limit - used, 0))} of {texts.tokens(limit)} tokens left today"
                )
        if not left:
            return "\n".join([*lines, "No token budget applies."])
        wait = texts.wait_of(self._calendar.next_day_starts(now) - now)
        return "\n".join([*lines, "Budgets:", *left, f"They start afresh at midnight ({limits.timezone}), in {wait}."])

    async def _set_budget(self, identity: str, amount: str) -> str:
        problem = identity_problem(identity)
        if problem is not None:
            return texts.not_an_identity(problem)
        word = amount.lower()
        if word == "default":
            await self._store.set_budget(identity, None)
            return texts.BUDGET_DEFAULT.format(identity=identity)
        if word == "unlimited":
            tokens = 0
        elif _TOKEN_COUNT.fullmatch(amount):
            tokens = int(amount.replace(",", "").replace("_", ""))
        else:
            return texts.BUDGET_USAGE
        await self._store.set_budget(identity, tokens)
        if tokens == 0:
            return texts.BUDGET_UNLIMITED.format(identity=identity)
        return texts.BUDGET_SET.format(identity=identity, tokens=texts.tokens(tokens))

    # --- admin ----------------------------------------------------------------------------------

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
            case ("budget", identity, amount):
                return await self._set_budget(identity, amount)
            case ("budget", *_):
                return texts.BUDGET_USAGE
            case ("usage", identity):
                problem = identity_problem(identity)
                if problem is not None:
                    return texts.not_an_identity(problem)
                return await self._usage_report(identity, chat_id=None)
            case ("usage", *_):
                return texts.ADMIN_USAGE_USAGE
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
        """Per day, with the day's estimated cost from the models' prices."""
        days = await self._store.usage_by_day(STATS_DAYS)
        lines = []
        for totals in days:
            cost = self._cost(await self._store.usage_by_model(totals.day))
            lines.append(f"{totals.day}: {describe(totals)}, {texts.dollars(cost)}")
        month = self._calendar.month_of(self._clock())
        month_cost = texts.dollars(self._cost(await self._store.usage_by_model(month)))
        return texts.stats_text(describe(self._totals), lines) + f"\nThis month ({month}): {month_cost}"
