"""CoalescingWindows: one push per user per window, claimed before anything is sent.

``arrive(user, window)`` counts a message for the user and claims the user's window if
no push went out in the last ``window`` seconds. It returns how many messages the push
should announce (this one plus those coalesced since the previous push), or 0 when the
window is already claimed. Claim and count are one atomic step, so concurrent jobs on
any number of workers hand each window to exactly one of them; the claim is made
*before* sending, which is what makes a push at most once per window even when the
worker holding the claim dies mid-send (see docs/push.md).
"""

from __future__ import annotations

import abc
import time
from typing import Any

from storage.redis_conn import Script

# Counted messages of a user who never gets another push are forgotten after a day.
_COUNT_TTL_MS = 24 * 3600 * 1000

# Beside the broker's per-user keys, with the same hash tag (one Cluster slot per user).
WINDOW_KEY = "{prefix}:{{u:{user_id}}}:push-window"
COUNT_KEY = "{prefix}:{{u:{user_id}}}:push-count"

# KEYS: window, count. ARGV: window ms, count ttl ms. Returns the count claimed, or 0.
_ARRIVE = Script("""
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return n
end
return 0
""")


class CoalescingWindows(abc.ABC):
    @abc.abstractmethod
    def arrive(self, user_id: int, window: float) -> int:
        """Count a message; the number to announce if this claims the window, else 0."""


class MemoryWindows(CoalescingWindows):
    """One process (the embedded engine); no IO, so atomic between greenlets."""

    def __init__(self) -> None:
        self._until: dict[int, float] = {}
        self._counts: dict[int, int] = {}

    def arrive(self, user_id: int, window: float) -> int:
        now = time.monotonic()
        count = self._counts.get(user_id, 0) + 1
        if self._until.get(user_id, 0.0) > now:
            self._counts[user_id] = count
            return 0
        self._until[user_id] = now + window
        self._counts.pop(user_id, None)
        if len(self._until) > 10_000:  # forget users whose windows ended long ago
            self._until = {u: t for u, t in self._until.items() if t > now}
        return count


class RedisWindows(CoalescingWindows):
    """Every worker of every node: one script on the user's two keys."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def arrive(self, user_id: int, window: float) -> int:
        keys = [WINDOW_KEY.format(prefix=self.prefix, user_id=user_id),
                COUNT_KEY.format(prefix=self.prefix, user_id=user_id)]
        return int(_ARRIVE(self.client, keys, [max(1, int(window * 1000)), _COUNT_TTL_MS]))
