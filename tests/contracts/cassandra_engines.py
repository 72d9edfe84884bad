"""The Cassandra HistoryStore on a real node: each test gets a keyspace of its own.

Creating and dropping a keyspace with the history tables takes well under a second on
the test node, cheaper and more isolating than truncating shared tables.
"""

from __future__ import annotations

import atexit
import uuid

from cassandra.cluster import Cluster, Session

from storage.cassandra_schema import apply_schema
from storage.cassandra_session import parse_hosts
from storage.history_cassandra import CassandraHistoryStore

# Contract tests number messages one per millisecond of id time (see
# test_history_contract.spaced_ids); 10 ms buckets make a 237-message conversation span
# 24 buckets, so every page crosses bucket boundaries.
TEST_BUCKET_MS = 10
TEST_REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"

_admin: dict[str, tuple[Cluster, Session]] = {}


def admin_session(hosts: str) -> Session:
    """One session per test run for DDL (the stores under test have their own)."""
    if hosts not in _admin:
        names, port = parse_hosts(hosts, 9042)
        cluster = Cluster(names, port=port, protocol_version=5)
        _admin[hosts] = (cluster, cluster.connect())
        atexit.register(cluster.shutdown)
    return _admin[hosts][1]


def make_history(hosts: str, request, *,  # type: ignore[no-untyped-def]
                 bucket_ms: int = TEST_BUCKET_MS) -> CassandraHistoryStore:
    keyspace = f"t_{uuid.uuid4().hex[:16]}"
    session = admin_session(hosts)
    apply_schema(session, keyspace, TEST_REPLICATION, bucket_ms)

    def drop() -> None:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")

    request.addfinalizer(drop)
    return CassandraHistoryStore(hosts, keyspace=keyspace, bucket_ms=bucket_ms)
