"""HistoryStore contract: paging by anchor, idempotent writes, watermarks."""

from __future__ import annotations

import pytest

from storage.history import Message, Watermark
from storage.ids import IdGenerator

_ids = IdGenerator(7)


def make(conversation_id: int, seqs: range, sender: int = 1) -> list[Message]:
    return [Message(id=_ids.next_id(), conversation_id=conversation_id, seq=s, sender_id=sender,
                    client_msg_id=f"c{conversation_id}-{s}", text=f"m{s}",
                    created_at=1_800_000_000_000 + s) for s in seqs]


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


def test_find_by_client_msg_id(history):
    msgs = make(8, range(1, 3), sender=42)
    history.store(msgs)
    assert history.find_by_client_msg_id(42, msgs[1].client_msg_id) == msgs[1]
    assert history.find_by_client_msg_id(43, msgs[1].client_msg_id) is None


def test_watermarks_only_move_forward(history):
    mark = history.set_watermark(Watermark(9, 1, 5, 500, 1000))
    assert mark.seq == 5
    assert history.set_watermark(Watermark(9, 1, 3, 300, 2000)).seq == 5
    assert history.set_watermark(Watermark(9, 1, 8, 800, 3000)).message_id == 800
    history.set_watermark(Watermark(9, 2, 1, 100, 1000))
    marks = history.watermarks(9)
    assert {u: m.seq for u, m in marks.items()} == {1: 8, 2: 1}
    assert list(history.watermarks(9, [2])) == [2]
