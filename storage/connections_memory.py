"""ConnectionRegistry for one process (the embedded engine): its Hub is every connection."""

from __future__ import annotations

import time
from collections.abc import Iterable

from storage.connections import ConnectionRegistry


class MemoryConnections(ConnectionRegistry):
    def __init__(self, ttl: float = 30.0, linger: float = 10.0) -> None:
        super().__init__(ttl, linger)
        self._until: dict[int, dict[str, float]] = {}  # user -> connection -> expiry

    def _set(self, user_id: int, connection_id: str, until: float) -> None:
        now = time.monotonic()
        entries = self._until.setdefault(user_id, {})
        entries[connection_id] = until
        for key in [k for k, t in entries.items() if t <= now]:
            del entries[key]
        if not entries:
            del self._until[user_id]

    def open(self, user_id: int, connection_id: str) -> None:
        self._set(user_id, connection_id, time.monotonic() + self.ttl)

    def renew(self, connections: Iterable[tuple[int, str]]) -> None:
        for user_id, connection_id in connections:
            self.open(user_id, connection_id)

    def close(self, user_id: int, connection_id: str) -> None:
        # Only a connection still counting lingers: a late close must not revive one
        # that lapsed (its process stopped renewing) or was never opened.
        if self._until.get(user_id, {}).get(connection_id, 0.0) > time.monotonic():
            self._set(user_id, connection_id, time.monotonic() + self.linger)

    def live(self, user_ids: Iterable[int]) -> set[int]:
        now = time.monotonic()
        return {u for u in user_ids if any(t > now for t in self._until.get(u, {}).values())}
