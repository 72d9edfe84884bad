"""PresenceService: which heartbeats reach the tracker at once and which wait for the
second's batch, and that every transition to online is still published."""

from __future__ import annotations

import time

import gevent
from flask import Flask

from gateway.presence import PresenceService
from storage.broker_memory import MemoryBroker
from storage.presence_memory import MemoryPresence
from tests.contracts.engines import Recorder

THROTTLE = 0.05


class FriendlessPresence(PresenceService):
    @staticmethod
    def _friends(user_id: int) -> list[int]:
        return []


def make() -> tuple[FriendlessPresence, MemoryPresence, Recorder]:
    tracker = MemoryPresence(timeout=30.0)
    broker = MemoryBroker()
    recorder = Recorder()
    broker.attach(recorder)
    service = FriendlessPresence(tracker, broker, throttle=THROTTLE)
    service.defer_renewals()
    return service, tracker, recorder


def online_events(recorder: Recorder) -> list[int]:
    return [p["data"]["user_id"] for _, p in recorder.ephemeral if p["data"]["online"]]


def last_seen(tracker: MemoryPresence, user_id: int) -> int | None:
    return tracker.status([user_id])[user_id].last_seen


def test_first_heartbeat_is_sent_at_once_and_renewals_wait_for_the_batch():
    service, tracker, recorder = make()
    service.touch(1)
    assert online_events(recorder) == [1]
    first = last_seen(tracker, 1)
    time.sleep(THROTTLE * 1.2)
    service.touch(1)  # a renewal: set aside
    assert last_seen(tracker, 1) == first
    time.sleep(0.01)
    service.renew()
    assert last_seen(tracker, 1) > first
    assert online_events(recorder) == [1]  # no new transition


def test_a_heartbeat_after_a_break_is_sent_at_once():
    service, tracker, _ = make()
    service.touch(2)
    first = last_seen(tracker, 2)
    time.sleep(THROTTLE * 2.5)
    service.touch(2)
    assert last_seen(tracker, 2) > first


def test_a_batched_renewal_of_a_user_swept_offline_publishes_the_transition():
    service, tracker, recorder = make()
    service.touch(3)
    tracker.expire(last_seen(tracker, 3) + 31_000)  # another process swept 3 offline
    time.sleep(THROTTLE * 1.2)
    service.touch(3)
    service.renew()
    assert online_events(recorder) == [3, 3]
    assert tracker.status([3])[3].online


def test_the_loop_renews_users_with_a_live_connection_and_no_one_else():
    service, tracker, recorder = make()
    live = {1}
    service.touch(1)
    service.touch(2)  # a request, then nothing: not renewed by the loop
    first = {u: last_seen(tracker, u) for u in (1, 2)}
    # The loop is a greenlet: the test sleeps the gevent way to let it run.
    loop = service.run_sweeper(Flask(__name__), 0.01, live=lambda: list(live))
    try:
        gevent.sleep(THROTTLE * 4)
        assert last_seen(tracker, 1) > first[1]
        assert last_seen(tracker, 2) == first[2]
        live.add(3)  # connected elsewhere in this process: online at the next round
        gevent.sleep(THROTTLE)
        assert 3 in online_events(recorder)
    finally:
        loop.kill()
