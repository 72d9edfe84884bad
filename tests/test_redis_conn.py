"""Scripts are sent once, on standalone Redis and on a Cluster (real servers).

A script whose reply is lost with its connection may have run. Sending it again would
run an append or a counter twice, so the error goes to the caller instead. These tests
lose a reply after the server answered it (the server really ran the script) and count
how many times it ran.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from storage.redis_conn import (
    QuickCheckParser,
    RedisClient,
    Script,
    connect,
    delete_prefix,
    run_scripts,
)
from storage.state_redis import RedisState
from tests.services import require_service

pytestmark = pytest.mark.redis

# Returns a marker the fault below recognises, so connection set-up and health-check
# replies on the same socket are never the ones lost.
_COUNT = Script("return {'counted', redis.call('INCR', KEYS[1])}")


@pytest.fixture(params=["redis", "redis-cluster"])
def client(request) -> Iterator[RedisClient]:  # type: ignore[no-untyped-def]
    made = connect(require_service(request.param), pool_size=8, health_check_interval=0)
    yield made
    made.close()


def fresh_prefix(client: RedisClient) -> Iterator[str]:
    """A key prefix for one test; its keys are deleted after it."""
    name = f"sbtest-{uuid.uuid4().hex[:10]}"
    yield name
    delete_prefix(client, name + ":*")


@pytest.fixture
def prefix(client: RedisClient) -> Iterator[str]:
    yield from fresh_prefix(client)


def keys_on_every_node(client: RedisClient, prefix: str, per_node: int = 2) -> list[str]:
    """Keys spread so that each primary (or the one server) holds ``per_node``."""
    if not isinstance(client, RedisCluster):
        return [f"{prefix}:{{k{i}}}:n" for i in range(per_node)]
    wanted = {node.name: per_node for node in client.get_primaries()}
    keys: list[str] = []
    i = 0
    while any(wanted.values()):
        key = f"{prefix}:{{k{i}}}:n"
        name = client.get_node_from_key(key).name
        if wanted[name]:
            wanted[name] -= 1
            keys.append(key)
        i += 1
    return keys


def port_of(client: RedisClient, key: str) -> int:
    if isinstance(client, RedisCluster):
        return int(client.get_node_from_key(key).port)
    return int(client.connection_pool.connection_kwargs["port"])


class LostReplies:
    """Makes a connection to ``port`` read a reply, then fail as if the link had
    dropped before the reply arrived: the command ran, its caller cannot know. The
    reply lost is a script's (by its marker), or the one to a command ``sent`` matches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, port: int, times: int = 1,
                 sent: Callable[[tuple[Any, ...]], bool] | None = None) -> None:
        self.port = port
        self.left = times
        real_send = redis.connection.Connection.send_command
        real_read = redis.connection.Connection.read_response

        def send_command(conn: Any, *args: Any, **kwargs: Any) -> Any:
            conn.sbtest_sent = args
            return real_send(conn, *args, **kwargs)

        def lost(conn: Any, reply: Any) -> bool:
            if sent is not None:
                return sent(getattr(conn, "sbtest_sent", ()))
            return isinstance(reply, list) and bool(reply) and reply[0] == "counted"

        def read_response(conn: Any, *args: Any, **kwargs: Any) -> Any:
            reply = real_read(conn, *args, **kwargs)
            if self.left and conn.port == self.port and lost(conn, reply):
                self.left -= 1
                conn.disconnect()
                raise redis.ConnectionError("connection lost after the reply (test)")
            return reply

        monkeypatch.setattr(redis.connection.Connection, "send_command", send_command)
        monkeypatch.setattr(redis.connection.Connection, "read_response", read_response)


def count(client: RedisClient, key: str) -> int:
    return int(client.get(key) or 0)


def test_a_script_whose_reply_is_lost_ran_once_and_the_caller_is_told(
        client, prefix, monkeypatch):
    key = keys_on_every_node(client, prefix, 1)[0]
    fault = LostReplies(monkeypatch, port_of(client, key))
    with pytest.raises(redis.ConnectionError):
        _COUNT(client, [key], [])
    assert fault.left == 0
    assert count(client, key) == 1  # ran once: not sent again behind the caller's back
    assert _COUNT(client, [key], []) == ["counted", 2]  # the client is usable after


