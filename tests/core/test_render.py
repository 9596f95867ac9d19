"""The shared reply renderer: how streamed replies and complete answers reach a platform.

A fake channel records every platform call with the (fake) time it was made, so the tests can check
what the user ends up seeing and that the edit pacing was honoured, without waiting in real time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

import pytest

from core.channel import PlatformLimits, PlatformRateLimited, PlatformTooLong, PlatformUnavailable
from core.render import WORTH_SHOWING_CHARS, StreamRenderer, TypingIndicator, send_text
from core.splitter import split_message
from tests.kit.replies import long_reply


@dataclass
class FakeClock:
    """Time that moves only when a test or the renderer's ``sleep`` moves it."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Call:
    at: float
    kind: str
    index: int
    text: str


@dataclass
class FakeChannel:
    """An in-memory ReplyChannel. ``rate_limit_calls`` maps call numbers (1-based, sends and edits
    together) to a retry-after the platform answers that call with instead of performing it."""

    limits: PlatformLimits
    clock: FakeClock = field(default_factory=FakeClock)
    rate_limit_calls: dict[int, float] = field(default_factory=dict)
    unavailable_calls: set[int] = field(default_factory=set)
    """Call numbers the platform answers with a 5xx (or a cut connection) instead."""
    messages: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    attempts: int = 0
    route: str = ""
    typing_calls: int = 0

    async def send(self, text: str) -> object:
        self._attempt(text)
        self.messages.append(text)
        self.calls.append(Call(self.clock(), "send", len(self.messages) - 1, text))
        return len(self.messages) - 1

    async def edit(self, handle: object, text: str) -> None:
        assert isinstance(handle, int) and self.limits.can_edit
        self._attempt(text)
        self.messages[handle] = text
        self.calls.append(Call(self.clock(), "edit", handle, text))

    async def typing(self) -> None:
        self.typing_calls += 1

    def _attempt(self, text: str) -> None:
        assert 0 < len(text) <= self.limits.max_message_chars
        self.attempts += 1
        if self.attempts in self.rate_limit_calls:
            raise PlatformRateLimited(self.rate_limit_calls[self.attempts])
        if self.attempts in self.unavailable_calls:
            raise PlatformUnavailable("502 Bad Gateway")


def channel(max_chars: int = 4096, interval: float = 1.0, can_edit: bool = True, **kwargs: object) -> FakeChannel:
    return FakeChannel(PlatformLimits(max_chars, interval, can_edit), **kwargs)  # type: ignore[arg-type]


def renderer_for(chan: FakeChannel) -> StreamRenderer:
    return StreamRenderer(chan, clock=chan.clock, sleep=chan.clock.sleep)


# --- StreamRenderer -------------------------------------------------------------------------------


async def stream(renderer: StreamRenderer, chan: FakeChannel, text: str, step: int, tick: float) -> None:
    for start in range(0, len(text), step):
        await renderer.push(text[start : start + step])
        chan.clock.now += tick


async def test_streaming_never_edits_more_often_than_the_interval() -> None:
    chan = channel(max_chars=4096, interval=1.0)
    renderer = renderer_for(chan)
    text = " ".join(f"token{i}" for i in range(400))
    await stream(renderer, chan, text, step=7, tick=0.1)
    await renderer.finish(text)
    times = [call.at for call in chan.calls]
    assert len(times) > 5
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in itertools.pairwise(times))
    assert chan.messages == [text]
    assert renderer.messages_sent == 1 and renderer.edits_made == len(chan.calls) - 1


async def test_push_only_buffers_until_the_interval_has_passed() -> None:
    chan = channel(interval=1.0)
    renderer = renderer_for(chan)
    await renderer.push("Hello")
    await renderer.push(" world")
    await renderer.push("!")
    assert chan.messages == ["Hello"]
    chan.clock.now += 1.0
    await renderer.push("")
    assert chan.messages == ["Hello world!"]


def first_show_channel(delay_s: float, interval: float = 1.0) -> FakeChannel:
    return FakeChannel(PlatformLimits(4096, interval, first_show_delay_s=delay_s))


async def test_a_short_answer_within_the_first_show_delay_is_one_send_when_it_finishes() -> None:
    chan = first_show_channel(0.3)
    renderer = renderer_for(chan)
    for delta in ("The", " answer", " is 42."):
        await renderer.push(delta)
        chan.clock.now += 0.05
    assert chan.messages == []
    await renderer.finish("The answer is 42.")
    assert [(call.kind, call.text) for call in chan.calls] == [("send", "The answer is 42.")]
    assert chan.clock.sleeps == []  # the complete text did not wait for any interval


