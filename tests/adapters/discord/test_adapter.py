"""The Discord adapter end to end: the real discord.py client against the local fake of Discord,
the real engine on a memory store, and the fake model server.

Assertions are on what lands on Discord (the fake's messages and the JSON the bridge posted), what
the model was sent, and what is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord
import pytest
import pytest_asyncio

from adapters.discord.adapter import INTENT_MISSING, TOKEN_REFUSED, DiscordAdapter, _trouble
from adapters.discord.settings import DiscordSettings
from adapters.kit import AdapterStartupError, platform_call
from bots.openai_client import OpenAIChatModel
from chatbridge.config import Config
from chatbridge.http_server import HttpServer
from chatbridge.registry import enabled_adapters
from chatbridge.runtime import stop_adapters
from core import texts
from core.channel import PlatformRateLimited
from core.engine import Engine
from core.stores.memory import MemoryStore
from tests.fakes import discord_api as wire
from tests.fakes.discord_api import BOB, BOT, OTHER_BOT, FakeDiscord
from tests.fakes.fake_model import FakeModel, Reply
from tests.kit.engine import make_engine, model_settings

MENTION = f"<@{wire.BOT_ID}>"


@dataclass
class Bridge:
    """One running bridge: the adapter's ``run`` task, its engine and store, and the fakes."""

    discord: FakeDiscord
    model: FakeModel
    engine: Engine
    store: MemoryStore
    adapter: DiscordAdapter
    task: asyncio.Task[None]

    async def stored(self, key: str) -> list[tuple[str, str]]:
        state = await self.store.load_session(key, 10_000)
        return [(turn.role, turn.content) for turn in state.turns] if state else []

    async def assert_stored(self, key: str, expected: list[tuple[str, str]]) -> None:
        """The engine commits a turn just after its reply lands on Discord, so give it a moment."""
        for _ in range(200):
            if await self.stored(key) == expected:
                return
            await asyncio.sleep(0.01)
        assert await self.stored(key) == expected


StartBridge = Callable[..., Awaitable[Bridge]]


def settings_for(fake: FakeDiscord, **options: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "token": wire.TOKEN,
        "api_base_url": fake.api_base_url,
        "gateway_url": fake.gateway_url,
    }
    return DiscordSettings(**(values | options))


@pytest_asyncio.fixture
async def start_bridge(discord_fake: FakeDiscord, fake_model: FakeModel) -> AsyncIterator[StartBridge]:
    """Starts the bridge with engine section overrides and ``discord=`` adapter options; stops it
    the way ``chatbridge run`` does (``stop_adapters``).

    The model answers in one piece unless ``stream=True``: a streamed reply is edited at most once a
    second on Discord, and most tests are about something else.
    """
    started: list[tuple[Bridge, OpenAIChatModel]] = []

    async def start(discord: dict[str, Any] | None = None, stream: bool = False, **sections: Any) -> Bridge:
        store = MemoryStore()
        await store.open()
        model = OpenAIChatModel(model_settings(fake_model.base_url, stream=stream))
        engine = make_engine(store, model, **sections)
        adapter = DiscordAdapter(settings_for(discord_fake, **(discord or {})))
        task = asyncio.create_task(adapter.run(engine))
        bridge = Bridge(discord_fake, fake_model, engine, store, adapter, task)
        started.append((bridge, model))
        await discord_fake.wait_ready()
        return bridge

    yield start
    for bridge, model in started:
        await stop_adapters({bridge.task: bridge.adapter}, bridge.engine, 2)
        if not bridge.task.cancelled():
            bridge.task.result()
        await model.aclose()
        await bridge.store.close()


# --- private chats --------------------------------------------------------------------------------


