"""Every text a user can see from the engine, in one place, so wording stays consistent and reviewable.

None of these may carry a secret, a stack trace or a provider's raw error message.
"""

from __future__ import annotations

from collections.abc import Iterable

DENIED = "Sorry, you are not allowed to use this bot. An admin can add you; send /id to see your identity."
ADMIN_ONLY = "Only admins can use /admin commands. Nothing was changed."
RATE_LIMITED = (
    "You are sending messages faster than this bridge allows ({limit} per minute). Please wait a moment and try again."
)
EMPTY_PROMPT = "Yes? Write your question after the mention."
MESSAGE_TOO_LONG = "That message is too long for me ({size} characters; the limit is {limit}). Please shorten it."
MESSAGE_OVER_CONTEXT = (
    "That message is too long for the model's context window, even without the conversation before it. "
    "Please shorten it or split it up."
)
SESSION_CLEARED = "Conversation cleared. Let's start fresh."
SESSION_WAS_EMPTY = "There was nothing to clear; the conversation is already fresh."
CUT_AT_LENGTH = "(The reply was cut off at the length limit.)"
EMPTY_REPLY = "The model returned an empty answer. Please try rephrasing."
TEMPORARILY_UNAVAILABLE = (
    "The bridge cannot take messages right now, so this one was not kept. Please send it again in a moment."
)
STORE_FAILED_WHILE_ANSWERING = (
    "The bridge's storage stopped answering. Your message is kept and will be answered when it is back."
)
NOT_REMEMBERED = "(The bridge could not save this exchange, so I will not remember it later in this conversation.)"
DELIVERED_LATE = "(This answer could not be delivered earlier: the chat platform was not taking messages.)"
ANSWERED_AFTER_INTERRUPTION = "(I was interrupted while answering your message; here is the full answer.)"
INTERNAL_ERROR = "Something went wrong on our side. Please try again."

# Tools (design section 10): the status line while they run, and the confirmation a writing tool asks for.
TOOL_STATUS = "_using {tool}: {arguments}…_"
TOOL_CONFIRM_QUESTION = "May I run {tool} with {arguments}? Only {asker} can answer; no answer in {seconds} s means no."
TOOL_CONFIRM_YES = "Run it"
TOOL_CONFIRM_NO = "Don't"
TOOL_CONFIRMED = "{question}\n→ Allowed; running it."
TOOL_DECLINED = "{question}\n→ Declined; not run."
TOOL_TIMED_OUT = "{question}\n→ No answer in time; not run."
TOOL_CONFIRM_EXPIRED = "This question is no longer open (the bridge restarted or it was already answered)."
TOOL_CONFIRM_NOT_YOURS = "Only the person who asked can answer this."
TOOL_CONSOLE_PROMPT = "{question} [y/N] "

MODEL_RATE_LIMITED = "The model provider is rate-limiting this bridge right now. Please try again in a minute."
MODEL_ACCESS_DENIED = "The model provider refused the request (API key or quota problem). An admin needs to check the bridge's model settings."
MODEL_TIMEOUT = "The model took too long to answer. Please try again."
MODEL_UNAVAILABLE = "The model could not be reached or sent a broken answer. Please try again later."
MODEL_ERRORS = {
    "model_rate_limited": MODEL_RATE_LIMITED,
    "model_access_denied": MODEL_ACCESS_DENIED,
    "model_timeout": MODEL_TIMEOUT,
    "context_too_long": MESSAGE_OVER_CONTEXT,
    "model_unavailable": MODEL_UNAVAILABLE,
}
"""The answer to each ``kind`` of ``bots.errors.ModelError``."""

ADMIN_USAGE = (
    "Admin commands:\n"
    "/admin sessions: list active sessions\n"
    "/admin clear <session-key or identity>: clear those sessions\n"
    "/admin clear all: clear every session\n"
    "/admin allow <identity>: allow a user or chat\n"
    "/admin deny <identity>: deny a user or chat\n"
    "/admin budget <identity> <tokens per day | default | unlimited>: set a user's or chat's token budget\n"
    "/admin stats: messages, tokens, errors and cost\n"
    "/admin usage <identity>: one user's or chat's tokens and cost"
)
BUDGET_USAGE = (
    "Usage: /admin budget <identity> <tokens per day | default | unlimited>, "
    "e.g. /admin budget telegram:123456789 50000. Nothing was changed."
)
BUDGET_SET = "{identity} may now use {tokens} tokens a day."
BUDGET_UNLIMITED = "{identity} now has no token budget (unlimited)."
BUDGET_DEFAULT = "{identity} is back on the configured token budget."
ADMIN_USAGE_USAGE = "Usage: /admin usage <identity>, e.g. /admin usage telegram:123456789. Nothing was changed."

