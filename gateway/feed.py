"""Feed: one connection's reading of its user's event log, shared by every transport.

Transports differ only in framing. The feed subscribes to the Hub *before* reading, so
an event appended between the read and the wait still wakes it (no lost wake-up).

Events the Hub hands over (appended while the connection was live) are delivered
without reading the log when they continue the cursor exactly: same epoch, next
offsets. Anything else - a gap because pub/sub dropped a message, a new epoch, a
backlog overflow - falls back to a read, so the log stays the only authority.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from gateway.errors import UNAVAILABLE
from gateway.hub import sent_by
from gateway.services import Services
from storage.broker import LogRead
from storage.events import Cursor, EventType

log = logging.getLogger(__name__)

# Seconds between reads of a stream's log while Redis is unreachable.
_UNAVAILABLE_RETRY = 0.5


class Batch(NamedTuple):
    events: list[dict[str, Any]]
    cursor: str
    closed: str | None  # set when the server ends the connection (revoked, draining)


class Feed:
    """``own_prefix``: the client_msg_id prefix of this client's own sends. Their
    ``message.created`` events do not end a wait: the client has each from its send's
    answer, and handing it back costs a long-poll a whole request cycle, a stream a
    write. They come with the next batch (or the heartbeat's), so the cursor still
    passes them in order."""

    def __init__(self, svc: Services, user_id: int, session_id: str, cursor: str | None,
                 transport: str, prefetch: int = 0, own_prefix: str | None = None) -> None:
        self.svc = svc
        self.user_id = user_id
        self.own_prefix = own_prefix
        self.sub = svc.hub.subscribe(user_id, session_id, transport)
        self.sub.own_prefix = own_prefix
        try:
            # Validates the cursor (InvalidCursor) before the transport commits to a
            # response, and fixes the starting point for a client that sent none. With
            # ``prefetch`` (the caller's page limit), the first page comes with it: a
            # long-poll that finds events answers after one read of the log, not two.
            # A connection coming back at the tip this process already knows (a long-poll
            # returning with the cursor of its last answer) has nothing to read: the
            # next append rings its subscription. A plain poll always reads.
            if cursor is not None and transport != "poll" and svc.broker.at_tip(
                    user_id, cursor):
                first = LogRead([], cursor, False)
            else:
                first = svc.broker.read(user_id, cursor, prefetch if cursor else 0)
        except Exception:
            svc.hub.unsubscribe(self.sub)
            raise
        self.cursor = first.cursor
        self._pending_reset = first.reset
        self._prefetched = first.events
        # Whether the last read reached the end of the log. ``wake`` was cleared before
        # that read, so any append since has set it: until then, reading finds nothing.
        self._caught_up = not first.reset and (
            cursor is None or len(first.events) < prefetch)

    def next(self, timeout: float, limit: int) -> Batch:
        """Events after the cursor, waiting up to ``timeout`` s for some to arrive."""
        if not self.own_prefix:
            return self._next(timeout, limit)
        deadline = time.monotonic() + timeout
        held: list[dict[str, Any]] = []
        while True:
            batch = self._next(max(0.0, deadline - time.monotonic()), limit - len(held))
            events = [*held, *batch.events]
            if (batch.closed or len(events) >= limit or time.monotonic() >= deadline
                    or not all(map(self._own, batch.events))):
                return Batch(events, batch.cursor, batch.closed)
            held = events  # only the client's own messages so far: keep waiting

    def _own(self, event: dict[str, Any]) -> bool:
        sent = sent_by(self.user_id, event)
        return sent is not None and self.own_prefix is not None and sent.startswith(
            self.own_prefix)

    def _next(self, timeout: float, limit: int) -> Batch:
        deadline = time.monotonic() + timeout
        # Caught up and not woken since: wait before reading. Only once per call, so a
        # lost wake-up (pub/sub is at-most-once) costs at most one wait, not the event.
        skip_read = self._caught_up and not self.sub.wake.is_set()
        while True:
            self.sub.wake.clear()
            if self._pending_reset:
                self._pending_reset = False
                return Batch([self._reset_event()], self.cursor, None)
            ephemeral = self.sub.take_ephemeral()
            if self._prefetched:
                events, self._prefetched = self._prefetched, []
                return Batch([*ephemeral, *events], self.cursor, None)
            carried = self._take_carried(limit)
            if carried:
                self.cursor = carried[-1]["id"]
                # Nothing newer is known: as after a read that reached the end.
                self._caught_up = not self.sub.carried
                return Batch([*ephemeral, *carried], self.cursor, None)
            if carried is None:
                skip_read = False  # what arrived does not follow the cursor: read
            elif (ephemeral and self._caught_up
                  and self.svc.broker.at_tip(self.user_id, self.cursor)):
                # Only typing or presence came, and nothing was appended since the last
                # look: no read (in a busy group each member's would be one per keypress).
                return Batch(ephemeral, self.cursor, None)
            if skip_read and not ephemeral and not self.sub.closed:
                skip_read = False
                if not self._wait(deadline):
                    return Batch([], self.cursor, None)
                continue
            try:
                read = self.svc.broker.read(self.user_id, self.cursor, limit)
            except UNAVAILABLE as exc:
                # Redis restarting: keep the connection and read again shortly; the
                # subscriber's recovery wakes us as soon as it is back.
                self._caught_up = False
                if ephemeral or self.sub.closed or time.monotonic() >= deadline:
                    return Batch(ephemeral, self.cursor, None if ephemeral else self.sub.closed)
                log.debug("event log unavailable, retrying: %s", exc)
                self.sub.wake.wait(min(_UNAVAILABLE_RETRY, max(0.0, deadline - time.monotonic())))
                continue
            self.cursor = read.cursor
            self._caught_up = not read.reset and len(read.events) < limit
            if read.reset:
                return Batch([*ephemeral, self._reset_event()], self.cursor, None)
            if read.events or ephemeral:
                return Batch([*ephemeral, *read.events], self.cursor, None)
            if self.sub.closed:
                return Batch([], self.cursor, self.sub.closed)
            if not self._wait(deadline):
                return Batch([], self.cursor, None)

    def _take_carried(self, limit: int) -> list[dict[str, Any]] | None:
        """The handed-over events that continue the cursor (up to ``limit``); None when
        they do not (a gap or another epoch), and the log must be read instead."""
        carried = self.sub.carried
        if not carried:
            return []
        epoch, offset = Cursor.parse(self.cursor)
        taken: list[dict[str, Any]] = []
        used = 0
        for item_epoch, item_offset, event in carried:
            if len(taken) >= limit:
                break
            if item_epoch == epoch and item_offset <= offset:
                used += 1  # already delivered by a read
                continue
            if item_epoch != epoch or item_offset != offset + 1:
                carried.clear()
                return None
            taken.append(event)
            offset = item_offset
            used += 1
        del carried[:used]
        return taken

    def _wait(self, deadline: float) -> bool:
        """Wait for a wake-up until ``deadline``. False when none came and nothing can
        have been missed either: the deadline had passed, or the broker vouches that the
        cursor is still the tip. A wait that ran out unvouched asks for one more read
        (pub/sub is at-most-once), so an idle connection reads the log at most once per
        the broker's trust window, not once per wait. Presence is not renewed here: the
        presence loop renews every user with a live connection."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if self.sub.wake.wait(remaining):
            return True
        return not self.svc.broker.at_tip(self.user_id, self.cursor)

    def _reset_event(self) -> dict[str, Any]:
        return {"type": EventType.RESET.value,
                "data": {"cursor": self.cursor, "reason": "cursor_expired"}}

    def close(self) -> None:
        self.svc.hub.unsubscribe(self.sub)
