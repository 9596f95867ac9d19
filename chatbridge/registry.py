"""The platforms a bridge can serve: one field each, named after the platform's folder in ``adapters/``.

The field's type is the platform's settings section (``adapters.<name>``); its folder's package
exposes ``build(settings, routes)``, which imports the platform library only when the adapter is
enabled, so an unused platform's library is never loaded. Adapters that listen for webhooks mount
their routes on the shared HTTP server while they are built, because its routes are fixed once it
starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from adapters.console.settings import ConsoleSettings
from adapters.dingtalk.settings import DingTalkSettings
from adapters.discord.settings import DiscordSettings
from adapters.feishu.settings import FeishuSettings
from adapters.kit import Adapter, AdapterSection, Routes
from adapters.slack.settings import SlackSettings
from adapters.telegram.settings import TelegramSettings
from adapters.wechat.settings import WeChatSettings
from adapters.wecom.settings import WeComSettings


class AdaptersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    console: ConsoleSettings = ConsoleSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    slack: SlackSettings = SlackSettings()
    wechat: WeChatSettings = WeChatSettings()
    wecom: WeComSettings = WeComSettings()
    dingtalk: DingTalkSettings = DingTalkSettings()
    feishu: FeishuSettings = FeishuSettings()


def enabled_adapters(settings: AdaptersSettings, routes: Routes) -> list[Adapter]:
    """One adapter per enabled section, in the order of the fields above."""
    adapters: list[Adapter] = []
    for name in type(settings).model_fields:
        section: AdapterSection = getattr(settings, name)
        if section.enabled:
            build: Callable[[Any, Routes], Adapter] = importlib.import_module(f"adapters.{name}").build
            adapters.append(build(section, routes))
    return adapters
