"""Signatures and the message cipher of Weixin callbacks ("WXBizMsgCrypt", safe mode).

The signature is the SHA-1 hex digest of the token, the request's timestamp and nonce (and, for an
encrypted body, the ciphertext) sorted and joined. The cipher is AES-256-CBC with the key from the
43-character ``EncodingAESKey`` (Base64 without its final ``=``) and the key's first 16 bytes as the
IV. What is encrypted is 16 random bytes, the message's length as four bytes in network order, the
message and the receive id (the Official Account's app id, or the WeCom corp id), padded PKCS#7-style
to a multiple of 32 bytes (not AES's 16: the platforms' own libraries do so, and ours must match
them byte for byte).

A decrypted message whose receive id is not ours was meant for another account (or forged with a
leaked key of one): it is refused like a bad signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAD_BLOCK = 32
AES_KEY_CHARS = 43


class CallbackRefused(Exception):
    """A callback that is not from the platform, or not for us; ``str()`` says why, without secrets."""


def signature(*parts: str) -> str:
    """The platforms' request signature: SHA-1 of the parts, sorted and joined."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signature_matches(expected: str, given: str) -> bool:
    """Compared in constant time, so the answer's timing tells nothing about how close a guess was."""
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key behind a console's ``EncodingAESKey``; ValueError when it is not one."""
    if len(encoding_aes_key) != AES_KEY_CHARS:
        raise ValueError(f"must be {AES_KEY_CHARS} characters (the EncodingAESKey from the console)")
    try:
        return base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("must be letters and digits only (the EncodingAESKey from the console)") from None


class MessageCipher:
    """Encrypts and decrypts callback payloads for one receive id."""

    def __init__(self, encoding_aes_key: str, receive_id: str) -> None:
        self._key = aes_key(encoding_aes_key)
        self._receive_id = receive_id.encode("utf-8")

    def encrypt(self, message: str, random_bytes: bytes | None = None) -> str:
        """Base64 ciphertext of ``message``; ``random_bytes`` (16) only to reproduce a known vector."""
        body = message.encode("utf-8")
        nonce = random_bytes if random_bytes is not None else os.urandom(16)
        plain = nonce + struct.pack(">I", len(body)) + body + self._receive_id
        padding = PAD_BLOCK - len(plain) % PAD_BLOCK
        plain += bytes([padding]) * padding
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The message inside ``ciphertext``; ``CallbackRefused`` when it does not decrypt to one of ours."""
        try:
            raw = base64.b64decode(ciphertext, validate=True)
        except binascii.Error:
            raise CallbackRefused("the encrypted payload is not Base64") from None
        if not raw or len(raw) % 16:
            raise CallbackRefused("the encrypted payload is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        padding = plain[-1]
        if not 1 <= padding <= PAD_BLOCK or len(plain) < 20 + padding:
            raise CallbackRefused("the encrypted payload does not decrypt (wrong encoding_aes_key?)")
        plain = plain[:-padding]
        (length,) = struct.unpack(">I", plain[16:20])
        body, receive_id = plain[20 : 20 + length], plain[20 + length :]
        if len(body) != length:
            raise CallbackRefused("the encrypted payload does not decrypt (wrong encoding_aes_key?)")
        if not hmac.compare_digest(receive_id, self._receive_id):
            raise CallbackRefused("the encrypted payload is for another account (its app or corp id is not ours)")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRefused("the encrypted payload is not UTF-8 text") from None

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))
