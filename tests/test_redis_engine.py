"""Redis-only behaviour of the Redis engine, on real servers (standalone and Cluster).

What every broker must do is in tests/contracts; here is what only a networked engine
can get wrong: the subscriber surviving a lost connection or a restarted server, wake-ups
crossing processes, logs expiring into a new epoch, and worker ids leased so that no two
live workers ever share one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis

from storage.broker_redis import RedisBroker
from storage.events import Cursor, WireEvent, event_json
from storage.ids import MAX_WORKER
from storage.redis_conn import connect
from storage.state_redis import LeasedIdGenerator, LeaseLost, RedisState
from tests.contracts.redis_engines import TEST_HEALTH_CHECK, client_for
from tests.servers import ROOT, free_port
from tests.services import require_service

pytestmark = pytest.mark.redis


class CountingListener:
    def __init__(self) -> None:
        self.wakes: Counter[int] = Counter()
        self.appended: list[Any] = []
        self.ephemeral: list[tuple[int, dict[str, Any]]] = []

    def on_appended(self, events) -> None:  # type: ignore[no-untyped-def]
        events = list(events)
        self.appended.extend(events)
        self.wakes.update(e.user_id for e in events)

    def on_wake(self, user_ids) -> None:  # type: ignore[no-untyped-def]
        self.wakes.update(user_ids)

    def on_ephemeral(self, user_ids, payload) -> None:  # type: ignore[no-untyped-def]
        self.ephemeral.extend((u, payload) for u in user_ids)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        gevent.sleep(0.02)


def ev(n: int) -> dict[str, Any]:
    return {"type": "message.created", "data": {"n": n}}


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request) -> str:  # type: ignore[no-untyped-def]
    return require_service(request.param)


@pytest.fixture
def brokers(redis_url, request) -> Callable[..., RedisBroker]:  # type: ignore[no-untyped-def]
    """Brokers sharing one prefix, as separate processes would; closed after the test."""
    client, prefix = client_for(redis_url, request)
    made: list[RedisBroker] = []

    def make(**options: Any) -> RedisBroker:
        broker = RedisBroker(client, prefix=prefix, health_check_interval=TEST_HEALTH_CHECK,
                             max_backoff=0.2, **options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def kill_subscribers(url: str, name: str) -> int:
    """CLIENT KILL every connection named ``name`` on every node; how many died."""
    client = connect(url, pool_size=4)
    killed = 0
    try:
        nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
        for node in nodes:
            target = node.redis_connection if node is not None else client
            for info in target.client_list(_type="pubsub"):
                if info.get("name") == name:
                    killed += int(target.execute_command("CLIENT KILL", "ID", info["id"]))
    finally:
        client.close()
    return killed


def test_subscriber_recovers_after_its_connection_is_killed(redis_url, brokers):
    listener = CountingListener()
    receiver = brokers()
    receiver.attach(listener)
    users = [101, 202, 303, 404]
    for user in users:
        receiver.watch(user)
    sender = brokers(write_only=True)
    sender.append([101], ev(0))
    wait_until(lambda: listener.wakes[101] == 1)
    assert receiver.subscriber is not None
    if "cluster" in redis_url or len(receiver.subscriber.links()) > 1:
        assert len(receiver.subscriber.links()) == 3  # one per primary, not per user

    listener.wakes.clear()
    assert kill_subscribers(redis_url, receiver.subscriber.name) >= 1
    # Every watched user is woken, so each live client re-reads from its cursor.
    wait_until(lambda: all(listener.wakes[u] >= 1 for u in users))
    assert receiver.subscriber.reconnects >= 1
    # And the doorbell rings again afterwards, for appends from another process.
    listener.wakes.clear()
    sender.append([202, 404], ev(1))
    wait_until(lambda: listener.wakes[202] == 1 and listener.wakes[404] == 1)


def test_wakes_and_ephemeral_cross_processes_and_skip_own_echo(brokers):
    a_listener, b_listener = CountingListener(), CountingListener()
    node_a, node_b = brokers(), brokers()
    node_a.attach(a_listener)
    node_b.attach(b_listener)
    node_b.watch(7)
    node_a.watch(8)
    node_a.append([7, 8], ev(1))
    wait_until(lambda: b_listener.wakes[7] == 1)
    node_a.publish_ephemeral([7], {"type": "typing", "data": {"user_id": 8}})
    wait_until(lambda: b_listener.ephemeral == [(7, {"type": "typing", "data": {"user_id": 8}})])
    gevent.sleep(0.3)  # time for any echo to come back
    # A woke its own listener directly and ignored the echo of its own publish.
    assert a_listener.wakes[8] == 1
    # B got the event itself, exactly as its log holds it: no read needed there. Both
    # also carry their JSON text (what a delivery writes), and it says the same.
    (handed,) = b_listener.appended
    read = node_b.read(7, f"{handed.epoch}:{handed.offset - 1}", 10).events[0]
    assert {"id": f"{handed.epoch}:{handed.offset}", **handed.payload} == read
    assert json.loads(handed.payload_json) == handed.payload
    assert type(read) is WireEvent and json.loads(event_json(read)) == read
    assert [json.loads(a.payload_json) for a in a_listener.appended] == [ev(1)] * 2
    node_b.unwatch(7)
    node_a.append([7], ev(2))
    gevent.sleep(0.3)
    assert b_listener.wakes[7] == 1  # unwatched: no more wakes here
    assert [e["data"]["n"] for e in node_b.read(7, node_b.tip(7), 10).events] == []


def test_watch_churn_never_looks_like_a_lost_connection(brokers):
    """Polling clients watch and unwatch per request: our own SUNSUBSCRIBE replies must
    not be mistaken for the cluster moving a slot (which would resubscribe everyone)."""
    listener = CountingListener()
    receiver = brokers()
    receiver.attach(listener)
    for _ in range(30):
        for user in (31, 32, 33):
            receiver.watch(user)
            receiver.unwatch(user)
            receiver.watch(user)
    gevent.sleep(0.3)
    assert receiver.subscriber is not None and receiver.subscriber.reconnects == 0
    brokers(write_only=True).append([31, 32, 33], ev(1))
    wait_until(lambda: all(listener.wakes[u] == 1 for u in (31, 32, 33)))


def test_write_only_broker_never_listens(brokers):
    worker = brokers(write_only=True)
    with pytest.raises(RuntimeError):
        worker.attach(CountingListener())
    worker.watch(1)  # a no-op, not an error: the Hub is never built in workers
    assert worker.subscriber is None


def test_expired_log_starts_a_new_epoch_and_old_cursors_reset(brokers):
    broker = brokers(ttl=1)
    start = broker.tip(5)
    broker.append([5], ev(1))
    assert [e["data"]["n"] for e in broker.read(5, start, 10).events] == [1]
    time.sleep(2.2)  # the log, its counter and its epoch all expire together
    read = broker.read(5, start, 10)
    assert read.reset and read.events == []
    assert Cursor.parse(read.cursor).epoch != Cursor.parse(start).epoch
    assert Cursor.parse(read.cursor).offset == 0


def test_an_append_renews_the_life_of_the_log_its_counter_and_its_epoch(brokers):
    broker = brokers(ttl=2)
    start = broker.tip(6)  # a read starts the log's life without renewing it later
    broker.append([6], ev(1))
    time.sleep(1.2)
    broker.append([6], ev(2))
    assert all(0 < broker.client.ttl(key) <= 2 for key in broker.keys.user(6))
    time.sleep(1.2)  # past the first append's life, within the second's
    read = broker.read(6, start, 10)
    assert not read.reset
    assert [e["data"]["n"] for e in read.events] == [1, 2]


def test_offsets_are_unique_under_concurrent_appends_from_many_brokers(brokers):
    nodes = [brokers(write_only=True) for _ in range(4)]
    start = nodes[0].tip(9)
    jobs = [gevent.spawn(node.append, [9], ev(i * 100 + n))
            for i, node in enumerate(nodes) for n in range(25)]
    gevent.joinall(jobs, raise_error=True)
    events = nodes[1].read(9, start, 500).events
    offsets = [Cursor.parse(e["id"]).offset for e in events]
    assert offsets == list(range(1, 101))


# --- a Redis restart (its own server: the shared ones must keep running) -------------------

class RedisServer:
    """A throwaway redis-server with AOF on, restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        probe.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    require_service("redis")  # the same switch as the shared server: skip together
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_redis_restart_keeps_the_log_and_the_subscriber_recovers(own_redis):
    client = connect(own_redis.url, pool_size=8, health_check_interval=TEST_HEALTH_CHECK)
    receiver = RedisBroker(client, prefix="restart", health_check_interval=TEST_HEALTH_CHECK,
                           max_backoff=0.2)
    sender = RedisBroker(client, prefix="restart", write_only=True)
    listener = CountingListener()
    receiver.attach(listener)
    receiver.watch(1)
    try:
        start = sender.tip(1)
        for n in range(5):
            sender.append([1], ev(n))  # acknowledged: appendfsync always
        wait_until(lambda: listener.wakes[1] >= 1)
        own_redis.stop()
        listener.wakes.clear()
        own_redis.start()
        wait_until(lambda: listener.wakes[1] >= 1)  # the recovery wake
        read = sender.read(1, start, 100)
        assert not read.reset
        assert [e["data"]["n"] for e in read.events] == list(range(5))
        listener.wakes.clear()
        sender.append([1], ev(5))
        wait_until(lambda: listener.wakes[1] >= 1)
    finally:
        receiver.close()
        client.close()


