"""The context window: newest whole pairs within both budgets, system prompt always first."""

from __future__ import annotations

from bots.model import ChatMessage
from core.store import StoredImage, Turn
from core.window import Budget, SystemPart, build_window

SYS = [SystemPart("sys", 5)]


def _turn(role: str, content: str, tokens: int) -> Turn:
    return Turn(role, content, tokens, 0.0)  # type: ignore[arg-type]


def _history(pairs: int, tokens: int = 10) -> list[Turn]:
    turns: list[Turn] = []
    for n in range(pairs):
        turns += [_turn("user", f"q{n}", tokens), _turn("assistant", f"a{n}", tokens)]
    return turns


def _budget(max_tokens: int = 1000, max_messages: int = 100, overhead: int = 0) -> Budget:
    return Budget(max_tokens, max_messages, overhead, lambda tokens: tokens)


def test_everything_fits() -> None:
    window = build_window(SYS, _history(3), _turn("user", "new", 5), _budget())
    assert window is not None
    assert [m["content"] for m in window.messages] == ["sys", "q0", "a0", "q1", "a1", "q2", "a2", "new"]
    assert window.history_turns == 6
    assert window.raw_tokens == 5 + 60 + 5


def test_token_budget_keeps_the_newest_whole_pairs() -> None:
    window = build_window(SYS, _history(5), _turn("user", "new", 5), _budget(max_tokens=55))
    assert window is not None
    assert [m["content"] for m in window.messages] == ["sys", "q3", "a3", "q4", "a4", "new"]


def test_a_pair_that_does_not_fit_whole_is_left_out_whole() -> None:
    window = build_window(SYS, _history(2), _turn("user", "new", 5), _budget(max_tokens=29))
    assert window is not None
    assert [m["content"] for m in window.messages] == ["sys", "new"]


def test_message_budget_counts_the_new_message() -> None:
    window = build_window(SYS, _history(5), _turn("user", "new", 5), _budget(max_messages=4))
    assert window is not None
    assert [m["content"] for m in window.messages] == ["sys", "q4", "a4", "new"]


def test_orphan_turns_are_skipped_and_pairs_stay_aligned() -> None:
    history = [_turn("user", "lost question", 1), *_history(2)]
    history.insert(3, _turn("user", "unanswered", 1))
    window = build_window([], history, _turn("user", "new", 1), _budget())
    assert window is not None
    assert [(m["role"], m["content"]) for m in window.messages] == [
        ("user", "q0"),
        ("assistant", "a0"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "new"),
    ]


def test_a_new_message_over_the_budget_gives_none() -> None:
    assert build_window(SYS, [], _turn("user", "huge", 100), _budget(max_tokens=50)) is None


def test_overhead_and_calibration_count_against_the_budget() -> None:
    doubled = Budget(100, 100, 2, lambda tokens: tokens * 2)
    window = build_window(SYS, _history(3), _turn("user", "new", 5), doubled)
    assert window is not None
    assert window.history_turns == 2
    assert window.raw_tokens == (5 + 2) + (5 + 2) + 2 * (10 + 2)


def test_a_tighter_budget_keeps_about_half_of_what_was_sent() -> None:
    budget = _budget(max_tokens=1000)
    full = build_window(SYS, _history(10), _turn("user", "new", 5), budget)
    assert full is not None and full.tokens == 210
    half = build_window(SYS, _history(10), _turn("user", "new", 5), budget.tighter_than(full))
    assert half is not None
    assert half.tokens <= 105
    assert half.history_turns == 8


def test_every_system_part_is_kept_in_order_and_counts_in_the_budget() -> None:
    preamble = [SystemPart("persona", 5), SystemPart("", 0), SystemPart("instructions", 10)]
    window = build_window(preamble, _history(5), _turn("user", "new", 5), _budget(max_tokens=50))
    assert window is not None
    assert [m["content"] for m in window.messages[:2]] == ["persona", "instructions"]
    assert window.messages[2]["role"] != "system"
    # 5 + 10 + 5 for the parts and the new message leave 30 of 50: room for one pair of 20 tokens.
    assert window.history_turns == 2
    assert build_window(preamble, [], _turn("user", "new", 36), _budget(max_tokens=50)) is None


def test_pictures_go_with_the_newest_turns_and_count_in_the_budget() -> None:
    picture = StoredImage("image/png", b"\x89PNG", 100)
    history = [
        Turn("user", "first photo", 5, 1.0, (picture,)),
        _turn("assistant", "a cat", 5),
        Turn("user", "second photo", 5, 3.0, (picture,)),
        _turn("assistant", "a dog", 5),
    ]
    new = Turn("user", "third photo", 5, 5.0, (picture,))
    window = build_window([], history, new, _budget(), keep_images_turns=1)
    assert window is not None
    kinds = [
        m["content"] if isinstance(m["content"], str) else [p["type"] for p in m["content"]] for m in window.messages
    ]
    assert kinds == ["first photo", "a cat", ["text", "image_url"], "a dog", ["text", "image_url"]]
    assert window.tokens == 5 * 5 + 2 * 100
    # The second photo's pair no longer fits with its picture; the pair before it is not reached.
    tight = build_window([], history, new, _budget(max_tokens=5 + 100 + 5 + 5 + 50), keep_images_turns=1)
    assert tight is not None and tight.history_turns == 0


def test_an_answers_tool_steps_come_before_it_and_count_as_messages() -> None:
    steps = (
        ChatMessage(role="assistant", content="", tool_calls=[]),
        ChatMessage(role="tool", content="found", tool_call_id="c1"),
    )
    history = [*_history(1), _turn("user", "q1", 10), Turn("assistant", "a1", 10, 0.0, steps=steps)]

    roomy = build_window(SYS, history, _turn("user", "new", 5), _budget(max_messages=6))
    assert roomy is not None
    assert [m["content"] for m in roomy.messages] == ["sys", "q1", "", "found", "a1", "new"]
    assert roomy.messages[3].get("tool_call_id") == "c1"

    tight = build_window(SYS, history, _turn("user", "new", 5), _budget(max_messages=4))
    assert tight is not None
    assert [m["content"] for m in tight.messages] == ["sys", "new"], "the group is four messages: it goes whole"


def test_a_pictured_question_and_its_answers_tool_steps_go_together() -> None:
    picture = StoredImage("image/png", b"\x89PNG", 100)
    steps = (
        ChatMessage(role="assistant", content="", tool_calls=[]),
        ChatMessage(role="tool", content="found", tool_call_id="c1"),
    )
    history = [Turn("user", "photo", 5, 1.0, images=(picture,)), Turn("assistant", "a1", 10, 2.0, steps=steps)]
    new = _turn("user", "new", 5)

    window = build_window([], history, new, _budget(max_messages=5), keep_images_turns=1)
    assert window is not None
    assert [m["role"] for m in window.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert not isinstance(window.messages[0]["content"], str), "the picture is still sent"
    assert window.tokens == 5 + 100 + 10 + 5

    # Too few messages for the group with its steps, or too few tokens for it with its picture: it goes whole.
    few = build_window([], history, new, _budget(max_messages=4), keep_images_turns=1)
    assert few is not None and few.history_turns == 0
    tight = build_window([], history, new, _budget(max_tokens=5 + 100 + 10 + 4), keep_images_turns=1)
    assert tight is not None and tight.history_turns == 0
    # Past keep_images_turns the picture is no longer sent or counted, and the group fits again.
    plain = build_window([], history, new, _budget(max_tokens=5 + 100 + 10 + 4), keep_images_turns=0)
    assert plain is not None and plain.history_turns == 2 and plain.messages[0]["content"] == "photo"