async def test_after_the_first_show_delay_streaming_shows_and_paces_as_before() -> None:
    chan = first_show_channel(0.3)
    renderer = renderer_for(chan)
    await renderer.push("Slow")
    chan.clock.now += 0.3
    await renderer.push(" start")
    assert chan.messages == ["Slow start"]
    await renderer.push(", more")
    assert chan.messages == ["Slow start"]
    chan.clock.now += 1.0
    await renderer.push("")
    assert chan.messages == ["Slow start, more"]


async def test_enough_text_is_shown_at_once_whatever_the_first_show_delay() -> None:
    chan = first_show_channel(10.0)
    renderer = renderer_for(chan)
    await renderer.push("x" * (WORTH_SHOWING_CHARS - 1))
    assert chan.messages == []
    await renderer.push("y")
    assert chan.messages == ["x" * (WORTH_SHOWING_CHARS - 1) + "y"]


async def test_a_long_streamed_reply_ends_up_exactly_as_split_message() -> None:
    chan = channel(max_chars=200, interval=0.5)
    renderer = renderer_for(chan)
    text = long_reply()[:4000]
    await stream(renderer, chan, text, step=13, tick=0.2)
    await renderer.finish(text)
    expected = split_message(text, 200)
    assert chan.messages == expected
    assert renderer.messages_sent == len(expected)
    sends = [call.index for call in chan.calls if call.kind == "send"]
    assert sends == list(range(len(expected)))


async def test_a_message_is_complete_before_the_next_one_starts_and_never_touched_again() -> None:
    chan = channel(max_chars=120, interval=0.0)
    renderer = renderer_for(chan)
    text = long_reply(seed=11)[:2500]
    await stream(renderer, chan, text, step=5, tick=0.0)
    await renderer.finish(text)
    final = split_message(text, 120)
    assert chan.messages == final
    for index in range(len(final) - 1):
        next_send = next(n for n, call in enumerate(chan.calls) if call.kind == "send" and call.index == index + 1)
        calls_on_message = [n for n, call in enumerate(chan.calls) if call.index == index]
        assert max(calls_on_message) < next_send
        assert chan.calls[max(calls_on_message)].text == final[index]


async def test_a_stream_faster_than_the_pace_sends_each_later_message_once_complete() -> None:
    """A model filling a message in about 1.2 intervals: half-full edits would take the calls the
    complete messages need, and the last one would land two intervals after the model is done."""
    chan = channel(max_chars=400, interval=1.0)
    renderer = renderer_for(chan)
    text = " ".join(f"word{n}" for n in range(300))
    await stream(renderer, chan, text, step=4, tick=0.012)
    done_at = chan.clock.now
    await renderer.finish(text)
    final = split_message(text, 400)
    assert chan.messages == final and len(final) >= 4
    assert [(call.kind, call.index) for call in chan.calls[:2]] == [("send", 0), ("edit", 0)]
    later = [(call.kind, call.text) for call in chan.calls[2:]]
    assert later == [("send", chunk) for chunk in final[1:]]  # one call each, complete
    assert chan.calls[-1].at - done_at <= 1.0
    assert all(b.at - a.at >= 1.0 - 1e-9 for a, b in itertools.pairwise(chan.calls))


async def test_a_held_message_is_shown_half_full_once_the_stream_slows() -> None:
    chan = channel(max_chars=400, interval=1.0)
    renderer = renderer_for(chan)
    await stream(renderer, chan, "a" * 1000, step=10, tick=0.02)  # a message fills in 0.8 s: held
    assert [(call.kind, len(call.text)) for call in chan.calls] == [("send", 10), ("edit", 400)]
    chan.clock.now += 5.0  # the model pauses, then trickles on
    await renderer.push("b")
    chan.clock.now += 1.0
    await renderer.push("c")
    assert [call.kind for call in chan.calls[2:]] == ["send", "send"]
    assert chan.messages[1:] == ["a" * 400, "a" * 200 + "bc"]


