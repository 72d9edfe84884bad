"""The schema command's migrations on a real Cassandra: upgrade in place, rerun as a
no-op, refuse a keyspace written with another bucket width."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from storage import cassandra_schema
from storage.cassandra_schema import SCHEMA_VERSION, SchemaError, apply_schema
from storage.history import Message
from storage.history_cassandra import CassandraHistoryStore
from storage.ids import IdGenerator
from tests.contracts.cassandra_engines import TEST_REPLICATION, admin_session
from tests.services import require_service

pytestmark = pytest.mark.cassandra

BUCKET_MS = 10 * 24 * 3600 * 1000


@pytest.fixture
def keyspace() -> Iterator[tuple[str, str, Session]]:
    hosts = require_service("cassandra")
    session = admin_session(hosts)
    name = f"schema_{uuid.uuid4().hex[:12]}"
    yield hosts, name, session
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")


def _tables(session: Session, keyspace: str) -> set[str]:
    rows = session.execute("SELECT table_name FROM system_schema.tables "
                           "WHERE keyspace_name = %s", [keyspace])
    return {r.table_name for r in rows}


def test_a_version_1_keyspace_is_migrated_in_place_keeping_its_messages(keyspace, monkeypatch):
    hosts, name, session = keyspace
    with monkeypatch.context() as m:
        m.setattr(cassandra_schema, "MIGRATIONS", cassandra_schema.MIGRATIONS[:1])
        apply_schema(session, name, TEST_REPLICATION, BUCKET_MS)
    assert "messages_by_client_id" in _tables(session, name)
    store = CassandraHistoryStore(hosts, keyspace=name, bucket_ms=BUCKET_MS)
    try:
        message = Message(IdGenerator(3).next_id(), 1, 1, 7, "c-1", "kept", 1)
        store.store([message])
        assert apply_schema(session, name, TEST_REPLICATION, BUCKET_MS) == SCHEMA_VERSION
        assert "messages_by_client_id" not in _tables(session, name)
        assert store.page(1) == [message]
    finally:
        store.close()
    versions = {r.version for r in session.execute(f"SELECT version FROM {name}.schema_version")}
    assert versions == {v for v, _, _ in cassandra_schema.MIGRATIONS}
    # A rerun changes nothing and says the same version.
    assert apply_schema(session, name, TEST_REPLICATION, BUCKET_MS) == SCHEMA_VERSION


def test_a_keyspace_written_with_another_bucket_width_is_refused(keyspace):
    hosts, name, session = keyspace
    apply_schema(session, name, TEST_REPLICATION, BUCKET_MS)
    with pytest.raises(SchemaError, match="buckets"):
        apply_schema(session, name, TEST_REPLICATION, BUCKET_MS // 2)
    store = CassandraHistoryStore(hosts, keyspace=name, bucket_ms=BUCKET_MS // 2)
    try:
        with pytest.raises(SchemaError, match="buckets"):
            store.page(1)
    finally:
        store.close()
