"""In-process Broker: the embedded engine's delivery log.

It serves one process only: with several gunicorn workers each would hold its own logs,
so the app refuses to start that way without Redis. Logs are lost on restart; a new
epoch makes every old cursor answer with a reset, never with a silent gap.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from storage.broker import Appended, Broker, LogRead
from storage.events import Cursor, InvalidCursor


class _UserLog:
    __slots__ = ("entries", "next_offset")

    def __init__(self) -> None:
        self.entries: deque[tuple[int, float, dict[str, Any]]] = deque()
        self.next_offset = 1


class MemoryBroker(Broker):
    def __init__(self, size: int = 1000, ttl: float = 24 * 3600) -> None:
        self.size = size
        self.ttl = ttl
        self.epoch = secrets.token_hex(4)
        self._logs: dict[int, _UserLog] = {}

    def _trim(self, log: _UserLog, now: float) -> None:
        entries = log.entries
        while entries and (len(entries) > self.size or entries[0][1] < now - self.ttl):
            entries.popleft()

    def append(self, user_ids: Iterable[int], payload: dict[str, Any]) -> dict[int, str]:
        now = time.monotonic()
        cursors = {}
        appended = []
        users = list(dict.fromkeys(user_ids))
        for user_id in users:
            log = self._logs.get(user_id)
            if log is None:
                log = self._logs[user_id] = _UserLog()
            offset = log.next_offset
            log.next_offset += 1
            log.entries.append((offset, now, payload))
            self._trim(log, now)
            cursors[user_id] = str(Cursor(self.epoch, offset))
            appended.append(Appended(user_id, self.epoch, offset, payload))
        if self.listener is not None and appended:
            self.listener.on_appended(appended)
        return cursors

    def read(self, user_id: int, cursor: str | None, limit: int) -> LogRead:
        log = self._logs.get(user_id)
        last = (log.next_offset - 1) if log else 0
        tip = str(Cursor(self.epoch, last))
        if cursor is None:
            return LogRead([], tip, False)
        position = Cursor.parse(cursor)
        if position.epoch != self.epoch:
            return LogRead([], tip, True)
        if position.offset > last:
            raise InvalidCursor(f"cursor {cursor!r} is ahead of this log")
        if log is None or position.offset == last:
            return LogRead([], cursor, False)
        self._trim(log, time.monotonic())
        first = log.entries[0][0] if log.entries else log.next_offset
        if position.offset < first - 1:
            return LogRead([], tip, True)
        # Offsets are dense, so the start index is arithmetic, not a search.
        start = position.offset + 1 - first
        events = []
        for index in range(start, min(start + limit, len(log.entries))):
            offset, _, payload = log.entries[index]
            events.append({"id": str(Cursor(self.epoch, offset)), **payload})
        return LogRead(events, events[-1]["id"] if events else cursor, False)

    def at_tip(self, user_id: int, cursor: str) -> bool:
        log = self._logs.get(user_id)
        return cursor == str(Cursor(self.epoch, (log.next_offset - 1) if log else 0))

    def publish_ephemeral(self, user_ids: Iterable[int], payload: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener.on_ephemeral(list(user_ids), payload)
