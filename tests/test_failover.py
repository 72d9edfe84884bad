"""Failover under traffic: a node killed, a node drained, Redis restarted.

Two nodes (gunicorn, two gevent workers each) on one Redis with PostgreSQL and an RQ
worker. Eight receivers, one per transport on each node, and two senders (one per
node) share a group. Senders keep sending; each send is retried with its
client_msg_id until some node acknowledges it. After the incident every receiver's
de-duplicated message ids must contain every acknowledged id (nothing lost), in the
conversation's order. Receivers find a new node only through ``/v1/discover``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.cluster import Deployment, Receiver, Sender
from tests.services import require_service
from tests.test_redis_engine import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TRANSPORTS = ["poll", "longpoll", "sse", "ws"]
DISCOVERY_TTL = 3.0  # tests/cluster.py sets SWITCHBOARD_DISCOVERY_TTL to this
GRACEFUL_TIMEOUT = 30


class Traffic:
    def __init__(self, deployment: Deployment) -> None:
        a, b = deployment.a, deployment.b
        self.deployment = deployment
        members = {(node.url, t): deployment.user(node) for node in (a, b) for t in TRANSPORTS}
        writers = [deployment.user(a), deployment.user(b)]
        self.conversation = writers[0].group(
            "failover", [m.user_id for m in [*members.values(), writers[1]]])["id"]
        self.stop_receivers = threading.Event()
        self.stop_senders = threading.Event()
        self.receivers = [Receiver(api, transport, deployment.directory(), self.stop_receivers)
                          for (_, transport), api in members.items()]
        self.senders = [Sender(api, self.conversation, deployment.directory(),
                               self.stop_senders, f"s{i}") for i, api in enumerate(writers)]

    def start(self) -> None:
        for receiver in self.receivers:
            receiver.start()
        for receiver in self.receivers:
            assert receiver.connected.wait(20), f"{receiver.name} never connected"
        for sender in self.senders:
            sender.start()

    def acked(self) -> set[str]:
        return {mid for s in self.senders for mid in s.acked.values()}

    def finish(self, catch_up: float = 30.0) -> set[str]:
        """Stop sending, wait (bounded) until every receiver has every acked message."""
        self.stop_senders.set()
        for sender in self.senders:
            sender.join(70)
            assert not sender.is_alive(), f"{sender.name} stuck"
        acked = self.acked()
        deadline = time.monotonic() + catch_up
        while time.monotonic() < deadline:
            if all(acked <= set(r.ids()) for r in self.receivers):
                break
            time.sleep(0.2)
        self.stop_receivers.set()
        for receiver in self.receivers:
            receiver.join(15)
        return acked

    def check_nothing_lost(self, acked: set[str]) -> None:
        assert len(acked) > 50, "too little traffic to mean anything"
        for receiver in self.receivers:
            got = receiver.ids()
            missing = acked - set(got)
            assert not missing, (f"{receiver.name} on {receiver.url} lost {len(missing)} of "
                                 f"{len(acked)}; moves: {receiver.moves}")
            seqs = [receiver.seqs[i] for i in got]
            assert seqs == sorted(seqs), f"{receiver.name}: out of order"

    def moved_at(self, lost_url: str) -> list[float]:
        """When each receiver that was on ``lost_url`` first left it."""
        return [next(t for t, frm, _, _ in r.moves if frm == lost_url)
                for r in self.receivers if any(frm == lost_url for _, frm, _, _ in r.moves)]


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, require_service("redis"),
                            graceful_timeout=str(GRACEFUL_TIMEOUT))
    try:
        deployment.node()
        deployment.node()
        yield deployment
    finally:
        deployment.stop()


def listed(node_url: str, ask: str) -> bool:
    body = requests.get(ask + "/v1/discover", timeout=5).json()
    return any(n["url"] == node_url for n in body["nodes"])


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.1)
    return time.monotonic() - start


def test_node_killed_with_sigkill_its_clients_resume_elsewhere_losing_nothing(two_nodes):
    a, b = two_nodes.a, two_nodes.b
    traffic = Traffic(two_nodes)
    traffic.start()
    time.sleep(2)
    killed_at = time.monotonic()
    a.kill()  # the master and both workers at once: no drain, no goodbye
    dropped = wait_for(lambda: not listed(a.url, b.url), DISCOVERY_TTL + 5)
    time.sleep(3)  # senders keep going on the survivor
    acked = traffic.finish()
    traffic.check_nothing_lost(acked)
    assert all(r.url == b.url for r in traffic.receivers)
    moved = traffic.moved_at(a.url)
    assert len(moved) == len(TRANSPORTS)  # every receiver that was on a
    took = max(moved) - killed_at
    print(f"\nSIGKILL: {len(acked)} acked messages, none lost; a's receivers all moved "
          f"within {took:.2f} s; a left discovery after {dropped:.2f} s")
    # Discovery forgets a dead node within its TTL (+ a second of per-worker caching).
    assert dropped <= DISCOVERY_TTL + 1.5


def test_node_drained_with_sigterm_its_clients_move_and_it_exits_quickly(two_nodes):
    a, b = two_nodes.a, two_nodes.b
    traffic = Traffic(two_nodes)
    traffic.start()
    time.sleep(2)
    assert a.proc is not None
    drained_at = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    # Withdrawn at once: gone from discovery before its TTL could have lapsed.
    dropped = wait_for(lambda: not listed(a.url, b.url), DISCOVERY_TTL)
    a.proc.wait(GRACEFUL_TIMEOUT + 5)
    exited = time.monotonic() - drained_at
    time.sleep(2)
    acked = traffic.finish()
    traffic.check_nothing_lost(acked)
    assert all(r.url == b.url for r in traffic.receivers)
    moved = traffic.moved_at(a.url)
    assert len(moved) == len(TRANSPORTS)
    took = max(moved) - drained_at
    streams = [r for r in traffic.receivers if r.transport in ("sse", "ws", "longpoll")
               and r.moves and r.moves[0][1] == a.url]
    reasons = {r.transport: r.moves[0][3] for r in streams}
    print(f"\nSIGTERM: {len(acked)} acked messages, none lost; a's receivers all moved "
          f"within {took:.2f} s; a left discovery after {dropped:.2f} s and exited after "
          f"{exited:.2f} s; reasons {reasons}")
    # Streams were told to leave, not cut off.
    assert all(reason == "draining" for reason in reasons.values()), reasons
    assert a.proc.returncode == 0
    # Idle keep-alive connections do not hold the workers until graceful_timeout.
    assert exited < 10, exited


@pytest.fixture
def own_redis_nodes(tmp_path: Path) -> Iterator[tuple[Deployment, RedisServer]]:
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    deployment = Deployment(tmp_path / "nodes", server.url)
    try:
        deployment.node()
        deployment.node()
        yield deployment, server
    finally:
        deployment.stop()
        server.stop()


def test_redis_restarted_during_traffic_loses_no_acknowledged_message(own_redis_nodes):
    deployment, server = own_redis_nodes
    traffic = Traffic(deployment)
    traffic.start()
    time.sleep(2)
    before = len(traffic.acked())
    server.stop()  # SIGTERM: with appendfsync always, every acknowledged write is on disk
    down_at = time.monotonic()
    time.sleep(3)
    server.start()  # same port, same directory: replays the AOF
    up_at = time.monotonic()
    at_restart = len(traffic.acked())
    resumed = wait_for(lambda: len(traffic.acked()) >= at_restart + 20, 30)
    acked = traffic.finish()
    traffic.check_nothing_lost(acked)
    assert len(acked) >= before + 20, "sending did not resume after the restart"
    # Sends during the outage failed with a clear JSON 503, never a 500.
    statuses = [status for s in traffic.senders for status, _ in s.failures]
    assert 503 in statuses, statuses
    assert all(status in (503, "network") for status in statuses), statuses
    bodies = [body for s in traffic.senders for status, body in s.failures if status == 503]
    assert all(body["error"]["code"] == "unavailable" for body in bodies)
    # Streams rode out the outage: subscribers recovered with no client reconnecting.
    streams = [r for r in traffic.receivers if r.transport in ("sse", "ws")]
    assert all(not r.moves for r in streams), [(r.name, r.moves) for r in streams]
    # And everything acknowledged is in history.
    reader = traffic.senders[0].api
    stored: set[str] = set()
    page = reader.messages(traffic.conversation, limit=100)  # the newest, oldest first
    while page:
        stored |= {m["id"] for m in page}
        page = reader.messages(traffic.conversation, before=page[0]["id"], limit=100)
    assert acked <= stored, f"{len(acked - stored)} acknowledged messages not in history"
    print(f"\nRedis restart: down {up_at - down_at:.1f} s, 20 more sends acknowledged "
          f"{resumed:.2f} s after it was back; {len(acked)} acked, none lost; "
          f"{statuses.count(503)} sends answered 503 and were retried")