async def test_where_the_platform_takes_a_burst_the_complete_text_lands_at_once() -> None:
    chan = FakeChannel(PlatformLimits(100, 1.0, final_burst=3))
    renderer = renderer_for(chan)
    text = " ".join(["streamed words"] * 30)  # about 450 characters: five messages
    await stream(renderer, chan, text, step=50, tick=0.05)
    streamed_calls = len(chan.calls)
    done_at = chan.clock.now
    await renderer.finish(text)
    assert chan.messages == split_message(text, 100)
    assert all(b.at - a.at >= 1.0 - 1e-9 for a, b in itertools.pairwise(chan.calls[:streamed_calls]))
    finishing = chan.calls[streamed_calls:]
    assert [call.at for call in finishing[:2]] == [done_at, done_at]  # the two spare calls, at once
    assert all(b.at - a.at >= 1.0 - 1e-9 for a, b in itertools.pairwise(finishing[1:]))  # then the pace


async def test_finish_with_an_appended_note_lands_the_whole_text() -> None:
    chan = channel(max_chars=100, interval=1.0)
    renderer = renderer_for(chan)
    text = " ".join(["partial answer"] * 20)
    await stream(renderer, chan, text, step=9, tick=0.3)
    final = f"{text}\n\n(The model stopped here: the reply hit the length limit.)"
    await renderer.finish(final)
    assert chan.messages == split_message(final, 100)


async def test_the_final_text_lands_even_when_the_platform_answers_429() -> None:
    chan = channel(interval=1.0, rate_limit_calls={2: 7.5})
    renderer = renderer_for(chan)
    await renderer.push("Thinking about it")
    chan.clock.now += 0.2
    await renderer.finish("Thinking about it: the answer is 42.")
    assert chan.messages == ["Thinking about it: the answer is 42."]
    assert 7.5 in chan.clock.sleeps
    assert chan.calls[-1].at - chan.calls[0].at >= 7.5


async def test_a_429_during_push_postpones_updates_without_sleeping() -> None:
    chan = channel(interval=1.0, rate_limit_calls={2: 5.0})
    renderer = renderer_for(chan)
    await renderer.push("one")
    chan.clock.now += 1.0
    await renderer.push(" two")  # answered 429
    for _ in range(8):
        chan.clock.now += 0.5
        await renderer.push(" more")
    assert chan.clock.sleeps == [] and len(chan.calls) == 1
    await renderer.finish("one two" + " more" * 8)
    assert chan.messages == ["one two" + " more" * 8]
    assert [call.at - 1000.0 for call in chan.calls] == [0.0, 6.0]


async def test_finish_gives_up_when_the_delivery_budget_runs_out() -> None:
    chan = channel(rate_limit_calls=dict.fromkeys(range(1, 50), 1.0))
    renderer = StreamRenderer(chan, clock=chan.clock, sleep=chan.clock.sleep, budget_s=3.5)
    with pytest.raises(PlatformRateLimited):
        await renderer.finish("never lands")
    assert chan.attempts == 4 and chan.clock.sleeps == [1.0, 1.0, 1.0]


async def test_a_retry_after_longer_than_the_budget_gives_up_at_once() -> None:
    chan = channel(rate_limit_calls={1: 600.0})
    renderer = StreamRenderer(chan, clock=chan.clock, sleep=chan.clock.sleep, budget_s=120)
    with pytest.raises(PlatformRateLimited):
        await renderer.finish("not worth ten minutes of the session")
    assert chan.attempts == 1 and chan.clock.sleeps == []


async def test_5xx_and_cut_connections_are_retried_with_backoff_until_the_text_lands() -> None:
    chan = channel(unavailable_calls={1, 2, 3, 4})
    renderer = renderer_for(chan)
    await renderer.finish("lands after the storm")
    assert chan.messages == ["lands after the storm"]
    assert chan.clock.sleeps == [0.5, 1.0, 2.0, 4.0]


async def test_identical_text_is_not_edited_again() -> None:
    chan = channel(interval=1.0)
    renderer = renderer_for(chan)
    await renderer.push("Complete answer.")
    chan.clock.now += 5
    await renderer.push("")
    await renderer.finish("Complete answer.")
    assert [call.kind for call in chan.calls] == ["send"]
    assert renderer.edits_made == 0


async def test_finish_waits_for_the_interval_before_its_edit() -> None:
    chan = channel(interval=1.0)
    renderer = renderer_for(chan)
    await renderer.push("Hel")
    chan.clock.now += 0.25
    await renderer.finish("Hello")
    assert chan.clock.sleeps == [0.75]
    assert chan.messages == ["Hello"]