# --- worker ids --------------------------------------------------------------------------

def test_fifty_workers_never_share_an_id_and_released_ids_are_reused(redis_url, request):
    client, prefix = client_for(redis_url, request)
    states = [RedisState(client, prefix=prefix) for _ in range(50)]
    try:
        ids = [s.worker_id() for s in states]
        assert len(set(ids)) == 50 and all(0 <= i <= MAX_WORKER for i in ids)
        assert [s.worker_id() for s in states] == ids  # stable while leased
        released = states.pop(17)
        released.close()
        # Fill every other id; the only free one left is the one just released.
        fillers = [RedisState(client, prefix=prefix) for _ in range(MAX_WORKER + 1 - 49)]
        states += fillers
        taken = {s.worker_id() for s in fillers}
        assert taken.isdisjoint(ids[:17] + ids[18:]) and ids[17] in taken
        with pytest.raises(RuntimeError, match="leased"):
            RedisState(client, prefix=prefix).worker_id()
    finally:
        for state in states:
            state.close()


def test_a_stolen_or_lapsed_lease_stops_id_generation(redis_url, request):
    client, prefix = client_for(redis_url, request)
    state = RedisState(client, prefix=prefix, worker_lease_ttl=5.0)
    request.addfinalizer(state.close)
    ids = LeasedIdGenerator((state.worker_id(), state.lease)[1])
    ids.next_id()
    assert state.lease.renew() is True
    client.set(state.keys.worker_lease(state.worker_id()), "someone-else")
    assert state.lease.renew() is False
    with pytest.raises(LeaseLost):
        ids.next_id()
    with pytest.raises(LeaseLost):
        state.worker_id()

    other = RedisState(client, prefix=prefix, worker_lease_ttl=5.0)
    request.addfinalizer(other.close)
    other.worker_id()
    other.lease.valid_until = time.monotonic() - 1  # as if renewals failed for a whole TTL
    with pytest.raises(LeaseLost):
        LeasedIdGenerator(other.lease)