OVER_BUDGET = (
    "{whose} used up today's token budget on this bridge ({limit} tokens a day). "
    "It starts afresh at midnight ({zone}), in {wait}. Until then I cannot answer{who_can}."
)
"""Deliberately unlike MODEL_ACCESS_DENIED: this is the bridge's own limit, not the provider's quota."""
OVER_BUDGET_WHOSE = {"user": "You have", "chat": "This chat has", "total": "This bridge has"}
OVER_BUDGET_WHO_CAN = {"user": " you", "chat": " here", "total": ""}

GROUP_SETTINGS_ADMINS_ONLY = "In groups only the bridge's admins can switch the {what}. Nothing was changed."
UNKNOWN_CHOICE = "There is no {what} called {name!r}. The {what}s are: {names}. Nothing was changed."
MODEL_SWITCHED = "This chat now uses the model {name}. It applies from your next message."
PERSONA_SWITCHED = "This chat now uses the persona {name}. It applies from your next message."
INSTRUCTIONS_SET = "Your instructions are saved ({size} characters). They apply in every chat, from your next message."
INSTRUCTIONS_CLEARED = "Your instructions are removed."
INSTRUCTIONS_NONE = (
    "You have no custom instructions. Set them with /instructions <text>; /instructions clear removes them."
)
INSTRUCTIONS_SHOWN = "Your instructions (/instructions clear removes them):\n{text}"
INSTRUCTIONS_TOO_LONG = (
    "Those instructions are too long ({size} characters; the limit is {limit}). Nothing was changed."
)
INSTRUCTIONS_HEADER = "The user you are talking to asked you to follow these instructions:"
"""Opens the system message that carries a user's custom instructions, after the persona's prompt."""
CANNOT_DENY_ADMIN = "{identity} is an admin in the configuration and cannot be denied at runtime."
ACCESS_ALLOWED = "{identity} is now allowed."
ACCESS_DENIED = "{identity} is now denied."
CLEARED_SESSIONS = "Cleared {count} session{plural}."
NO_ACTIVE_SESSIONS = "No active sessions."


def not_an_identity(problem: str) -> str:
    return f"{problem[0].upper()}{problem[1:]}. Nothing was changed."


def identity_card(user_id: str, chat_id: str, session_key: str) -> str:
    return f"You: {user_id}\nChat: {chat_id}\nSession: {session_key}"


def help_text(
    reset_commands: Iterable[str], *, is_admin: bool, in_group: bool, prefixes: Iterable[str], may_switch: bool
) -> str:
    lines = ["Commands:", f"{' or '.join(reset_commands)}: forget this conversation and start fresh"]
    lines += ["/help: this list", "/id: show your identity, this chat's and the session key"]
    if may_switch:
        lines += [
            "/model [name]: list the models, or switch this chat to one",
            "/persona [name]: the same for personas",
        ]
    else:
        lines += ["/model, /persona: list the models and personas of this chat"]
    lines += [
        "/instructions [text | clear]: show, set or remove your own instructions for the bot",
        "/usage: your tokens and cost today and this month, and what is left of your budget",
    ]
    if is_admin:
        lines.append("/admin: session, access and usage commands (send /admin for the list)")
    if in_group:
        how = "mention me or reply to one of my messages"
        prefix_list = ", ".join(prefixes)
        if prefix_list:
            how += f", or start your message with {prefix_list}"
        lines.append(f"In groups, {how}.")
    return "\n".join(lines)


def sessions_list(lines: list[str], total: int) -> str:
    shown = "\n".join(lines)
    more = f"\n... and {total - len(lines)} more" if total > len(lines) else ""
    return f"{total} active session{'s' if total != 1 else ''}:\n{shown}{more}"


def choice_list(what: str, rows: Iterable[tuple[str, str, bool]], hint: str) -> str:
    """``/model`` and ``/persona``: each name with what it is, the chat's current one marked."""
    lines = [
        f"{'→' if current else '•'} {name}: {detail}" if detail else f"{'→' if current else '•'} {name}"
        for name, detail, current in rows
    ]
    return f"{what} (→ marks this chat's):\n" + "\n".join(lines) + (f"\n{hint}" if hint else "")


def tokens(count: int) -> str:
    return f"{count:,}"


def dollars(amount: float) -> str:
    return f"${amount:.4f}" if amount < 1 else f"${amount:,.2f}"


