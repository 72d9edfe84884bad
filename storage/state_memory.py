"""SharedState for one process (the embedded engine)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gevent.lock import Semaphore

from storage.state import SharedState

_PURGE_EVERY = 1024  # writes between sweeps of expired keys


class LockTimeout(RuntimeError):
    pass


class MemoryState(SharedState):
    def __init__(self) -> None:
        self._counters: dict[int, int] = {}
        self._locks: dict[str, tuple[Semaphore, int]] = {}
        self._values: dict[str, tuple[float, str]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        # Expiry order of remembered values: a heap, so expiring costs O(log n) per write
        # however many idempotency records (one per message, kept a day) are held.
        self._deadlines: list[tuple[float, str]] = []
        self._writes = 0

    def next_seq(self, conversation_id: int, floor: Callable[[], int]) -> int:
        current = self._counters.get(conversation_id)
        if current is None:
            current = floor()
        self._counters[conversation_id] = current + 1
        return current + 1

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

    def recall(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def forget(self, key: str) -> None:
        self._values.pop(key, None)

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
