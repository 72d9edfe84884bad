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

    if settings.redis_url:
        raise RuntimeError("SWITCHBOARD_REDIS_URL is set, but this build has only the "
                           "embedded memory engine")
    if settings.cassandra_hosts:
        raise RuntimeError("SWITCHBOARD_CASSANDRA_HOSTS is set, but this build has only "
                           "SQL history")
    broker = MemoryBroker(settings.event_log_size, settings.event_log_ttl)
    state = MemoryState()
    history = SqlHistoryStore(settings.history_url or database_url(settings))
    hub = Hub(broker)
    presence = PresenceService(MemoryPresence(settings.presence_timeout), broker)
    return Services(settings=settings, broker=broker, state=state, history=history, hub=hub,
                    ids=IdGenerator(state.worker_id()), jobs=InlineJobQueue(history),
                    presence=presence, engine="memory")
