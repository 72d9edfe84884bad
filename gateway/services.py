"""The app's engines, built once per process from Settings and kept on the app."""

from __future__ import annotations

import dataclasses
import os

from flask import current_app

from config import Settings
from gateway.hub import Hub
from storage.broker import Broker
from storage.history import HistoryStore
from storage.ids import IdGenerator
from storage.presence import PresenceTracker
from storage.state import SharedState
from workers.queue import JobQueue

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

    def close(self) -> None:
        self.broker.close()
        self.history.close()
        self.state.close()


def services() -> Services:
    return current_app.extensions[EXTENSION]


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    os.makedirs(settings.data_dir, exist_ok=True)
    return "sqlite:///" + os.path.abspath(os.path.join(settings.data_dir, "switchboard.db"))


def build_services(settings: Settings) -> Services:
    # Imported here so the module graph stays acyclic (presence needs the accounts code).
    from gateway.presence import PresenceService
    from storage.broker_memory import MemoryBroker
    from storage.history_sql import SqlHistoryStore
    from storage.presence_memory import MemoryPresence
    from storage.state_memory import MemoryState
    from workers.queue import InlineJobQueue

    if settings.cassandra_hosts:
        raise RuntimeError("SWITCHBOARD_CASSANDRA_HOSTS is set, but this build has only "
                           "SQL history")
    broker: Broker
    state: SharedState
    tracker: PresenceTracker
    if settings.redis_url:
        broker, state, tracker, ids = _redis_engines(settings)
        engine = "redis"
    else:
        broker = MemoryBroker(settings.event_log_size, settings.event_log_ttl)
        state = MemoryState()
        tracker = MemoryPresence(settings.presence_timeout)
        ids = IdGenerator(state.worker_id())
        engine = "memory"
    history = SqlHistoryStore(settings.history_url or database_url(settings))
    hub = Hub(broker)
    presence = PresenceService(tracker, broker)
    # History stays SQL and persisting stays inline with Redis too: the send is acked
    # after the history row commits, which is durable, if slower than a queue.
    return Services(settings=settings, broker=broker, state=state, history=history, hub=hub,
                    ids=ids, jobs=InlineJobQueue(history), presence=presence, engine=engine)


def _redis_engines(
        settings: Settings) -> tuple[Broker, SharedState, PresenceTracker, IdGenerator]:
    """Broker, state and presence on one Redis client (standalone or Cluster)."""
    from storage.broker_redis import RedisBroker
    from storage.presence_redis import RedisPresence
    from storage.redis_conn import connect
    from storage.state_redis import LeasedIdGenerator, RedisState

    client = connect(settings.redis_url, pool_size=settings.redis_pool_size,
                     pool_timeout=settings.redis_pool_timeout,
                     socket_timeout=settings.redis_socket_timeout,
                     connect_timeout=settings.redis_connect_timeout,
                     health_check_interval=settings.redis_health_check_interval)
    prefix = settings.redis_prefix
    broker = RedisBroker(client, prefix=prefix, size=settings.event_log_size,
                         ttl=settings.event_log_ttl,
                         health_check_interval=settings.redis_health_check_interval,
                         max_backoff=settings.redis_reconnect_max_backoff)
    state = RedisState(client, prefix=prefix, worker_lease_ttl=settings.redis_worker_lease_ttl)
    state.worker_id()  # lease the id now: a process that cannot must not start
    tracker = RedisPresence(client, prefix=prefix, timeout=settings.presence_timeout,
                            shards=settings.redis_presence_shards)
    return broker, state, tracker, LeasedIdGenerator(state.lease)
