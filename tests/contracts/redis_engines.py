"""Redis implementations for the contract suites, standalone or Cluster.

conftest passes only a URL: whether it names a cluster node is asked of the server
(``INFO cluster``). Each test gets a key prefix of its own, and its keys are deleted on
every node afterwards, so tests never see each other's logs, counters or leases.
"""

from __future__ import annotations

import uuid

import pytest

from storage.broker_redis import RedisBroker
from storage.connections_redis import RedisConnections
from storage.presence_redis import RedisPresence
from storage.redis_conn import RedisClient, connect, delete_prefix
from storage.state_redis import RedisState

# Short health checks so a test that breaks a connection sees recovery quickly.
TEST_HEALTH_CHECK = 1.0


def client_for(url: str, request: pytest.FixtureRequest) -> tuple[RedisClient, str]:
    """A client and a fresh prefix; both are cleaned up when the test ends."""
    client = connect(url, pool_size=20, health_check_interval=TEST_HEALTH_CHECK)
    prefix = f"sbtest-{uuid.uuid4().hex[:10]}"

    def cleanup() -> None:
        delete_prefix(client, prefix + ":*")
        client.close()

    request.addfinalizer(cleanup)
    return client, prefix


def make_broker(url: str, size: int, request: pytest.FixtureRequest) -> RedisBroker:
    client, prefix = client_for(url, request)
    return RedisBroker(client, prefix=prefix, size=size, ttl=3600,
                       health_check_interval=TEST_HEALTH_CHECK, max_backoff=0.5)


def make_state(url: str, request: pytest.FixtureRequest, near: bool = False) -> RedisState:
    client, prefix = client_for(url, request)
    return RedisState(client, prefix=prefix, worker_lease_ttl=5.0,
                      near_cache_ttl=10.0 if near else 0.0)


def make_presence(url: str, timeout: float, request: pytest.FixtureRequest) -> RedisPresence:
    client, prefix = client_for(url, request)
    return RedisPresence(client, prefix=prefix, timeout=timeout)


def make_connections(url: str, ttl: float, linger: float,
                     request: pytest.FixtureRequest) -> RedisConnections:
    client, prefix = client_for(url, request)
    return RedisConnections(client, prefix=prefix, ttl=ttl, linger=linger)
