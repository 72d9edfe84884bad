"""SharedState for one process (the embedded engine)."""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gevent.lock import Semaphore

from storage.state import (
    FORGOTTEN,
    LAST_ID_TTL,
    SEND_CLAIM_HOLD,
    SendClaim,
    SharedState,
    Turn,
)

_PURGE_EVERY = 1024  # writes between sweeps of expired keys
# A claimed, not yet settled send; messages are stored as JSON and never start so.
_PENDING = "~pending:"


class LockTimeout(RuntimeError):
    pass


def _send_key(sender_id: int, client_msg_id: str) -> str:
    return f"cmid:{sender_id}:{client_msg_id}"


class MemoryState(SharedState):
    def __init__(self) -> None:
        self._counters: dict[int, int] = {}
        self._last_ids: dict[int, tuple[float, int]] = {}  # conversation -> (until, id)
        self._locks: dict[str, tuple[Semaphore, int]] = {}
        self._values: dict[str, tuple[float, str]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        # Expiry order of remembered values: a heap, so expiring costs O(log n) per write
        # however many idempotency records (one per message, kept a day) are held.
        self._deadlines: list[tuple[float, str]] = []
        self._writes = 0

    @contextmanager
    def conversation_turn(self, conversation_id: int, floor: Callable[[], int],
                          timeout: float = 10.0) -> Iterator[Turn]:
        with self.lock(f"conv:{conversation_id}", timeout):
            current = self._counters.get(conversation_id)
            if current is None:
                current = floor()
            self._counters[conversation_id] = current + 1
            last = self._last_ids.get(conversation_id)
            turn = Turn(current + 1, last[1] if last and last[0] > time.monotonic() else None)
            yield turn
            if turn.new_last_id is not None:
                self._last_ids[conversation_id] = (time.monotonic() + LAST_ID_TTL,
                                                   turn.new_last_id)

    def start_conversation(self, conversation_id: int) -> None:
        self._counters.setdefault(conversation_id, 0)

    def claim_send(self, sender_id: int, client_msg_id: str, *, rate: float, burst: int,
                   hold: float = SEND_CLAIM_HOLD) -> SendClaim:
        key = _send_key(sender_id, client_msg_id)
        value = self.recall(key)
        if value is not None:
            if value.startswith(_PENDING):
                return SendClaim("pending")
            return SendClaim("sent", value)
        if not self.allow(f"send:{sender_id}", rate, burst):
            return SendClaim("limited")
        token = secrets.token_hex(8)
        self.remember(key, _PENDING + token, hold)
        return SendClaim("claimed", token=token)

    def settle_send(self, sender_id: int, client_msg_id: str, token: str,
                    message: str | None, ttl: float) -> None:
        key = _send_key(sender_id, client_msg_id)
        value = self.recall(key)
        if value is not None and value != _PENDING + token:
            return  # not ours any more
        if message is None:
            self.forget(key)
        else:
            self.remember(key, message, ttl)

    @contextmanager
    def lock(self, name: str, timeout: float = 10.0) -> Iterator[None]:
        sem, users = self._locks.get(name, (None, 0))
        if sem is None:
            sem = Semaphore()
        self._locks[name] = (sem, users + 1)
        try:
            if not sem.acquire(timeout=timeout):
                raise LockTimeout(name)
            try:
                yield
            finally:
                sem.release()
        finally:
            sem, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (sem, users - 1)

    def _expire(self) -> None:
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now:
            deadline, key = heapq.heappop(deadlines)
            item = self._values.get(key)
            if item is not None and item[0] == deadline:  # not re-remembered since
                del self._values[key]
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0 and len(self._buckets) > _PURGE_EVERY:
            for key in [k for k, (_, at) in self._buckets.items() if at < now - 3600]:
                del self._buckets[key]

    def remember(self, key: str, value: str, ttl: float) -> None:
        self._expire()
        deadline = time.monotonic() + ttl
        self._values[key] = (deadline, value)
        heapq.heappush(self._deadlines, (deadline, key))

    def fill(self, key: str, value: str, ttl: float) -> None:
        item = self._values.get(key)
        if item is None or item[0] < time.monotonic():
            self.remember(key, value, ttl)

    def recall(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None or item[0] < time.monotonic() or item[1] == FORGOTTEN:
            return None
        return item[1]

    def forget(self, key: str) -> None:
        self.remember(key, FORGOTTEN, self.forgotten_for)

    def claim_once(self, key: str, ttl: float) -> bool:
        if self.recall(key) is not None:
            return False
        self.remember(key, "1", ttl)
        return True

    def allow(self, key: str, rate: float, burst: int) -> bool:
        self._expire()
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def worker_id(self) -> int:
        return 0
