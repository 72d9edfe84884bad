"""HistoryStore contract: paging by anchor, idempotent writes, watermarks, inbox."""

from __future__ import annotations

import itertools
import time

import pytest

from storage.history import InboxEntry, Message, Watermark
from storage.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS

# Message ids as the gateway's IdGenerator lays them out, but one millisecond of id time
# apart: stores that bucket by id time (Cassandra, with tiny test buckets) then spread a
# conversation over many buckets, so every paging test crosses bucket boundaries.
_clock = itertools.count(int(time.time() * 1000))


def spaced_ids(count: int, gap_ms: int = 1) -> list[int]:
    """Increasing ids, ``gap_ms`` of id time apart (worker 7, sequence 0)."""
    ids = []
    for _ in range(count):
        ms = next(_clock)
        for _ in range(gap_ms - 1):
            next(_clock)
        ids.append(((ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (7 << SEQUENCE_BITS))
    return ids


def make(conversation_id: int, seqs: range, sender: int = 1, gap_ms: int = 1) -> list[Message]:
    ids = spaced_ids(len(seqs), gap_ms)
    return [Message(id=i, conversation_id=conversation_id, seq=s, sender_id=sender,
                    client_msg_id=f"c{conversation_id}-{s}", text=f"m{s}",
                    created_at=1_800_000_000_000 + s) for i, s in zip(ids, seqs, strict=True)]


def seqs(page: list[Message]) -> list[int]:
    return [m.seq for m in page]


def test_latest_page_is_oldest_first(history):
    history.store(make(1, range(1, 31)))
    assert seqs(history.page(1, limit=10)) == list(range(21, 31))
    assert history.latest(1).seq == 30
    assert history.last_seq(1) == 30
    assert history.last_seq(999) == 0 and history.latest(999) is None


def test_before_after_around(history):
    msgs = make(2, range(1, 51))
    history.store(msgs)
    anchor = msgs[24]  # seq 25
    assert seqs(history.page(2, before=anchor.id, limit=5)) == [20, 21, 22, 23, 24]
    assert seqs(history.page(2, after=anchor.id, limit=5)) == [26, 27, 28, 29, 30]
    around = seqs(history.page(2, around=anchor.id, limit=5))
    assert 25 in around and len(around) == 5 and around == sorted(around)
    assert around == [23, 24, 25, 26, 27]
    assert seqs(history.page(2, before=msgs[0].id, limit=5)) == []
    assert seqs(history.page(2, after=msgs[-1].id, limit=5)) == []
    assert seqs(history.page(2, around=msgs[0].id, limit=4)) == [1, 2, 3, 4]


def test_paging_backwards_visits_every_message_once(history):
    history.store(make(3, range(1, 238)))
    page = history.page(3, limit=50)
    seen = seqs(page)
    while page:
        page = history.page(3, before=page[0].id, limit=50)
        seen = seqs(page) + seen
    assert seen == list(range(1, 238))


def test_unknown_anchor_raises_keyerror(history):
    history.store(make(4, range(1, 3)))
    other = make(5, range(1, 2))
    history.store(other)
    with pytest.raises(KeyError):
        history.page(4, before=123456789)
    with pytest.raises(KeyError):  # an id from another conversation is unknown here
        history.page(4, after=other[0].id)


def test_store_is_idempotent_by_id(history):
    msgs = make(6, range(1, 6))
    history.store(msgs)
    history.store(msgs)
    history.store(msgs[2:4])
    assert seqs(history.page(6, limit=100)) == [1, 2, 3, 4, 5]
    assert history.get(6, msgs[2].id) == msgs[2]
    assert history.get(7, msgs[2].id) is None


def test_sql_stores_find_a_message_by_client_msg_id(sql_history):
    """SQL only: the embedded engine answers retries across a restart from it."""
    msgs = make(8, range(1, 3), sender=42)
    sql_history.store(msgs)
    assert sql_history.find_by_client_msg_id(42, msgs[1].client_msg_id) == msgs[1]
    assert sql_history.find_by_client_msg_id(43, msgs[1].client_msg_id) is None


def test_watermarks_only_move_forward(history):
    mark = history.set_watermark(Watermark(9, 1, 5, 500, 1000))
    assert mark.seq == 5
    assert history.set_watermark(Watermark(9, 1, 3, 300, 2000)).seq == 5
    assert history.set_watermark(Watermark(9, 1, 8, 800, 3000)).message_id == 800
    history.set_watermark(Watermark(9, 2, 1, 100, 1000))
    marks = history.watermarks(9)
    assert {u: m.seq for u, m in marks.items()} == {1: 8, 2: 1}
    assert list(history.watermarks(9, [2])) == [2]


def test_paging_skips_empty_buckets(history):
    # Bursts separated by silences hundreds of (test) buckets long, written out of order.
    bursts = []
    for b in range(4):
        spaced_ids(1, gap_ms=5000)  # a silence before each burst
        bursts.append(make(10, range(b * 10 + 1, b * 10 + 11)))
    history.store(bursts[2] + bursts[0])
    history.store(bursts[3] + bursts[1])
    everything = [m for burst in bursts for m in burst]
    assert history.page(10, limit=100) == everything
    assert seqs(history.page(10, before=bursts[2][0].id, limit=12)) == list(range(9, 21))
    assert seqs(history.page(10, after=bursts[0][-1].id, limit=12)) == list(range(11, 23))
    assert seqs(history.page(10, around=bursts[1][0].id, limit=6)) == list(range(8, 14))
    page, seen = history.page(10, after=everything[0].id, limit=7), [1]
    while page:
        seen += seqs(page)
        page = history.page(10, after=page[-1].id, limit=7)
    assert seen == list(range(1, 41))


def test_one_call_writes_many_rows_of_one_partition(history):
    """A persist drain hands over hundreds of rows for one conversation, one reader's
    inbox and one conversation's marks at once (Cassandra cuts each partition's rows
    into batches by count and size): all land, and the highest mark wins."""
    ms = next(_clock)
    ids = [((ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (7 << SEQUENCE_BITS) | n
           for n in range(120)]  # one millisecond: one partition however it is bucketed
    msgs = [Message(id=i, conversation_id=30, seq=s, sender_id=1 + s % 3,
                    client_msg_id=f"burst-{s}", text="x" * (50 * s),
                    created_at=1_800_000_000_000 + s) for s, i in enumerate(ids, 1)]
    history.store(msgs)
    assert history.page(30, limit=100) == msgs[20:]
    assert history.page(30, before=msgs[20].id, limit=100) == msgs[:20]
    history.inbox_append_many([([5, 6], m) for m in msgs] + [([6], msgs[0])])
    for user in (5, 6):
        assert history.inbox_page(user, limit=100) == [entry(m) for m in msgs[:100]]
        assert history.inbox_page(user, after_message_id=msgs[99].id) == [
            entry(m) for m in msgs[100:]]
    marks = [Watermark(30, m.sender_id, m.seq, m.id, m.created_at) for m in msgs]
    history.set_watermarks(marks[60:] + marks[:60])  # the newest ones not last
    assert {u: m.seq for u, m in history.watermarks(30).items()} == {1: 120, 2: 118, 3: 119}


def test_watermarks_of_unknown_users_are_absent(history):
    assert history.watermarks(11) == {}
    history.set_watermark(Watermark(11, 5, 2, 200, 1000))
    assert history.watermarks(11, []) == {}
    assert list(history.watermarks(11, [5, 6])) == [5]


# --- inbox catch-up ------------------------------------------------------------------


def entry(m: Message) -> InboxEntry:
    return InboxEntry(m.id, m.conversation_id, m.seq)


def test_inbox_catch_up_pages_in_message_order(history):
    # Two conversations interleaved in time, delivered to overlapping members.
    a, b = make(20, range(1, 31)), make(21, range(1, 31))
    timeline = sorted(a + b, key=lambda m: m.id)
    for m in timeline:
        history.inbox_append([1, 2] if m.conversation_id == 20 else [2, 3], m)
    assert history.inbox_page(1, limit=100) == [entry(m) for m in a]
    assert history.inbox_page(3, limit=100) == [entry(m) for m in b]
    caught_up, page = [], history.inbox_page(2, limit=7)
    while page:
        caught_up += page
        page = history.inbox_page(2, after_message_id=page[-1].message_id, limit=7)
    assert caught_up == [entry(m) for m in timeline]
    assert history.inbox_page(4) == [] and history.inbox_page(2, limit=0) == []


def test_inbox_resumes_after_any_id_and_ignores_repeats(history):
    msgs = make(22, range(1, 21), gap_ms=40)
    for m in msgs:
        history.inbox_append([9], m)
    for m in msgs[5:12]:  # a retried fan-out job
        history.inbox_append([9, 9], m)
    assert history.inbox_page(9, limit=100) == [entry(m) for m in msgs]
    # The anchor is any id: the client's last seen message, even one never in the inbox.
    assert history.inbox_page(9, after_message_id=msgs[9].id, limit=3) == [
        entry(m) for m in msgs[10:13]]
    assert history.inbox_page(9, after_message_id=msgs[9].id + 1, limit=3) == [
        entry(m) for m in msgs[10:13]]
    assert history.inbox_page(9, after_message_id=msgs[-1].id) == []
    history.inbox_append([], msgs[0])  # no recipients is not an error


# --- a persist drain's batch -----------------------------------------------------------


def test_a_drained_batch_lands_whole_and_once(history):
    """store_drained writes messages, marks and inboxes together (PostgreSQL as one
    array per column); a drain retried after a failure writes the same batch again."""
    texts = ['{"a", b}', "back\\slash", "NULL", "", "quote's \"both\"", "line\nbreak",
             "ünïcödé 🎉", "comma, {brace}", "  spaced  "]
    msgs = [Message(id=i, conversation_id=40, seq=s, sender_id=1 + s % 2,
                    client_msg_id=f"d-{s}", text=t, created_at=1_800_000_000_000 + s)
            for s, (i, t) in enumerate(zip(spaced_ids(len(texts)), texts, strict=True), 1)]
    marks = [Watermark(40, m.sender_id, m.seq, m.id, m.created_at) for m in msgs]
    inbox = [([1, 2, 2], m) for m in msgs]
    for _ in range(2):
        history.store_drained(msgs, marks[::-1], inbox)
    assert history.page(40, limit=100) == msgs
    assert {u: (m.seq, m.message_id) for u, m in history.watermarks(40).items()} == {
        1: (8, msgs[7].id), 2: (9, msgs[8].id)}
    for user in (1, 2):
        assert history.inbox_page(user, limit=100) == [entry(m) for m in msgs]
    # A later batch with an older mark (a re-claimed entry) does not move it back.
    history.store_drained(msgs[:1], marks[:2], [])
    assert history.watermarks(40)[2].seq == 9


def test_an_empty_drained_batch_writes_nothing(history):
    history.store_drained([], [], [])
    assert history.page(41, limit=10) == [] and history.watermarks(41) == {}