async def test_a_channel_that_cannot_edit_gets_only_the_finished_reply() -> None:
    chan = channel(max_chars=50, interval=0.5, can_edit=False)
    renderer = renderer_for(chan)
    text = " ".join(["streamed words"] * 10)
    await stream(renderer, chan, text, step=4, tick=1.0)
    assert chan.calls == []
    await renderer.finish(text)
    assert chan.messages == split_message(text, 50)
    assert {call.kind for call in chan.calls} == {"send"}
    assert renderer.edits_made == 0 and renderer.messages_sent == len(chan.messages)


async def test_a_channel_that_cannot_edit_and_refuses_a_part_as_too_long_gets_no_part_twice() -> None:
    """Its markup grew the second part past the limit: only that part and the rest are cut again."""

    @dataclass
    class Refusing(FakeChannel):
        async def send(self, text: str) -> object:
            if "grown" in text and len(text) > 120:
                raise PlatformTooLong("too long after markup")
            return await super().send(text)

    chan = Refusing(PlatformLimits(200, 0.5, can_edit=False))
    renderer = renderer_for(chan)
    text = "first part " * 16 + "\n\n" + "grown " * 60
    await renderer.finish(text)
    assert "".join(chan.messages).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert chan.messages[0] == split_message(text, 200)[0] and len(chan.messages) > 3
    assert renderer.edits_made == 0 and renderer.messages_sent == len(chan.messages)


async def test_finishing_with_nothing_sends_nothing() -> None:
    chan = channel()
    renderer = renderer_for(chan)
    await renderer.push("  \n")
    await renderer.finish("")
    assert chan.calls == []


async def test_a_shorter_final_text_supersedes_surplus_messages() -> None:
    chan = channel(max_chars=30, interval=0.0)
    renderer = renderer_for(chan)
    await stream(renderer, chan, "word " * 20, step=5, tick=0.0)
    await renderer.finish("Sorry, something went wrong.")
    assert chan.messages[0] == "Sorry, something went wrong."
    assert set(chan.messages[1:]) == {"…"}


# --- send_text ------------------------------------------------------------------------------------


async def test_send_text_splits_and_waits_out_a_429() -> None:
    chan = channel(max_chars=40, rate_limit_calls={2: 3.0})
    text = " ".join(["help text"] * 12)
    await send_text(chan, text, sleep=chan.clock.sleep)
    assert chan.messages == split_message(text, 40)
    assert chan.clock.sleeps == [3.0]


# --- TypingIndicator ------------------------------------------------------------------------------


async def test_typing_is_signalled_at_once_repeatedly_and_stops_on_exit() -> None:
    chan = channel()
    async with TypingIndicator(chan, interval_s=0.01):
        assert chan.typing_calls == 1
        await asyncio.sleep(0.1)
    seen = chan.typing_calls
    assert seen >= 3
    await asyncio.sleep(0.05)
    assert chan.typing_calls == seen


async def test_a_failing_typing_signal_never_breaks_the_reply(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenTyping(FakeChannel):
        async def typing(self) -> None:
            self.typing_calls += 1
            raise ConnectionError("platform down")

    chan = BrokenTyping(PlatformLimits(100, 0.0))
    with caplog.at_level(logging.DEBUG, logger="chatbridge.render"):
        async with TypingIndicator(chan, interval_s=0.01):
            await asyncio.sleep(0.05)
    assert chan.typing_calls >= 2
    warnings = [r for r in caplog.records if r.name == "chatbridge.render" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "platform down" in warnings[0].getMessage()


async def test_typing_stops_when_the_body_raises() -> None:
    chan = channel()
    with pytest.raises(RuntimeError):
        async with TypingIndicator(chan, interval_s=0.01):
            raise RuntimeError("model failed")
    seen = chan.typing_calls
    await asyncio.sleep(0.03)
    assert chan.typing_calls == seen


async def test_a_failed_intermediate_edit_does_not_lose_the_reply() -> None:
    """A network error on a streamed edit is skipped; the final text still lands whole."""

    class FlakyChannel:
        limits = PlatformLimits(max_message_chars=100, min_edit_interval_s=0.0)
        route = ""

        def __init__(self) -> None:
            self.messages: list[str] = []
            self.calls = 0

        async def send(self, text: str) -> object:
            self.messages.append(text)
            return len(self.messages) - 1

        async def edit(self, handle: object, text: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionResetError("blip")
            assert isinstance(handle, int)
            self.messages[handle] = text

        async def typing(self) -> None:
            pass

    channel = FlakyChannel()
    renderer = StreamRenderer(channel)
    for piece in ["one ", "two ", "three"]:
        await renderer.push(piece)
    await renderer.finish("one two three")
    assert channel.messages == ["one two three"]