async def test_dm_holds_a_multi_turn_conversation(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord

    first = await fake.say("hello there", channel_id=wire.DM_CHANNEL_ID)
    await fake.wait_until(lambda: fake.bot_messages(wire.DM_CHANNEL_ID) == ["echo: hello there"])
    await fake.say("and again", channel_id=wire.DM_CHANNEL_ID)
    await fake.wait_until(lambda: fake.bot_messages(wire.DM_CHANNEL_ID) == ["echo: hello there", "echo: and again"])

    assert fake.bot_posts(wire.DM_CHANNEL_ID)[0]["message_reference"]["message_id"] == first["id"]
    await bridge.assert_stored(
        f"discord:{wire.ALICE_ID}",
        [
            ("user", "hello there"),
            ("assistant", "echo: hello there"),
            ("user", "and again"),
            ("assistant", "echo: and again"),
        ],
    )


# --- guild channels: what triggers --------------------------------------------------------------


async def say_and_wait(
    fake: FakeDiscord, text: str, reply: str, channel_id: int = wire.CHANNEL_ID, **fields: Any
) -> dict[str, Any]:
    """Someone writes; wait until the bridge's answer shows ``reply``; return the message written."""
    message = await fake.say(text, channel_id=channel_id, **fields)
    await fake.wait_until(lambda: reply in fake.bot_messages(channel_id))
    return message


async def then_only_the_sentinel_is_answered(bridge: Bridge, earlier: tuple[str, ...] = ()) -> None:
    """After messages that must stay unanswered, a mention that must be answered: events are
    handled in order, so once its answer is there the earlier ones have been decided. ``earlier``
    are the answers given before the messages under test."""
    await say_and_wait(bridge.discord, f"{MENTION} sentinel", "echo: [alice] sentinel", mentions=(BOT,))
    assert bridge.discord.bot_messages() == [*earlier, "echo: [alice] sentinel"]
    assert bridge.model.user_texts()[len(earlier) :] == ["[alice] sentinel"]


async def test_guild_message_without_a_mention_is_not_answered(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    await bridge.discord.say("just chatting among ourselves")
    await bridge.discord.say("@everyone meeting at noon")  # pings the bot too, but is not for it
    await then_only_the_sentinel_is_answered(bridge)


async def test_guild_mention_is_answered_without_the_mention(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord

    asked = await say_and_wait(fake, f"{MENTION} what is 2+2?", "echo: [alice] what is 2+2?", mentions=(BOT,))

    assert bridge.model.user_texts() == ["[alice] what is 2+2?"]  # the speaker, and no mention
    assert fake.bot_posts()[0]["message_reference"]["message_id"] == asked["id"]
    await bridge.assert_stored(
        f"discord:{wire.CHANNEL_ID}", [("user", "[alice] what is 2+2?"), ("assistant", "echo: [alice] what is 2+2?")]
    )


async def test_mention_of_the_bots_managed_role_triggers(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    await say_and_wait(
        bridge.discord, f"<@&{wire.BOT_ROLE_ID}> hi role", "echo: [alice] hi role", role_mentions=(wire.BOT_ROLE_ID,)
    )
    assert bridge.model.user_texts() == ["[alice] hi role"]


async def test_reply_to_one_of_the_bots_messages_triggers(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord
    await say_and_wait(fake, f"{MENTION} first", "echo: [alice] first", mentions=(BOT,))
    bots_answer = fake.bot_posts()[0]

    await say_and_wait(fake, "and a follow-up", "echo: [alice] and a follow-up", reply_to=bots_answer)
    await fake.say("a reply to a person is not for the bot", reply_to=await fake.say("hi", author=BOB))
    await then_only_the_sentinel_is_answered(bridge, ("echo: [alice] first", "echo: [alice] and a follow-up"))


async def test_text_commands_work_in_a_guild_without_a_mention(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    await say_and_wait(bridge.discord, f"{MENTION} remember this", "echo: [alice] remember this", mentions=(BOT,))
    await say_and_wait(bridge.discord, "/reset", "Conversation cleared. Let's start fresh.")
    assert await bridge.stored(f"discord:{wire.CHANNEL_ID}") == []


# --- threads ------------------------------------------------------------------------------------


async def test_a_thread_is_its_own_session_and_replies_stay_in_it(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(session={"scope": "thread"})
    fake = bridge.discord

    await say_and_wait(
        fake, f"{MENTION} in the thread", "echo: [alice] in the thread", channel_id=wire.THREAD_ID, mentions=(BOT,)
    )

    assert fake.bot_messages(wire.CHANNEL_ID) == []
    key = f"discord:{wire.CHANNEL_ID}/thread:{wire.THREAD_ID}"
    await bridge.assert_stored(key, [("user", "[alice] in the thread"), ("assistant", "echo: [alice] in the thread")])
    assert await bridge.stored(f"discord:{wire.CHANNEL_ID}") == []


async def test_auto_thread_answers_in_a_thread_that_keeps_the_conversation(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(discord={"auto_thread": True}, session={"scope": "thread"})
    fake = bridge.discord

    asked = await fake.say(f"{MENTION} plan a trip", mentions=(BOT,))
    thread_id = int(asked["id"])
    await fake.wait_until(lambda: fake.bot_messages(thread_id) == ["echo: [alice] plan a trip"])
    assert fake.calls_to("POST", f"/messages/{thread_id}/threads")[0].body["name"] == "@chatbridge plan a trip"
    await say_and_wait(fake, f"{MENTION} to Rome", "echo: [alice] to Rome", channel_id=thread_id, mentions=(BOT,))

    assert fake.bot_messages(wire.CHANNEL_ID) == []
    await bridge.assert_stored(
        f"discord:{wire.CHANNEL_ID}/thread:{thread_id}",
        [
            ("user", "[alice] plan a trip"),
            ("assistant", "echo: [alice] plan a trip"),
            ("user", "[alice] to Rome"),
            ("assistant", "echo: [alice] to Rome"),
        ],
    )
    assert len(fake.calls_to("POST", "/threads")) == 1


async def test_auto_thread_without_permission_answers_in_the_channel(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(discord={"auto_thread": True})
    bridge.discord.may_create_threads = False

    asked = await say_and_wait(bridge.discord, f"{MENTION} hello", "echo: [alice] hello", mentions=(BOT,))

    assert bridge.discord.bot_posts()[0]["message_reference"]["message_id"] == asked["id"]
    assert len(bridge.discord.calls_to("POST", "/threads")) == 1  # tried once, not again for the message


# --- what the bridge posts ----------------------------------------------------------------------


async def test_long_streamed_reply_is_split_without_breaking_the_code_block(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(stream=True)
    fake = bridge.discord
    code = "\n".join(f"    print('line {i}')" for i in range(120))
    answer = f"Here is the script:\n\n```python\n{code}\n```\n\nThat is all."
    assert len(answer) > 2000
    bridge.model.script(Reply(text=answer, chunk_chars=400))

    await fake.say(f"{MENTION} write a long script", mentions=(BOT,))
    # Earlier messages are finished before a later one is sent, so the last one ending is the end.
    await fake.wait_until(lambda: fake.bot_messages()[-1:] != [] and fake.bot_messages()[-1].endswith("That is all."))

    messages = fake.bot_messages()
    assert len(messages) == 3
    assert all(len(text) <= 2000 for text in messages)
    # The prose before the block goes alone; the block is closed at the cut and reopened after it.
    assert messages[0] == "Here is the script:"
    assert [text.count("```") for text in messages] == [0, 2, 2]
    assert messages[1].startswith("```python\n") and messages[2].startswith("```python\n")
    shown = "\n".join(messages)
    assert all(shown.count(f"print('line {i}')") == 1 for i in range(120))
    assert fake.calls_to("POST", f"/channels/{wire.CHANNEL_ID}/typing")
    assert fake.calls_to("PATCH", f"/channels/{wire.CHANNEL_ID}/messages")  # it was streamed by editing


async def test_model_output_never_pings_anyone(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(stream=True)
    fake = bridge.discord
    tail = " and more" * 30  # long enough to be shown while it streams, so it is sent and then edited
    bridge.model.script(
        Reply(text=f"@everyone @here <@{wire.ALICE_ID}> <@&{wire.BOT_ROLE_ID}> look!{tail}", chunk_chars=8)
    )

    await say_and_wait(
        fake,
        f"{MENTION} ping them",
        f"@\u200beveryone @\u200bhere <\u200b@{wire.ALICE_ID}> <\u200b@&{wire.BOT_ROLE_ID}> look!{tail}",
        mentions=(BOT,),
    )

    posted = fake.calls_to("POST", f"/channels/{wire.CHANNEL_ID}/messages") + fake.calls_to(
        "PATCH", f"/channels/{wire.CHANNEL_ID}/messages"
    )
    assert len(posted) >= 2
    assert all(call.body["allowed_mentions"] == {"parse": []} for call in posted)


# --- who is ignored -----------------------------------------------------------------------------


async def test_denied_user_never_reaches_the_model(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(access={"deny_users": [f"discord:{wire.BOB_ID}"]})
    await bridge.discord.say(f"{MENTION} let me in", author=BOB, mentions=(BOT,))
    await then_only_the_sentinel_is_answered(bridge)


async def test_bots_webhooks_and_system_messages_are_ignored(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord
    await fake.say(f"{MENTION} hello fellow bot", author=OTHER_BOT, mentions=(BOT,))
    await fake.say(f"{MENTION} from a webhook", mentions=(BOT,), webhook_id=wire.OTHER_BOT_ID)
    await fake.say(f"{MENTION}", mentions=(BOT,), message_type=7)  # a member joined
    await then_only_the_sentinel_is_answered(bridge)


# --- slash commands -----------------------------------------------------------------------------


async def test_slash_commands_are_registered(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    commands = bridge.discord.commands
    assert sorted(command["name"] for command in commands) == [
        "admin",
        "help",
        "id",
        "instructions",
        "model",
        "new",
        "persona",
        "reset",
        "usage",
    ]
    descriptions = [command["description"] for command in commands]
    descriptions += [option["description"] for command in commands for option in command.get("options", [])]
    assert all(0 < len(text) <= 100 for text in descriptions)  # Discord refuses the whole sync otherwise


async def test_slash_id_answers_only_the_caller(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord

    interaction = await fake.slash("id")
    await fake.wait_until(lambda: bool(interaction.followups))

    assert interaction.callback == {"type": 5, "data": {"flags": wire.EPHEMERAL_FLAG}}
    [answer] = interaction.followups
    assert answer["flags"] == wire.EPHEMERAL_FLAG
    assert (
        answer["content"]
        == f"You: discord:{wire.ALICE_ID}\nChat: discord:{wire.CHANNEL_ID}\nSession: discord:{wire.CHANNEL_ID}"
    )
    assert answer["allowed_mentions"] == {"parse": []}


async def test_slash_reset_clears_the_session_in_public(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord
    await say_and_wait(fake, "remember this", "echo: remember this", channel_id=wire.DM_CHANNEL_ID)

    interaction = await fake.slash("reset", channel_id=wire.DM_CHANNEL_ID)
    await fake.wait_until(lambda: bool(interaction.followups))

    assert interaction.followups[0]["content"] == "Conversation cleared. Let's start fresh."
    assert interaction.followups[0]["flags"] == 0
    assert await bridge.stored(f"discord:{wire.ALICE_ID}") == []


async def test_slash_admin_maps_its_arguments_and_checks_the_caller(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(access={"admins": [f"discord:{wire.ALICE_ID}"]})
    fake = bridge.discord

    refused = await fake.slash("admin", args="stats", author=BOB)
    await fake.wait_until(lambda: bool(refused.followups))
    allowed = await fake.slash("admin", args=f"deny discord:{wire.BOB_ID}")
    await fake.wait_until(lambda: bool(allowed.followups))
    silenced = await fake.slash("help", author=BOB)
    await fake.wait_until(lambda: silenced.original_deleted)

    assert [(m["content"], m["flags"]) for m in refused.followups] == [(texts.ADMIN_ONLY, wire.EPHEMERAL_FLAG)]
    assert [(m["content"], m["flags"]) for m in allowed.followups] == [
        (f"discord:{wire.BOB_ID} is now denied.", wire.EPHEMERAL_FLAG)
    ]
    assert silenced.followups == []  # denied, and on_denied: ignore; no "thinking…" is left behind


# --- start-up, connection, sharding -------------------------------------------------------------


async def test_missing_message_content_intent_is_one_clear_line(
    discord_fake: FakeDiscord, fake_model: FakeModel
) -> None:
    discord_fake.message_content_enabled = False
    adapter = DiscordAdapter(settings_for(discord_fake))
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        with pytest.raises(AdapterStartupError) as raised:
            await asyncio.wait_for(adapter.run(make_engine(MemoryStore(), model)), 10)
        assert str(raised.value) == f"discord: {INTENT_MISSING}"
        with pytest.raises(AdapterStartupError) as raised:
            await adapter.check()
        assert str(raised.value) == f"discord: {INTENT_MISSING}"
    finally:
        await model.aclose()


async def test_a_gateway_refusal_is_one_clear_line(discord_fake: FakeDiscord, fake_model: FakeModel) -> None:
    discord_fake.refuse_identify = (4011, "Sharding required.")
    model = OpenAIChatModel(model_settings(fake_model.base_url))
    try:
        with pytest.raises(AdapterStartupError) as raised:
            await asyncio.wait_for(
                DiscordAdapter(settings_for(discord_fake)).run(make_engine(MemoryStore(), model)), 10
            )
    finally:
        await model.aclose()
    assert str(raised.value) == (
        "discord: the gateway closed the connection (4011): "
        "this bot is in too many servers for one connection; set adapters.discord.shard_count"
    )


async def test_bad_token_is_one_clear_line_and_never_logged(
    discord_fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = DiscordAdapter(settings_for(discord_fake, token="not-the-token"))
    with pytest.raises(AdapterStartupError) as raised:
        await adapter.check()
    assert str(raised.value) == f"discord: {TOKEN_REFUSED}"
    assert "not-the-token" not in caplog.text


async def test_the_token_is_not_logged_even_at_debug_level(
    start_bridge: StartBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bridge = await start_bridge()
    await say_and_wait(bridge.discord, "hello", "echo: hello", channel_id=wire.DM_CHANNEL_ID)
    assert "IDENTIFY" in caplog.text  # the gateway conversation was logged
    assert wire.TOKEN not in caplog.text


async def test_an_unreachable_api_names_the_key_pointing_at_it() -> None:
    fake = FakeDiscord()
    await fake.start()
    await fake.stop()  # nothing listens there any more
    with pytest.raises(AdapterStartupError) as raised:
        await DiscordAdapter(settings_for(fake)).check()
    assert str(raised.value) == (
        f"discord: cannot log in: adapters.discord.api_base_url {fake.api_base_url.rstrip('/')}: "
        "connection refused (nothing listens there)"
    )


async def test_check_names_the_bot_and_its_invite_url(discord_fake: FakeDiscord) -> None:
    described = await DiscordAdapter(settings_for(discord_fake)).check()
    assert described.startswith(f"logged in as chatbridge (id {wire.BOT_ID}), Message Content intent on")
    assert described.endswith(f"client_id={wire.APP_ID}&scope=bot+applications.commands&permissions=309237713920")


async def test_reply_in_flight_survives_a_gateway_reconnect_once(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    fake = bridge.discord
    bridge.model.script(Reply(delay_s=0.3))

    await fake.say("slow question", channel_id=wire.DM_CHANNEL_ID)
    await fake.wait_until(lambda: len(bridge.model.requests) == 1)
    assert bridge.adapter.ready
    await fake.reconnect()
    await fake.wait_ready()
    await fake.wait_until(lambda: bridge.adapter.ready)
    await say_and_wait(fake, "after the reconnect", "echo: after the reconnect", channel_id=wire.DM_CHANNEL_ID)
    await fake.wait_until(lambda: "echo: slow question" in fake.bot_messages(wire.DM_CHANNEL_ID))

    assert fake.resumes == 1
    assert sorted(fake.bot_messages(wire.DM_CHANNEL_ID)) == ["echo: after the reconnect", "echo: slow question"]


async def test_a_redelivered_message_is_answered_once(start_bridge: StartBridge) -> None:
    bridge = await start_bridge()
    asked = await say_and_wait(bridge.discord, f"{MENTION} once please", "echo: [alice] once please", mentions=(BOT,))
    await bridge.discord.redeliver(asked)
    await then_only_the_sentinel_is_answered(bridge, ("echo: [alice] once please",))


async def test_a_process_runs_only_its_shards(start_bridge: StartBridge) -> None:
    bridge = await start_bridge(discord={"shard_count": 2, "shard_ids": [1]})
    assert [identify["shard"] for identify in bridge.discord.identifies] == [[1, 2]]
    await say_and_wait(bridge.discord, "hi shard", "echo: hi shard", channel_id=wire.DM_CHANNEL_ID)
    assert bridge.adapter.ready


async def test_a_long_discord_rate_limit_goes_back_to_the_renderer() -> None:
    """Waits discord.py will not sit out itself become the renderer's ``PlatformRateLimited``."""

    async def refused() -> None:
        raise discord.RateLimited(42.0)

    with pytest.raises(PlatformRateLimited) as raised:
        await platform_call(refused(), _trouble)
    assert raised.value.retry_after_s == 42.0


def test_shard_ids_need_a_shard_count_and_must_fit_it() -> None:
    with pytest.raises(ValueError, match="shard_ids: needs shard_count"):
        DiscordSettings(shard_ids=[0])
    with pytest.raises(ValueError, match="from 0 to 1"):
        DiscordSettings(shard_count=2, shard_ids=[2])


def test_enabling_discord_in_the_configuration_builds_the_adapter() -> None:
    config = Config(adapters={"discord": {"enabled": True, "token": "t", "shard_count": 2}})
    [adapter] = enabled_adapters(config.adapters, HttpServer("127.0.0.1", 0))
    assert isinstance(adapter, DiscordAdapter)
