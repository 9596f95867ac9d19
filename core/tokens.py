"""Token counts for the context window, offline and for any model.

Each message is counted once, when it is created, and the *raw* count is stored with it. The model
server's own figures (``usage.prompt_tokens``) then calibrate a single ratio that the window builder
applies through ``scaled``, so stored numbers never need rewriting when the estimate improves.

tiktoken is used when it can load its encoding quickly. It downloads the BPE file on first use,
which fails or hangs without internet, so it is loaded in a daemon thread under a timeout and, when
it does not arrive, this process estimates instead for the rest of its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from core.settings import TokenizerChoice

if TYPE_CHECKING:
    from tiktoken import Encoding

log = logging.getLogger("chatbridge.tokens")

_T = TypeVar("_T")

# Per-message framing (role, separators) in OpenAI's chat format: 3 for current models, 4 for older.
MESSAGE_OVERHEAD = 4
# For model names tiktoken does not know (Llama, Mistral, Qwen... behind an OpenAI-compatible API):
# the smaller vocabulary gives the higher, safer count.
_FALLBACK_ENCODING = "cl100k_base"
_SMOOTHING = 0.3
_CALIBRATION_BOUNDS = (0.5, 3.0)

# Units the estimate charges one token each, over ASCII text (see ``estimate_tokens``).
_ASCII_UNITS = re.compile(
    r" ?[A-Za-z]{1,3}"  # letters, three to a token; the space before a word is part of it
    r"|[0-9]{1,3}"  # digits, in the groups of at most three that the pre-tokenizers make
    r"| ?[\x00-\x08\x0a-\x1f!-/:-@\[-`{-~\x7f]"  # each symbol, control character, line break
    r"|(?:[ \t](?=[ \t])){1,4}"  # blanks beyond the one a word absorbs, four to a token
    r"|[ \t](?=[0-9]|\Z)"  # a blank nothing absorbs: before a number, or at the very end
)
# Non-ASCII characters that BPE vocabularies cover better than one token per UTF-8 byte: Latin
# letters with diacritics (2 bytes, charged 1); CJK ideographs, kana, Hangul, fullwidth forms,
# general punctuation and currency signs (3 bytes, charged 2).
_CHEAPER_THAN_BYTES = re.compile(
    "[\u0080-\u036f\u1100-\u11ff\u2000-\u206f\u20a0-\u20cf\u2e80-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]"
)


def estimate_tokens(text: str) -> int:
    """A token count that needs no vocabulary, meant never to fall below cl100k_base or o200k_base
    on natural language and code; for English prose it runs about 40–50% above them.

    Both encodings split text before BPE so that no token spans letters and digits, digits come in
    groups of at most three, and a space joins the word or symbol after it but not a number. So:

    * ASCII letters: one token per three letters of a run. Real English averages ~4 characters a
      token (OpenAI's rule of thumb) and common words are one token at any length; rare words are
      cut into pieces of 3–4 letters.
    * Digits: one per group of up to three; a space before a number is a token of its own.
    * Each ASCII symbol, control character and line break: one, though runs (``...``, ``\\n\\n``)
      often merge into a single token.
    * Blanks: the one before a word or symbol is free; extra blanks, as in indentation, cost one
      per four.
    * Other characters: their UTF-8 length, the most a byte-level BPE can spend (emoji 4, most
      scripts 2–3), except where the vocabularies are known to do much better: accented Latin
      letters 1, and CJK ideographs, kana, Hangul, CJK and general punctuation 2 (cl100k_base needs
      one token for a common ideograph, two or three for a rarer one).

    Checked against the figures in OpenAI's "How to count tokens with tiktoken" (cl100k_base /
    o200k_base → here): "tiktoken is great!" 6/6 → 7; "antidisestablishmentarianism" 6/6 → 10;
    "2 + 2 = 4" 7/7 → 7; "お誕生日おめでとう" 9/8 → 18.

    The known gap is random strings (keys, hashes, base64), which BPE may cut finer than three
    letters a token; the server's context-length error, which trims and retries, is the backstop.
    """
    units = len(_ASCII_UNITS.findall(text))
    if text.isascii():
        return units
    ascii_chars = len(text.encode("ascii", "ignore"))
    non_ascii_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return units + non_ascii_bytes - len(_CHEAPER_THAN_BYTES.findall(text))


class TokenCounter:
    """Counts a message's tokens and keeps the calibration between those counts and the server's."""

    def __init__(self, count: Callable[[str], int], backend: str, *, message_overhead: int = MESSAGE_OVERHEAD) -> None:
        self._count = count
        self._backend = backend
        self._message_overhead = message_overhead
        self._calibration = 1.0

    @classmethod
    def estimate(cls) -> TokenCounter:
        """The vocabulary-free counter: instant to build, never touches tiktoken."""
        return cls(estimate_tokens, "estimate")

    @property
    def backend(self) -> str:
        """``estimate`` or ``tiktoken:<encoding>``, for logs and ``chatbridge check``."""
        return self._backend

    @property
    def message_overhead(self) -> int:
        return self._message_overhead

    @property
    def calibration(self) -> float:
        """Smoothed ratio of the server's prompt tokens to ours; scales stored raw counts."""
        return self._calibration

    def count(self, text: str) -> int:
        """Tokens of one message's content, raw (uncalibrated), as stored with the message."""
        return self._count(text)

    def calibrate(self, estimated_prompt_tokens: int, reported_prompt_tokens: int) -> None:
        """Fold one request's figures into the ratio.

        Smoothed so one odd request (a server adding hidden tokens, a cached prompt) cannot swing
        the window, and clamped so a broken ``usage`` cannot shrink it to nothing or let it overflow.
        """
        if estimated_prompt_tokens <= 0 or reported_prompt_tokens <= 0:
            return
        low, high = _CALIBRATION_BOUNDS
        ratio = min(max(reported_prompt_tokens / estimated_prompt_tokens, low), high)
        self._calibration += _SMOOTHING * (ratio - self._calibration)

    def scaled(self, tokens: int) -> int:
        """A stored raw count in calibrated tokens, rounded up to stay on the safe side."""
        return math.ceil(tokens * self._calibration)


