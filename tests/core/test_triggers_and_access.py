"""Triggers, command parsing, session keys and the access policy: pure decisions, no I/O."""

from __future__ import annotations

import pytest

from core.access import AccessPolicy
from core.events import IncomingMessage
from core.sessions import key_matches, session_key
from core.settings import AccessSettings, BotSettings, SessionScope
from core.store import AccessDecision
from core.triggers import CommandName, address, reset_commands
from tests.kit.engine import group, private

BOT = BotSettings(reset_commands=["/reset", "!forget"], group_prefixes=["!ai", "bot,"])


def test_private_messages_always_trigger() -> None:
    addressed = address(private("hello"), BOT)
    assert addressed is not None and addressed.text == "hello" and addressed.command is None


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (group("<@U1> hi there", mentioned=True, mention_texts=("<@U1>",)), "hi there"),
        (group("hi @bot, how are you", mentioned=True, mention_texts=("@bot",)), "hi , how are you"),
        (group("go on", reply_to_bot=True), "go on"),
        (group("!ai: tell me"), "tell me"),
        (group("BOT, what now"), "what now"),
    ],
)
def test_group_triggers_strip_mention_and_prefix(message: IncomingMessage, text: str) -> None:
    addressed = address(message, BOT)
    assert addressed is not None
    assert addressed.text == text


@pytest.mark.parametrize("text", ["just talking", "!aim higher", "mention @bot as text only"])
def test_group_messages_not_for_the_bot_are_ignored(text: str) -> None:
    assert address(group(text), BOT) is None


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("/reset", CommandName.RESET, ()),
        ("/NEW", CommandName.RESET, ()),
        ("!forget", CommandName.RESET, ()),
        ("/help", CommandName.HELP, ()),
        ("/id", CommandName.ID, ()),
        ("/admin clear all", CommandName.ADMIN, ("clear", "all")),
    ],
)
def test_commands_trigger_in_groups_without_mention(text: str, name: CommandName, args: tuple[str, ...]) -> None:
    addressed = address(group(text), BOT)
    assert addressed is not None and addressed.command is not None
    assert (addressed.command.name, addressed.command.args) == (name, args)


def test_unknown_slash_words_are_not_commands() -> None:
    assert address(group("/weather today"), BOT) is None
    addressed = address(private("/weather today"), BOT)
    assert addressed is not None and addressed.command is None


def test_reset_commands_are_built_in_plus_configured() -> None:
    assert reset_commands(BOT) == ["/reset", "/new", "!forget"]


def test_session_keys_and_matching() -> None:
    assert session_key(private("x", user="slack:U1"), SessionScope.USER) == "slack:U1"
    assert session_key(group("x", chat="slack:C1", thread_id="17"), SessionScope.CHAT) == "slack:C1"
    assert session_key(group("x", chat="slack:C1", thread_id="17"), SessionScope.THREAD) == "slack:C1/thread:17"
    key = session_key(group("x", user="slack:U1", chat="slack:C1"), SessionScope.USER)
    assert key == "slack:C1/user:slack:U1"
    assert key_matches(key, "slack:U1") and key_matches(key, "slack:C1") and key_matches(key, key)
    assert not key_matches(key, "slack:U2")
    assert not key_matches("slack:C1/thread:17", "slack:C")


def _policy(**values: object) -> AccessPolicy:
    return AccessPolicy(AccessSettings.model_validate(values))


def test_open_bridge_allows_everyone_but_the_denied() -> None:
    policy = _policy(deny_users=["telegram:6"])
    assert policy.allows("telegram:1", "telegram:-1", private=False, overrides={})
    assert not policy.allows("telegram:6", "telegram:6", private=True, overrides={})


def test_runtime_decisions_override_the_configuration() -> None:
    policy = _policy(allow_users=["telegram:1"], deny_users=["telegram:6"])
    overrides = {"telegram:6": AccessDecision.ALLOW, "telegram:1": AccessDecision.DENY}
    assert policy.allows("telegram:6", "telegram:6", private=True, overrides=overrides)
    assert not policy.allows("telegram:1", "telegram:1", private=True, overrides=overrides)


def test_runtime_allow_does_not_close_an_open_bridge() -> None:
    policy = _policy()
    overrides = {"telegram:1": AccessDecision.ALLOW}
    assert policy.allows("telegram:2", "telegram:2", private=True, overrides=overrides)


def test_a_denied_chat_silences_everyone_in_it_but_not_their_private_chats() -> None:
    policy = _policy()
    overrides = {"telegram:-9": AccessDecision.DENY}
    assert not policy.allows("telegram:1", "telegram:-9", private=False, overrides=overrides)
    assert policy.allows("telegram:1", "telegram:1", private=True, overrides=overrides)


def test_admins_pass_allow_lists_but_deny_wins() -> None:
    policy = _policy(admins=["telegram:9"], allow_users=["telegram:1"], allow_chats=["telegram:-1"])
    assert policy.allows("telegram:9", "telegram:-5", private=False, overrides={})
    assert not policy.allows("telegram:9", "telegram:-5", private=False, overrides={"telegram:9": AccessDecision.DENY})
    assert not policy.allows("telegram:1", "telegram:-5", private=False, overrides={})
    assert policy.allows("telegram:1", "telegram:1", private=True, overrides={})
