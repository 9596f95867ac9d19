"""The engine end to end: a real memory store, the real model client, the fake model server.

Assertions are on what the user sees (the channel), what the model was sent (the fake's request
log) and what is stored.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bots.openai_client import OpenAIChatModel
from core import texts
from core.engine import Engine, Outcome
from core.events import IncomingMessage
from core.store import Admission, StoreUnavailable, TurnResult, Verdict
from core.stores.memory import MemoryStore
from tests.fakes.fake_model import CutStream, FakeModel, Reply, Status
from tests.kit.channel import RecordingChannel
from tests.kit.engine import group, make_engine, model_settings, private


@pytest.fixture
def engine(store: MemoryStore, model: OpenAIChatModel) -> Engine:
    return make_engine(store, model)


async def say(engine: Engine, message: IncomingMessage) -> RecordingChannel:
    channel = RecordingChannel()
    await engine.handle(message, channel)
    return channel


async def stored(store: MemoryStore, key: str) -> list[tuple[str, str]]:
    state = await store.load_session(key, 10_000)
    return [(turn.role, turn.content) for turn in state.turns] if state else []


# --- conversation -------------------------------------------------------------------------------


async def test_private_chat_holds_a_multi_turn_conversation(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    first = await say(engine, private("hello there"))
    second = await say(engine, private("and again"))

    assert first.text == "echo: hello there"
    assert second.text == "echo: and again"
    sent = fake_model.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "You are a helpful assistant."),
        ("user", "hello there"),
        ("assistant", "echo: hello there"),
        ("user", "and again"),
    ]
    assert await stored(store, "telegram:1") == [
        ("user", "hello there"),
        ("assistant", "echo: hello there"),
        ("user", "and again"),
        ("assistant", "echo: and again"),
    ]


async def test_reset_forgets_the_conversation(engine: Engine, store: MemoryStore, fake_model: FakeModel) -> None:
    await say(engine, private("remember me"))
    answer = await say(engine, private("/reset"))
    await say(engine, private("who am I"))

    assert answer.text == texts.SESSION_CLEARED
    assert [m["content"] for m in fake_model.requests[-1]["messages"]] == ["You are a helpful assistant.", "who am I"]
    assert (await say(engine, private("/new"))).text == texts.SESSION_CLEARED


async def test_idle_session_starts_fresh_after_timeout(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    now = [1_000_000.0]
    engine = make_engine(store, model, clock=lambda: now[0], session={"timeout_s": 60})
    await say(engine, private("first"))
    now[0] += 59
    await say(engine, private("within the timeout"))
    assert len(fake_model.requests[-1]["messages"]) == 4

    now[0] += 61
    await say(engine, private("after the timeout"))
    assert [m["content"] for m in fake_model.requests[-1]["messages"]][1:] == ["after the timeout"]
    assert await stored(store, "telegram:1") == [
        ("user", "after the timeout"),
        ("assistant", "echo: after the timeout"),
    ]


async def test_streamed_reply_is_edited_into_one_message(engine: Engine, fake_model: FakeModel) -> None:
    fake_model.script(Reply(text="a fairly long streamed answer in many small pieces", chunk_chars=3))
    channel = await say(engine, private("stream please"))
    assert channel.messages == ["a fairly long streamed answer in many small pieces"]
    assert channel.edits >= 1
    assert fake_model.requests[-1]["stream"] is True


# --- context window -----------------------------------------------------------------------------


async def test_trimming_keeps_system_prompt_and_whole_pairs_and_never_touches_the_store(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, context={"max_tokens": 400, "max_messages": 40})
    for n in range(12):
        await say(engine, private(f"question {n} " + "padding words " * 10))

    sent = fake_model.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "You are a helpful assistant."}
    body = sent[1:]
    assert body[-1]["content"].startswith("question 11 ")
    history = body[:-1]
    assert 0 < len(history) < 22, "the window should have been trimmed"
    assert len(history) % 2 == 0
    assert [m["role"] for m in history] == ["user", "assistant"] * (len(history) // 2)
    for user_msg, assistant_msg in zip(history[::2], history[1::2], strict=True):
        assert assistant_msg["content"] == "echo: " + user_msg["content"]
    assert len(await stored(store, "telegram:1")) == 24


async def test_max_messages_limits_the_window(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, context={"max_messages": 5})
    for n in range(6):
        await say(engine, private(f"q{n}"))
    contents = [m["content"] for m in fake_model.requests[-1]["messages"][1:]]
    assert contents == ["q3", "echo: q3", "q4", "echo: q4", "q5"]


async def test_a_message_larger_than_the_budget_is_refused(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, context={"max_tokens": 100})
    channel = await say(engine, private("word " * 400))
    assert channel.text == texts.MESSAGE_OVER_CONTEXT
    assert fake_model.requests == []
    assert await stored(store, "telegram:1") == []


async def test_oversized_input_gets_a_short_answer(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, bot={"max_input_chars": 50})
    channel = await say(engine, private("x" * 51))
    assert channel.text == texts.MESSAGE_TOO_LONG.format(size=51, limit=50)
    assert fake_model.requests == []


async def test_context_length_error_trims_harder_and_retries_once(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    for n in range(4):
        await say(engine, private(f"turn {n}"))
    fake_model.script(
        Status(
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 10 tokens",
                    "code": "context_length_exceeded",
                }
            },
        )
    )
    channel = await say(engine, private("one more"))

    assert channel.text == "echo: one more"
    retried = fake_model.requests[-1]["messages"]
    assert len(retried) < len(fake_model.requests[-2]["messages"])
    assert retried[0]["role"] == "system"
    assert len(await stored(store, "telegram:1")) == 10


async def test_length_cut_is_told_to_the_user(engine: Engine, store: MemoryStore, fake_model: FakeModel) -> None:
    fake_model.script(Reply(text="the start of a long", finish_reason="length"))
    channel = await say(engine, private("tell me everything"))
    assert channel.text == f"the start of a long\n\n{texts.CUT_AT_LENGTH}"
    assert (await stored(store, "telegram:1"))[-1] == ("assistant", "the start of a long")


# --- failures -----------------------------------------------------------------------------------


async def test_retries_then_a_clear_error_and_the_session_is_unchanged(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    await say(engine, private("keep this"))
    before = await stored(store, "telegram:1")
    fake_model.script(Status(503), Status(503), Status(503))
    channel = await say(engine, private("this will fail"))

    assert channel.text == texts.MODEL_UNAVAILABLE
    assert fake_model.user_texts()[-3:] == ["this will fail"] * 3
    assert await stored(store, "telegram:1") == before
    assert "sk-test-key" not in channel.text
    assert (await say(engine, private("and now?"))).text == "echo: and now?"


@pytest.mark.parametrize(
    ("failure", "notice"),
    [
        (
            Status(429, {"error": {"message": "slow down", "type": "requests"}}, {"Retry-After": "0"}),
            texts.MODEL_RATE_LIMITED,
        ),
        (
            Status(429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}),
            texts.MODEL_ACCESS_DENIED,
        ),
        (Status(401, {"error": {"message": "Incorrect API key provided: sk-test-key"}}), texts.MODEL_ACCESS_DENIED),
    ],
)
async def test_provider_failures_are_told_apart(
    engine: Engine, fake_model: FakeModel, failure: Status, notice: str
) -> None:
    fake_model.script(failure, failure, failure)
    channel = await say(engine, private("hi"))
    assert channel.text == notice


async def test_a_timeout_is_reported_as_such(store: MemoryStore, fake_model: FakeModel) -> None:
    model = OpenAIChatModel(model_settings(fake_model.base_url, timeout_s=0.3, max_retries=0))
    try:
        engine = make_engine(store, model)
        fake_model.script(Reply(delay_s=2))
        channel = await say(engine, private("are you there"))
    finally:
        await model.aclose()
    assert channel.text == texts.MODEL_TIMEOUT
    assert await stored(store, "telegram:1") == []


async def test_a_stream_cut_mid_way_keeps_the_partial_text_and_stores_nothing(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    fake_model.script(CutStream(text="half an ans"))
    channel = await say(engine, private("go"))
    assert channel.text == f"half an ans\n\n{texts.MODEL_UNAVAILABLE}"
    assert await stored(store, "telegram:1") == []


# --- ordering and concurrency -------------------------------------------------------------------


async def test_messages_to_a_busy_session_are_joined_and_answered_in_order(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    fake_model.script(Reply(delay_s=0.5))
    channels = [RecordingChannel() for _ in range(4)]
    first = asyncio.create_task(engine.handle(private("part one"), channels[0]))
    await asyncio.sleep(0.2)
    rest = [
        asyncio.create_task(engine.handle(private(f"part {n}"), channels[i]))
        for i, n in enumerate(["two", "three", "four"], 1)
    ]
    outcomes = await asyncio.gather(first, *rest)

    assert outcomes == [Outcome.ANSWERED, Outcome.ANSWERED, Outcome.JOINED, Outcome.JOINED]
    assert channels[0].text == "echo: part one"
    assert channels[1].text == "echo: part two\npart three\npart four"
    assert fake_model.user_texts() == ["part one", "part two\npart three\npart four"]
    assert await stored(store, "telegram:1") == [
        ("user", "part one"),
        ("assistant", "echo: part one"),
        ("user", "part two\npart three\npart four"),
        ("assistant", "echo: part two\npart three\npart four"),
    ]


async def test_different_sessions_run_concurrently(engine: Engine, fake_model: FakeModel) -> None:
    fake_model.default_delay_s = 1.0
    started = time.monotonic()
    channels = [RecordingChannel() for _ in range(100)]
    await asyncio.gather(*(engine.handle(private(f"hi {n}", user=f"telegram:{n}"), channels[n]) for n in range(100)))
    elapsed = time.monotonic() - started

    assert [c.text for c in channels] == [f"echo: hi {n}" for n in range(100)]
    assert elapsed < 10, f"100 sessions against a 1 s model took {elapsed:.1f}s: they did not run concurrently"


async def test_a_redelivered_message_is_answered_once(engine: Engine, fake_model: FakeModel) -> None:
    message = private("only once")
    first, second = RecordingChannel(), RecordingChannel()
    assert await engine.handle(message, first) == Outcome.ANSWERED
    assert await engine.handle(message, second) == Outcome.DUPLICATE
    assert second.messages == []
    assert fake_model.user_texts() == ["only once"]


# --- who may talk ---------------------------------------------------------------------------------


async def test_bots_never_trigger_a_reply(engine: Engine, fake_model: FakeModel) -> None:
    channel = await say(engine, private("I am a bot", from_bot=True))
    assert channel.messages == []
    assert fake_model.requests == []


async def test_denied_user_never_reaches_the_model(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, access={"deny_users": ["telegram:666"]})
    channel = await say(engine, private("secret plan", user="telegram:666"))
    assert channel.messages == []
    assert all("secret plan" not in str(body) for body in fake_model.requests)
    assert (await say(engine, private("hello", user="telegram:2"))).text == "echo: hello"


async def test_allow_lists_admit_only_listed_users_and_chats(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(
        store,
        model,
        access={
            "allow_users": ["telegram:1", "telegram:2"],
            "allow_chats": ["telegram:-100"],
            "admins": ["telegram:9"],
        },
    )
    assert (await say(engine, private("in list", user="telegram:1"))).text == "echo: in list"
    assert (await say(engine, private("not in list", user="telegram:3"))).messages == []
    assert (
        await say(engine, group("@bot in allowed chat", user="telegram:2", mentioned=True, mention_texts=("@bot",)))
    ).text == "echo: [telegram:2] in allowed chat"
    assert (
        await say(
            engine,
            group("@bot other chat", user="telegram:2", chat="telegram:-200", mentioned=True, mention_texts=("@bot",)),
        )
    ).messages == []
    assert (
        await say(
            engine,
            group(
                "@bot admin anywhere", user="telegram:9", chat="telegram:-200", mentioned=True, mention_texts=("@bot",)
            ),
        )
    ).text == "echo: [telegram:9] admin anywhere"
    assert fake_model.user_texts() == ["in list", "[telegram:2] in allowed chat", "[telegram:9] admin anywhere"]


async def test_on_denied_reply_answers_once_and_id_still_works(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, access={"allow_users": ["telegram:1"], "on_denied": "reply"})
    first = await say(engine, private("let me in", user="telegram:5"))
    second = await say(engine, private("please", user="telegram:5"))
    ident = await say(engine, private("/id", user="telegram:5"))

    assert first.text == texts.DENIED
    assert second.messages == []
    assert ident.text == texts.identity_card("telegram:5", "telegram:5", "telegram:5")
    assert fake_model.requests == []


async def test_rate_limit_gives_a_clear_answer(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model, limits={"user_messages_per_minute": 2})
    answers = [(await say(engine, private(f"m{n}"))).text for n in range(3)]
    assert answers[:2] == ["echo: m0", "echo: m1"]
    assert answers[2] == texts.RATE_LIMITED.format(limit=2)
    assert fake_model.user_texts() == ["m0", "m1"]


# --- group triggers -----------------------------------------------------------------------------


async def test_group_triggers(store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel) -> None:
    engine = make_engine(store, model, bot={"group_prefixes": ["!ai"]})
    assert (await say(engine, group("just chatting"))).messages == []
    assert (await say(engine, group("!airplane talk"))).messages == []
    mention = await say(
        engine, group("@chatbridge_bot what is 2+2", mentioned=True, mention_texts=("@chatbridge_bot",))
    )
    reply = await say(engine, group("and 3+3?", reply_to_bot=True))
    prefix = await say(engine, group("!ai and 4+4?"))
    command = await say(engine, group("/id"))

    assert mention.text == "echo: [telegram:1] what is 2+2"
    assert reply.text == "echo: [telegram:1] and 3+3?"
    assert prefix.text == "echo: [telegram:1] and 4+4?"
    assert command.text.startswith("You: telegram:1\nChat: telegram:-100")
    assert fake_model.user_texts() == ["[telegram:1] what is 2+2", "[telegram:1] and 3+3?", "[telegram:1] and 4+4?"]


async def test_a_bare_mention_asks_for_a_question(engine: Engine, fake_model: FakeModel) -> None:
    channel = await say(engine, group("@bot", mentioned=True, mention_texts=("@bot",)))
    assert channel.text == texts.EMPTY_PROMPT
    assert fake_model.requests == []


async def test_session_scopes(store: MemoryStore, model: OpenAIChatModel) -> None:
    by_user = make_engine(store, model, session={"scope": "user"})
    by_thread = make_engine(store, model, session={"scope": "thread"})
    assert (
        (await say(by_user, group("/id", user="telegram:7")))
        .messages[0]
        .endswith("Session: telegram:-100/user:telegram:7")
    )
    assert (await say(by_thread, group("/id", thread_id="42"))).messages[0].endswith("Session: telegram:-100/thread:42")
    assert (await say(by_thread, group("/id"))).messages[0].endswith("Session: telegram:-100")


# --- commands -----------------------------------------------------------------------------------


@pytest.fixture
def admin_engine(store: MemoryStore, model: OpenAIChatModel) -> Engine:
    return make_engine(store, model, access={"admins": ["telegram:9"]})


async def test_help_shows_admin_commands_only_to_admins(admin_engine: Engine) -> None:
    assert "/admin" not in (await say(admin_engine, private("/help", user="telegram:1"))).text
    assert "/admin" in (await say(admin_engine, private("/help", user="telegram:9"))).text


async def test_admin_commands_are_refused_to_non_admins_and_change_nothing(
    admin_engine: Engine, store: MemoryStore
) -> None:
    await say(admin_engine, private("hello", user="telegram:1"))
    for command in ("/admin clear all", "/admin deny telegram:1", "/admin sessions", "/admin stats"):
        assert (await say(admin_engine, private(command, user="telegram:2"))).text == texts.ADMIN_ONLY
    assert len(await stored(store, "telegram:1")) == 2
    assert (await say(admin_engine, private("still here", user="telegram:1"))).text == "echo: still here"


async def test_admin_sessions_and_clear(admin_engine: Engine, store: MemoryStore) -> None:
    await say(admin_engine, private("a", user="telegram:1"))
    await say(admin_engine, private("b", user="telegram:2"))
    await say(admin_engine, group("@bot c", user="telegram:3", mentioned=True, mention_texts=("@bot",)))

    listing = (await say(admin_engine, private("/admin sessions", user="telegram:9"))).text
    assert listing.startswith("3 active sessions:")
    assert "telegram:-100: 2 messages" in listing

    assert (await say(admin_engine, private("/admin clear telegram:1", user="telegram:9"))).text == "Cleared 1 session."
    assert await stored(store, "telegram:1") == []
    assert len(await stored(store, "telegram:2")) == 2
    assert (await say(admin_engine, private("/admin clear all", user="telegram:9"))).text == "Cleared 2 sessions."
    assert await store.list_sessions() == []


async def test_admin_deny_and_allow_take_effect_and_persist(
    admin_engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    assert (
        await say(admin_engine, private("/admin deny telegram:4", user="telegram:9"))
    ).text == "telegram:4 is now denied."
    assert (await say(admin_engine, private("hi", user="telegram:4"))).messages == []
    assert (
        await say(admin_engine, private("/admin allow telegram:4", user="telegram:9"))
    ).text == "telegram:4 is now allowed."
    assert (await say(admin_engine, private("hi again", user="telegram:4"))).text == "echo: hi again"
    assert fake_model.user_texts() == ["hi again"]
    assert (
        await say(admin_engine, private("/admin deny telegram:9", user="telegram:9"))
    ).text == texts.CANNOT_DENY_ADMIN.format(identity="telegram:9")
    refused = await say(admin_engine, private("/admin deny bob", user="telegram:9"))
    assert refused.text.startswith("'bob' is not an identity: identities are platform:id, platform one of telegram")


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("Telegram:1140", "is not an identity"),
        ("telegram:01140", "expected telegram:<number>"),
        ("telegram:11\u200b40", "expected telegram:<number>"),
        ("a,b", "is not an identity"),
        ("*:*", "is not an identity"),
        ("foo:bar", "is not an identity"),
        ("discord:12345", "expected discord:<snowflake>"),
        ("slack:u024be7lh", "expected slack:<id>"),
        ("console:remote", "expected console:local"),
    ],
)
async def test_admin_commands_refuse_malformed_identities_and_change_nothing(
    admin_engine: Engine, store: MemoryStore, argument: str, expected: str
) -> None:
    await say(admin_engine, private("hello", user="telegram:1140"))
    for verb in ("deny", "allow", "clear"):
        reply = (await say(admin_engine, private(f"/admin {verb} {argument}", user="telegram:9"))).text
        assert expected in reply and reply.endswith("Nothing was changed."), reply
    assert len(await stored(store, "telegram:1140")) == 2
    assert (await say(admin_engine, private("still here", user="telegram:1140"))).text == "echo: still here"


async def test_admin_commands_take_each_platforms_well_formed_identities(admin_engine: Engine) -> None:
    for identity in ("telegram:-1001234567890", "discord:80351110224678912", "slack:U024BE7LH", "console:local"):
        reply = (await say(admin_engine, private(f"/admin allow {identity}", user="telegram:9"))).text
        assert reply == f"{identity} is now allowed."


async def test_admin_stats_counts_messages_and_tokens(admin_engine: Engine, fake_model: FakeModel) -> None:
    await say(admin_engine, private("count me", user="telegram:1"))
    fake_model.script(Status(500), Status(500), Status(500))
    await say(admin_engine, private("fail me", user="telegram:1"))
    stats = (await say(admin_engine, private("/admin stats", user="telegram:9"))).text
    since_start = stats.splitlines()[0]
    assert since_start.startswith("Since start: 1 messages, ")
    assert since_start.endswith(", 1 errors")
    assert "0 tokens in" not in since_start
    assert time.strftime("%Y-%m-%d", time.gmtime()) in stats


async def test_unknown_admin_subcommand_shows_usage(admin_engine: Engine) -> None:
    assert (await say(admin_engine, private("/admin frobnicate", user="telegram:9"))).text == texts.ADMIN_USAGE


# --- shutdown -----------------------------------------------------------------------------------


async def test_a_closed_engine_finishes_replies_in_flight_and_refuses_new_work(
    engine: Engine, fake_model: FakeModel
) -> None:
    fake_model.default_delay_s = 0.3
    channel = RecordingChannel()
    in_flight = asyncio.create_task(engine.handle(private("finish me"), channel))
    await asyncio.sleep(0.1)
    engine.close()
    assert await in_flight == Outcome.ANSWERED
    assert channel.text == "echo: finish me"
    assert await engine.handle(private("too late"), RecordingChannel()) == Outcome.SHUTTING_DOWN


async def test_a_cancelled_answer_is_withdrawn_and_a_cancelled_shutdown_keeps_it_queued(
    engine: Engine, store: MemoryStore, fake_model: FakeModel
) -> None:
    """The terminal's Ctrl-C cancels one answer: that question is neither stored nor answered later.
    A shutdown's cancellation is the other case: the message waits for the next process."""

    async def cancelled_while_streaming(text: str, *, closing: bool) -> None:
        fake_model.script(Reply(text="a long answer that never ends", chunk_chars=2, chunk_delay_s=0.2))
        channel = RecordingChannel()
        answering = asyncio.create_task(engine.handle(private(text), channel))
        while not channel.messages:
            await asyncio.sleep(0.01)
        if closing:
            engine.close()
        answering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answering

    await cancelled_while_streaming("stop me", closing=False)
    assert await store.orphans(0.0, 10) == []
    assert await stored(store, "telegram:1") == []

    assert (await say(engine, private("next question"))).text == "echo: next question"
    assert [m["content"] for m in fake_model.requests[-1]["messages"]] == [
        "You are a helpful assistant.",
        "next question",
    ]

    await cancelled_while_streaming("keep me", closing=True)
    assert await store.orphans(0.0, 10) == ["telegram:1"]


