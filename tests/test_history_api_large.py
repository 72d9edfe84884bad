"""100,000 messages spanning several Cassandra buckets, paged through the HTTP API.

The gateway (gunicorn, gevent) serves history from Cassandra; the messages are written
straight into the conversation's rows (as the persistence workers would), spread over
60 days of id time so 10-day buckets make seven partitions. A client pages backwards
with ``before`` and forwards with ``after`` and must see every message once, in order.
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from storage.cassandra_schema import apply_schema
from storage.history import Message
from storage.history_cassandra import CassandraHistoryStore
from switchboard_client import Api
from tests.contracts.cassandra_engines import TEST_REPLICATION, admin_session
from tests.services import require_service
from tests.test_history_large import message_id

pytestmark = [pytest.mark.slow, pytest.mark.cassandra]

COUNT = 100_000
DAY_MS = 24 * 3600 * 1000


def test_hundred_thousand_messages_page_through_the_api(make_gateway):
    hosts = require_service("cassandra")
    keyspace = f"api_{uuid.uuid4().hex[:12]}"
    apply_schema(admin_session(hosts), keyspace, TEST_REPLICATION, 10 * DAY_MS)
    server = make_gateway(cassandra_hosts=hosts, cassandra_keyspace=keyspace,
                          secret_key=secrets.token_hex(16))
    alice, bob = Api(server.url), Api(server.url)
    alice.sign_up(f"big{secrets.token_hex(4)}", "password123")
    bob.sign_up(f"big{secrets.token_hex(4)}", "password123")
    conv = alice.direct(bob.user_id)["id"]

    start = int(time.time() * 1000) - 60 * DAY_MS
    step = (60 * DAY_MS) // COUNT  # ids 51.8 s apart: 60 days, seven 10-day buckets
    rows = [Message(id=message_id(start + s * step), conversation_id=conv, seq=s,
                    sender_id=alice.user_id if s % 2 else bob.user_id,
                    client_msg_id=f"big-{s}", text=f"message {s}",
                    created_at=start + s * step) for s in range(1, COUNT + 1)]
    store = CassandraHistoryStore(hosts, keyspace=keyspace, bucket_ms=10 * DAY_MS)
    try:
        for i in range(0, COUNT, 1000):
            store.store(rows[i:i + 1000])
    finally:
        store.close()
    assert len({store.bucket_of(m.id) for m in rows[::997]}) >= 7

    page = bob.messages(conv, limit=100)
    seen = [m["seq"] for m in page]
    while page:
        page = bob.messages(conv, before=page[0]["id"], limit=100)
        seen = [m["seq"] for m in page] + seen
    assert seen == list(range(1, COUNT + 1))

    forward: list[int] = []
    page = bob.messages(conv, after=rows[0].id, limit=100)
    while page:
        forward += [m["seq"] for m in page]
        page = bob.messages(conv, after=page[-1]["id"], limit=100)
    assert forward == list(range(2, COUNT + 1))
    around = bob.messages(conv, around=str(rows[50_000].id), limit=5)
    assert [m["seq"] for m in around] == [49_999, 50_000, 50_001, 50_002, 50_003]
