"""Step 5 of the message flow on the gateway side: who is connected, and handing off jobs.

*Live connection*, across nodes: every gateway process registers its Hub's connections
in the ConnectionRegistry (Redis in the scaled mode), renews them every third of
``push_connection_ttl`` and lets a closed one linger ``push_connection_linger`` seconds
(long-poll gaps, reconnects). Presence alone would be a poor proxy: it stays "online"
for 30 s after a tab closes and says nothing about which transport is really open.

Hand-off: ``message_created`` only puts the message on a bounded in-process queue; a
fixed set of greenlets drains it, drops live members, and either runs the job itself
(embedded mode) or queues it on RQ (Redis mode). A slow or dead push provider can hold
those greenlets and fill that queue, never a send.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.queue import Full, Queue
from redis.exceptions import RedisError

from config import Settings
from gateway.errors import UNAVAILABLE
from gateway.hub import Hub, Subscription
from storage.broker import Broker
from storage.connections import ConnectionRegistry
from storage.history import Message

log = logging.getLogger(__name__)


POLLING = ("poll", "longpoll")  # transports whose connections are single requests


class TrackedHub(Hub):
    """The Hub, also telling the ConnectionRegistry which users are connected here.

    A stream (WebSocket, SSE) is one registry entry, opened and closed with it. Polls
    are requests, hundreds a second, and a long-poll client is between two of them for
    milliseconds: a user's polls in this process share one entry, opened by the first
    poll and closed (in one batch with others) only after ``poll_gap`` seconds without
    one. Polling then costs no registry round trip while it goes on, and a poller who
    left still stops counting ``linger`` seconds (plus ``poll_gap``) after the last poll.
    """

    def __init__(self, broker: Broker, registry: ConnectionRegistry,
                 poll_gap: float = 1.0) -> None:
        super().__init__(broker)
        self.registry = registry
        self.poll_gap = poll_gap
        self._process = secrets.token_hex(6)  # unique per process: node and worker
        self._serial = itertools.count(1)
        self._ids: dict[Subscription, str] = {}
        self._polling: Counter[int] = Counter()  # user -> polls in progress here
        self._poll_entries: set[int] = set()  # users whose shared poll entry is open
        self._poll_ended: dict[int, float] = {}  # user -> when their last poll here ended
        self._renewer: gevent.Greenlet | None = None

    def _poll_entry(self, user_id: int) -> str:
        return f"{self._process}:poll:{user_id}"

    def subscribe(self, user_id: int, session_id: str, transport: str) -> Subscription:
        sub = super().subscribe(user_id, session_id, transport)
        polling = transport in POLLING
        if polling:
            connection_id = self._poll_entry(user_id)
            self._polling[user_id] += 1
            self._poll_ended.pop(user_id, None)
        else:
            connection_id = f"{self._process}:{next(self._serial)}"
        self._ids[sub] = connection_id
        if not polling or user_id not in self._poll_entries:
            try:
                self.registry.open(user_id, connection_id)
                if polling:
                    self._poll_entries.add(user_id)
            except (RedisError, OSError) as exc:  # costs at most a needless push
                log.warning("could not register a connection: %s", exc)
        if self._renewer is None:
            self._renewer = gevent.spawn(self._renew_forever)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        super().unsubscribe(sub)
        connection_id = self._ids.pop(sub, None)
        if connection_id is None:
            return
        if sub.transport in POLLING:
            self._polling[sub.user_id] -= 1
            if self._polling[sub.user_id] <= 0:
                del self._polling[sub.user_id]
                self._poll_ended[sub.user_id] = time.monotonic()
            return
        try:
            self.registry.close(sub.user_id, connection_id)
        except (RedisError, OSError) as exc:  # the entry expires after the ttl
            log.warning("could not release a connection: %s", exc)

    def _renew_forever(self) -> None:
        renewed = time.monotonic()
        while True:
            gevent.sleep(min(self.poll_gap / 2, self.registry.ttl / 3))
            self.close_idle_polls()
            if time.monotonic() - renewed >= self.registry.ttl / 3:
                renewed = time.monotonic()
                self.renew()

    def renew(self) -> None:
        """Extend the entry of every connection open here, and of recent pollers."""
        entries = dict.fromkeys([(s.user_id, c) for s, c in list(self._ids.items())]
                                + [(u, self._poll_entry(u)) for u in self._poll_ended])
        try:
            self.registry.renew(list(entries))
        except (RedisError, OSError) as exc:
            log.warning("connection renewal failed: %s", exc)

    def close_idle_polls(self, now: float | None = None) -> None:
        """Close the entries of users whose last poll here ended ``poll_gap`` ago."""
        limit = (time.monotonic() if now is None else now) - self.poll_gap
        idle = [u for u, ended in self._poll_ended.items() if ended <= limit]
        for user_id in idle:
            del self._poll_ended[user_id]
            self._poll_entries.discard(user_id)
        if idle:
            try:
                self.registry.close_many([(u, self._poll_entry(u)) for u in idle])
            except (RedisError, OSError) as exc:  # the entries expire after the ttl
                log.warning("could not release poll connections: %s", exc)

    def stop(self) -> None:
        super().stop()
        if self._renewer is not None:
            self._renewer.kill(block=False)
            self._renewer = None


# Messages whose recipients one registry look-up checks at most.
_BATCH = 64
# Seconds a worker waits after the first message for others to join its look-up: a
# push that late is unnoticeable, a Redis round trip per message under load is not.
_GATHER = 0.05


class Notifier:
    """Takes new messages off the send path and hands offline members to a job runner."""

    def __init__(self, registry: ConnectionRegistry,
                 run: Callable[[dict[str, Any], list[int]], Any], *, concurrency: int,
                 queue_size: int, vapid_public_key: str, on_close: Callable[[], None]) -> None:
        self.registry = registry
        self.run = run
        self.concurrency = concurrency
        self.vapid_public_key = vapid_public_key
        self._queue: Queue = Queue(maxsize=queue_size)
        self._gathering = Semaphore()
        self._workers: list[gevent.Greenlet] = []
        self._on_close = on_close

    def message_created(self, message: Message, member_ids: Sequence[int]) -> None:
        """Never blocks and never raises: push is best-effort, the send already succeeded."""
        recipients = [u for u in member_ids if u != message.sender_id]
        if not recipients:
            return
        if not self._workers:  # started lazily: after gunicorn's fork, in the worker
            self._workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]
        try:
            self._queue.put_nowait((message.to_json(), recipients))
        except Full:
            log.warning("notification queue full: message %d gets no push", message.id)

    def _work(self) -> None:
        while True:
            # Whatever queued up meanwhile is checked together: one registry look-up
            # (one Redis round trip) for a burst instead of one per message.
            # One worker gathers at a time (the others would each take one message);
            # the jobs themselves (push provider calls) run concurrently.
            with self._gathering:
                jobs = [self._queue.get()]
                gevent.sleep(_GATHER)
                while len(jobs) < _BATCH and not self._queue.empty():
                    jobs.append(self._queue.get_nowait())
                try:
                    live = self.registry.live({u for _, recipients in jobs
                                               for u in recipients})
                except UNAVAILABLE as exc:  # Redis away or its pool exhausted (overload):
                    # these get no push, later ones may. One line, not a traceback per burst.
                    log.warning("notification look-up skipped for %d messages: %s",
                                len(jobs), exc)
                    continue
                except Exception:
                    log.exception("notification look-up failed for %d messages", len(jobs))
                    continue
            for message, recipients in jobs:
                try:
                    offline = [u for u in recipients if u not in live]
                    if offline:
                        self.run(message, offline)
                except Exception:  # one failed job must not stop this greenlet
                    log.exception("notification job failed")

    def close(self) -> None:
        gevent.killall(self._workers, block=False)
        self._workers = []
        self._on_close()


def build_push(settings: Settings, broker: Broker,
               redis_client: Any = None) -> tuple[TrackedHub, Notifier]:
    """The Hub and Notifier of one gateway process, for either engine."""
    from workers.push_vapid import load_vapid, public_key

    registry: ConnectionRegistry
    if redis_client is None:
        from storage.connections_memory import MemoryConnections
        from workers.notify import build_context, notify_offline

        registry = MemoryConnections(settings.push_connection_ttl,
                                     settings.push_connection_linger)
        context = build_context(settings)
        vapid_key = public_key(context.providers["webpush"].vapid)  # type: ignore[attr-defined]

        def run(message: dict[str, Any], users: list[int]) -> None:
            notify_offline(context, message, users)
        on_close = context.close
    else:
        from rq import Queue as RqQueue

        from storage.connections_redis import RedisConnections
        from storage.engines import rq_connection
        from workers.notify import enqueue_notify, notify_queue_name

        registry = RedisConnections(redis_client, prefix=settings.redis_prefix,
                                    ttl=settings.push_connection_ttl,
                                    linger=settings.push_connection_linger)
        # Generated here too (SET NX), so the key exists before any browser asks for it.
        vapid_key = public_key(load_vapid(settings, redis_client))
        queue = RqQueue(notify_queue_name(settings), connection=rq_connection(settings))

        def run(message: dict[str, Any], users: list[int]) -> None:
            enqueue_notify(queue, message, users)
        on_close = queue.connection.close
    hub = TrackedHub(broker, registry)
    notifier = Notifier(registry, run, concurrency=settings.push_concurrency,
                        queue_size=settings.push_queue_size, vapid_public_key=vapid_key,
                        on_close=lambda: (hub.stop(), on_close()))
    return hub, notifier