class _SlowChecks(MemoryStore):
    """Delays the admission of chosen messages, as a busy store connection would."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: set[str] = set()

    async def admit(self, admission: Admission) -> Verdict:
        if admission.dedupe_key.removeprefix("msg:") in self.slow:
            await asyncio.sleep(0.2)
        return await super().admit(admission)


async def test_a_message_delayed_before_queueing_is_not_overtaken(model: OpenAIChatModel) -> None:
    store = _SlowChecks()
    engine = make_engine(store, model)
    first, second = private("first"), private("second")
    store.slow.add(first.dedupe_key)

    await asyncio.gather(engine.handle(first, RecordingChannel()), engine.handle(second, RecordingChannel()))

    user_turns = [content for role, content in await stored(store, "telegram:1") if role == "user"]
    assert "\n".join(user_turns) == "first\nsecond"


def _context_refusal() -> Status:
    return Status(400, {"error": {"message": "maximum context length exceeded", "code": "context_length_exceeded"}})


async def test_a_context_refusal_trims_to_the_new_message_before_giving_up(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model)
    for n in range(8):
        await say(engine, private(f"q{n}"))
    fake_model.script(_context_refusal(), _context_refusal())
    assert (await say(engine, private("the new one"))).text == "echo: the new one"
    windows = [len(request["messages"]) for request in fake_model.requests[-3:]]
    assert windows[0] > windows[1] > windows[2] == 2  # everything, half, the system prompt and the message
    assert (await stored(store, "telegram:1"))[-2:] == [("user", "the new one"), ("assistant", "echo: the new one")]


async def test_a_message_refused_even_alone_is_too_long_and_changes_nothing(
    store: MemoryStore, model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    engine = make_engine(store, model)
    await say(engine, private("q0"))
    fake_model.script(_context_refusal(), _context_refusal(), _context_refusal())
    assert (await say(engine, private("a huge paste"))).text == texts.MESSAGE_OVER_CONTEXT
    assert len(fake_model.requests[-1]["messages"]) == 2  # given up only with the message alone
    assert await stored(store, "telegram:1") == [("user", "q0"), ("assistant", "echo: q0")]


class _StoreDownAtFinish(MemoryStore):
    """Takes messages, then cannot store turns: a read-only file, a full disk, Redis out of memory."""

    down = True

    async def finish(self, session_key: str, fence: int, result: TurnResult) -> int:
        if self.down:
            raise StoreUnavailable("attempt to write a readonly database")
        return await super().finish(session_key, fence, result)


async def test_a_turn_that_cannot_be_stored_is_told_and_not_answered_twice(
    model: OpenAIChatModel, fake_model: FakeModel
) -> None:
    store = _StoreDownAtFinish()
    engine = make_engine(store, model, delivery_timeout_s=0.3)
    channel = await say(engine, private("remember this"))
    assert channel.messages == ["echo: remember this", texts.NOT_REMEMBERED]
    assert await stored(store, "telegram:1") == []

    store.down = False  # the store is back: the message still queued is taken off, not answered again
    assert (await say(engine, private("and now?"))).text == "echo: and now?"
    assert fake_model.user_texts() == ["remember this", "and now?"]
    assert await stored(store, "telegram:1") == [("user", "and now?"), ("assistant", "echo: and now?")]
