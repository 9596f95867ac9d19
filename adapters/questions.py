"""Yes/no questions with platform buttons, for a tool's confirmation (design section 10); what every
platform's buttons share, so that each adapter only posts the buttons and reads the presses.

A question is open from when its buttons are posted until its asker answers or ``timeout_s`` passes;
then the message is edited to show what was decided (which also takes the buttons away). Only the
asker's press counts: anyone else is told so and nothing changes. The open questions live in this
process only: after a restart a press finds nothing open and is told the question is closed, while
the engine, answering the interrupted turn again, counts the call as declined.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from core import texts

log = logging.getLogger("chatbridge.questions")

PREFIX = "cbq:"
"""Starts the data of every button of ours (Telegram allows 64 bytes of it)."""
_H = TypeVar("_H")


@dataclass(frozen=True, slots=True)
class _Open:
    asker: str
    answer: asyncio.Future[bool]


def button_data(question_id: str, yes: bool) -> str:
    return f"{PREFIX}{question_id}:{'y' if yes else 'n'}"


def read_button(data: str) -> tuple[str, bool] | None:
    """``(question id, yes)`` from a button's data; None when it is not one of ours."""
    if not data.startswith(PREFIX):
        return None
    question_id, _, choice = data.removeprefix(PREFIX).rpartition(":")
    return (question_id, choice == "y") if question_id and choice in ("y", "n") else None


class OpenQuestions:
    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}

    async def ask(
        self,
        question: str,
        asker: str,
        timeout_s: float,
        post: Callable[[str], Awaitable[_H]],
        settle: Callable[[_H, str], Awaitable[object]],
    ) -> bool:
        """``post(question_id)`` shows the question with its buttons and returns a handle for
        ``settle(handle, text)``, which replaces it with the decision."""
        question_id = secrets.token_hex(8)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._open[question_id] = _Open(asker, answer)
        try:
            handle = await post(question_id)
            try:
                async with asyncio.timeout(timeout_s):
                    allowed = await answer
                decided = texts.TOOL_CONFIRMED if allowed else texts.TOOL_DECLINED
            except TimeoutError:
                allowed, decided = False, texts.TOOL_TIMED_OUT
        finally:
            del self._open[question_id]
        try:
            await settle(handle, decided.format(question=question))
        except Exception as exc:  # noqa: BLE001 - the decision stands even when showing it fails
            log.warning("could not show the decision on a question: %s", type(exc).__name__)
        return allowed

    def press(self, question_id: str, presser: str, yes: bool) -> str | None:
        """A button was pressed by ``presser`` (``platform:id``): None when it counted, else the
        notice to show only to the presser."""
        entry = self._open.get(question_id)
        if entry is None or entry.answer.done():
            return texts.TOOL_CONFIRM_EXPIRED
        if presser != entry.asker:
            return texts.TOOL_CONFIRM_NOT_YOURS
        entry.answer.set_result(yes)
        return None
