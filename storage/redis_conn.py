"""Connecting to Redis (standalone or Cluster) and running Lua scripts on either.

The client is built once per process and passed to each engine (never a module global).
Pool size and every timeout are explicit: redis-py's defaults (100 connections per node,
5 s socket timeout) are wrong for a gevent worker holding thousands of greenlets.
"""

from __future__ import annotations

import hashlib
import select
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import gevent
import redis
from gevent import monkey
from redis._parsers import _HiredisParser
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import HIREDIS_AVAILABLE

from storage import redis_coalesce
from storage.redis_coalesce import coalescer_for

RedisClient = Union[redis.Redis, RedisCluster]  # noqa: UP007 - a runtime alias
LOST_LINK = (RedisConnectionError, RedisTimeoutError)  # a call that may or may not have run

# Pauses between attempts to finish something whose connection failed (None: give up);
# 1.75 s in all, attempts included: a dropped link, not an outage, is what they cover.
LOST_LINK_PAUSES = (0.05, 0.2, 0.5, 1.0, None)
_LOST_LINK_BUDGET = sum(d for d in LOST_LINK_PAUSES if d is not None)


def lost_link_attempts() -> Iterator[int]:
    """Attempt numbers, pausing between them; stops after the last, or early when slow
    attempts (timeouts) would overrun the 1.75 s in all."""
    deadline = time.monotonic() + _LOST_LINK_BUDGET
    for attempt, delay in enumerate(LOST_LINK_PAUSES):
        yield attempt
        if delay is None or time.monotonic() + delay > deadline:
            return
        gevent.sleep(delay)


_real_poll = monkey.get_original("select", "poll")
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer closed its end
_HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL | _POLLRDHUP


class QuickCheckParser(_HiredisParser):
    """hiredis, with the "anything unread?" check made without the hub.

    A pool checks every connection it hands out for unread data, and the pub/sub
    reader asks the same before each read, with a zero-timeout poll. Under gevent that
    poll is gevent's: a watcher per call and a trip through the hub, a twelfth of a
    worker's time on the send path (py-spy, `max`). The original poll with timeout 0
    never blocks. It answers "nothing" and "data" here; a hang-up, an error or a TLS
    socket (which may hold decrypted bytes the poll cannot see) go to redis-py's own
    check, which tells data from a closed connection.
    """

    def can_read(self, timeout: float = 0) -> bool:
        sock, reader = self._sock, self._reader
        if timeout != 0 or sock is None or reader is None or hasattr(sock, "pending"):
            return super().can_read(timeout)
        if reader.has_data():
            return True
        poller = _real_poll()
        poller.register(sock.fileno(), select.POLLIN | _POLLRDHUP)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & _HUNG_UP:
            return super().can_read(timeout)
        return True


