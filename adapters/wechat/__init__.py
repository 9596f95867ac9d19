"""WeChat Official Accounts (``adapters.wechat``), on the official callback protocol."""

from __future__ import annotations

from adapters.kit import Adapter, Routes
from adapters.wechat.settings import WeChatSettings


def build(settings: WeChatSettings, routes: Routes) -> Adapter:
    from adapters.wechat.adapter import WeChatAdapter

    return WeChatAdapter(settings, routes)
