"""Message ids: 63-bit, time-sortable, unique across workers (Snowflake layout).

41 bits of milliseconds since 2026-01-01, 10 bits of worker id, 12 bits of sequence
within the millisecond: 4096 ids per millisecond per worker, for ~69 years.
"""

from __future__ import annotations

import threading
import time

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
_SEQ_MASK = (1 << SEQUENCE_BITS) - 1


class IdGenerator:
    def __init__(self, worker_id: int) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker id {worker_id} outside 0..{MAX_WORKER}")
        self.worker_id = worker_id
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next_id(self, after: int | None = None) -> int:
        """A new id; with ``after``, one greater than it (ordering across nodes).

        Ids of one conversation are made under its lock, each after the previous one:
        a node whose clock is behind another's then counts from that id's millisecond
        plus one instead, so id order matches seq order across nodes too.
        """
        with self._lock:
            now = int(time.time() * 1000)
            if after is not None:
                now = max(now, id_time_ms(after) + 1)
            # A clock that steps back must not repeat ids: keep counting from the last
            # millisecond we used until the clock catches up.
            if now <= self._last_ms:
                now = self._last_ms
                self._seq = (self._seq + 1) & _SEQ_MASK
                if self._seq == 0:
                    now += 1
            else:
                self._seq = 0
            self._last_ms = now
            return ((now - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (
                self.worker_id << SEQUENCE_BITS) | self._seq


def id_time_ms(message_id: int) -> int:
    """The creation time encoded in an id (history buckets use it)."""
    return (message_id >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
