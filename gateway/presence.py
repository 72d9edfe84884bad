"""PresenceService: heartbeats in, transitions out (to the user's friends)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import gevent
from flask import Flask

from gateway.errors import UNAVAILABLE
from storage.broker import Broker
from storage.events import EventType, event
from storage.presence import PresenceTracker, Status

log = logging.getLogger(__name__)

# Heartbeats closer together than this (the presence heartbeat setting) are not
# forwarded to the engine: a chatty client must not cost a Redis round trip per request
# (at 1 s it was 3 % of a gateway's CPU in the max benchmark).
_LOCAL_THROTTLE = 10.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class PresenceService:
    def __init__(self, tracker: PresenceTracker, broker: Broker,
                 throttle: float = _LOCAL_THROTTLE) -> None:
        self.tracker = tracker
        self.broker = broker
        self.throttle = throttle
        self._recent: dict[int, float] = {}
        # Renewals of users heartbeating here without a break, sent together by the
        # sweeper's loop (one round trip a second instead of one per user); None when no
        # loop runs (tests, scripts): every heartbeat is then sent at once.
        self._due: set[int] | None = None

    def touch(self, user_id: int) -> None:
        now = time.monotonic()
        last = self._recent.get(user_id)
        if last is not None and now - last < self.throttle:
            return
        self._recent[user_id] = now
        if self._due is not None and last is not None and now - last < 2 * self.throttle:
            self._due.add(user_id)  # still online: a second's delay changes nothing
            return
        stamp = _now_ms()
        if self.tracker.touch(user_id, stamp):
            self._publish(user_id, True, stamp)

    def defer_renewals(self) -> None:
        """From now on ``renew`` (called every second) sends uninterrupted renewals."""
        if self._due is None:
            self._due = set()

    def renew(self) -> None:
        """Send the heartbeats ``touch`` set aside; publish any that came online."""
        if not self._due:
            return
        due, self._due = list(self._due), set()
        stamp = _now_ms()
        for user_id in self.tracker.touch_many(due, stamp):
            self._publish(user_id, True, stamp)

    def sweep(self) -> int:
        """Publish offline transitions; returns how many users went offline."""
        gone = self.tracker.expire(_now_ms())
        for user_id, last_seen in gone:
            self._recent.pop(user_id, None)
            self._publish(user_id, False, last_seen)
        cutoff = time.monotonic() - 60
        if len(self._recent) > 10_000:
            self._recent = {u: t for u, t in self._recent.items() if t > cutoff}
        return len(gone)

    def status(self, user_ids: list[int]) -> dict[int, Status]:
        return self.tracker.status(user_ids)

    def _publish(self, user_id: int, online: bool, last_seen: int) -> None:
        payload = event(EventType.PRESENCE, {"user_id": user_id, "online": online,
                                             "last_seen": last_seen})
        self.broker.publish_ephemeral([*self._friends(user_id), user_id], payload)

    @staticmethod
    def _friends(user_id: int) -> list[int]:
        # A session of its own: touch() runs inside request handlers and long-lived
        # streams, whose own session must be neither disturbed nor held open.
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from storage.db import db
        from storage.models import Friendship

        with Session(db.engine) as session:
            return list(session.scalars(select(Friendship.friend_id).where(
                Friendship.user_id == user_id)))

    def run_sweeper(self, app: Flask, interval: float,
                    live: Callable[[], Iterable[int]] | None = None) -> gevent.Greenlet:
        """Sweep, and send the set-aside renewals, every ``interval`` seconds (at most
        one: a renewal must land well within the presence timeout).

        ``live``: the users with a connection open here, whose connection is their
        heartbeat. Renewing them here lets a parked connection sleep until it has
        something to do (its own keep-alive), instead of waking every heartbeat to say
        it is still there: 10,000 parked connections were 2,000 wake-ups a second."""
        self.defer_renewals()

        def loop() -> None:
            while True:
                gevent.sleep(min(interval, 1.0))
                try:
                    with app.app_context():
                        for user_id in live() if live is not None else ():
                            self.touch(user_id)  # throttled: mostly a dict look-up
                        self.renew()
                        self.sweep()
                except UNAVAILABLE as exc:  # Redis away or overloaded: the next round retries
                    log.warning("presence sweep skipped: %s", exc)
                except Exception:
                    log.exception("presence sweep failed")
        return gevent.spawn(loop)
