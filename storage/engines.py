"""Building each role's implementation from Settings: shared by the gateway and workers."""

from __future__ import annotations

import os

import redis

from config import Settings
from storage.history import HistoryStore
from storage.persist_buffer import PersistBuffer
from storage.redis_conn import RedisClient, connect


def database_url(settings: Settings) -> str:
    """The relational database: the configured URL, or SQLite in the data directory."""
    if settings.database_url:
        return settings.database_url
    os.makedirs(settings.data_dir, exist_ok=True)
    return "sqlite:///" + os.path.abspath(os.path.join(settings.data_dir, "switchboard.db"))


def redis_client(settings: Settings) -> RedisClient:
    return connect(settings.redis_url, pool_size=settings.redis_pool_size,
                   pool_timeout=settings.redis_pool_timeout,
                   socket_timeout=settings.redis_socket_timeout,
                   connect_timeout=settings.redis_connect_timeout,
                   health_check_interval=settings.redis_health_check_interval)


def rq_connection(settings: Settings) -> redis.Redis:
    """RQ's own connection: standalone Redis, bytes replies (RQ needs both)."""
    url = settings.rq_redis_url or settings.redis_url
    probe = redis.Redis.from_url(url, socket_connect_timeout=settings.redis_connect_timeout)
    try:
        clustered = bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()
    if clustered:
        raise RuntimeError("RQ cannot use a Redis Cluster: set SWITCHBOARD_RQ_REDIS_URL to a "
                           "standalone Redis for the job queues")
    # Blocking pops wait for jobs, so no socket timeout on this connection.
    return redis.Redis.from_url(url, socket_connect_timeout=settings.redis_connect_timeout,
                                health_check_interval=settings.redis_health_check_interval)


def build_history(settings: Settings) -> HistoryStore:
    """Cassandra when SWITCHBOARD_CASSANDRA_HOSTS is set, else SQL."""
    if settings.cassandra_hosts:
        from storage.history_cassandra import CassandraHistoryStore

        return CassandraHistoryStore.from_settings(settings)
    from storage.history_sql import SqlHistoryStore

    return SqlHistoryStore(settings.history_url or database_url(settings))


def build_persist_buffer(settings: Settings, client: RedisClient) -> PersistBuffer:
    return PersistBuffer(client, settings.redis_prefix, settings.persist_shards)
