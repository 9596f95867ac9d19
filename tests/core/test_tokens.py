"""Token counting: the offline estimate never under-counts real tokenizers on ordinary text, the
calibration follows the server, and loading tiktoken can neither hang the bridge nor need internet.

Reference figures are cl100k_base / o200k_base counts published in OpenAI's cookbook ("How to count
tokens with tiktoken"); no tokenizer file is needed to run these tests.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import tokens
from core.tokens import TokenCounter, estimate_tokens, load_token_counter

ENGLISH = (
    "Splitting text strings into tokens is useful because GPT models see text in the form of tokens. "
    "Knowing how many tokens are in a text string can tell you whether the string is too long for a "
    "text model to process and how much an API call costs, as usage is priced by token."
)
# 100 characters of Chinese, punctuation included.
CHINESE = (
    "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
    "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。人工智能从诞生以来，理论和技术日益成熟。"
)[:100]


@pytest.fixture(autouse=True)
def fresh_tiktoken_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides for itself whether tiktoken already failed in this process."""
    monkeypatch.setattr(tokens, "_unavailable", None)


# --- the estimate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "real_tokens"),
    [
        ("tiktoken is great!", 6),
        ("antidisestablishmentarianism", 6),
        ("2 + 2 = 4", 7),
        ("お誕生日おめでとう", 9),
    ],
)
def test_estimate_is_not_below_published_tokenizer_counts(text: str, real_tokens: int) -> None:
    assert estimate_tokens(text) >= real_tokens


def test_english_is_over_counted_but_not_absurdly() -> None:
    # ~4 characters per token is OpenAI's figure for English.
    estimate = estimate_tokens(ENGLISH)
    assert len(ENGLISH) / 4 <= estimate <= len(ENGLISH) / 2


def test_chinese_counts_at_least_one_token_per_character() -> None:
    assert len(CHINESE) == 100
    assert estimate_tokens(CHINESE) >= 100


@pytest.mark.parametrize(
    "text", ["Привет, как дела?", "Καλημέρα κόσμε", "👍🎉🚀", "नमस्ते दुनिया", "안녕하세요 세계", "カタカナとひらがな"]
)
def test_other_scripts_and_emoji_count_at_least_one_per_character(text: str) -> None:
    assert estimate_tokens(text) >= len(text.replace(" ", ""))


def test_code_indentation_and_numbers_are_charged() -> None:
    assert estimate_tokens("        return x") > estimate_tokens("return x")
    assert estimate_tokens("x = 1234567") >= 1 + 1 + 1 + 3


def test_empty_text_is_free() -> None:
    assert estimate_tokens("") == 0


def test_counting_10_kb_is_fast() -> None:
    text = (ENGLISH * 60)[:10_240]
    counter = TokenCounter.estimate()
    started = time.perf_counter()
    for _ in range(100):
        counter.count(text)
    assert (time.perf_counter() - started) / 100 < 0.005


# --- calibration ----------------------------------------------------------------------------------


def test_calibration_moves_smoothly_toward_the_servers_ratio() -> None:
    counter = TokenCounter.estimate()
    assert counter.calibration == 1.0
    counter.calibrate(1000, 750)
    assert 0.75 < counter.calibration < 1.0
    for _ in range(50):
        counter.calibrate(1000, 750)
    assert counter.calibration == pytest.approx(0.75, abs=1e-3)


def test_calibration_is_clamped_and_ignores_missing_figures() -> None:
    counter = TokenCounter.estimate()
    for _ in range(100):
        counter.calibrate(100, 10_000)
    assert counter.calibration == pytest.approx(3.0)
    for _ in range(100):
        counter.calibrate(10_000, 1)
    assert counter.calibration == pytest.approx(0.5)
    before = counter.calibration
    counter.calibrate(0, 100)
    counter.calibrate(100, 0)
    assert counter.calibration == before


def test_scaled_rounds_up_and_stored_counts_stay_raw() -> None:
    counter = TokenCounter.estimate()
    raw = counter.count(ENGLISH)
    for _ in range(50):
        counter.calibrate(1000, 1101)
    assert counter.count(ENGLISH) == raw
    assert counter.scaled(10) == 12  # 10 * ~1.1 rounded up
    assert counter.scaled(0) == 0


def test_message_overhead_is_a_few_tokens() -> None:
    assert 3 <= TokenCounter.estimate().message_overhead <= 5


# --- loading tiktoken -----------------------------------------------------------------------------


@pytest.fixture
def hung_loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A tiktoken load that hangs like a download on a dropped connection, until the test ends."""
    release = threading.Event()
    calls: list[str] = []

    def hang(model_name: str) -> object:
        calls.append(model_name)
        release.wait(30)
        raise ConnectionError("gave up")

    monkeypatch.setattr(tokens, "_load_encoding", hang)
    yield calls
    release.set()


async def test_estimate_choice_never_imports_or_loads_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(model_name: str) -> object:
        raise AssertionError("the estimate choice must not load tiktoken")

    monkeypatch.setattr(tokens, "_load_encoding", forbidden)
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # any import would now fail
    counter = await load_token_counter("estimate", "gpt-4o-mini")
    assert counter.backend == "estimate"
    assert counter.count("hello") == estimate_tokens("hello")


async def test_auto_falls_back_to_the_estimate_without_internet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: tiktoken would have to download
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="chatbridge.tokens"):
        counter = await load_token_counter("auto", "gpt-4o-mini", timeout_s=0.2)
    assert counter.backend == "estimate"
    assert time.perf_counter() - started < 5
    [record] = [r for r in caplog.records if r.name == "chatbridge.tokens"]
    assert record.levelno == logging.INFO and "estimating" in record.getMessage()


async def test_a_hanging_load_times_out_without_blocking_the_event_loop(hung_loader: list[str]) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    counter = await load_token_counter("auto", "gpt-4o-mini", timeout_s=0.3)
    elapsed = time.perf_counter() - started
    ticking.cancel()
    assert counter.backend == "estimate"
    assert hung_loader == ["gpt-4o-mini"]
    assert 0.25 <= elapsed < 3
    assert ticks >= 5


async def test_the_fallback_lasts_for_the_process(hung_loader: list[str]) -> None:
    await load_token_counter("auto", "gpt-4o-mini", timeout_s=0.05)
    again = await load_token_counter("auto", "gpt-4o-mini", timeout_s=0.05)
    assert again.backend == "estimate"
    assert len(hung_loader) == 1


async def test_explicit_tiktoken_choice_warns_when_it_cannot_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(model_name: str) -> object:
        raise OSError("no route to host")

    monkeypatch.setattr(tokens, "_load_encoding", broken)
    with caplog.at_level(logging.INFO, logger="chatbridge.tokens"):
        counter = await load_token_counter("tiktoken", "gpt-4o-mini")
    assert counter.backend == "estimate"
    [record] = [r for r in caplog.records if r.name == "chatbridge.tokens"]
    assert record.levelno == logging.WARNING and "no route to host" in record.getMessage()


async def test_a_loaded_encoding_counts_the_real_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEncoding:
        name = "fake_base"

        def encode_ordinary(self, text: str) -> list[int]:
            return list(range(len(text.split())))

    monkeypatch.setattr(tokens, "_load_encoding", lambda model_name: FakeEncoding())
    counter = await load_token_counter("auto", "some-llama")
    assert counter.backend == "tiktoken:fake_base"
    assert counter.count("one two three <|endoftext|>") == 4


async def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ValueError):
        await load_token_counter("sentencepiece", "gpt-4o-mini")
