"""NearCache: this process' copies of SharedState values, dropped everywhere on change.

Member lists and sessions are read on every send and every HTTP request and change
rarely; a Redis GET each time was one round trip per message. Each gateway process
keeps what it read, for at most ``ttl`` seconds, and every ``remember``/``forget``
publishes the key on one channel so every process drops its copy.

Pub/sub is at-most-once, so a copy is only trusted while the subscription is known to
be live: not before it is confirmed, not while the connection is down, and everything
is dropped when it recovers. A generation counter keeps a read that raced an
invalidation from storing what it read.

Pub/sub loses nothing on a connection that stays up, so the one window left open is a
connection that died without a word (a half-open TCP link): the subscription PINGs
after ``heartbeat`` seconds of silence and counts the link dead after three, which
bounds how long a missed change can be served. ``ttl`` only bounds it a second time.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from storage.redis_conn import RedisClient
from storage.redis_pubsub import Subscriber

log = logging.getLogger(__name__)


class NearCache:
    def __init__(self, client: RedisClient, channel: str, *, sharded: bool,
                 ttl: float = 60.0, heartbeat: float = 1.0,
                 max_entries: int = 50_000) -> None:
        self.client = client
        self.channel = channel
        self.sharded = sharded
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.max_entries = max_entries
        self.origin = secrets.token_hex(6)
        self.generation = 0  # bumped by every invalidation that reaches this process
        self._values: dict[str, tuple[str, float]] = {}
        self._subscriber: Subscriber | None = None

    # --- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe (waiting for the confirmation); copies are kept from then on."""
        if self._subscriber is not None:
            return
        self._subscriber = Subscriber(
            self.client, sharded=self.sharded, on_message=self._on_message,
            on_recover=self._on_recover, health_check_interval=self.heartbeat,
            name=f"near-cache:{self.origin}")
        self._subscriber.start()
        self._subscriber.subscribe(self.channel)

    def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None
        self.clear()

    @property
    def live(self) -> bool:
        """Subscribed and confirmed on the current connection: every announcement from
        now on reaches this process."""
        subscriber = self._subscriber
        return subscriber is not None and subscriber.confirmed(self.channel)

    # --- reads and writes --------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The local copy, or None (absent, expired, or not trustworthy right now)."""
        if not self.live:
            if self._values:
                self.clear()
            return None
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._values[key]
            return None
        return entry[0]

    def put(self, key: str, value: str, generation: int) -> None:
        """Keep ``value``, read when the generation was ``generation``, unless an
        invalidation has arrived since (it may have been about this key)."""
        if generation != self.generation or not self.live:
            return
        if len(self._values) >= self.max_entries:
            # Oldest half out (dicts keep insertion order): cheap and bounded.
            for stale in list(self._values)[: self.max_entries // 2]:
                del self._values[stale]
        self._values[key] = (value, time.monotonic() + self.ttl)

    def invalidate(self, pipe: Any, key: str) -> None:
        """Queue the announcement that ``key`` changed on ``pipe`` (after the change),
        and drop the local copy now."""
        self._values.pop(key, None)
        self.generation += 1
        pipe.execute_command("SPUBLISH" if self.sharded else "PUBLISH", self.channel,
                             f"{self.origin}|{key}")

    def clear(self) -> None:
        self._values.clear()
        self.generation += 1

    # --- pub/sub -----------------------------------------------------------------------

    def _on_message(self, _channel: str, data: str) -> None:
        origin, _, key = data.partition("|")
        if origin == self.origin:
            return  # dropped locally when it was published
        self._values.pop(key, None)
        self.generation += 1

    def _on_recover(self, _channels: list[str]) -> None:
        log.info("near cache: pub/sub recovered; dropping every copy")
        self.clear()