_WORKER_PROCESS = textwrap.dedent("""
    import sys
    from storage.redis_conn import connect
    from storage.state_redis import RedisState
    client = connect(sys.argv[1], pool_size=4)
    states = [RedisState(client, prefix=sys.argv[2]) for _ in range(int(sys.argv[3]))]
    print(" ".join(str(s.worker_id()) for s in states), flush=True)
    sys.stdin.read()  # hold the leases until the test has seen every process' ids
    for s in states:
        s.close()
""")


def test_worker_processes_started_together_never_share_an_id(redis_url, request):
    _, prefix = client_for(redis_url, request)
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER_PROCESS, redis_url, prefix, "10"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    try:
        ids = [int(i) for p in procs for i in p.stdout.readline().split()]  # type: ignore[union-attr]
    finally:
        for proc in procs:
            proc.communicate(timeout=30)
    assert len(ids) == 80 and len(set(ids)) == 80


@pytest.fixture
def states(redis_url, request) -> Callable[..., RedisState]:  # type: ignore[no-untyped-def]
    """Near-cached states sharing one prefix, as gateway processes would."""
    client, prefix = client_for(redis_url, request)
    made: list[RedisState] = []

    def make(ttl: float = 10.0) -> RedisState:
        state = RedisState(client, prefix=prefix, near_cache_ttl=ttl)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


