"""Feishu/Lark (``adapters.feishu``); lark-oapi is imported only once the adapter is built."""

from __future__ import annotations

from adapters.feishu.settings import FeishuSettings
from adapters.kit import Adapter, Routes


def build(settings: FeishuSettings, routes: Routes) -> Adapter:
    from adapters.feishu.adapter import FeishuAdapter

    return FeishuAdapter(settings, routes)
