"""The platform's side of a Weixin callback, for tests: signing, encrypting and posting callbacks
the way WeChat's and WeCom's servers do, and reading the replies the way they would.

The cipher here is written again from the published scheme, on purpose not imported from
``adapters.weixin``: a mistake shared by both sides would otherwise pass every round trip. The
tests pin both to the platforms' published example vectors.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def encrypt(encoding_aes_key: str, receive_id: str, message: str) -> str:
    key = base64.b64decode(encoding_aes_key + "=")
    body = message.encode()
    plain = os.urandom(16) + struct.pack(">I", len(body)) + body + receive_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def decrypt(encoding_aes_key: str, ciphertext: str) -> tuple[str, str]:
    """(message, receive id)."""
    key = base64.b64decode(encoding_aes_key + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(ciphertext)) + decryptor.finalize()
    plain = plain[: -plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    return plain[20 : 20 + length].decode(), plain[20 + length :].decode()


def xml(fields: dict[str, Any]) -> str:
    inner = "".join(
        f"<{name}>{value}</{name}>" if isinstance(value, int) else f"<{name}><![CDATA[{value}]]></{name}>"
        for name, value in fields.items()
    )
    return f"<xml>{inner}</xml>"


def fields_of(document: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(document)}


@dataclass
class Delivered:
    """What the platform made of one callback: each delivery's HTTP status (None: it gave up
    waiting), and the reply it finally took (its fields, decrypted), if any."""

    statuses: list[int | None] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    reply: dict[str, str] | None = None

    @property
    def text(self) -> str | None:
        return None if self.reply is None else self.reply.get("Content")


@dataclass
class CallbackClient:
    """Posts callbacks to ``url`` for an account with ``token`` (and ``encoding_aes_key`` and
    ``receive_id`` in safe mode). ``waits_s`` is how long the platform waits for each delivery
    before trying again, ``deliveries`` how many it makes."""

    url: str
    token: str
    encoding_aes_key: str = ""
    receive_id: str = ""
    waits_s: float = 5.0
    deliveries: int = 3
    timestamp_offset_s: float = 0.0

    def query(self, *signed: str, name: str = "signature") -> dict[str, str]:
        """A fresh timestamp and nonce, and ``name`` signing them with the token and ``signed``."""
        timestamp, nonce = str(int(time.time() + self.timestamp_offset_s)), str(int.from_bytes(os.urandom(4), "big"))
        return {"timestamp": timestamp, "nonce": nonce, name: sign(self.token, timestamp, nonce, *signed)}

    def body(self, fields: dict[str, Any], *, encrypted: bool | None = None) -> tuple[dict[str, str], str]:
        """The query and body of one delivery, signed (and encrypted when the account is in safe
        mode: then ``msg_signature`` covers the ciphertext, and ``signature`` is sent as well)."""
        document = xml(fields)
        if not (self.encoding_aes_key if encrypted is None else encrypted):
            return self.query(), document
        ciphertext = encrypt(self.encoding_aes_key, self.receive_id, document)
        query = self.query(ciphertext, name="msg_signature") | {"encrypt_type": "aes"}
        query["signature"] = sign(self.token, query["timestamp"], query["nonce"])
        return query, xml({"ToUserName": fields.get("ToUserName", ""), "Encrypt": ciphertext})

    async def post(self, query: dict[str, str], body: str, timeout_s: float | None = None) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.waits_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self.url, params=query, data=body) as r,
        ):
            return r.status, await r.text()

    async def deliver(self, fields: dict[str, Any]) -> Delivered:
        """As the platform does: a delivery, and again each time no answer came within ``waits_s``,
        up to ``deliveries`` times. Each delivery is signed afresh."""
        delivered = Delivered()
        for _ in range(self.deliveries):
            query, body = self.body(fields)
            try:
                status, text = await self.post(query, body)
            except TimeoutError:
                delivered.statuses.append(None)
                continue
            delivered.statuses.append(status)
            delivered.bodies.append(text)
            if status == 200 and text not in ("", "success"):
                delivered.reply = self.open_reply(text)
            break
        return delivered

    def open_reply(self, text: str) -> dict[str, str]:
        """A passive reply as the platform reads it: in safe mode, checked and decrypted."""
        outer = fields_of(text)
        if "Encrypt" not in outer:
            assert not self.encoding_aes_key, "a plaintext reply to an encrypted callback"
            return outer
        expected = sign(self.token, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
        assert outer["MsgSignature"] == expected, "the reply's signature does not match"
        message, receive_id = decrypt(self.encoding_aes_key, outer["Encrypt"])
        assert receive_id == self.receive_id
        return fields_of(message)


async def gather_deliveries(client: CallbackClient, *fields: dict[str, Any]) -> list[Delivered]:
    return list(await asyncio.gather(*(client.deliver(f) for f in fields)))
