"""Who may talk to the bot: configured lists plus the runtime decisions admins make with /admin.

Decisions use ``platform:id`` identities only; display names never authorise anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.settings import AccessSettings
from core.store import AccessDecision


class AccessPolicy:
    """Deny lists first, then admins (always allowed), then the allow lists.

    A runtime decision about an identity overrides the configuration for that identity. An empty
    configured allow list means "everyone", and a runtime allow does not close an open bridge: it
    only matters where an allow list is in force or where it lifts a deny.
    Allow lists for chats apply to group chats; private chats are governed by the user lists.
    """

    def __init__(self, settings: AccessSettings, extra_admins: Iterable[str] = ()) -> None:
        self._admins = frozenset(settings.admins) | frozenset(extra_admins)
        self._allow_users = frozenset(settings.allow_users)
        self._allow_chats = frozenset(settings.allow_chats)
        self._deny_users = frozenset(settings.deny_users)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self._admins

    def is_configured_admin(self, identity: str) -> bool:
        return identity in self._admins

    def allows(self, user_id: str, chat_id: str, *, private: bool, overrides: Mapping[str, AccessDecision]) -> bool:
        if self._denied(user_id, overrides) or (not private and overrides.get(chat_id) is AccessDecision.DENY):
            return False
        if self.is_admin(user_id):
            return True
        user_ok = self._listed(user_id, self._allow_users, overrides)
        chat_ok = private or self._listed(chat_id, self._allow_chats, overrides)
        return user_ok and chat_ok

    def _denied(self, user_id: str, overrides: Mapping[str, AccessDecision]) -> bool:
        decision = overrides.get(user_id)
        if decision is not None:
            return decision is AccessDecision.DENY
        return user_id in self._deny_users

    @staticmethod
    def _listed(identity: str, allow_list: frozenset[str], overrides: Mapping[str, AccessDecision]) -> bool:
        return not allow_list or identity in allow_list or overrides.get(identity) is AccessDecision.ALLOW
