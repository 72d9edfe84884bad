"""Hub: this process' live connections, woken by the broker.

The Hub holds no log; it knows which users have a live connection here and hands each
of them what the broker says was appended to their log (the event with its offset),
then wakes them. Each connection delivers those events itself when they follow its
cursor, and reads the log otherwise (see gateway/feed.py). All delivery state is owned
by the app's Hub instance, never by module globals.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import gevent
from gevent.event import Event

from gateway.metrics import CONNECTIONS
from storage.broker import Appended, Broker
from storage.events import EventType, logged_event

_EPHEMERAL_BACKLOG = 64  # per connection; typing/presence beyond this are dropped
# Appended events held per connection until its feed takes them; beyond this the oldest
# go, the feed sees a gap and reads the log instead (nothing is lost).
_CARRIED_BACKLOG = 64


class Subscription:
    __slots__ = ("user_id", "session_id", "transport", "wake", "ephemeral", "carried",
                 "closed", "own_prefix")

    def __init__(self, user_id: int, session_id: str, transport: str) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.transport = transport
        self.wake = Event()
        # Lists, not deques: most connections hold none (an empty deque is 600 bytes).
        self.ephemeral: list[dict[str, Any]] = []
        # (epoch, offset, event) as the broker announced them, oldest first
        self.carried: list[tuple[str, int, dict[str, Any]]] = []
        self.closed: str | None = None  # why the server is ending this connection
        # The client_msg_id prefix of this connection's client's own sends (Feed's
        # ``own_prefix``): their events are carried without a wake-up.
        self.own_prefix: str | None = None

    def take_ephemeral(self) -> list[dict[str, Any]]:
        if not self.ephemeral:
            return []
        items, self.ephemeral = self.ephemeral, []
        return items


def sent_by(user_id: int, payload: dict[str, Any]) -> str | None:
    """The client_msg_id when ``payload`` is a message ``user_id`` sent, else None (the
    Hub and the Feed both tell a client's own messages by it)."""
    if payload.get("type") != EventType.MESSAGE_CREATED.value:
        return None
    data = payload.get("data") or {}
    if data.get("sender_id") != user_id:
        return None
    return str(data.get("client_msg_id", ""))


class Hub:
    """``watch_linger``: seconds a user's wake-ups stay routed here after their last
    connection in this process ended. A long-poll client is between two requests most
    of the time; without the linger every poll would subscribe and unsubscribe again
    (two pub/sub commands per delivery with Redis), and a wake-up published before the
    new subscription took effect would cost the poll its whole wait."""

    def __init__(self, broker: Broker, watch_linger: float = 30.0) -> None:
        self.broker = broker
        self.watch_linger = watch_linger
        self._subs: dict[int, set[Subscription]] = {}
        # Users still watched with no connection here, in order of when they went idle.
        self._idle: dict[int, float] = {}
        self._sweeper: gevent.Greenlet | None = None
        self.closing: str | None = None  # set by close_all: streams opened later end at once
        broker.attach(self)

    def subscribe(self, user_id: int, session_id: str, transport: str) -> Subscription:
        sub = Subscription(user_id, session_id, transport)
        sub.closed = self.closing
        subs = self._subs.get(user_id)
        if subs is None:
            subs = self._subs[user_id] = set()
            if self._idle.pop(user_id, None) is None:
                self.broker.watch(user_id)
        subs.add(sub)
        if transport != "poll":  # a plain poll is a request, not a connection
            CONNECTIONS.labels(transport).inc()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.user_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if sub.transport != "poll":
                CONNECTIONS.labels(sub.transport).dec()
            if not subs:
                del self._subs[sub.user_id]
                self._idle[sub.user_id] = time.monotonic()
                if self._sweeper is None:
                    self._sweeper = gevent.spawn(self._sweep_forever)

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(min(5.0, self.watch_linger / 2) or 0.1)
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Stop watching users idle here for longer than ``watch_linger``."""
        limit = (time.monotonic() if now is None else now) - self.watch_linger
        for user_id, since in list(self._idle.items()):
            if since > limit:
                break  # insertion order is idle order
            del self._idle[user_id]
            self.broker.unwatch(user_id)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
            self._sweeper = None

    def watched(self) -> list[int]:
        """Users with a live connection here (the Redis broker resubscribes these)."""
        return list(self._subs)

    def connections(self, user_id: int) -> int:
        return len(self._subs.get(user_id, ()))

    def counts_by_transport(self) -> Counter[str]:
        return Counter(s.transport for subs in self._subs.values() for s in subs)

    def on_appended(self, events: Iterable[Appended]) -> None:
        for item in events:
            subs = self._subs.get(item.user_id)
            if not subs:
                continue
            event = logged_event(f"{item.epoch}:{item.offset}", item.payload,
                                 item.payload_json)
            sent = sent_by(item.user_id, item.payload)
            for sub in subs:
                carried = sub.carried
                if len(carried) >= _CARRIED_BACKLOG:
                    del carried[0]
                carried.append((item.epoch, item.offset, event))
                # The client's own message: it has it from its send's answer, and the
                # Feed would only hold it for the next batch (see Feed's own_prefix).
                # Waking the connection for it cost a greenlet switch and a look at
                # the feed per message sent.
                if sent is None or not (sub.own_prefix and sent.startswith(sub.own_prefix)):
                    sub.wake.set()

    def on_wake(self, user_ids: Iterable[int]) -> None:
        for user_id in user_ids:
            for sub in self._subs.get(user_id, ()):
                sub.wake.set()

    def on_ephemeral(self, user_ids: Iterable[int], payload: dict[str, Any]) -> None:
        revoked = payload.get("type") == EventType.SESSION_REVOKED.value
        for user_id in user_ids:
            for sub in self._subs.get(user_id, ()):
                if revoked:
                    if sub.session_id == payload["data"]["session_id"]:
                        sub.closed = "session_revoked"
                        sub.wake.set()
                    continue
                if len(sub.ephemeral) >= _EPHEMERAL_BACKLOG:
                    del sub.ephemeral[0]
                sub.ephemeral.append(payload)
                sub.wake.set()

    def close_all(self, reason: str) -> None:
        """End every connection (``reason``), and every one opened from now on."""
        self.closing = reason
        for subs in self._subs.values():
            for sub in subs:
                sub.closed = reason
                sub.wake.set()