def test_near_cache_serves_copies_and_every_change_reaches_every_process(states):
    a, b = states(), states()
    a.remember("members:1", "1,2", 60)
    assert b.recall("members:1") == "1,2"  # read once from Redis, then kept
    assert b.near is not None and b.near.get("members:1") == "1,2"
    a.forget("members:1")
    wait_until(lambda: b.recall("members:1") is None, timeout=2.0)
    a.remember("session:x", "5:99", 60)
    assert b.recall("session:x") == "5:99"
    a.remember("session:x", "revoked", 60)  # a logout elsewhere
    wait_until(lambda: b.recall("session:x") == "revoked", timeout=2.0)


def test_near_cache_does_not_keep_a_read_that_raced_a_change(states):
    a, b = states(), states()
    a.remember("k", "old", 60)
    assert b.near is not None
    b.recall("k")  # starts b's subscription
    b.near.clear()
    generation = b.near.generation
    a.forget("k")  # announced while b's read of "old" was in flight
    wait_until(lambda: b.near is not None and b.near.generation != generation, timeout=2.0)
    b.near.put("k", "old", generation)
    assert b.recall("k") is None


def test_near_cache_copies_expire_and_are_dropped_while_pub_sub_is_down(states, redis_url):
    a, b = states(ttl=0.3), states(ttl=60.0)
    a.remember("k", "v", 60)
    assert a.recall("k") == "v" and b.recall("k") == "v"
    assert a.near is not None and b.near is not None
    time.sleep(0.4)
    assert a.near.get("k") is None  # expired: the next recall reads Redis again
    assert a.recall("k") == "v"
    # b's subscription dies: its copies are no longer trusted, and after the recovery
    # a change made meanwhile is seen.
    name = f"near-cache:{b.near.origin}"
    assert kill_subscribers(redis_url, name) >= 1
    a.client.set(a.keys.value("k"), "changed")  # a change whose announcement b missed
    wait_until(lambda: b.recall("k") == "changed", timeout=5.0)  # well inside b's ttl


def pause_every_node(url: str, ms: int) -> None:
    """CLIENT PAUSE ALL on every node: its connections stay open and hear nothing, as
    over a link that died without a word."""
    client = connect(url, pool_size=4)
    try:
        nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
        for node in nodes:
            target = node.redis_connection if node is not None else client
            target.execute_command("CLIENT PAUSE", ms, "ALL")
    finally:
        client.close()


def test_near_cache_stops_trusting_copies_soon_after_its_connection_goes_silent(
        states, redis_url):
    # Within three heartbeats of silence, not after the (long) ttl: a change announced
    # over a half-open link would be lost, so copies must not outlive its detection.
    a, b = states(), states(ttl=60.0)
    assert b.near is not None
    b.near.heartbeat = 0.2
    a.remember("k", "v", 60)
    assert b.recall("k") == "v" and b.near.get("k") == "v"
    time.sleep(0.5)
    assert b.near.get("k") == "v"  # a quiet but answering link keeps its copies
    pause_every_node(redis_url, 2500)
    started = time.monotonic()
    wait_until(lambda: b.near.get("k") is None, timeout=2.0)
    assert time.monotonic() - started < 2.0
    time.sleep(max(0.0, started + 2.6 - time.monotonic()))  # the pause is over
    # and once the subscription is back, copies are kept again
    wait_until(lambda: b.recall("k") == "v" and b.near is not None
               and b.near.get("k") == "v", timeout=10.0)


