"""Usage bookkeeping shared by the engine (which records) and /admin stats (which reports)."""

from __future__ import annotations

from dataclasses import dataclass

from core.store import ModelUsage, UsageDelta, UsageTotals


@dataclass(slots=True)
class RunningTotals:
    """Usage counters: the engine's since this process started, and the memory store's per day."""

    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0

    def add(self, delta: UsageDelta) -> None:
        self.messages += delta.messages
        self.prompt_tokens += delta.prompt_tokens
        self.completion_tokens += delta.completion_tokens
        self.errors += delta.errors

    def of_day(self, day: str) -> UsageTotals:
        return UsageTotals(day, self.messages, self.prompt_tokens, self.completion_tokens, self.errors)

    def of_model(self, model: str) -> ModelUsage:
        return ModelUsage(model, self.messages, self.prompt_tokens, self.completion_tokens, self.errors)


def describe(totals: RunningTotals | UsageTotals) -> str:
    return (
        f"{totals.messages} messages, {totals.prompt_tokens} tokens in, "
        f"{totals.completion_tokens} tokens out, {totals.errors} errors"
    )
