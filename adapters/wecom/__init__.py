"""WeCom applications (``adapters.wecom``), on the official callback protocol."""

from __future__ import annotations

from adapters.kit import Adapter, Routes
from adapters.wecom.settings import WeComSettings


def build(settings: WeComSettings, routes: Routes) -> Adapter:
    from adapters.wecom.adapter import WeComAdapter

    return WeComAdapter(settings, routes)
