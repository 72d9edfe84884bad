"""PresenceService: heartbeats in, transitions out (to the user's friends)."""

from __future__ import annotations

import logging
import time

import gevent
from flask import Flask

from storage.broker import Broker
from storage.events import EventType, event
from storage.presence import PresenceTracker, Status

log = logging.getLogger(__name__)

# Heartbeats closer together than this (or than the heartbeat interval, if shorter)
# are not forwarded to the engine: a chatty client must not cost a Redis round trip
# per request (at 1 s it was 3 % of a gateway's CPU in the max benchmark).
_LOCAL_THROTTLE = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class PresenceService:
    def __init__(self, tracker: PresenceTracker, broker: Broker,
                 throttle: float = _LOCAL_THROTTLE) -> None:
        self.tracker = tracker
        self.broker = broker
        self.throttle = throttle
        self._recent: dict[int, float] = {}

    def touch(self, user_id: int) -> None:
        now = time.monotonic()
        if now - self._recent.get(user_id, -self.throttle) < self.throttle:
            return
        self._recent[user_id] = now
        stamp = _now_ms()
        if self.tracker.touch(user_id, stamp):
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

    def run_sweeper(self, app: Flask, interval: float) -> gevent.Greenlet:
        def loop() -> None:
            while True:
                gevent.sleep(interval)
                try:
                    with app.app_context():
                        self.sweep()
                except Exception:
                    log.exception("presence sweep failed")
        return gevent.spawn(loop)
