"""Where a long reply is cut into messages: at paragraphs, lines and words, code blocks closed and
reopened, and every cut prefix-stable so that streamed messages never change once complete."""

from __future__ import annotations

import random
import re
import time

import pytest

from core.channel import LengthUnit
from core.splitter import split_message
from tests.kit.replies import code_block, long_reply


def without_whitespace(text: str) -> str:
    return re.sub(r"\s+", "", text)


def rejoined(chunks: list[str]) -> str:
    """The chunks glued back, minus the fence lines added where a code block was split."""
    glued = "\x00".join(chunks)
    return re.sub(r"\n(`{3,}|~{3,})\x00\1[^\n]*\n", "\n", glued).replace("\x00", "\n")


def test_short_text_is_one_message_without_outer_whitespace() -> None:
    assert split_message("\n\n  Hello there.  \n", 100) == ["Hello there."]
    assert split_message("", 100) == []
    assert split_message(" \n\n ", 100) == []


def test_prefers_a_paragraph_break() -> None:
    first = "First paragraph, a sentence.\nWith a second line here."
    second = "Second paragraph words."
    assert split_message(f"{first}\n\n{second}", 60) == [first, second]


def test_prefers_a_line_break_over_a_space() -> None:
    lines = ["alpha beta gamma delta", "epsilon zeta eta theta", "iota kappa lambda mu"]
    assert split_message("\n".join(lines), 50) == ["\n".join(lines[:2]), lines[2]]


def test_breaks_between_words_when_a_paragraph_has_no_line_breaks() -> None:
    text = " ".join(f"word{i}" for i in range(60))
    chunks = split_message(text, 40)
    assert all(len(chunk) <= 40 for chunk in chunks)
    assert " ".join(chunks) == text
    assert all(re.fullmatch(r"(word\d+ ?)+", chunk) for chunk in chunks)


def test_cuts_inside_a_word_only_when_there_is_no_space() -> None:
    assert split_message("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]


def test_does_not_chop_at_an_early_break_when_a_later_one_exists() -> None:
    text = "Title\n\n" + " ".join(["lorem"] * 40)
    chunks = split_message(text, 100)
    assert len(chunks[0]) > 50
    assert without_whitespace("".join(chunks)) == without_whitespace(text)


def test_keeps_a_code_block_whole_when_it_fits_a_message() -> None:
    intro = "Here is the code you asked for, with a short explanation before it."
    block = code_block("python", 5)
    text = f"{intro}\n{block}\n\nAnd a closing remark."
    chunks = split_message(text, 130)
    assert block in chunks[1]
    assert chunks[0] == intro
    assert all(chunk.count("```") % 2 == 0 for chunk in chunks)


def test_an_oversized_code_block_is_closed_and_reopened_with_its_language() -> None:
    block = code_block("python", 30)
    text = f"Intro line.\n\n{block}\n\nOutro line."
    chunks = split_message(text, 120)
    code_chunks = [chunk for chunk in chunks if "line_" in chunk]
    assert len(code_chunks) > 2
    for chunk in code_chunks:
        assert len(chunk) <= 120
        assert chunk.startswith("```python\n") and chunk.endswith("\n```")
    assert chunks[0] == "Intro line." and chunks[-1] == "Outro line."
    assert rejoined(chunks) == text.replace("\n\n", "\n")


def test_a_reopened_block_keeps_its_indentation_and_tilde_fence() -> None:
    body = "\n".join(f"    indented_{i} = {i}" for i in range(20))
    text = f"~~~~yaml\n{body}\n~~~~"
    chunks = split_message(text, 100)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.startswith("~~~~yaml\n    indented_") and chunk.endswith("\n~~~~")


def test_no_chunk_exceeds_the_limit_or_has_boundary_whitespace_and_no_text_is_lost() -> None:
    text = long_reply()
    for limit in (60, 150, 500, 2000):
        chunks = split_message(text, limit)
        assert all(len(chunk) <= limit for chunk in chunks)
        assert all(chunk == chunk.strip() for chunk in chunks)
        assert without_whitespace(rejoined(chunks)) == without_whitespace(text)


def test_split_is_prefix_stable_so_completed_chunks_never_change() -> None:
    text = long_reply(seed=3)[:3000]
    for limit in (70, 300):
        final = split_message(text, limit)
        for end in range(1, len(text) + 1):
            chunks = split_message(text[:end], limit)
            completed = chunks[:-1]
            assert completed == final[: len(completed)], (limit, end)


def test_random_texts_stay_prefix_stable_and_within_the_limit() -> None:
    pieces = [
        "word",
        "longerword",
        "y" * 30,
        " ",
        " ",
        "\n",
        "\n\n",
        "\n```py\n",
        "\n```\n",
        "\n  ~~~\n",
        "``",
        "\t",
        "ü中",
    ]
    for seed in range(40):
        rng = random.Random(seed)
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(5, 60)))
        for limit in (15, 40):
            final = split_message(text, limit)
            assert all(0 < len(chunk) <= limit for chunk in final)
            for end in range(1, len(text) + 1):
                completed = split_message(text[:end], limit)[:-1]
                assert completed == final[: len(completed)], (seed, limit, end)


def test_splitting_a_100_kb_reply_is_fast() -> None:
    text = (long_reply() + "\n\n") * (100_000 // len(long_reply()) + 1)
    started = time.perf_counter()
    chunks = split_message(text, 4096)
    assert time.perf_counter() - started < 1.0
    assert len(chunks) >= 25


def test_rejects_a_nonsensical_limit() -> None:
    with pytest.raises(ValueError):
        split_message("text", 0)


def test_utf16_limits_count_characters_outside_the_bmp_twice() -> None:
    text = "ok " + "\U0001f600" * 30 + " done"
    chunks = split_message(text, 20, LengthUnit.UTF16)
    assert all(LengthUnit.UTF16.measure(chunk) <= 20 for chunk in chunks)
    assert "".join(chunk.replace(" ", "") for chunk in chunks) == text.replace(" ", "")
    assert split_message(text, 20) != chunks  # by characters the same text needs fewer messages


def test_utf8_byte_limits_count_a_chinese_character_three_times() -> None:
    text = "你好，" * 40 + " and some ASCII words after it"
    chunks = split_message(text, 64, LengthUnit.UTF8_BYTES)
    assert all(LengthUnit.UTF8_BYTES.measure(chunk) <= 64 for chunk in chunks)
    assert max(LengthUnit.UTF8_BYTES.measure(chunk) for chunk in chunks) > 60  # chunks are kept full
    assert "".join(chunk.replace(" ", "") for chunk in chunks) == text.replace(" ", "")
    assert len(chunks) > len(split_message(text, 64))  # by characters the same text needs fewer messages