def wait_of(seconds: float) -> str:
    minutes = max(int(seconds // 60), 1)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def stats_text(since_start: str, per_day: list[str]) -> str:
    days = "\n".join(per_day) if per_day else "no usage recorded yet"
    return f"Since start: {since_start}\nPer day (newest first):\n{days}"


COMMAND_DESCRIPTIONS = {
    "reset": "Forget this conversation and start fresh",
    "help": "List the commands you may use",
    "id": "Show your identity, this chat's and the session key",
    "model": "List the models, or switch this chat to one",
    "persona": "List the personas, or switch this chat to one",
    "instructions": "Show, set or clear your own instructions for the bot",
    "usage": "Your tokens and cost today and this month, and your budget",
    "admin": "Admin: sessions, access, budgets and usage (try: sessions, stats)",
}
"""One line per command for platforms that list native commands (Discord and Slack slash commands)."""
ADMIN_ARGS_HINT = "sessions | clear <key|identity|all> | allow|deny <identity> | budget <identity> <n> | stats | usage"
MODEL_ARGS_HINT = "a model's name (empty: list them)"
PERSONA_ARGS_HINT = "a persona's name (empty: list them)"
INSTRUCTIONS_ARGS_HINT = "your instructions, or clear (empty: show them)"

ONLY_TEXT_SUPPORTED = "I cannot read this kind of message here. Please write your question as text."
"""The answer to a photo, sticker, voice message or file in a private chat."""

# --- pictures, voice notes and files: what the user is told when one cannot be used -------------

IMAGE_TOO_LARGE = "That picture is too large ({size}; the limit is {limit}). Please send a smaller one."
FILE_TOO_LARGE = "That file is too large ({size}; the limit is {limit}). Please send a smaller one."
TOO_MANY_IMAGES = "That is {count} pictures in one message; I take at most {limit}. Please send fewer at a time."
UNSUPPORTED_FILE = (
    "I cannot read {name}. I understand pictures, voice messages and audio files, "
    "text files (txt, md, csv, json, source code...) and PDFs."
)
IMAGE_UNREADABLE = "I could not open that picture: the file seems to be damaged or not an image."
DOCUMENT_UNREADABLE = "I could not read {name}: the file seems to be damaged or password-protected."
PDF_NO_TEXT = "This PDF has no text I can read (a scan?). You can send its pages as pictures instead."
DOWNLOAD_FAILED = "I could not download that file from the chat. Please send it again."
DOWNLOAD_TIMEOUT = "Downloading that file took too long. Please send it again, or a smaller one."
TRANSCRIPTION_FAILED = "I could not transcribe that voice message. Please try again, or write your question."
AUDIO_UNSUPPORTED = (
    "This bridge's model server cannot transcribe speech, so I cannot listen to voice messages or audio. "
    "Please write your question instead."
)
SPEECH_FAILED = "(I could not read this answer aloud.)"
DOCUMENT_CUT = "(Only the first {limit} tokens of {name} were read: the rest did not fit.)"
"""Shown under the answer when a document was cut at ``media.max_document_tokens``."""
DOCUMENT_CUT_FOR_MODEL = "[{name} was cut here: only its first {limit} tokens are shown.]"
"""Put after the cut text, so the model knows it has not seen the whole document."""
ATTACH_USAGE = "Usage: /attach PATH [question] (quote a PATH with spaces in it)."
ATTACH_NO_FILE = "There is no file I can read at {path}."
ATTACHMENT_ERRORS = {
    "attachment_fetch_failed": DOWNLOAD_FAILED,
    "attachment_fetch_timeout": DOWNLOAD_TIMEOUT,
}
"""The answer to each ``kind`` of ``core.events.AttachmentError`` but "too large", which says its limit."""


def byte_size(count: int) -> str:
    """A file size the way people read one: 850 kB, 12.5 MB."""
    if count < 1_000_000:
        return f"{max(count, 1) / 1000:.0f} kB"
    return f"{count / 1_000_000:.1f}".removesuffix(".0") + " MB"


def too_large(*, image: bool, size: int | None, limit: int) -> str:
    """``size`` None: the platform gave no size and the download passed the limit."""
    said = byte_size(size) if size is not None else f"over {byte_size(limit)}"
    return (IMAGE_TOO_LARGE if image else FILE_TOO_LARGE).format(size=said, limit=byte_size(limit))


def cannot_see(model: str, vision_models: Iterable[str]) -> str:
    """The answer to a picture sent to a model without ``vision: true``, naming those with it."""
    names = sorted(vision_models)
    if not names:
        return (
            f"The model {model} cannot see pictures, and none of this bridge's models can. Please describe it in words."
        )
    return f"The model {model} cannot see pictures. These can: {', '.join(names)}; switch with /model NAME."


SUPERSEDED_MESSAGE = "…"
"""What a message shows when a final text needs fewer messages than were already streamed: platform
messages cannot be taken back through ``ReplyChannel``, and repeating stale text would be worse."""

REPLY_PLACEHOLDER = "Thinking…"
"""What a reply shows until its first words arrive, on platforms that post a placeholder (Slack)."""

WELCOME = "Hello! Write to me and I will answer."
"""Put before the command list for someone who just followed the bot (WeChat's subscribe event)."""
ANSWER_WITH_NEXT_MESSAGE = (
    "This answer is taking a while. Send me any message in a minute and the answer comes as the reply."
)
"""Where the platform lets the bot speak only in reply to a message (WeChat without the
customer-service API) and the answer was not ready in time."""
MORE_WITH_NEXT_MESSAGE = "(There is more: send any message for the next part.)"
