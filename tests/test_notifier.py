"""Notifier: a burst of messages shares registry look-ups, and nobody is skipped."""

from __future__ import annotations

import logging

import gevent
import redis

from gateway.notifications import Notifier
from storage.connections_memory import MemoryConnections
from storage.history import Message


class CountingRegistry(MemoryConnections):
    def __init__(self) -> None:
        super().__init__(ttl=60.0, linger=0.0)
        self.lookups = 0

    def live(self, user_ids):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().live(user_ids)


def message(n: int, sender: int) -> Message:
    return Message(id=n, conversation_id=1, seq=n, sender_id=sender, client_msg_id=f"m{n}",
                   text="hi", created_at=0)


def test_a_burst_shares_look_ups_and_every_offline_recipient_gets_a_job():
    registry = CountingRegistry()
    registry.open(2, "c1")  # user 2 is connected somewhere: never pushed
    ran: list[tuple[int, list[int]]] = []
    notifier = Notifier(registry, lambda m, users: ran.append((int(m["id"]), users)),
                        concurrency=8, queue_size=1000, vapid_public_key="",
                        on_close=lambda: None)
    for n in range(1, 201):
        notifier.message_created(message(n, sender=1), [1, 2, 3])
        if n % 10 == 0:
            gevent.sleep(0.001)  # a burst spread over a few milliseconds
    deadline = 50
    while len(ran) < 200 and deadline:
        gevent.sleep(0.05)
        deadline -= 1
    notifier.close()
    assert sorted(ran) == [(n, [3]) for n in range(1, 201)]
    assert registry.lookups <= 10  # 200 messages at most 64 per look-up, gathered


class FlakyRegistry(MemoryConnections):
    """Its first look-up meets an exhausted Redis pool, as under overload."""

    def __init__(self) -> None:
        super().__init__(ttl=60.0, linger=0.0)
        self.failures = 1

    def live(self, user_ids):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("No connection available.")
        return super().live(user_ids)


def test_a_look_up_that_meets_an_unavailable_redis_logs_one_line_and_goes_on(caplog):
    ran: list[int] = []
    notifier = Notifier(FlakyRegistry(), lambda m, users: ran.append(int(m["id"])),
                        concurrency=2, queue_size=100, vapid_public_key="",
                        on_close=lambda: None)
    with caplog.at_level(logging.WARNING, logger="gateway.notifications"):
        notifier.message_created(message(1, sender=1), [1, 3])  # its look-up fails
        gevent.sleep(0.2)
        notifier.message_created(message(2, sender=1), [1, 3])
        deadline = 40
        while not ran and deadline:
            gevent.sleep(0.05)
            deadline -= 1
    notifier.close()
    assert ran == [2]  # the later message is pushed: the greenlet survived
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING
    assert skipped[0].exc_info is None  # one line, no traceback