def test_tip_is_known_from_other_processes_appends_and_never_past_a_lost_connection(
        redis_url, brokers):
    """``at_tip`` (a long-poll at its last cursor skips its read) must never be True
    when the log holds more: not before the watch, not for a cursor another process
    has moved past, and not after the subscriber lost its connection."""
    listener = CountingListener()
    receiver = brokers()
    receiver.attach(listener)
    sender = brokers(write_only=True)
    start = sender.append([61], ev(0))[61]
    assert not receiver.at_tip(61, receiver.read(61, None, 0).cursor)  # not watched
    receiver.watch(61)
    assert receiver.read(61, None, 0).cursor == start
    assert receiver.at_tip(61, start)  # learnt from a read made while watching
    moved = sender.append([61], ev(1))[61]
    wait_until(lambda: receiver.at_tip(61, moved))  # heard from the other process
    assert not receiver.at_tip(61, start)

    assert receiver.subscriber is not None
    assert kill_subscribers(redis_url, receiver.subscriber.name) >= 1
    # What is published while the connection is down is gone: no tip learnt before the
    # drop is trusted after it (the recovery's wake-up makes live feeds read).
    missed = sender.append([61], ev(2))[61]
    wait_until(lambda: receiver.subscriber.reconnects >= 1)
    assert not receiver.at_tip(61, moved)
    assert [e["data"]["n"] for e in receiver.read(61, moved, 10).events] == [2]
    # Learnt again once the resubscription is confirmed.
    wait_until(lambda: receiver.read(61, missed, 10).events == []
               and receiver.at_tip(61, missed))
    receiver.unwatch(61)
    assert not receiver.at_tip(61, missed)


def test_tips_are_checked_together_before_they_lapse_and_a_lost_wake_up_is_found(
        brokers, monkeypatch):
    """A parked connection's wait runs out every keep-alive; the check keeps its cursor
    vouched for without a read of its own, and finds what a lost wake-up hid."""
    from storage import broker_redis

    monkeypatch.setattr(broker_redis, "_TIP_TRUST", 0.6)
    listener = CountingListener()
    receiver = brokers()
    receiver.attach(listener)
    sender = brokers(write_only=True)
    tips = {u: sender.append([u], ev(0))[u] for u in (71, 72, 73)}
    for user_id, cursor in tips.items():
        receiver.watch(user_id)
        wait_until(lambda u=user_id, c=cursor: receiver.read(u, None, 0).cursor == c
                   and receiver.at_tip(u, c))
    time.sleep(0.4)
    # 72 gains an entry whose publication never arrives (what a lost wake-up looks like).
    log_key, offset_key, _ = receiver.keys.user(72)
    offset = receiver.client.incr(offset_key)
    receiver.client.xadd(log_key, {"e": json.dumps(ev(9))}, id=f"{offset}-0")
    # 73's log lapsed.
    receiver.client.delete(*receiver.keys.user(73))
    assert receiver.check_tips(older_than=10.0) == 0  # none that old
    assert receiver.check_tips(older_than=0.3) == 3
    assert listener.wakes[72] == 1 and listener.wakes[71] == listener.wakes[73] == 0
    time.sleep(0.4)  # past the trust of the first learning: 71 stands on the check's
    assert receiver.at_tip(71, tips[71])
    assert not receiver.at_tip(72, tips[72])
    assert [e["data"]["n"] for e in receiver.read(72, tips[72], 10).events] == [9]
    assert not receiver.at_tip(73, tips[73])
    time.sleep(0.3)
    assert not receiver.at_tip(71, tips[71])  # unchecked, it lapses as before


def test_a_sends_fan_out_goes_with_the_turns_end_and_a_failed_append_loses_nothing(
        redis_url, request):
    """On one server the members' appends share the round trip that ends the turn (a
    cluster keeps them apart: its pipeline runs each node's part on its own). Either
    way the turn ends and the claim remembers the durable message if an append fails."""
    client, prefix = client_for(redis_url, request)
    state = RedisState(client, prefix=prefix)
    broker = RedisBroker(client, prefix=prefix)
    listener = CountingListener()
    broker.attach(listener)
    request.addfinalizer(broker.close)
    separate: list[Any] = []
    append = broker.append
    broker.append = (  # type: ignore[method-assign]
        lambda *a, **kw: separate.append(a) or append(*a, **kw))
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0}
    start = {u: broker.tip(u) for u in (71, 72, 73)}

    with state.sending(71, "f1", 30, **options) as sending:
        sending.message = '{"id": "1"}'
        sending.fan_out = (broker, [71, 72], ev(1))
    assert (separate == []) == (not state.cluster)
    for user in (71, 72):
        assert [e["data"]["n"] for e in broker.read(user, start[user], 10).events] == [1]
    assert listener.wakes[71] == 1 and listener.wakes[72] == 1  # local connections told

    log_key = broker.keys.user(73)[0]
    broker.append([73], ev(0))
    client.delete(log_key)
    client.set(log_key, "not a stream")  # 73's append will fail
    with pytest.raises(redis.ResponseError):
        with state.sending(72, "f2", 30, **options) as sending:
            sending.message = '{"id": "2"}'
            sending.fan_out = (broker, [72, 73], ev(2))
    assert [e["data"]["n"] for e in broker.read(72, start[72], 10).events] == [1, 2]
    with state.sending(72, "f2", 30, **options) as retry:  # durable: remembered
        assert retry.claim.outcome == "sent" and retry.claim.value == '{"id": "2"}'
    with state.sending(71, "f3", 30, timeout=0.5, **options) as after:  # the turn ended
        assert after.turn is not None and after.turn.seq == 3


