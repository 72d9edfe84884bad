"""Every implementation of each role, as fixture parameters for the contract suites.

Memory and SQLite always run. Redis, Redis Cluster and Cassandra run when the test
command has started them (it exports SWITCHBOARD_TEST_* addresses); otherwise they are
skipped with a reason, or fail when SWITCHBOARD_REQUIRE_SERVICES=1 (the full test run).
"""

from __future__ import annotations

import pytest

from storage.broker_memory import MemoryBroker
from storage.connections_memory import MemoryConnections
from storage.history_sql import SqlHistoryStore
from storage.presence_memory import MemoryPresence
from storage.state_memory import MemoryState
from tests.services import require_service

BROKERS = ["memory", "redis", "redis-cluster"]
# "+near": with the per-process near cache gateway processes use (storage/near_cache.py)
STATES = ["memory", "redis", "redis-cluster", "redis+near", "redis-cluster+near"]
PRESENCES = ["memory", "redis", "redis-cluster"]
REGISTRIES = ["memory", "redis", "redis-cluster"]
HISTORIES = ["sqlite", "postgres", "cassandra"]


def _broker(kind: str, size: int, request):  # type: ignore[no-untyped-def]
    if kind == "memory":
        return MemoryBroker(size=size)
    url = require_service(kind)
    from tests.contracts import redis_engines

    return redis_engines.make_broker(url, size, request)


@pytest.fixture(params=BROKERS)
def broker(request):  # type: ignore[no-untyped-def]
    b = _broker(request.param, 1000, request)
    yield b
    b.close()


@pytest.fixture(params=BROKERS)
def small_broker(request):  # type: ignore[no-untyped-def]
    b = _broker(request.param, 5, request)
    yield b
    b.close()


@pytest.fixture(params=STATES)
def state(request):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        s = MemoryState()
    else:
        kind, _, variant = request.param.partition("+")
        url = require_service(kind)
        from tests.contracts import redis_engines

        s = redis_engines.make_state(url, request, near=variant == "near")
    yield s
    s.close()


@pytest.fixture(params=REGISTRIES)
def registry(request):  # type: ignore[no-untyped-def]
    """ttl 1.0 s, linger 0.3 s: short enough to watch entries lapse."""
    if request.param == "memory":
        return MemoryConnections(ttl=1.0, linger=0.3)
    url = require_service(request.param)
    from tests.contracts import redis_engines

    return redis_engines.make_connections(url, 1.0, 0.3, request)


@pytest.fixture(params=PRESENCES)
def presence(request):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        return MemoryPresence(timeout=30.0)
    url = require_service(request.param)
    from tests.contracts import redis_engines

    return redis_engines.make_presence(url, 30.0, request)


@pytest.fixture(params=HISTORIES)
def history(request, tmp_path):  # type: ignore[no-untyped-def]
    yield from _history(request, tmp_path)


@pytest.fixture(params=[h for h in HISTORIES if h in ("sqlite", "postgres")])
def sql_history(request, tmp_path):  # type: ignore[no-untyped-def]
    """The SQL stores only, for what only they promise (find_by_client_msg_id)."""
    yield from _history(request, tmp_path)


def _history(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        store = SqlHistoryStore(f"sqlite:///{tmp_path}/history.db")
    elif request.param == "postgres":
        url = require_service("postgres")
        from tests.contracts import sql_engines

        store = sql_engines.make_postgres_history(url, request)
    else:
        hosts = require_service("cassandra")
        from tests.contracts import cassandra_engines

        store = cassandra_engines.make_history(hosts, request)
    yield store
    store.close()
