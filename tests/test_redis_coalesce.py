"""Scripts from many greenlets share round trips to one Redis server (real servers).

The gateway's workers batch only where gevent has patched sockets; here batching is
switched on by hand and the callers are greenlets, which is all it needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis
from redis.cluster import RedisCluster

import storage.redis_coalesce as coalesce
from storage.redis_conn import RedisClient, Script, connect, run_scripts
from tests.services import require_service
from tests.test_redis_conn import LostReplies, fresh_prefix, keys_on_every_node, port_of

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parent.parent

_INCR = Script("return redis.call('INCR', KEYS[1])")
_ECHO_OR_FAIL = Script(
    "if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end "
    "return ARGV[1]")
_COUNT = Script("return {'counted', redis.call('INCR', KEYS[1])}")


@pytest.fixture(params=["redis", "redis-cluster"])
def client(request, monkeypatch) -> Iterator[RedisClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(coalesce, "enabled", lambda: True)
    made = connect(require_service(request.param), pool_size=4, health_check_interval=0)
    yield made
    for node_client in _node_clients(made):
        found = coalesce._coalescers.pop(node_client, None)
        if found is not None:
            found.close()
    made.close()


@pytest.fixture
def prefix(client: RedisClient) -> Iterator[str]:
    yield from fresh_prefix(client)


def _node_clients(client: RedisClient) -> list[redis.Redis]:
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def _batches(client: RedisClient) -> int:
    return sum(coalesce._coalescers[c].batches for c in _node_clients(client)
               if c in coalesce._coalescers)


def test_concurrent_callers_share_round_trips_and_each_gets_its_own_replies(client, prefix):
    keys = keys_on_every_node(client, prefix, 1)
    callers = 60

    def call(i: int) -> list:
        key = keys[i % len(keys)]
        return run_scripts(client, [(_ECHO_OR_FAIL, [key], [f"a{i}"]),
                                    (_INCR, [key], []),
                                    (_ECHO_OR_FAIL, [key], [f"b{i}"])], batch=True)

    greenlets = [gevent.spawn(call, i) for i in range(callers)]
    gevent.joinall(greenlets, raise_error=True)
    for i, greenlet in enumerate(greenlets):
        first, count, last = greenlet.value
        assert (first, last) == (f"a{i}", f"b{i}")
        assert 1 <= count <= callers
    counts = sorted(g.value[1] for g in greenlets)
    per_key = callers // len(keys)
    assert counts == sorted(n for _ in keys for n in range(1, per_key + 1))  # each ran once
    assert _batches(client) <= 2 * len(keys)  # not one round trip per caller


def test_an_error_reply_goes_to_its_caller_alone(client, prefix):
    key = keys_on_every_node(client, prefix, 1)[0]

    def call(word: str) -> list:
        return run_scripts(client, [(_ECHO_OR_FAIL, [key], [word]), (_INCR, [key], [])],
                           raise_on_error=False, batch=True)

    greenlets = [gevent.spawn(call, w) for w in ("one", "fail", "three")]
    gevent.joinall(greenlets, raise_error=True)
    one, failed, three = (g.value for g in greenlets)
    assert one[0] == "one" and three[0] == "three"
    assert isinstance(failed[0], redis.ResponseError) and "asked to fail" in str(failed[0])
    assert sorted([one[1], failed[1], three[1]]) == [1, 2, 3]  # its other script ran
    with pytest.raises(redis.ResponseError, match="asked to fail"):
        _ECHO_OR_FAIL(client, [key], ["fail"], batch=True)


def test_an_argument_redis_cannot_take_fails_its_caller_alone_and_runs_nothing(
        client, prefix):
    key = keys_on_every_node(client, prefix, 1)[0]

    def call(arg: Any) -> Any:
        return run_scripts(client, [(_INCR, [key], []), (_ECHO_OR_FAIL, [key], [arg])],
                           batch=True)

    greenlets = [gevent.spawn(call, a) for a in ("one", {"not": "packable"}, "three", 7.5)]
    gevent.joinall(greenlets)
    one, bad, three, number = greenlets
    assert isinstance(bad.exception, redis.DataError)
    assert one.value[1] == "one" and three.value[1] == "three" and number.value[1] == "7.5"
    # The bad call's INCR never went out: only the three good callers counted.
    assert sorted(g.value[0] for g in (one, three, number)) == [1, 2, 3]
    assert int(client.get(key)) == 3


def test_a_script_the_server_forgot_is_loaded_and_run_once(client, prefix):
    key = keys_on_every_node(client, prefix, 1)[0]
    assert _INCR(client, [key], [], batch=True) == 1
    client.script_flush()
    greenlets = [gevent.spawn(_INCR, client, [key], [], batch=True) for _ in range(5)]
    gevent.joinall(greenlets, raise_error=True)
    assert sorted(g.value for g in greenlets) == [2, 3, 4, 5, 6]
    assert int(client.get(key)) == 6


def test_a_lost_reply_is_a_connection_error_for_the_whole_batch_and_the_link_recovers(
        client, prefix, monkeypatch):
    key = keys_on_every_node(client, prefix, 1)[0]
    fault = LostReplies(monkeypatch, port_of(client, key))
    greenlets = [gevent.spawn(run_scripts, client, [(_COUNT, [key], [])], batch=True)
                 for _ in range(4)]
    gevent.joinall(greenlets)
    assert fault.left == 0
    assert all(isinstance(g.exception, redis.ConnectionError) for g in greenlets)
    assert int(client.get(key)) == 4  # every script ran, once: none was sent again
    assert _COUNT(client, [key], [], batch=True) == ["counted", 5]  # a new link


def test_a_pipeline_over_several_nodes_is_one_batch_on_each_and_starts_no_greenlet(
        client, prefix, monkeypatch):
    """A Cluster pipeline's parts wait on their nodes' batches together, not in a
    greenlet each; a lone script call is batched too."""
    keys = keys_on_every_node(client, prefix, 1)
    assert _INCR(client, [keys[0]], [], batch=True) == 1
    # Every node's link up and both scripts loaded (NOSCRIPT would take a second trip).
    run_scripts(client, [(_INCR, [key], []) for key in keys]
                + [(_ECHO_OR_FAIL, [key], ["up"]) for key in keys], batch=True)
    before = _batches(client)
    spawned: list[Any] = []
    real_spawn = gevent.spawn
    monkeypatch.setattr(gevent, "spawn", lambda *a, **kw: spawned.append(a) or real_spawn(
        *a, **kw))
    calls = [(_INCR, [key], []) for key in keys] + [(_ECHO_OR_FAIL, [keys[-1]], ["fail"])]
    results = run_scripts(client, calls, raise_on_error=False, batch=True)
    assert results[0] == 3 and results[1:-1] == [2] * (len(keys) - 1)
    assert isinstance(results[-1], redis.ResponseError)
    assert _batches(client) - before == len(keys)  # one round trip on each node
    assert spawned == []


def test_a_lost_reply_on_one_node_fails_only_that_nodes_calls(client, prefix, monkeypatch):
    keys = keys_on_every_node(client, prefix, 1)
    if len(keys) < 2:
        pytest.skip("one server: a lost reply fails the whole pipeline (test above)")
    run_scripts(client, [(_INCR, [key], []) for key in keys], batch=True)  # every link up
    fault = LostReplies(monkeypatch, port_of(client, keys[0]))
    results = run_scripts(client, [(_COUNT, [key], []) for key in keys],
                          raise_on_error=False, batch=True)
    assert fault.left == 0
    assert isinstance(results[0], redis.ConnectionError)
    assert results[1:] == [["counted", 2]] * (len(keys) - 1)
    assert [int(client.get(key)) for key in keys] == [2] * len(keys)  # each ran once


def test_the_link_comes_back_after_the_server_drops_it(client, prefix):
    key = keys_on_every_node(client, prefix, 1)[0]

    def incr() -> int:
        return _INCR(client, [key], [], batch=True)

    assert incr() == 1
    node_client = next(c for c in _node_clients(client)
                       if port_of(client, key) == c.connection_pool.connection_kwargs["port"])
    own = coalesce._coalescers[node_client]._connection
    own.send_command("CLIENT", "ID")
    own_id = own.read_response()
    assert node_client.client_kill_filter(_id=own_id) == 1
    gevent.sleep(0.05)
    # The write after the drop may or may not reach the server: either the caller is
    # told (and nothing ran) or the script runs; never twice, and the next call works.
    try:
        incr()
    except redis.ConnectionError:
        pass
    before = int(client.get(key))
    assert incr() == before + 1


def test_without_patched_sockets_there_is_no_batching():
    assert not coalesce.enabled()  # the test process does not patch
    made = connect(require_service("redis"), pool_size=2)
    try:
        assert coalesce.coalescer_for(made) is None
    finally:
        made.close()


def test_calls_that_do_not_ask_for_batching_take_a_pooled_connection(client, prefix):
    key = keys_on_every_node(client, prefix, 1)[0]
    greenlets = [gevent.spawn(run_scripts, client, [(_INCR, [key], [])]) for _ in range(5)]
    gevent.joinall(greenlets, raise_error=True)
    assert sorted(g.value[0] for g in greenlets) == [1, 2, 3, 4, 5]
    assert _INCR(client, [key], []) == 6
    assert _batches(client) == 0


_GEVENT_PROCESS = """
from gevent import monkey
monkey.patch_all()
import os, gevent
import storage.redis_coalesce as coalesce
from storage.redis_conn import Script, connect, run_scripts