@pytest.mark.parametrize("drops", [1, 3])
def test_a_send_whose_closing_round_trip_drops_is_still_answered_to_its_retry(
        redis_url, request, monkeypatch, drops):
    """The message is durable before the round trip that ends the turn and settles the
    claim. If that round trip is lost with its connection, the send still settles
    (retrying), so a client's retry gets the message instead of storing it twice once
    the claim would have lapsed."""
    import storage.state_redis as state_redis

    client, prefix = client_for(redis_url, request)
    state = RedisState(client, prefix=prefix)
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0}
    real = state_redis.run_scripts
    left = [drops]

    def dropping(client: Any, calls: Any, raise_on_error: bool = True,
                 **options: Any) -> list[Any]:
        if left[0] and any(script is state_redis._SETTLE_SEND for script, _, _ in calls):
            left[0] -= 1
            raise redis.ConnectionError("connection lost (test)")
        return real(client, calls, raise_on_error, **options)

    monkeypatch.setattr(state_redis, "run_scripts", dropping)
    with pytest.raises(redis.ConnectionError):
        with state.sending(81, "d1", 40, **options) as sending:
            assert sending.turn is not None and sending.turn.seq == 1
            sending.message = '{"id": "1"}'  # durable from here on
            sending.turn.new_last_id = 1
    assert left[0] == 0
    with state.sending(81, "d1", 40, **options) as retry:
        assert retry.claim.outcome == "sent" and retry.claim.value == '{"id": "1"}'
    with state.sending(81, "d2", 40, timeout=0.5, **options) as after:  # the turn ended
        assert after.turn is not None and after.turn.seq == 2


@pytest.mark.parametrize("ran", [True, False], ids=["reply-lost", "request-lost"])
def test_a_sends_close_is_all_or_nothing_and_a_lost_reply_is_recovered_exactly(
        request, monkeypatch, ran):
    """On one server a send's appends, turn end and settling are one atomic script.
    When its connection drops, the script either ran (only the reply is lost) or did
    not; the retry runs it only in the second case. Either way every member's log gets
    the event exactly once, the claim remembers the message and the turn ends."""
    import storage.state_redis as state_redis

    client, prefix = client_for(require_service("redis"), request)
    state = RedisState(client, prefix=prefix)
    broker = RedisBroker(client, prefix=prefix)
    listener = CountingListener()
    broker.attach(listener)
    request.addfinalizer(broker.close)
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0}
    start = {u: broker.tip(u) for u in (91, 92)}
    closing = LosingTheLink(state_redis._CLOSING, 1, ran=ran)
    monkeypatch.setattr(state_redis, "_CLOSING", closing)
    with state.sending(91, "c1", 50, **options) as sending:  # no error reaches the sender
        sending.message = '{"id": "1"}'
        sending.turn.new_last_id = 1  # type: ignore[union-attr]
        sending.fan_out = (broker, [91, 92], ev(1))
    assert closing.left == 0
    for user in (91, 92):
        assert [e["data"]["n"] for e in broker.read(user, start[user], 10).events] == [1]
        assert listener.wakes[user] == 1  # this process' connections are told once
        assert not broker.at_tip(user, start[user])
    with state.sending(91, "c1", 50, **options) as retry:
        assert retry.claim.outcome == "sent" and retry.claim.value == '{"id": "1"}'
    with state.sending(92, "c2", 50, timeout=0.5, **options) as after:  # the turn ended
        assert after.turn is not None and after.turn.seq == 2