def test_a_script_pipeline_losing_one_nodes_replies_runs_each_script_once(
        client, prefix, monkeypatch):
    keys = keys_on_every_node(client, prefix)
    lost = keys[0]
    lost_port = port_of(client, lost)
    LostReplies(monkeypatch, lost_port)
    calls = [(_COUNT, [key], []) for key in keys]
    if isinstance(client, RedisCluster):
        # One pipeline per node: only the calls sent over the lost link report it.
        results = run_scripts(client, calls, raise_on_error=False)
        for key, result in zip(keys, results, strict=True):
            if port_of(client, key) == lost_port:
                assert isinstance(result, redis.ConnectionError), (key, result)
            else:
                assert result == ["counted", 1], (key, result)
    else:
        with pytest.raises(redis.ConnectionError):  # one link carried them all
            run_scripts(client, calls, raise_on_error=False)
    # Every script reached its server and ran there exactly once, the ones whose
    # replies were lost included.
    assert [count(client, key) for key in keys] == [1] * len(keys)
    with pytest.raises(redis.ConnectionError):
        LostReplies(monkeypatch, lost_port)
        run_scripts(client, [(_COUNT, [lost], [])])
    assert count(client, lost) == 2


def test_a_script_sent_to_a_node_that_no_longer_holds_its_slot_runs_once_where_it_lives(
        client, prefix):
    """A stale slot map (after resharding or failover) sends a script to the wrong
    node, which refuses it with MOVED: that refusal means it did not run, so it is
    sent on to the right node, alone or in a pipeline."""
    if not isinstance(client, RedisCluster):
        pytest.skip("slots exist only on a cluster")
    keys = keys_on_every_node(client, prefix, 1)
    moved = keys[0]
    slot = client.keyslot(moved)
    right = client.get_node_from_key(moved)
    wrong = next(node for node in client.get_primaries() if node.name != right.name)

    def misroute() -> None:
        client.nodes_manager.slots_cache[slot] = [wrong]

    misroute()
    assert _COUNT(client, [moved], []) == ["counted", 1]
    misroute()
    results = run_scripts(client, [(_COUNT, [key], []) for key in keys])
    assert results == [["counted", 2]] + [["counted", 1]] * (len(keys) - 1)
    assert [count(client, key) for key in keys] == [2] + [1] * (len(keys) - 1)


def test_a_lock_whose_reply_was_lost_is_still_taken_by_its_taker(client, prefix, monkeypatch):
    """A cluster client sends a plain command again after a lost reply: the lock's SET
    NX then finds the lock taken - by this very taker - which must not wait out its own
    lock. (A standalone client does not send it again: the lost reply is an error.)"""
    state = RedisState(client, prefix=prefix)
    key = state.keys.lock("members:1")
    fault = LostReplies(monkeypatch, port_of(client, key),
                        sent=lambda args: args[:2] == ("SET", key))
    if not isinstance(client, RedisCluster):
        with pytest.raises(redis.ConnectionError):
            with state.lock("members:1", timeout=2.0):
                pass
    else:
        started = time.monotonic()
        with state.lock("members:1", timeout=2.0):
            took = time.monotonic() - started
            assert client.get(key) is not None
        assert took < 1.0  # did not wait for its own lock to lapse (5 s)
        assert client.get(key) is None  # and released it
    assert fault.left == 0


def _pool(client: RedisClient) -> Any:
    """The connection pool of the one server, or of a Cluster's first primary."""
    if isinstance(client, RedisCluster):
        pool = client.get_primaries()[0].redis_connection.connection_pool
    else:
        pool = client.connection_pool
    return pool


@contextmanager
def checked_out(pool: Any) -> Iterator[Any]:
    conn = pool.get_connection()
    try:
        yield conn
    finally:
        pool.release(conn)


def test_the_parser_checks_for_unread_data_without_the_hub(client):
    with checked_out(_pool(client)) as conn:
        assert isinstance(conn._parser, QuickCheckParser)


def test_a_pooled_connection_left_with_an_unread_reply_is_not_handed_out_dirty(client):
    pool = _pool(client)
    with checked_out(pool) as conn:
        conn.send_command("ECHO", "stale")
        deadline = time.monotonic() + 2
        while not conn.can_read() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert conn.can_read()  # the reply is waiting, unread
    with checked_out(pool) as again:
        again.send_command("ECHO", "fresh")
        assert again.read_response() == "fresh"  # not the stale reply
        assert not again.can_read()


def test_a_pooled_connection_the_server_closed_is_replaced(client):
    pool = _pool(client)
    with checked_out(pool) as conn:
        conn.send_command("CLIENT", "ID")
        own_id = conn.read_response()
    killer = redis.Redis(host=pool.connection_kwargs["host"],
                         port=pool.connection_kwargs["port"])
    try:
        assert killer.client_kill_filter(_id=own_id) == 1
    finally:
        killer.close()
    time.sleep(0.05)
    with checked_out(pool) as again:
        again.send_command("ECHO", "after")
        assert again.read_response() == "after"
