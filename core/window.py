"""Build the per-request context window from the stored transcript.

The window is a copy: trimming never touches what is stored. Token counts come from the turns
themselves (counted once, when each turn was created), so the cost here depends on the window's size,
not on how long the conversation has been going.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bots.model import ChatMessage
from bots.parts import ContentPart, with_images
from core.store import Turn


class SystemPart(NamedTuple):
    """A system message that opens every window (the persona's prompt, the asker's custom
    instructions) with its token count; these are never trimmed."""

    content: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Window:
    """``tokens`` is the calibrated estimate the budget was checked against; ``raw_tokens`` sums the
    uncalibrated counts, which is what calibration compares with the server's figure."""

    messages: list[ChatMessage]
    tokens: int
    raw_tokens: int
    history_turns: int


@dataclass(frozen=True, slots=True)
class Budget:
    """``scale`` turns a stored raw count into the calibrated estimate for the current model."""

    max_tokens: int
    max_messages: int
    message_overhead: int
    scale: Callable[[int], int]

    def cost(self, tokens: int) -> int:
        return self.scale(tokens) + self.message_overhead

    def tighter_than(self, window: Window) -> Budget:
        """Half of what ``window`` used: for when the server says a prompt our estimate let through is
        too long, so our estimate is evidently low for this model."""
        return Budget(window.tokens // 2, self.max_messages, self.message_overhead, self.scale)


def build_window(
    preamble: Sequence[SystemPart],
    history: Sequence[Turn],
    user_turn: Turn,
    budget: Budget,
    *,
    keep_images_turns: int = 0,
) -> Window | None:
    """The system parts + the newest whole user/assistant pairs that fit + the new user turn.

    Pictures go with the new turn and with the user turns of the ``keep_images_turns`` newest pairs
    (``media.keep_images_turns``), each counted at its stored token estimate, calibrated like text
    (the server's usage figure covers both); older pictures stay stored but are no longer sent.

    A pair is a turn group: an assistant turn's tool calls and results (``Turn.steps``) are counted
    in its tokens and come and go with it.

    ``max_messages`` counts every message but the system parts, the new one included, and an
    answer's tool calls and results too. Empty system parts are left out.

    None when the system parts and the new message alone exceed the budget: the caller refuses such
    a message rather than sending the model a prompt without them.
    """
    overhead = budget.message_overhead
    used = budget.cost(user_turn.tokens + image_tokens(user_turn))
    raw = user_turn.tokens + overhead + image_tokens(user_turn)
    system = [part for part in preamble if part.content]
    for part in system:
        used += budget.cost(part.tokens)
        raw += part.tokens + overhead
    if used > budget.max_tokens:
        return None
    # Walk back from the newest turn, one (user, assistant) pair at a time, skipping any turn without
    # its partner. One plain loop: this runs for every message, over up to ``max_messages`` turns.
    kept: list[Turn] = [user_turn]
    scale, pair_overhead = budget.scale, 2 * overhead  # looked up once, not per turn
    messages_left = budget.max_messages - 1
    pairs_with_images = keep_images_turns
    index = len(history) - 1
    while index >= 1 and messages_left >= 2:
        assistant, user = history[index], history[index - 1]
        if assistant.role != "assistant" or user.role != "user":
            index -= 1
            continue
        pictures = image_tokens(user) if pairs_with_images > 0 else 0
        pair_cost = scale(user.tokens + pictures) + scale(assistant.tokens) + pair_overhead
        if used + pair_cost > budget.max_tokens or 2 + len(assistant.steps) > messages_left:
            break
        used += pair_cost
        raw += user.tokens + assistant.tokens + pair_overhead + pictures
        pairs_with_images -= 1
        kept += (assistant, user)
        index -= 2
        messages_left -= 2 + len(assistant.steps)
    kept.reverse()
    messages = [ChatMessage(role="system", content=part.content) for part in system]
    shown_from = len(kept) - 1 - 2 * keep_images_turns  # the oldest user turn whose pictures are sent
    for index, turn in enumerate(kept):
        if turn.steps:  # an answer's tool calls and results go before it, as they were sent
            messages += turn.steps
        messages.append({"role": turn.role, "content": content_of(turn) if index >= shown_from else turn.content})
    return Window(messages=messages, tokens=used, raw_tokens=raw, history_turns=len(kept) - 1)


def image_tokens(turn: Turn) -> int:
    """What a turn's pictures add to a window (the estimates stored with them, ``bots.images``)."""
    return sum(image.tokens for image in turn.images) if turn.images else 0


def content_of(turn: Turn) -> str | list[ContentPart]:
    """A turn as the model gets it: its text alone, or its text and pictures as parts."""
    return with_images(turn.content, turn.images) if turn.images else turn.content