# Why tiktoken could not be used, once a load has failed: it is not tried again in this process.
_unavailable: str | None = None


async def load_token_counter(choice: str, model_name: str, timeout_s: float = 3.0) -> TokenCounter:
    """The counter for ``context.tokenizer``: ``estimate``, or tiktoken (``auto``/``tiktoken``) when
    its encoding for ``model_name`` loads within ``timeout_s``, else the estimate.

    Never blocks the event loop. Falling back is logged once at INFO for ``auto`` and at WARNING
    for ``tiktoken``, where the operator asked for it explicitly.
    """
    global _unavailable
    chosen = TokenizerChoice(choice)
    if chosen is TokenizerChoice.ESTIMATE:
        return TokenCounter.estimate()
    if _unavailable is None:
        try:
            load = functools.partial(_load_encoding, model_name)
            encoding = await asyncio.wait_for(_in_daemon_thread(load), timeout_s)
        except TimeoutError:
            _unavailable = f"its encoding did not load within {timeout_s:g}s (no network?)"
        except Exception as error:  # noqa: BLE001 - any failure inside tiktoken means: estimate
            _unavailable = f"its encoding failed to load: {error!r}"
        else:
            return TokenCounter(_tiktoken_count(encoding), f"tiktoken:{encoding.name}")
    level = logging.WARNING if chosen is TokenizerChoice.TIKTOKEN else logging.INFO
    log.log(level, "tiktoken unavailable, estimating token counts instead: %s", _unavailable)
    return TokenCounter.estimate()


def _load_encoding(model_name: str) -> Encoding:
    """Blocking; may download. Imported here so that the ``estimate`` choice never loads tiktoken."""
    import tiktoken

    try:
        return tiktoken.encoding_for_model(model_name)
    except KeyError:
        return tiktoken.get_encoding(_FALLBACK_ENCODING)


def _tiktoken_count(encoding: Encoding) -> Callable[[str], int]:
    def count(text: str) -> int:
        # encode_ordinary: a user typing "<|endoftext|>" is text, not a special token or an error.
        return len(encoding.encode_ordinary(text))

    return count


def _in_daemon_thread(work: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run blocking ``work`` where a hang can hold up neither the event loop nor the process exit.

    ``asyncio.to_thread`` would do the first but not the second: interpreter shutdown joins the
    default executor's threads, so a download stuck on a dropped connection would block exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not future.done():  # else it timed out and was cancelled meanwhile
            outcome()

    def run() -> None:
        outcome: Callable[[], None]
        try:
            outcome = functools.partial(future.set_result, work())
        except Exception as error:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = functools.partial(future.set_exception, error)
        with contextlib.suppress(RuntimeError):  # the loop closed while a hung load went on
            loop.call_soon_threadsafe(deliver, outcome)

    threading.Thread(target=run, name="tiktoken-load", daemon=True).start()
    return future
