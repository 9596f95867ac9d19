"""Slack (``adapters.slack``); slack-bolt is imported only once the adapter is built."""

from __future__ import annotations

from adapters.kit import Adapter, Routes
from adapters.slack.settings import SlackSettings


def build(settings: SlackSettings, routes: Routes) -> Adapter:
    from adapters.slack.adapter import SlackAdapter

    return SlackAdapter(settings, routes)
