"""What a well-formed identity looks like on each platform (design section 3).

Identities decide who may do what, so an admin's typo must be refused rather than stored: a list
entry ``Telegram:1140`` or ``telegram:01140`` would never match anyone, and ``a,b`` or ``*:*`` would
look like something they are not. Each platform's ids have a documented shape, checked here once for
the configuration and the ``/admin`` commands alike.
"""

from __future__ import annotations

import re

_SHAPES: dict[str, tuple[re.Pattern[str], str]] = {
    "telegram": (
        re.compile(r"-?[1-9][0-9]{0,19}"),
        "telegram:<number>, e.g. telegram:123456789 (groups: telegram:-100…)",
    ),
    "discord": (re.compile(r"[1-9][0-9]{15,19}"), "discord:<snowflake>, e.g. discord:80351110224678912"),
    "slack": (re.compile(r"[UWCGDTBE][A-Z0-9]{2,20}"), "slack:<id>, e.g. slack:U024BE7LH or slack:C024BE91L"),
    "console": (re.compile(r"local"), "console:local"),
    "dingtalk": (
        # a staffId; a sender id (people outside the organisation) or a conversation id, whose
        # base64 "+" and "/" the adapter turns into "-" and "_"
        re.compile(r"[A-Za-z0-9$_-]{1,64}|\$:LWCP_v\d+:\$[A-Za-z0-9_=-]{1,128}|cid[A-Za-z0-9_=-]{1,128}"),
        "dingtalk:<staffId>, e.g. dingtalk:manager4220 (chats: dingtalk:cid…)",
    ),
    "feishu": (re.compile(r"o[uc]_[0-9a-f]{32}"), "feishu:<open_id>, e.g. feishu:ou_7d8a6e6df7621556ce0d21922b676706"),
    "wechat": (re.compile(r"[A-Za-z0-9_-]{28}"), "wechat:<openid>, e.g. wechat:oLVPpjqs9BhvzwPj5A-vTYAX3GLc"),
    "wecom": (re.compile(r"[A-Za-z0-9_.@-]{1,64}"), "wecom:<UserID>, e.g. wecom:zhangsan"),
}
PLATFORMS = tuple(_SHAPES)


def identity_problem(value: str) -> str | None:
    """None for a well-formed ``platform:id``; otherwise what is wrong, with the expected shape."""
    platform, sep, ident = value.partition(":")
    if not sep or platform not in _SHAPES:
        return f"{value!r} is not an identity: identities are platform:id, platform one of {', '.join(PLATFORMS)}"
    pattern, shape = _SHAPES[platform]
    if pattern.fullmatch(ident) is None:
        return f"{value!r} is not a {platform} identity: expected {shape}"
    return None