assert coalesce.enabled()
slow = Script("local t = redis.call('TIME') "
              "local start = t[1] * 1000000 + t[2] "
              "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000 "
              "return 'slow'")
echo = Script("return ARGV[1]")
client = connect(os.environ['URL'], cluster=False, pool_size=2)
key = os.environ['KEY']
for script in (slow, echo):
    client.script_load(script.source)
first = gevent.spawn(run_scripts, client, [(slow, [key], [])], batch=True)
gevent.sleep(0.1)  # written; the server is busy with it
others = [gevent.spawn(run_scripts, client, [(echo, [key], [str(i)])], batch=True)
          for i in range(5)]
gevent.sleep(0.1)
coalescer = coalesce.coalescer_for(client)
print('queued', len(coalescer._queue), 'writes', coalescer.batches)
gevent.joinall([first, *others], raise_error=True)
print('replies', first.value, [g.value for g in others], 'writes', coalescer.batches)
"""


def test_in_a_gevent_process_calls_made_meanwhile_share_the_next_write():
    url = require_service("redis")
    env = {**os.environ, "URL": url, "KEY": f"sbtest-{uuid.uuid4().hex[:10]}:k"}
    done = subprocess.run([sys.executable, "-c", _GEVENT_PROCESS], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "queued 5 writes 1"  # waiting for the slow batch's reply
    assert lines[1] == "replies ['slow'] [['0'], ['1'], ['2'], ['3'], ['4']] writes 2"


def test_every_round_trip_of_a_send_goes_in_a_batch(client, prefix, monkeypatch):
    """The claim and turn, the message's record, the members' appends and the close: on
    one server the last three are one script; on a Cluster each is its nodes' batches.
    None takes a pooled connection of its own."""
    from storage.broker_redis import RedisBroker
    from storage.history import Message
    from storage.persist_buffer import PersistBuffer
    from storage.state_redis import RedisState
    from workers.queue import RqJobQueue

    state = RedisState(client, prefix=prefix)
    broker = RedisBroker(client, prefix=prefix)
    buffer = PersistBuffer(client, prefix, shards=1)
    jobs = RqJobQueue(buffer, queue=None, state=state)
    monkeypatch.setattr(jobs, "schedule", lambda shard: None)  # no RQ queue here

    def send(n: int) -> None:
        with state.sending(93, f"b{n}", 77, floor=lambda: 0, rate=100.0, burst=10,
                           ttl=60.0) as sending:
            assert sending.turn is not None
            message = Message(id=7000 + n, conversation_id=77, seq=sending.turn.seq,
                              sender_id=93, client_msg_id=f"b{n}", text="hi", created_at=1)
            sending.message = json.dumps(message.to_json())
            sending.persist = jobs.prepare_persist(message, [93, 94])
            sending.turn.new_last_id = message.id
            sending.fan_out = (broker, [93, 94], {"type": "test", "data": {"n": n}})

    start = {user: broker.tip(user) for user in (93, 94)}
    send(1)  # starts the conversation's counter (from the floor, once) and loads scripts
    pooled: list[Any] = []
    recording = [True]
    for pool_class in (redis.ConnectionPool, redis.BlockingConnectionPool):
        def get_connection(pool: Any, *a: Any, real: Any = pool_class.get_connection,
                           **kw: Any) -> Any:
            if recording[0]:
                pooled.append(pool)
            return real(pool, *a, **kw)
        monkeypatch.setattr(pool_class, "get_connection", get_connection)
    before = _batches(client)
    send(2)
    recording[0] = False
    assert pooled == []
    assert _batches(client) > before
    assert [m.id for m in buffer.tail(77)] == [7001, 7002]
    for user in (93, 94):
        assert [e["data"]["n"] for e in broker.read(user, start[user], 10).events] == [1, 2]


_GEVENT_STOP = """
from gevent import monkey
monkey.patch_all()
import os, time, gevent
import storage.redis_coalesce as coalesce
from storage.redis_conn import Script, connect, run_scripts

