"""The Cassandra schema for chat history, and the command that creates or migrates it.

    python -m storage.cassandra_schema      # reads SWITCHBOARD_CASSANDRA_* like the gateway

Run it once per deploy, before the gateways and workers start: schema changes are
cluster-wide and concurrent DDL from many processes can leave nodes disagreeing, so the
services never create tables themselves. Every statement is ``IF NOT EXISTS``, and applied
migrations are recorded in ``schema_version``, so rerunning it is a no-op and an
interrupted run can simply be repeated.

Tables:

* ``messages``: partition ``(conversation_id, bucket)``, rows clustered by message id,
  newest first. The bucket is ``id_time_ms(message_id) // bucket_ms``: a busy group's
  history is split into bounded partitions (Discord's lesson), and the newest page -
  the common read - is the head of one partition.
* ``conversation_buckets``: the buckets of a conversation that hold messages. Paging
  walks this short list instead of probing every possible bucket between two ids, so a
  conversation silent for a year costs one extra read, not 36 empty ones.
* (``messages_by_client_id``, dropped by migration 2: idempotency of sends is the state
  store's job for ``client_msg_id_ttl``, Redis with AOF in the scaled engine, and nothing
  read the table; writing it cost one request per message.)
* ``read_marks``: the read watermark of each member, one row per (conversation, user),
  written only with the seq as the write timestamp, so the highest seq always wins
  (see history_cassandra.set_watermark).
* ``inbox`` / ``inbox_buckets``: per user, references to the messages delivered to them,
  bucketed like ``messages``; catch-up for clients whose cursor left Redis' hot window.
* ``history_settings``: the bucket width the data was written with. Changing it would
  make existing rows unreachable (their bucket numbers change), so it is recorded here
  and both this command and the store refuse to run with a different one.
"""

from __future__ import annotations

import logging
import sys
import time

from cassandra.cluster import Session

log = logging.getLogger(__name__)

# Inbox entries only serve catch-up after a long absence; past this a client gets a
# `reset` and resyncs from conversation history, so older entries are dead weight.
INBOX_TTL_SECONDS = 30 * 24 * 3600

# (version, description, statements). Append new migrations; never edit applied ones.
# Statements are templates: {ks} is the keyspace, {inbox_ttl} INBOX_TTL_SECONDS.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "messages, buckets, client ids, read marks, inbox", [
        """CREATE TABLE IF NOT EXISTS {ks}.messages (
               conversation_id bigint, bucket bigint, message_id bigint,
               seq bigint, sender_id bigint, client_msg_id text, text text,
               created_at bigint,
               PRIMARY KEY ((conversation_id, bucket), message_id))
           WITH CLUSTERING ORDER BY (message_id DESC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.conversation_buckets (
               conversation_id bigint, bucket bigint,
               PRIMARY KEY ((conversation_id), bucket))
           WITH CLUSTERING ORDER BY (bucket DESC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.messages_by_client_id (
               sender_id bigint, client_msg_id text,
               conversation_id bigint, message_id bigint,
               PRIMARY KEY ((sender_id, client_msg_id)))""",
        """CREATE TABLE IF NOT EXISTS {ks}.read_marks (
               conversation_id bigint, user_id bigint,
               seq bigint, message_id bigint, updated_at bigint,
               PRIMARY KEY ((conversation_id), user_id))""",
        """CREATE TABLE IF NOT EXISTS {ks}.inbox (
               user_id bigint, bucket bigint, message_id bigint,
               conversation_id bigint, seq bigint,
               PRIMARY KEY ((user_id, bucket), message_id))
           WITH CLUSTERING ORDER BY (message_id ASC)
           AND default_time_to_live = {inbox_ttl}""",
        """CREATE TABLE IF NOT EXISTS {ks}.inbox_buckets (
               user_id bigint, bucket bigint,
               PRIMARY KEY ((user_id), bucket))
           WITH CLUSTERING ORDER BY (bucket ASC)
           AND default_time_to_live = {inbox_ttl}""",
    ]),
    (2, "drop messages_by_client_id (never read; idempotency lives in the state store)", [
        "DROP TABLE IF EXISTS {ks}.messages_by_client_id",
    ]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(RuntimeError):
    """The keyspace cannot be used as configured (e.g. a different bucket width)."""


def quote_keyspace(keyspace: str) -> str:
    # Keyspace names cannot be bound parameters; accept only what CQL allows unquoted.
    if not keyspace.replace("_", "").isalnum() or len(keyspace) > 48:
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    return keyspace


def recorded_bucket_ms(session: Session, keyspace: str) -> int | None:
    """The bucket width the keyspace's data uses, None if none was recorded yet."""
    ks = quote_keyspace(keyspace)
    row = session.execute(
        f"SELECT value FROM {ks}.history_settings WHERE name = 'bucket_ms'").one()
    return int(row.value) if row else None


def apply_schema(session: Session, keyspace: str, replication: str, bucket_ms: int) -> int:
    """Create the keyspace and bring its tables to SCHEMA_VERSION; returns that version.

    ``replication`` is a CQL map literal, e.g. ``{'class': 'NetworkTopologyStrategy',
    'dc1': 3}``; it is used only when the keyspace does not exist yet (changing
    replication of a live keyspace needs a repair and is an operator's decision).
    """
    if bucket_ms <= 0:
        raise ValueError("bucket_ms must be positive")
    ks = quote_keyspace(keyspace)
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}")
    session.execute(f"""CREATE TABLE IF NOT EXISTS {ks}.schema_version (
                            version int PRIMARY KEY, description text, applied_at timestamp)""")
    session.execute(f"""CREATE TABLE IF NOT EXISTS {ks}.history_settings (
                            name text PRIMARY KEY, value text)""")
    recorded = recorded_bucket_ms(session, keyspace)
    if recorded is not None and recorded != bucket_ms:
        raise SchemaError(
            f"keyspace {keyspace} was written with buckets of {recorded} ms; refusing to "
            f"use {bucket_ms} ms (rows would become unreachable)")
    if recorded is None:
        # IF NOT EXISTS: two first runs racing agree on whichever width landed first.
        session.execute(f"INSERT INTO {ks}.history_settings (name, value) "
                        "VALUES ('bucket_ms', %s) IF NOT EXISTS", [str(bucket_ms)])
        if recorded_bucket_ms(session, keyspace) != bucket_ms:
            raise SchemaError(f"keyspace {keyspace} got another bucket width concurrently")
    applied = {row.version for row in session.execute(
        f"SELECT version FROM {ks}.schema_version")}
    for version, description, statements in MIGRATIONS:
        if version in applied:
            continue
        for cql in statements:
            session.execute(cql.format(ks=ks, inbox_ttl=INBOX_TTL_SECONDS))
        session.execute(f"INSERT INTO {ks}.schema_version (version, description, applied_at) "
                        "VALUES (%s, %s, %s)", [version, description, int(time.time() * 1000)])
        log.info("applied Cassandra history migration %d (%s)", version, description)
    return SCHEMA_VERSION


def main(argv: list[str] | None = None) -> int:
    from config import Settings
    from storage.history_cassandra import CassandraHistoryStore

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_env()
    if not settings.cassandra_hosts:
        print("SWITCHBOARD_CASSANDRA_HOSTS is not set; nothing to migrate", file=sys.stderr)
        return 2
    store = CassandraHistoryStore.from_settings(settings)
    try:
        session = store.admin_session()
        version = apply_schema(session, settings.cassandra_keyspace,
                               settings.cassandra_replication, store.bucket_ms)
    finally:
        store.close()
    print(f"keyspace {settings.cassandra_keyspace}: schema version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
