"""PresenceTracker for one process (the embedded engine)."""

from __future__ import annotations

from collections.abc import Iterable

from storage.presence import PresenceTracker, Status


class MemoryPresence(PresenceTracker):
    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout_ms = int(timeout * 1000)
        self._last_seen: dict[int, int] = {}
        self._online: set[int] = set()

    def touch(self, user_id: int, now_ms: int) -> bool:
        self._last_seen[user_id] = max(now_ms, self._last_seen.get(user_id, 0))
        if user_id in self._online:
            return False
        self._online.add(user_id)
        return True

    def expire(self, now_ms: int) -> list[tuple[int, int]]:
        gone = [(u, self._last_seen[u]) for u in self._online
                if now_ms - self._last_seen[u] > self.timeout_ms]
        for user_id, _ in gone:
            self._online.discard(user_id)
        return gone

    def status(self, user_ids: Iterable[int]) -> dict[int, Status]:
        return {u: Status(u in self._online, self._last_seen.get(u)) for u in user_ids}