class LosingTheLink:
    """A script call whose first ``left`` calls lose their connection: after the script
    ran (``ran``: only the reply was lost), or before it reached the server."""

    def __init__(self, real: Callable[..., Any], left: int, *, ran: bool) -> None:
        self.real = real
        self.left = left
        self.ran = ran

    def __call__(self, client: Any, keys: Any, args: Any, **options: Any) -> Any:
        if self.left:
            self.left -= 1
            if self.ran:
                self.real(client, keys, args, **options)
            raise redis.ConnectionError("connection lost (test)")
        return self.real(client, keys, args, **options)


def losing_member_appends(monkeypatch: pytest.MonkeyPatch, lost: set[int], ran: bool
                          ) -> list[list[Any]]:
    """Makes the broker's next pipeline of appends lose the calls at ``lost``: each ran
    (only its reply was lost) or never reached the server. Records every pipeline."""
    import storage.broker_redis as broker_redis

    real = broker_redis.run_scripts
    seen: list[list[Any]] = []

    def dropping(client: Any, calls: Any, raise_on_error: bool = True, *,
                 batch: bool = False) -> list[Any]:
        seen.append([script for script, _, _ in calls])
        if len(seen) > 1:
            return real(client, calls, raise_on_error, batch=batch)
        reached = [i for i in range(len(calls)) if ran or i not in lost]
        results = dict(zip(reached, real(client, [calls[i] for i in reached],
                                          raise_on_error, batch=batch), strict=True))
        return [redis.ConnectionError("connection lost (test)") if i in lost
                else results[i] for i in range(len(calls))]

    monkeypatch.setattr(broker_redis, "run_scripts", dropping)
    return seen


@pytest.mark.parametrize("ran", [True, False], ids=["reply-lost", "request-lost"])
@pytest.mark.parametrize("lost", [{1}, {0, 1, 2}], ids=["one-member", "all"])
def test_an_append_whose_link_dropped_reaches_every_member_exactly_once(
        brokers, monkeypatch, ran, lost):
    """The lost calls are made again by a script that looks for the event first, so a
    member whose append's reply was lost gets it once, and one whose request was lost
    gets it too; the caller sees no error. (Fails when the append is not made again:
    the member misses the event; or made again blindly: it gets it twice.)"""
    import storage.broker_redis as broker_redis

    broker = brokers()
    listener = CountingListener()
    broker.attach(listener)
    users = [61, 62, 63]
    for user in users:
        broker.watch(user)
    start = {u: broker.tip(u) for u in users}
    seen = losing_member_appends(monkeypatch, lost, ran)
    cursors = broker.append(users, ev(1))
    assert sorted(cursors) == users
    assert len(seen) == 2 and set(seen[1]) == {broker_redis._APPEND_AGAIN}
    assert len(seen[1]) == len(lost)
    for user in users:
        events = broker.read(user, start[user], 10).events
        assert [e["data"]["n"] for e in events] == [1], user
        assert cursors[user] == events[0]["id"]
    assert sorted(e.user_id for e in listener.appended) == users


def test_a_send_on_a_cluster_whose_member_append_dropped_still_reaches_that_member(
        request, monkeypatch):
    """On a cluster the members' appends are made in the turn, before its close. One
    whose reply is lost is made again (guarded), so the send succeeds - before, it failed
    with the message durable, and its retry answered without that member's event."""
    client, prefix = client_for(require_service("redis-cluster"), request)
    state = RedisState(client, prefix=prefix)
    broker = RedisBroker(client, prefix=prefix)
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0}
    start = {u: broker.tip(u) for u in (71, 72)}
    seen = losing_member_appends(monkeypatch, {1}, ran=True)
    with state.sending(71, "m1", 60, **options) as sending:
        sending.message = '{"id": "1"}'
        sending.turn.new_last_id = 1  # type: ignore[union-attr]
        sending.fan_out = (broker, [71, 72], ev(1))
    assert len(seen) == 2
    for user in (71, 72):
        assert [e["data"]["n"] for e in broker.read(user, start[user], 10).events] == [1]