class QuickCheckConnection(redis.Connection):
    """A plain TCP connection with QuickCheckParser (a Cluster client takes a
    connection class, not a parser class)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", QuickCheckParser)
        super().__init__(**kwargs)


def is_cluster_url(url: str, connect_timeout: float = 1.0) -> bool:
    """Whether the server at ``url`` is a Redis Cluster node (one ``INFO cluster``)."""
    probe = redis.Redis.from_url(url, socket_timeout=connect_timeout,
                                 socket_connect_timeout=connect_timeout)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()


def connect(url: str, *, pool_size: int = 50, pool_timeout: float = 2.0,
            socket_timeout: float = 2.0, connect_timeout: float = 1.0,
            health_check_interval: float = 10.0, cluster: bool | None = None) -> RedisClient:
    """A client for ``url``; a cluster client when the server says it is in a cluster.

    Each node gets a BlockingConnectionPool of ``pool_size``: an exhausted pool makes a
    greenlet wait up to ``pool_timeout`` for a connection instead of opening another.
    """
    if cluster is None:
        cluster = is_cluster_url(url, connect_timeout)
    options: dict[str, Any] = dict(
        max_connections=pool_size, timeout=pool_timeout, socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout, health_check_interval=health_check_interval,
        decode_responses=True,
        # "auto" (redis-py's default) makes the pool skip its check that a connection it
        # hands out holds no unread reply; such a reply would answer the next command.
        # The notifications are for managed services' failovers, not for these servers.
        maint_notifications_config=MaintNotificationsConfig(enabled=False))
    if HIREDIS_AVAILABLE and not cluster:
        options["parser_class"] = QuickCheckParser
    elif HIREDIS_AVAILABLE and url.startswith("redis://"):
        options["connection_class"] = QuickCheckConnection
    if cluster:
        return RedisCluster.from_url(url, connection_pool_class=redis.BlockingConnectionPool,
                                     **options)
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))


# client type -> is it a cluster client. RedisCluster's metaclass is typing's protocol
# one, whose isinstance check is slow enough to show in a busy send path's profile.
_IS_CLUSTER: dict[type, bool] = {}


def client_is_cluster(client: RedisClient) -> bool:
    kind = type(client)
    known = _IS_CLUSTER.get(kind)
    if known is None:
        known = _IS_CLUSTER[kind] = isinstance(client, RedisCluster)
    return known


def server_major_version(client: RedisClient) -> int:
    info = client.info("server")
    if client_is_cluster(client) and "redis_version" not in info:
        info = next(iter(info.values()))  # a cluster answers per node
    return int(str(info["redis_version"]).split(".")[0])


def delete_prefix(client: RedisClient, pattern: str) -> int:
    """Delete every key matching ``pattern`` on every node (tests and tooling)."""
    deleted = 0
    batch: list[str] = []
    for key in client.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 200:
            deleted += _delete_each(client, batch)
            batch = []
    return deleted + _delete_each(client, batch)


def _delete_each(client: RedisClient, keys: list[str]) -> int:
    # One DEL per key through a pipeline: a multi-key DEL would cross slots in a cluster.
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.delete(key)
    return sum(int(n) for n in pipe.execute())


class Script:
    """A Lua script run by EVALSHA, loaded again after NOSCRIPT (a restarted server).

    Every key a script touches is passed in KEYS and shares one hash tag, so the script
    runs on one Cluster shard. Cluster pipelines refuse redis-py's ``evalsha`` helper,
    so calls go through ``execute_command``, which routes EVALSHA by its first key.

    A script is sent once. Most of them are not idempotent (an append, a counter, a
    claim), and a connection lost after the server ran one cannot tell that from one
    lost before: the ``ConnectionError`` goes to the caller, who knows what a second
    run would do. A standalone client already behaves so (its Retry has 0 retries);
    a cluster client would send the script again up to 10 times, so on a cluster it is
    aimed at its node explicitly, which redis-py runs without those retries (it still
    follows MOVED and ASK, which mean the script did not run).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: RedisClient, keys: Sequence[str], args: Sequence[Any], *,
                 batch: bool = False) -> Any:
        """``batch``: share a round trip with other greenlets' calls (see run_scripts)."""
        if batch and redis_coalesce.enabled():
            return run_scripts(client, [(self, keys, args)], batch=True)[0]
        options: dict[str, Any] = {}
        if client_is_cluster(client):
            options["target_nodes"] = client.get_node_from_key(keys[0])
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args,
                                          **options)
        except NoScriptError:
            client.script_load(self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args,
                                          **options)

    def many(self, client: RedisClient,
             calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run the script once per (keys, args) in one pipeline; results in order."""
        return run_scripts(client, [(self, keys, args) for keys, args in calls])


def run_scripts(client: RedisClient, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
                raise_on_error: bool = True, *, batch: bool = False) -> list[Any]:
    """Run (script, keys, args) calls in one pipeline, in order; results in order.

    ``batch``: in a gevent worker, the pipeline shares a round trip with those of
    other greenlets (storage/redis_coalesce.py). The send path asks for it: its
    scripts come in bursts at saturation, where one round trip for many sends is
    worth the wait for a batch. Other calls (log reads, presence, registry) take a
    pooled connection each: batching them cost more than it saved (long-poll group
    fan-out, docs/benchmarks-history.md).

    Calls that met NOSCRIPT did not run, so they are run again after loading their
    scripts. Raises the first other error, or with ``raise_on_error=False`` returns it
    in its place.
    """
    if not calls:
        return []
    results = _pipeline(client, calls, batch)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
            client.script_load(script.source)
        for index, result in zip(missing, _pipeline(client, [calls[i] for i in missing],
                                                    batch),
                                 strict=True):
            results[index] = result
    if raise_on_error:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results


def _pipeline(client: RedisClient,
              calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
              batch: bool = False) -> list[Any]:
    if client_is_cluster(client):
        return _node_pipelines(client, calls, batch)
    return _send(client, calls, batch)


def _send(client: redis.Redis,
          calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
          batch: bool = False) -> list[Any]:
    coalescer = coalescer_for(client) if batch else None
    if coalescer is not None:
        return coalescer.run(_evalsha(calls))
    pipe = client.pipeline(transaction=False)
    for command in _evalsha(calls):
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def _evalsha(calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]
             ) -> list[tuple[Any, ...]]:
    return [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls]


# Replies saying a node did not run the script: the slot lives elsewhere or is moving.
_REFUSED = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


def _node_pipelines(client: RedisCluster,
                    calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
                    batch: bool = False) -> list[Any]:
    """One plain pipeline per node, each call sent once (see Script); the pipelines go
    in parallel (each on its node's batch when batched, else a greenlet each), so the
    round trip is one, as with redis-py's own.

    redis-py's cluster pipeline sends a call whose connection failed again on its own,
    after it may have run; here that call's result is the error. A call its node
    refused is run again where the slot lives now.
    """
    by_node: dict[str, list[int]] = {}
    nodes = {}
    for index, (_, keys, _) in enumerate(calls):
        node = client.get_node_from_key(keys[0])
        nodes[node.name] = node
        by_node.setdefault(node.name, []).append(index)
    results: list[Any] = [None] * len(calls)
    lost = []

    def take(name: str, indexes: list[int], replies_of: Callable[[], list[Any]]) -> None:
        try:
            replies = replies_of()
        except RedisError as exc:  # the node's link, or its pool: each call's result
            if isinstance(exc, LOST_LINK):
                lost.append(name)
            replies = [exc] * len(indexes)
        for index, reply in zip(indexes, replies, strict=True):
            results[index] = reply

    def send(name: str, indexes: list[int]) -> None:
        take(name, indexes, lambda: _send(client.get_redis_connection(nodes[name]),
                                          [calls[i] for i in indexes], batch))

    coalescers = {name: coalescer_for(client.get_redis_connection(nodes[name]))
                  for name in by_node} if batch and len(by_node) > 1 else {}
    if len(by_node) == 1:
        send(*next(iter(by_node.items())))
    elif coalescers and None not in coalescers.values():
        # Every node's batch in flight at once, waited for in turn: one round trip, as
        # with a greenlet per node, without starting those greenlets.
        pending = [(name, indexes, coalescers[name].submit(_evalsha([calls[i] for i in indexes])))
                   for name, indexes in by_node.items()]
        for name, indexes, request in pending:
            take(name, indexes, lambda: coalescers[name].wait(request))  # noqa: B023 - called at once
    else:
        sending = [gevent.spawn(send, name, indexes) for name, indexes in by_node.items()]
        gevent.joinall(sending)
        for greenlet in sending:
            if greenlet.exception is not None:  # a bug, not Redis: raise it here
                raise greenlet.exception
    if lost:
        client.nodes_manager.initialize()  # a node may have failed over
    for index, reply in enumerate(results):
        if isinstance(reply, _REFUSED):
            script, keys, args = calls[index]
            try:
                results[index] = script(client, keys, args)
            except RedisError as exc:
                results[index] = exc
    return results
