"""DingTalk (``adapters.dingtalk``); dingtalk-stream is imported only once the adapter is built."""

from __future__ import annotations

from adapters.dingtalk.settings import DingTalkSettings
from adapters.kit import Adapter, Routes


def build(settings: DingTalkSettings, routes: Routes) -> Adapter:
    from adapters.dingtalk.adapter import DingTalkAdapter

    return DingTalkAdapter(settings, routes)
