"""The callback protocol WeChat and WeCom share (adapters/weixin): the cipher against the
platforms' published example vectors, signatures, and what a callback opener refuses."""

from __future__ import annotations

import pytest

from adapters.weixin.callback import CallbackOpener, MalformedCallback, cdata, parse_xml
from adapters.weixin.crypto import CallbackRefused, MessageCipher, signature
from tests.fakes.weixin_callbacks import decrypt, encrypt, fields_of, sign, xml

# The Official Account sample (WXBizMsgCrypt's Java test): a known random prefix gives a known text.
MP_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
MP_APP_ID = "wxb11529c136998cb6"
MP_CIPHERTEXT = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="

# The WeCom sample (WXBizMsgCrypt3's Sample.py): a URL check and a message, as the platform sent them.
WECOM_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
WECOM_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
WECOM_CORP = "ww1436e0e65a779aee"
WECOM_ECHO = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
WECOM_MESSAGE = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD"
    "+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilE"
    "bjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84"
    "EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
)


def test_the_cipher_reproduces_the_official_account_example() -> None:
    cipher = MessageCipher(MP_KEY, MP_APP_ID)
    assert cipher.encrypt("我是中文abcd123", random_bytes=b"aaaabbbbccccdddd") == MP_CIPHERTEXT
    assert cipher.decrypt(MP_CIPHERTEXT) == "我是中文abcd123"


def test_the_wecom_example_verifies_and_decrypts() -> None:
    assert signature(WECOM_TOKEN, "1476416373", "47744683", WECOM_ECHO) == "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
    opener = CallbackOpener(WECOM_TOKEN, MessageCipher(WECOM_KEY, WECOM_CORP), clock=lambda: 1476416373.0)
    query = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373"}
    assert opener.echo_encrypted(query | {"nonce": "47744683", "echostr": WECOM_ECHO}) == "1288432023552776189"

    opener = CallbackOpener(WECOM_TOKEN, MessageCipher(WECOM_KEY, WECOM_CORP), clock=lambda: 1476422779.0)
    query = {
        "msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
        "timestamp": "1476422779",
        "nonce": "1597212914",
    }
    body = f"<xml><ToUserName><![CDATA[{WECOM_CORP}]]></ToUserName><Encrypt><![CDATA[{WECOM_MESSAGE}]]></Encrypt></xml>"
    callback = opener.open(query, body.encode())
    assert callback.encrypted
    assert dict(callback.fields) == {
        "ToUserName": WECOM_CORP,
        "FromUserName": "ChenJiaShun",
        "CreateTime": "1476422779",
        "MsgType": "text",
        "Content": "你好",
        "MsgId": "1456453720",
        "AgentID": "1000002",
    }


def test_our_cipher_and_the_test_clients_agree_both_ways() -> None:
    cipher = MessageCipher(MP_KEY, MP_APP_ID)
    for message in ("", "x", "a" * 15, "b" * 16, "c" * 31, "d" * 32, "你好" * 500):
        assert cipher.decrypt(encrypt(MP_KEY, MP_APP_ID, message)) == message
        assert decrypt(MP_KEY, cipher.encrypt(message)) == (message, MP_APP_ID)


def test_a_payload_for_another_account_or_tampered_with_is_refused() -> None:
    cipher = MessageCipher(MP_KEY, MP_APP_ID)
    with pytest.raises(CallbackRefused, match="another account"):
        cipher.decrypt(encrypt(MP_KEY, "wx0000000000000000", "hello"))
    with pytest.raises(CallbackRefused):
        cipher.decrypt(MessageCipher("B" * 43, MP_APP_ID).encrypt("hello"))
    with pytest.raises(CallbackRefused, match="Base64"):
        cipher.decrypt("not base64!")
    with pytest.raises(CallbackRefused, match="blocks"):
        cipher.decrypt("AAAA")


def test_an_opener_refuses_bad_signatures_stale_times_and_plaintext_in_safe_mode() -> None:
    now = 1_700_000_000.0
    plain = CallbackOpener("tok", None, clock=lambda: now)
    body = xml({"MsgType": "text", "Content": "hi"}).encode()
    signed = {"timestamp": str(int(now)), "nonce": "7", "signature": sign("tok", str(int(now)), "7")}
    assert plain.open(signed, body).fields["Content"] == "hi"
    with pytest.raises(CallbackRefused, match="does not match"):
        plain.open(signed | {"signature": sign("other", str(int(now)), "7")}, body)
    with pytest.raises(CallbackRefused, match="too far"):
        stale = str(int(now) - 301)
        plain.open({"timestamp": stale, "nonce": "7", "signature": sign("tok", stale, "7")}, body)
    with pytest.raises(CallbackRefused, match="no signature"):
        plain.open({}, body)
    safe = CallbackOpener("tok", MessageCipher(MP_KEY, MP_APP_ID), clock=lambda: now)
    with pytest.raises(CallbackRefused, match="safe mode"):
        safe.open(signed, body)


def test_xml_with_a_dtd_or_entities_is_refused_not_expanded() -> None:
    with pytest.raises(MalformedCallback, match="DTD"):
        parse_xml(b'<!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><Content>&a;</Content></xml>')
    with pytest.raises(MalformedCallback, match="DTD"):
        parse_xml(b'<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>')
    with pytest.raises(MalformedCallback, match="well-formed"):
        parse_xml(b"<xml><Content>")
    with pytest.raises(MalformedCallback, match="root"):
        parse_xml(b"<html></html>")


def test_cdata_survives_its_own_terminator_and_control_characters() -> None:
    text = "a ]]> b \x00\x07 c"
    assert fields_of(f"<xml><Content>{cdata(text)}</Content></xml>")["Content"] == "a ]]> b  c"