@pytest.mark.parametrize("drops", [0, 1, 5], ids=["clean", "reply-lost-once", "all-lost"])
def test_a_sends_record_is_made_in_its_close_exactly_once_or_not_at_all(
        request, monkeypatch, drops):
    """On one server the message's record (persist tail and stream) goes in the send's
    closing script: durable exactly when its appends and its settling are. A lost reply
    (the script ran) is not recorded twice; when every attempt is lost before reaching
    the server, nothing is stored and the claim is left to lapse, so the client's retry
    sends the message then - never a copy of a stored one."""
    import storage.state_redis as state_redis
    from storage.history import Message
    from storage.persist_buffer import PersistBuffer
    from workers.queue import RqJobQueue

    client, prefix = client_for(require_service("redis"), request)
    state = RedisState(client, prefix=prefix)
    broker = RedisBroker(client, prefix=prefix)
    buffer = PersistBuffer(client, prefix, shards=1)
    scheduled: list[int] = []
    jobs = RqJobQueue(buffer, queue=None, state=state)
    monkeypatch.setattr(jobs, "schedule", scheduled.append)  # no RQ queue here
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0, "hold": 0.5}
    # One drop: the script ran and only its reply was lost.
    closing = LosingTheLink(state_redis._CLOSING_DURABLE, drops, ran=drops == 1)
    monkeypatch.setattr(state_redis, "_CLOSING_DURABLE", closing)
    message = Message(id=7001, conversation_id=77, seq=1, sender_id=93, client_msg_id="r1",
                      text="hello", created_at=1)

    def send(timeout: float = 10.0) -> None:
        with state.sending(93, "r1", 77, timeout=timeout, **options) as sending:
            sending.message = json.dumps(message.to_json())
            sending.persist = jobs.prepare_persist(message, [93, 94])
            sending.turn.new_last_id = message.id  # type: ignore[union-attr]
            sending.fan_out = (broker, [93, 94], ev(1))

    if drops == 5:  # more than the close's attempts
        listener = CountingListener()
        broker.listener = listener
        with pytest.raises(redis.ConnectionError):
            send()
        assert listener.wakes[93] == listener.wakes[94] == 1  # unsure: they read
        broker.listener = None
        assert [m.id for m in buffer.tail(77)] == [] and client.xlen(buffer.stream_key(0)) == 0
        assert scheduled == []
        # The claim, left pending, lapses after its hold; the turn's lock after its TTL
        # (5 s: the close that would have ended it never ran). The retry sends it.
        time.sleep(0.6)
        closing.left = 0
        send(timeout=8.0)
    else:
        send()
    assert [m.id for m in buffer.tail(77)] == [7001]
    assert client.xlen(buffer.stream_key(0)) == 1
    assert scheduled == [0]
    with state.sending(93, "r1", 77, **options) as retry:
        assert retry.claim.outcome == "sent"
        assert json.loads(retry.claim.value or "")["id"] == "7001"


def test_presence_expiry_takes_a_crowd_in_batches_and_spares_a_late_heartbeat(
        redis_url, request, monkeypatch):
    from storage import presence_redis

    client, prefix = client_for(redis_url, request)
    presence = presence_redis.RedisPresence(client, prefix=prefix, timeout=30.0, shards=2)
    monkeypatch.setattr(presence_redis, "_EXPIRE_BATCH", 4)  # 20 users a shard: 5 rounds
    users = list(range(1, 41))
    presence.touch_many(users, 1_000)
    script = presence_redis._EXPIRE
    late = []

    class HeartbeatFirst:  # a heartbeat lands between the listing and the script
        def many(self, client_, calls):
            if not late:
                late.append(presence.touch_many([1, 2], 35_000))
            return script.many(client_, calls)

    monkeypatch.setattr(presence_redis, "_EXPIRE", HeartbeatFirst())
    gone = presence.expire(40_000)
    assert late == [[]]  # still online when it beat
    assert gone == [(u, 1_000) for u in users[2:]]
    assert presence.status([1, 3]) == {1: (True, 35_000), 3: (False, 1_000)}
    key = presence.keys.presence_seen(presence._shard(3), 3)
    assert 0 < client.ttl(key) <= presence_redis._LAST_SEEN_TTL


def test_a_renewed_registry_key_always_expires(redis_url, request):
    from storage.connections_redis import RedisConnections

    client, prefix = client_for(redis_url, request)
    registry = RedisConnections(client, prefix=prefix, ttl=1.0, linger=0.3)
    registry.open(5, "a")
    client.delete(registry.key(5))  # lapsed, as if its process had been away
    registry.renew([(5, "a")])
    assert registry.live([5]) == {5}
    assert 0 < client.pttl(registry.key(5)) <= 2_000  # nothing outlives its users