busy = Script("local t = redis.call('TIME') "
              "local start = t[1] * 1000000 + t[2] "
              "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 600000 "
              "return 'busy'")
echo = Script("return ARGV[1]")
client = connect(os.environ['URL'], cluster=False, pool_size=2,
                 socket_timeout=float(os.environ['SOCKET_TIMEOUT']))
key = os.environ['KEY']
for script in (busy, echo):
    client.script_load(script.source)
callers = [gevent.spawn(run_scripts, client, [(busy, [key], [])], batch=True)]
gevent.sleep(0.1)  # written; the server is busy with it
callers += [gevent.spawn(run_scripts, client, [(echo, [key], [str(i)])], batch=True)
            for i in range(3)]
gevent.sleep(0.05)
start = time.monotonic()
if os.environ['KILL'] == '1':
    coalesce.coalescer_for(client).close()
gevent.joinall(callers)
print(time.monotonic() - start < 1.0, sorted({type(g.exception).__name__ for g in callers}))
time.sleep(0.6)  # the server is done with the busy script
print(run_scripts(client, [(echo, [key], ['again'])], batch=True))
"""


@pytest.mark.parametrize(("kill", "socket_timeout", "expected"), [
    ("1", "5", "True ['ConnectionError']"),  # the batch's greenlet was stopped
    ("0", "0.2", "True ['TimeoutError']"),  # its read timed out: it answers everyone
])
def test_callers_never_wait_past_the_batch_greenlet_or_its_socket_timeout(
        kill, socket_timeout, expected):
    """Callers wait for their answer with no timer of their own: the greenlet answers
    each one, whether its read times out or it is stopped with answers outstanding
    (then a later call starts a new one)."""
    url = require_service("redis")
    env = {**os.environ, "URL": url, "KEY": f"sbtest-{uuid.uuid4().hex[:10]}:k",
           "KILL": kill, "SOCKET_TIMEOUT": socket_timeout}
    done = subprocess.run([sys.executable, "-c", _GEVENT_STOP], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [expected, "['again']"]
