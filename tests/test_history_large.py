"""One conversation of 100,000 messages pages end to end, every message once, in order.

Runs on SQLite and on Cassandra. For Cassandra the message ids are spread over 100 s of
id time and the store uses 20 s buckets, so the history spans six partitions and pages
cross their boundaries in both directions.
"""

from __future__ import annotations

import time

import pytest

from storage.history import HistoryStore, Message
from storage.history_sql import SqlHistoryStore
from storage.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS
from tests.services import require_service

pytestmark = pytest.mark.slow

COUNT = 100_000
CONVERSATION = 4242
BUCKET_MS = 20_000  # 100,000 messages 1 ms apart -> 6 buckets
WRITE_BATCH = 1_000  # what one persist job might carry
PAGE = 100  # the API's largest page


def message_id(ms: int) -> int:
    """An id as IdGenerator lays it out (worker 9, sequence 0) for time ``ms``."""
    return ((ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (9 << SEQUENCE_BITS)


def messages() -> list[Message]:
    start = int(time.time() * 1000)  # one message per millisecond of id time
    return [Message(id=message_id(start + s),
                    conversation_id=CONVERSATION, seq=s, sender_id=1 + s % 5,
                    client_msg_id=f"big-{start}-{s}", text=f"message {s}", created_at=start + s)
            for s in range(1, COUNT + 1)]


@pytest.fixture(params=["sqlite", "cassandra"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        history: HistoryStore = SqlHistoryStore(f"sqlite:///{tmp_path}/history.db")
    else:
        hosts = require_service("cassandra")
        from tests.contracts import cassandra_engines

        history = cassandra_engines.make_history(hosts, request, bucket_ms=BUCKET_MS)
    yield history
    history.close()


def test_hundred_thousand_messages_page_both_ways(store: HistoryStore) -> None:
    msgs = messages()
    started = time.monotonic()
    for i in range(0, COUNT, WRITE_BATCH):
        store.store(msgs[i:i + WRITE_BATCH])
    wrote = time.monotonic() - started
    assert store.last_seq(CONVERSATION) == COUNT

    started = time.monotonic()
    page = store.page(CONVERSATION, limit=PAGE)
    backwards = [m.seq for m in page]
    pages = 1
    while page:
        page = store.page(CONVERSATION, before=page[0].id, limit=PAGE)
        backwards[:0] = [m.seq for m in page]
        pages += 1
    assert backwards == list(range(1, COUNT + 1))

    page = store.page(CONVERSATION, around=msgs[0].id, limit=PAGE)
    forwards = [m.seq for m in page]
    while page:
        page = store.page(CONVERSATION, after=page[-1].id, limit=PAGE)
        forwards += [m.seq for m in page]
        pages += 1
    assert forwards == list(range(1, COUNT + 1))
    read = time.monotonic() - started
    # Spot checks that the rows are whole, not just well ordered.
    assert store.get(CONVERSATION, msgs[54_321].id) == msgs[54_321]
    print(f"\n{type(store).__name__}: wrote {COUNT} in {wrote:.1f}s, "
          f"read {pages} pages of {PAGE} in {read:.1f}s")
