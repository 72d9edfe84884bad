"""Broker contract: offsets, replay from a cursor, explicit resets, ephemeral delivery.

Runs against every Broker implementation (``broker`` fixture in contracts/engines.py).
"""

from __future__ import annotations

import pytest

from storage.events import Cursor, InvalidCursor
from tests.contracts.engines import Recorder


def ev(n: int) -> dict:
    return {"type": "message.created", "data": {"n": n}}


def test_offsets_strictly_increase_per_user(broker):
    first = broker.append([1, 2], ev(1))
    second = broker.append([1], ev(2))
    assert Cursor.parse(second[1]).offset > Cursor.parse(first[1]).offset
    assert set(first) == {1, 2}


def test_read_replays_everything_after_a_cursor_in_order(broker):
    start = broker.tip(7)
    for n in range(10):
        broker.append([7], ev(n))
    read = broker.read(7, start, 100)
    assert not read.reset
    assert [e["data"]["n"] for e in read.events] == list(range(10))
    assert read.cursor == read.events[-1]["id"]
    middle = read.events[4]["id"]
    again = broker.read(7, middle, 100)
    assert [e["data"]["n"] for e in again.events] == list(range(5, 10))


def test_read_respects_limit_and_continues(broker):
    start = broker.tip(8)
    for n in range(7):
        broker.append([8], ev(n))
    first = broker.read(8, start, 3)
    second = broker.read(8, first.cursor, 3)
    third = broker.read(8, second.cursor, 3)
    seen = [e["data"]["n"] for r in (first, second, third) for e in r.events]
    assert seen == list(range(7))


def test_no_cursor_gives_tip_without_events(broker):
    broker.append([9], ev(1))
    read = broker.read(9, None, 100)
    assert read.events == [] and not read.reset
    assert broker.read(9, read.cursor, 100).events == []
    broker.append([9], ev(2))
    assert [e["data"]["n"] for e in broker.read(9, read.cursor, 100).events] == [2]


def test_cursor_older_than_window_gets_reset_never_a_gap(small_broker):
    start = small_broker.tip(3)
    for n in range(small_broker.size + 5):
        small_broker.append([3], ev(n))
    read = small_broker.read(3, start, 100)
    assert read.reset and read.events == []
    assert read.cursor == small_broker.tip(3)


def test_cursor_just_inside_window_is_replayed(small_broker):
    start = small_broker.tip(4)
    for n in range(small_broker.size):
        small_broker.append([4], ev(n))
    read = small_broker.read(4, start, 100)
    assert not read.reset
    assert [e["data"]["n"] for e in read.events] == list(range(small_broker.size))


def test_cursor_from_another_epoch_gets_reset(broker):
    broker.append([5], ev(1))
    read = broker.read(5, "someotherepoch:1", 100)
    assert read.reset and read.events == []


@pytest.mark.parametrize("bad", ["", "abc", "x:y", ":5", "e:-1", "e:1:2", "a" * 100 + ":1"])
def test_malformed_cursor_is_rejected(broker, bad):
    with pytest.raises(InvalidCursor):
        broker.read(6, bad, 10)


def test_cursor_ahead_of_the_log_is_rejected(broker):
    tip = Cursor.parse(broker.tip(11))
    with pytest.raises(InvalidCursor):
        broker.read(11, str(Cursor(tip.epoch, tip.offset + 5)), 10)


def test_append_wakes_listener_and_ephemeral_reaches_it(broker):
    recorder = Recorder()
    broker.attach(recorder)
    broker.append([21, 22], ev(1))
    broker.publish_ephemeral([22], {"type": "typing", "data": {}})
    recorder.wait_for(lambda: {21, 22} <= recorder.woken and recorder.ephemeral)
    assert recorder.ephemeral == [(22, {"type": "typing", "data": {}})]
    # Ephemeral events are never written to the log.
    assert all(e["type"] != "typing" for e in broker.read(22, None, 100).events)


def test_listener_gets_each_appended_event_exactly_as_read_returns_it(broker):
    """What the Hub delivers without a read must be what a read would have returned."""
    recorder = Recorder()
    broker.attach(recorder)
    before = {u: broker.tip(u) for u in (23, 24)}
    cursors = broker.append([23, 24], ev(1))
    broker.append([24], ev(2))
    recorder.wait_for(lambda: len(recorder.appended) == 3)
    for user in (23, 24):
        handed = [{"id": f"{a.epoch}:{a.offset}", **a.payload}
                  for a in recorder.appended if a.user_id == user]
        assert handed == broker.read(user, before[user], 10).events
    assert {a.user_id: f"{a.epoch}:{a.offset}" for a in recorder.appended[:2]} == cursors


def test_at_tip_only_for_the_latest_cursor_of_a_watched_user(broker):
    """A connection at the tip skips its read: claiming it for any cursor that has
    events after it would delay them until the next append."""
    broker.attach(Recorder())
    broker.watch(25)
    first = broker.append([25], ev(1))[25]
    assert broker.at_tip(25, first)
    second = broker.append([25], ev(2))[25]
    assert not broker.at_tip(25, first)
    assert broker.at_tip(25, second)
    assert broker.read(25, second, 10).events == []
    epoch, _ = Cursor.parse(second)
    assert not broker.at_tip(25, f"{epoch}x:{Cursor.parse(second).offset}")
