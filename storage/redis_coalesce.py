"""Scripts from many greenlets sent to one Redis server together.

Under load a gateway worker has dozens of sends waiting on Redis at once. Each used to
check a connection out of the pool, write its scripts, read its replies and hand the
connection back: a write and a read per caller, on both sides of the socket. Here one
greenlet per server (per process) owns one connection. Callers queue their scripts
and wait; the greenlet writes everything queued in one write, reads the replies in
order and gives each caller its own. While a batch is on the wire the next one
gathers, so a lone call waits for nothing more than its round trip, and a busy worker
makes one round trip for a whole burst.

Callers ask for it (``run_scripts(..., batch=True)``), and the send path does: its
scripts arrive in bursts at saturation. Log reads, presence and the registry take
pooled connections; batched, they cost long-poll group fan-out more than they saved.

What a caller sees is what a pipeline of its own gives: replies in order, an error
reply in its place, and a lost link raised as the ConnectionError (or TimeoutError)
that says the scripts may or may not have run. Batching never reorders one caller's
scripts, and never splits them.

Only where gevent has patched the socket module (the gateway's workers): the greenlet
belongs to the hub of the thread that started it, so a threaded process would wait on
a hub that never runs. Everywhere else ``coalescer_for`` answers None and callers
take a pooled connection as before.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from typing import Any

import gevent
import redis
from gevent import monkey
from gevent.event import AsyncResult, Event
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError, ResponseError

try:
    # hiredis packs a command in C. redis-py's own packer, through which it would go,
    # first checks every argument in Python: for a send's script (some sixty arguments)
    # that was three times the cost, and 4 % of a saturated worker.
    from hiredis import pack_command as _pack_command
except ImportError:  # redis-py without hiredis: its packer alone
    _pack_command = None

log = logging.getLogger(__name__)

Command = tuple[Any, ...]


class _Request:
    __slots__ = ("count", "packed", "done")

    def __init__(self, packed: bytes, count: int) -> None:
        self.packed = packed  # the commands in Redis' protocol
        self.count = count
        self.done: AsyncResult = AsyncResult()


class Coalescer:
    """One connection to the server behind ``pool``, written and read by one greenlet."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        kwargs = dict(pool.connection_kwargs)
        if not kwargs.get("socket_timeout"):
            # Callers wait for the greenlet without a timer of their own (one per call
            # was ~1.3 % of a saturated worker): its reads must time out.
            raise ValueError("a coalesced Redis connection needs a socket_timeout")
        self._connection = pool.connection_class(**kwargs)
        self._queue: list[_Request] = []
        self._wake = Event()
        self._runner: gevent.Greenlet | None = None
        self.pid = os.getpid()
        self.batches = 0  # round trips made (tests and the curious)

    def run(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` (each a command's arguments) in the next batch; their
        replies in order, an error reply as its exception in its place."""
        return self.wait(self.submit(commands))

    def submit(self, commands: Sequence[Command]) -> _Request:
        """``run`` in two halves, so one caller can have batches on several servers
        (a Cluster's nodes) in flight at once without a greenlet for each."""
        request = _Request(self._pack(commands), len(commands))
        self._queue.append(request)
        if self._runner is None or self._runner.dead:
            self._runner = gevent.spawn(self._serve)
        self._wake.set()
        return request

    def wait(self, request: _Request) -> list[Any]:
        # No timer: the greenlet answers every request it takes, within its socket's
        # timeouts, and answers what is left if it ends (see _serve).
        return request.done.get()

    def _pack(self, commands: Sequence[Command]) -> bytes:
        """Packed by the caller, so an argument Redis cannot take fails its own call
        (DataError, as redis-py raises), not the batch it would have joined."""
        if _pack_command is None:
            return b"".join(self._connection.pack_commands(commands))
        try:
            return b"".join([_pack_command(tuple(command)) for command in commands])
        except TypeError as exc:
            raise DataError(str(exc)) from exc

    def close(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=False)
            self._runner = None
        self._connection.disconnect()

    def _serve(self) -> None:
        batch: list[_Request] = []
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while self._queue:
                    batch, self._queue = self._queue, []
                    self._flush(batch)
                    batch = []
        finally:
            # Killed (close) or broken by a bug: nobody waits for an answer forever.
            # Requests queued later start a new greenlet (submit).
            orphans, self._queue = [*batch, *self._queue], []
            stopped = RedisConnectionError("the Redis batch stopped before answering")
            for request in orphans:
                if not request.done.ready():
                    request.done.set_exception(stopped)

    def _flush(self, batch: list[_Request]) -> None:
        connection = self._connection
        self.batches += 1
        try:
            connection.check_health()  # a PING first after a quiet spell (reconnects)
            connection.send_packed_command([b"".join([request.packed for request in batch])],
                                           check_health=False)
            for request in batch:
                replies: list[Any] = []
                for _ in range(request.count):
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                request.done.set(replies)
        except Exception as exc:  # the link's state is unknown: every caller is told
            connection.disconnect()
            if not isinstance(exc, RedisError):
                log.exception("Redis batch failed")
                exc = RedisConnectionError(f"Redis batch failed: {exc!r}")
            for request in batch:
                if not request.done.ready():
                    request.done.set_exception(exc)


_coalescers: weakref.WeakKeyDictionary[redis.Redis, Coalescer] = weakref.WeakKeyDictionary()


def enabled() -> bool:
    return monkey.is_module_patched("socket")


def coalescer_for(client: redis.Redis) -> Coalescer | None:
    """The coalescer for ``client``'s server in this process, or None where batching
    does not apply (see the module's description)."""
    if not enabled():
        return None
    coalescer = _coalescers.get(client)
    if coalescer is None or coalescer.pid != os.getpid():
        coalescer = _coalescers[client] = Coalescer(client.connection_pool)
        weakref.finalize(client, coalescer.close)  # a client dropped (a Cluster's re-map)
    return coalescer
