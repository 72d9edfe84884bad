"""PresenceTracker: who is online, from heartbeats, and when each user was last seen.

Contract: ``touch`` reports the offline->online transition exactly once; ``expire``
reports each online->offline transition exactly once, after ``timeout`` seconds without
a heartbeat (the timeout is the grace period: a flaky link that reconnects within it
never shows as offline). ``last_seen`` survives going offline.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import NamedTuple


class Status(NamedTuple):
    online: bool
    last_seen: int | None  # unix milliseconds of the last heartbeat


class PresenceTracker(abc.ABC):
    @abc.abstractmethod
    def touch(self, user_id: int, now_ms: int) -> bool:
        """Record a heartbeat; True if the user was offline until now."""

    def touch_many(self, user_ids: Iterable[int], now_ms: int) -> list[int]:
        """``touch`` for each user; returns those who just came online."""
        return [u for u in user_ids if self.touch(u, now_ms)]

    @abc.abstractmethod
    def expire(self, now_ms: int) -> list[tuple[int, int]]:
        """Mark users silent for longer than the timeout offline; (user, last_seen)."""

    @abc.abstractmethod
    def status(self, user_ids: Iterable[int]) -> dict[int, Status]: ...
