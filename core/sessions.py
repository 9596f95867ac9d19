"""Session keys: which messages share one conversation.

Keys are readable and built from identities, so admins can paste them into ``/admin clear``:
``telegram:42`` (a private chat, always per user), ``telegram:-1001`` (a group under ``scope: chat``),
``telegram:-1001/thread:7`` (a topic or thread under ``scope: thread``) and
``telegram:-1001/user:telegram:42`` (one user in a group under ``scope: user``).
"""

from __future__ import annotations

from core.events import IncomingMessage
from core.settings import SessionScope

_THREAD = "/thread:"
_USER = "/user:"


def session_key(message: IncomingMessage, scope: SessionScope) -> str:
    if message.is_private:
        return message.user_id
    if scope is SessionScope.USER:
        return f"{message.chat_id}{_USER}{message.user_id}"
    if scope is SessionScope.THREAD and message.thread_id:
        return f"{message.chat_id}{_THREAD}{message.thread_id}"
    return message.chat_id


def key_matches(key: str, target: str) -> bool:
    """True when ``target`` is the key itself, its chat, or the user it belongs to."""
    if key == target:
        return True
    chat, _, rest = key.partition("/")
    if chat == target:
        return True
    return rest.startswith(_USER[1:]) and rest[len(_USER) - 1 :] == target


SPEAKER_NAME_CHARS = 40


def spoken_by(message: IncomingMessage, text: str) -> str:
    """A turn of a session several people share, as the model sees and the store keeps it:
    ``[Name] text``. A prefix rather than the chat-completions ``name`` field, which many
    OpenAI-compatible servers drop and which OpenAI restricts to ``[A-Za-z0-9_-]``, so most real
    names would not survive it. The display name is a hint for the model only; it authorises nothing
    (anyone can call themselves anything), and brackets and line breaks in it are replaced so that it
    cannot pose as another turn."""
    name = " ".join(message.user_name.replace("[", "(").replace("]", ")").split())[:SPEAKER_NAME_CHARS]
    return f"[{name or message.user_id}] {text}"
