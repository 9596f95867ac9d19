"""Opening a Weixin callback (signature, age, decryption, XML) and sealing a passive reply.

Everything a callback claims is checked before any of it is read: the signature over the token,
timestamp and nonce (and the ciphertext, in safe mode), the timestamp's age (a captured request
replayed later is refused), then the receive id inside the decrypted payload. XML is parsed by
defusedxml with DTDs forbidden, so an entity bomb or an external entity is refused, not expanded;
the platforms never send a DTD.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from adapters.weixin.crypto import CallbackRefused, MessageCipher, signature, signature_matches

MAX_SKEW_S = 300.0
"""How far a callback's timestamp may be from our clock. The platforms retry within 15 seconds, so
five minutes only forgives clocks that drift, while a request captured yesterday is refused."""
MAX_BODY_BYTES = 64 * 1024
"""Callbacks are a few hundred bytes; anything much larger is not one."""

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class MalformedCallback(CallbackRefused):
    """Signed correctly (or not yet checked) but not a callback we can read: answered 400."""


@dataclass(frozen=True, slots=True)
class Callback:
    """A verified callback's fields (``MsgType``, ``Content``...) and whether it came encrypted,
    in which case its passive reply must be encrypted too."""

    fields: Mapping[str, str]
    encrypted: bool


class CallbackOpener:
    """Verifies and reads the callbacks of one account (a token, and a cipher in safe mode)."""

    def __init__(
        self,
        token: str,
        cipher: MessageCipher | None,
        *,
        max_skew_s: float = MAX_SKEW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token
        self._cipher = cipher
        self._max_skew_s = max_skew_s
        self._clock = clock

    @property
    def encrypts(self) -> bool:
        return self._cipher is not None

    def echo_plain(self, query: Mapping[str, str]) -> str:
        """The server check of an Official Account (a GET): ``signature`` over token, timestamp and
        nonce; the answer is ``echostr`` as sent."""
        self._check_signature(query, "signature")
        return query.get("echostr", "")

    def echo_encrypted(self, query: Mapping[str, str]) -> str:
        """The URL check of a WeCom application (a GET): ``msg_signature`` also covers ``echostr``,
        which is encrypted; the answer is its plaintext."""
        echo = query.get("echostr", "")
        self._check_signature(query, "msg_signature", echo)
        return self._require_cipher().decrypt(echo)

    def open(self, query: Mapping[str, str], body: bytes) -> Callback:
        """A POSTed callback: plaintext (``signature``) or encrypted (``msg_signature`` over the
        ``Encrypt`` element too). With a cipher configured, plaintext is refused: an attacker who
        learned the token must not be able to skip the encryption."""
        if len(body) > MAX_BODY_BYTES:
            raise MalformedCallback(f"the body is over {MAX_BODY_BYTES} bytes")
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt")
        if encrypted is None:
            if self._cipher is not None:
                raise CallbackRefused("a plaintext callback, but encoding_aes_key is set (safe mode)")
            self._check_signature(query, "signature")
            return Callback(outer, encrypted=False)
        self._check_signature(query, "msg_signature", encrypted)
        inner = self._require_cipher().decrypt(encrypted)
        return Callback(parse_xml(inner.encode("utf-8")), encrypted=True)

    def seal(self, reply_xml: str) -> str:
        """A passive reply in the encrypted envelope, signed with a fresh timestamp and nonce."""
        ciphertext = self._require_cipher().encrypt(reply_xml)
        timestamp, nonce = str(int(self._clock())), str(secrets.randbelow(10**10))
        return xml_document(
            {
                "Encrypt": ciphertext,
                "MsgSignature": signature(self._token, timestamp, nonce, ciphertext),
                "TimeStamp": int(timestamp),
                "Nonce": nonce,
            }
        )

    def _check_signature(self, query: Mapping[str, str], name: str, *signed: str) -> None:
        timestamp, nonce, given = query.get("timestamp", ""), query.get("nonce", ""), query.get(name, "")
        if not (timestamp and nonce and given):
            raise CallbackRefused(f"the request has no {name}, timestamp or nonce")
        if not signature_matches(signature(self._token, timestamp, nonce, *signed), given):
            raise CallbackRefused(f"the {name} does not match (wrong token?)")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > self._max_skew_s:
            raise CallbackRefused("the timestamp is too far from our clock (a replayed or delayed request)")

    def _require_cipher(self) -> MessageCipher:
        if self._cipher is None:
            raise CallbackRefused("an encrypted callback, but no encoding_aes_key is set")
        return self._cipher


def parse_xml(body: bytes) -> dict[str, str]:
    """The text of each element under the ``<xml>`` root (callbacks are flat, apart from the
    WeCom extras, which are ignored)."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as refused:
        raise MalformedCallback(f"XML with a DTD or entities is refused ({type(refused).__name__})") from None
    except (ParseError, ValueError):
        raise MalformedCallback("the body is not well-formed XML") from None
    if root.tag != "xml":
        raise MalformedCallback(f"the XML root is <{root.tag}>, not <xml>")
    return {child.tag: (child.text or "") for child in root}


def xml_document(fields: Mapping[str, str | int]) -> str:
    """A flat ``<xml>`` document: strings as CDATA, numbers bare, as the platforms write them."""
    inner = "".join(
        f"<{name}>{value if isinstance(value, int) else cdata(value)}</{name}>" for name, value in fields.items()
    )
    return f"<xml>{inner}</xml>"


def cdata(text: str) -> str:
    """``text`` as CDATA; a ``]]>`` inside is split across two sections, and characters XML
    cannot carry at all (control codes a model may emit) are dropped."""
    clean = _XML_INVALID.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"
