"""The Feed's delivery of events handed over by the Hub, without reading the log.

Every case checks the one property that matters: a connection receives exactly the
log's events after its cursor, in order, whether they came handed over or read.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from gateway.feed import Feed
from gateway.hub import _CARRIED_BACKLOG, Hub
from storage.broker import LogRead
from storage.broker_memory import MemoryBroker


class ReadCountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, user_id: int, cursor: str | None, limit: int) -> LogRead:
        self.reads += 1
        return super().read(user_id, cursor, limit)


def make_feed(broker: MemoryBroker, hub: Hub, user_id: int = 1,
              cursor: str | None = None, transport: str = "sse", prefetch: int = 0,
              own_prefix: str | None = None) -> Feed:
    svc: Any = SimpleNamespace(hub=hub, broker=broker)
    return Feed(svc, user_id, "session", cursor, transport, prefetch, own_prefix)


def ev(n: int) -> dict[str, Any]:
    return {"type": "message.created", "data": {"n": n}}


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["n"] for e in events]


def drain(feed: Feed, limit: int = 100) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        batch = feed.next(0.05, limit)
        if not batch.events:
            return got
        got.extend(batch.events)


def test_handed_over_events_are_delivered_without_reading_the_log():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    reads_at_open = broker.reads
    for n in range(1, 4):
        broker.append([1, 2], ev(n))
        batch = feed.next(1.0, 100)
        assert numbers(batch.events) == [n]
        assert batch.events == broker.read(1, f"{broker.epoch}:{n - 1}", 1).events
        assert batch.cursor == batch.events[-1]["id"]
    assert broker.reads - reads_at_open == 3  # only this test's own reads above
    hub.stop()


def test_a_gap_in_what_was_handed_over_falls_back_to_the_log():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    broker.append([1], ev(1))
    broker.append([1], ev(2))
    del feed.sub.carried[0]  # pub/sub dropped the first announcement
    broker.append([1], ev(3))
    before = broker.reads
    assert numbers(drain(feed)) == [1, 2, 3]
    assert broker.reads > before
    hub.stop()


def test_overflowing_the_backlog_loses_nothing():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    total = _CARRIED_BACKLOG + 10
    for n in range(1, total + 1):
        broker.append([1], ev(n))
    assert len(feed.sub.carried) == _CARRIED_BACKLOG
    assert numbers(drain(feed, limit=25)) == list(range(1, total + 1))
    hub.stop()


def test_events_the_opening_read_already_returned_are_not_repeated():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    start = broker.tip(1)
    sub = hub.subscribe(1, "other", "sse")  # hands over to every connection of user 1
    broker.append([1], ev(1))
    hub.unsubscribe(sub)
    # A connection resuming from ``start``: its opening read returns event 1; the Hub
    # then hands over 1 (again) and 2, of which only 2 is new.
    feed = make_feed(broker, hub, cursor=start)
    feed.sub.carried.append((broker.epoch, 1, {"id": f"{broker.epoch}:1", **ev(1)}))
    broker.append([1], ev(2))
    assert numbers(drain(feed)) == [1, 2]
    hub.stop()


def test_limit_splits_handed_over_events_across_batches():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    for n in range(1, 6):
        broker.append([1], ev(n))
    reads = broker.reads
    batches = [numbers(feed.next(0.05, 2).events) for _ in range(3)]
    assert batches == [[1, 2], [3, 4], [5]]
    assert broker.reads == reads
    hub.stop()


def test_an_event_from_another_epoch_makes_the_feed_read_and_reset():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    broker.append([1], ev(1))
    assert numbers(feed.next(0.05, 10).events) == [1]
    broker.epoch = "restarted"  # the log lost its history (a restart)
    broker._logs.clear()
    broker.append([1], ev(2))
    batch = feed.next(0.05, 10)
    assert [e["type"] for e in batch.events] == ["reset"]
    assert batch.cursor.startswith("restarted:")
    hub.stop()


def test_a_long_poll_back_at_the_tip_opens_without_reading_and_still_gets_the_next():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    tip = broker.append([1], ev(1))[1]
    broker.reads = 0
    feed = make_feed(broker, hub, cursor=tip, transport="longpoll", prefetch=100)
    assert broker.reads == 0
    broker.append([1], ev(2))
    assert numbers(feed.next(1.0, 100).events) == [2]
    feed.close()
    # Behind the tip, or a plain poll (which promises a fresh read): the log is read.
    behind = make_feed(broker, hub, cursor=tip, transport="longpoll", prefetch=100)
    assert broker.reads == 1 and numbers(behind.next(0, 100).events) == [2]
    behind.close()
    make_feed(broker, hub, cursor=broker.tip(1), transport="poll", prefetch=100).close()
    assert broker.reads == 3  # the poll's read, and tip()'s


class TipBroker(ReadCountingBroker):
    """Vouches (or not) for every cursor being the tip, as a Redis broker does while
    its channel is confirmed and the tip fresh."""

    def __init__(self, vouches: bool) -> None:
        super().__init__()
        self.vouches = vouches

    def at_tip(self, user_id: int, cursor: str) -> bool:
        return self.vouches


def append_unheard(broker: MemoryBroker, user_id: int, event: dict[str, Any]) -> None:
    """An append whose wake-up is lost (pub/sub is at-most-once)."""
    listener, broker.listener = broker.listener, None
    try:
        broker.append([user_id], event)
    finally:
        broker.listener = listener


def test_a_quiet_wait_the_broker_vouches_for_ends_without_reading_the_log():
    broker = TipBroker(vouches=True)
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    broker.reads = 0
    for _ in range(3):
        batch = feed.next(0.05, 100)
        assert batch.events == [] and batch.cursor == feed.cursor
    assert broker.reads == 0
    broker.append([1], ev(1))  # a wake-up still ends the wait at once
    assert numbers(feed.next(5.0, 100).events) == [1]
    hub.stop()


def test_a_quiet_wait_the_broker_cannot_vouch_for_ends_with_one_read_which_finds_a_lost_wake():
    broker = TipBroker(vouches=False)
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    broker.reads = 0
    assert feed.next(0.05, 100).events == [] and broker.reads == 1
    append_unheard(broker, 1, ev(1))
    started = time.monotonic()
    assert numbers(feed.next(0.2, 100).events) == [1]
    assert time.monotonic() - started >= 0.2  # found by the read at the end of the wait
    assert broker.reads == 2
    hub.stop()


def test_a_memory_broker_vouches_only_for_the_real_tip():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    broker.reads = 0
    assert feed.next(0.05, 100).events == [] and broker.reads == 0
    append_unheard(broker, 1, ev(1))
    assert numbers(feed.next(0.05, 100).events) == [1] and broker.reads == 1
    hub.stop()


def test_typing_at_the_tip_is_handed_over_without_reading_the_log():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = make_feed(broker, hub)
    typing = {"type": "typing", "data": {"user_id": 2, "conversation_id": 7}}
    broker.reads = 0
    broker.publish_ephemeral([1], typing)
    assert feed.next(1.0, 100).events == [typing] and broker.reads == 0
    # Behind the tip (an append whose wake-up was lost): typing comes with a read.
    append_unheard(broker, 1, ev(1))
    broker.publish_ephemeral([1], typing)
    batch = feed.next(1.0, 100)
    assert batch.events[0] == typing and numbers(batch.events[1:]) == [1]
    assert broker.reads == 1
    hub.stop()


def sent(n: int, sender: int, client_msg_id: str) -> dict[str, Any]:
    return {"type": "message.created",
            "data": {"n": n, "sender_id": sender, "client_msg_id": client_msg_id}}


def own_feed(broker: MemoryBroker, hub: Hub, cursor: str | None = None) -> Feed:
    return make_feed(broker, hub, cursor=cursor, transport="longpoll", prefetch=100,
                     own_prefix="tab7.")


def test_a_long_poll_is_not_ended_by_its_own_clients_message_which_comes_with_the_next():
    import gevent

    broker = MemoryBroker()
    hub = Hub(broker)
    feed = own_feed(broker, hub)
    broker.append([1, 2], sent(1, 1, "tab7.a"))  # this tab's own send
    gevent.spawn_later(0.2, broker.append, [1, 2], sent(2, 2, "x.b"))
    started = time.monotonic()
    batch = feed.next(5.0, 100)
    assert time.monotonic() - started >= 0.15  # waited past its own message
    assert numbers(batch.events) == [1, 2]  # in log order, nothing skipped
    assert batch.cursor == batch.events[-1]["id"]
    hub.stop()


def test_only_the_clients_own_messages_are_held_back():
    broker = MemoryBroker()
    hub = Hub(broker)
    feed = own_feed(broker, hub)
    # The same user on another tab (another prefix), and another user's id that
    # happens to share the prefix: both end the wait at once.
    for n, event in enumerate([sent(1, 1, "tab8.a"), sent(2, 2, "tab7.b"),
                               {"type": "receipt", "data": {"sender_id": 1}}], 1):
        broker.append([1, 2], event)
        started = time.monotonic()
        batch = feed.next(5.0, 100)
        assert time.monotonic() - started < 1.0 and len(batch.events) == 1, n
    hub.stop()


def test_the_clients_own_message_is_carried_without_waking_its_connection():
    broker = ReadCountingBroker()
    hub = Hub(broker)
    feed = own_feed(broker, hub)
    other = make_feed(broker, hub)  # the same user without own_prefix: woken as before
    broker.append([1, 2], sent(1, 1, "tab7.a"))
    assert not feed.sub.wake.is_set() and other.sub.wake.is_set()
    assert [e["data"]["n"] for _, _, e in feed.sub.carried] == [1]
    broker.append([1, 2], sent(2, 1, "tab8.b"))  # its user's send from another tab
    assert feed.sub.wake.is_set()
    reads = broker.reads
    assert numbers(feed.next(1.0, 100).events) == [1, 2]  # in order, from the hand-over
    assert broker.reads == reads
    hub.stop()


def test_own_messages_alone_are_answered_when_the_wait_ends_and_from_a_read_too():
    broker = MemoryBroker()
    hub = Hub(broker)
    start = broker.tip(1)
    broker.append([1], sent(1, 1, "tab7.a"))
    feed = own_feed(broker, hub, cursor=start)  # behind its own message: read at open
    started = time.monotonic()
    batch = feed.next(0.3, 100)
    assert time.monotonic() - started >= 0.25  # the wait ran out...
    assert numbers(batch.events) == [1]  # ...and the message still came
    feed.close()
    # A page full of own messages is answered at once: the client is behind.
    broker.append([1], sent(2, 1, "tab7.b"))
    feed = own_feed(broker, hub, cursor=start)
    started = time.monotonic()
    assert numbers(feed.next(5.0, 2).events) == [1, 2]
    assert time.monotonic() - started < 1.0
    hub.stop()


def test_delivery_latency_is_timed_for_others_messages_only():
    """A sender's own copy may be held for the next batch (own_prefix): timing it would
    time the hold. Others' messages are timed; every event is counted as delivered."""
    from prometheus_client import REGISTRY

    from gateway.metrics import flush, observe_delivery

    def sample(name: str) -> float:
        flush()  # counts are tallied, and written once a second or before a scrape
        return REGISTRY.get_sample_value(name, {"transport": "poll"}) or 0.0

    def bucket(le: str) -> float:
        flush()
        return REGISTRY.get_sample_value("switchboard_delivery_latency_seconds_bucket",
                                         {"transport": "poll", "le": le}) or 0.0

    timed = sample("switchboard_delivery_latency_seconds_count")
    delivered = sample("switchboard_events_delivered_total")
    total = sample("switchboard_delivery_latency_seconds_sum")
    under_10s, under_30s = bucket("10.0"), bucket("30.0")
    created = int(time.time() * 1000) - 20_000  # held for 20 s
    observe_delivery("poll", 7, [
        {"type": "message.created", "data": {"sender_id": 7, "created_at": created}},
        {"type": "message.created", "data": {"sender_id": 8, "created_at": created}}])
    assert sample("switchboard_delivery_latency_seconds_count") == timed + 1
    assert sample("switchboard_events_delivered_total") == delivered + 2
    # In the bucket Histogram.observe would have put it (20 s: above 10, within 30).
    assert (bucket("10.0"), bucket("30.0")) == (under_10s, under_30s + 1)
    assert 20 <= sample("switchboard_delivery_latency_seconds_sum") - total < 21
