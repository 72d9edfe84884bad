"""The Hub's routing of wake-ups and the connection registry bookkeeping of polls.

Long-poll clients open a connection per delivery; these check that doing so costs no
subscription churn and no registry writes while a client keeps polling, and that a
client who stops is still let go on time.
"""

from __future__ import annotations

import time

from gateway.hub import Hub
from gateway.notifications import TrackedHub
from storage.broker_memory import MemoryBroker
from storage.connections_memory import MemoryConnections


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def watch(self, user_id: int) -> None:
        self.calls.append(("watch", user_id))

    def unwatch(self, user_id: int) -> None:
        self.calls.append(("unwatch", user_id))


class CountingRegistry(MemoryConnections):
    def __init__(self, ttl: float, linger: float) -> None:
        super().__init__(ttl, linger)
        self.opened = 0

    def open(self, user_id: int, connection_id: str) -> None:
        self.opened += 1
        super().open(user_id, connection_id)


def test_a_user_stays_watched_for_the_linger_after_their_last_connection():
    broker = CountingBroker()
    hub = Hub(broker, watch_linger=5.0)
    try:
        for _ in range(3):  # three polls in a row
            hub.unsubscribe(hub.subscribe(1, "s", "longpoll"))
        hub.unsubscribe(hub.subscribe(2, "s", "sse"))
        assert broker.calls == [("watch", 1), ("watch", 2)]
        hub.sweep(time.monotonic() + 1.0)
        assert broker.calls == [("watch", 1), ("watch", 2)]
        hub.sweep(time.monotonic() + 6.0)
        assert broker.calls[2:] == [("unwatch", 1), ("unwatch", 2)]
        hub.unsubscribe(hub.subscribe(1, "s", "longpoll"))  # back: watched again
        assert broker.calls[-1] == ("watch", 1)
    finally:
        hub.stop()


def test_polls_share_one_registry_entry_released_after_the_gap():
    registry = CountingRegistry(ttl=30.0, linger=0.2)
    hub = TrackedHub(CountingBroker(), registry, poll_gap=0.5)
    try:
        for _ in range(20):
            hub.unsubscribe(hub.subscribe(7, "s", "longpoll"))
        assert registry.opened == 1
        assert registry.live([7]) == {7}  # between polls: still connected
        hub.close_idle_polls(time.monotonic())  # within the gap: kept
        assert registry.live([7]) == {7}
        hub.close_idle_polls(time.monotonic() + 0.6)  # the gap passed: closed, lingers
        assert registry.live([7]) == {7}
        time.sleep(0.3)
        assert registry.live([7]) == set()
        hub.unsubscribe(hub.subscribe(7, "s", "poll"))  # a new poll opens it again
        assert registry.opened == 2 and registry.live([7]) == {7}
    finally:
        hub.stop()


def test_a_poll_in_progress_keeps_its_user_connected():
    registry = CountingRegistry(ttl=30.0, linger=0.1)
    hub = TrackedHub(CountingBroker(), registry, poll_gap=0.1)
    try:
        waiting = hub.subscribe(8, "s", "longpoll")
        hub.unsubscribe(hub.subscribe(8, "s", "poll"))  # another poll ends meanwhile
        hub.close_idle_polls(time.monotonic() + 5.0)
        assert registry.live([8]) == {8}
        hub.unsubscribe(waiting)
        hub.close_idle_polls(time.monotonic() + 5.0)
        time.sleep(0.2)
        assert registry.live([8]) == set()
    finally:
        hub.stop()


def test_events_are_handed_with_their_json_text_when_the_broker_has_it():
    import json

    from storage.broker import Appended
    from storage.events import event_json

    hub = Hub(MemoryBroker())
    sub = hub.subscribe(5, "s", "ws")
    payload = {"type": "message.created", "data": {"text": "é \"q\"", "seq": 3}}
    hub.on_appended([Appended(5, "e1", 7, payload, json.dumps(payload)),
                     Appended(5, "e1", 8, payload)])
    (_, _, first), (_, _, second) = sub.carried
    assert first == {"id": "e1:7", **payload}
    assert event_json(first).startswith('{"id":"e1:7",')  # the text it was handed
    assert json.loads(event_json(first)) == first
    assert json.loads(event_json(second)) == second == {"id": "e1:8", **payload}
