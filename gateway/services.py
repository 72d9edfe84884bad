"""The app's engines, built once per process from Settings and kept on the app."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from flask import current_app

from config import Settings
from gateway.hub import Hub
from storage.broker import Broker
from storage.history import HistoryStore
from storage.ids import IdGenerator
from storage.presence import PresenceTracker
from storage.state import SharedState
from workers.queue import JobQueue

if TYPE_CHECKING:
    from storage.send_redis import OneTripSends

EXTENSION = "switchboard"


@dataclasses.dataclass
class Services:
    settings: Settings
    broker: Broker
    state: SharedState
    history: HistoryStore
    hub: Hub
    ids: IdGenerator
    jobs: JobQueue
    presence: PresenceService  # noqa: F821 - defined in gateway.presence
    engine: str  # "memory" or "redis", for /v1/health and the logs
    notifier: Notifier  # noqa: F821 - defined in gateway.notifications
    # Sends in one round trip (a standalone Redis); None: every send takes state.sending.
    one_trip: OneTripSends | None = None

    def close(self) -> None:
        self.notifier.close()
        self.broker.close()
        self.history.close()
        self.state.close()


def services() -> Services:
    return current_app.extensions[EXTENSION]


def build_services(settings: Settings) -> Services:
    """The embedded engines, or Redis (+ RQ persistence) when SWITCHBOARD_REDIS_URL is set.

    History is Cassandra when SWITCHBOARD_CASSANDRA_HOSTS is set, else SQL (SQLite or
    the configured database).
    """
    # Imported here so the module graph stays acyclic (presence needs the accounts code).
    from gateway.notifications import build_push
    from gateway.presence import PresenceService
    from storage.broker_memory import MemoryBroker
    from storage.engines import build_history
    from storage.presence_memory import MemoryPresence
    from storage.state_memory import MemoryState
    from workers.queue import InlineJobQueue

    broker: Broker
    state: SharedState
    tracker: PresenceTracker
    history: HistoryStore
    jobs: JobQueue
    one_trip = None
    store = build_history(settings)
    if settings.redis_url:
        broker, state, tracker, ids, history, jobs, one_trip = _redis_engines(settings, store)
        engine = "redis"
    else:
        broker = MemoryBroker(settings.event_log_size, settings.event_log_ttl)
        state = MemoryState()
        tracker = MemoryPresence(settings.presence_timeout)
        ids = IdGenerator(state.worker_id())
        history = store
        jobs = InlineJobQueue(store)
        engine = "memory"
    # The Hub also registers live connections, so push skips connected members.
    hub, notifier = build_push(settings, broker, getattr(state, "client", None))
    presence = PresenceService(tracker, broker, throttle=settings.presence_heartbeat)
    return Services(settings=settings, broker=broker, state=state, history=history, hub=hub,
                    ids=ids, jobs=jobs, presence=presence, engine=engine, notifier=notifier,
                    one_trip=one_trip)


def _redis_engines(settings: Settings, store: HistoryStore) -> tuple[
        Broker, SharedState, PresenceTracker, IdGenerator, HistoryStore, JobQueue,
        OneTripSends | None]:
    """Broker, state, presence and the persist pipeline on one Redis client."""
    from rq import Queue

    from storage.broker_redis import RedisBroker
    from storage.engines import build_persist_buffer, redis_client, rq_connection
    from storage.history_tail import TailedHistory
    from storage.presence_redis import RedisPresence
    from storage.send_redis import OneTripSends
    from storage.state_redis import LeasedIdGenerator, RedisState
    from workers.jobs import persist_queue_name
    from workers.queue import RqJobQueue

    client = redis_client(settings)
    prefix = settings.redis_prefix
    broker = RedisBroker(client, prefix=prefix, size=settings.event_log_size,
                         ttl=settings.event_log_ttl,
                         health_check_interval=settings.redis_health_check_interval,
                         max_backoff=settings.redis_reconnect_max_backoff)
    state = RedisState(client, prefix=prefix, worker_lease_ttl=settings.redis_worker_lease_ttl,
                       near_cache_ttl=settings.near_cache_ttl)
    state.worker_id()  # lease the id now: a process that cannot must not start
    tracker = RedisPresence(client, prefix=prefix, timeout=settings.presence_timeout,
                            shards=settings.redis_presence_shards)
    buffer = build_persist_buffer(settings, client)
    queue = Queue(persist_queue_name(settings), connection=rq_connection(settings))
    ids = LeasedIdGenerator(state.lease)
    jobs = RqJobQueue(buffer, queue, state)
    # A script may touch keys of any slot only on a standalone server.
    one_trip = None if state.cluster or not settings.one_trip_sends else OneTripSends(
        client, state.keys, ids, broker, buffer, jobs.schedule)
    return broker, state, tracker, ids, TailedHistory(store, buffer), jobs, one_trip
