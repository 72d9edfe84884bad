"""Subscriber: this process' pub/sub connections, used only as a doorbell.

One connection per process to a standalone server, or one per primary of a Cluster with
sharded pub/sub (SSUBSCRIBE, Redis 7+): a user's channel carries its hash tag, so it
lives on the shard holding that user's log. Never one connection per client.

Pub/sub is at-most-once: a message published while the connection is down is gone.
That is fine for a doorbell, because the listener recovers by rebuilding every
connection, resubscribing every wanted channel and then calling ``on_recover`` with all
of them, so every live client re-reads its log from its own cursor.

The connections are read cooperatively (gevent's ``select`` on their sockets), so the
loop never blocks other greenlets, whether or not the socket module is monkey-patched.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.select
from gevent.event import Event
from gevent.lock import RLock
from redis.connection import Connection
from redis.exceptions import RedisError

from storage.redis_conn import RedisClient, client_is_cluster

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.1  # seconds; doubled after each failed reconnection
_SUBSCRIBE_BATCH = 500  # channels per SSUBSCRIBE when resubscribing everything


class _Reroute(Exception):
    """The cluster moved a channel's slot: rebuild at once, without backoff."""


class _Link:
    """One raw subscriber connection (to the server, or to one cluster primary)."""

    def __init__(self, name: str, connection: Connection) -> None:
        self.name = name
        self.connection = connection
        self.last_read = time.monotonic()

    def fileno(self) -> int:
        # redis-py keeps the socket private; select() needs its descriptor.
        sock = self.connection._sock  # noqa: SLF001
        if sock is None:
            raise ConnectionError(f"subscriber connection to {self.name} is closed")
        return sock.fileno()


class Subscriber:
    def __init__(self, client: RedisClient, *, sharded: bool,
                 on_message: Callable[[str, str], None],
                 on_recover: Callable[[list[str]], None],
                 health_check_interval: float = 10.0, max_backoff: float = 5.0,
                 confirm_timeout: float = 1.0, name: str = "") -> None:
        self.client = client
        self.name = name  # CLIENT SETNAME, so operators can tell subscribers apart
        self.cluster = client_is_cluster(client)
        self.sharded = sharded
        self.on_message = on_message
        self.on_recover = on_recover
        self.health_check_interval = health_check_interval
        self.max_backoff = max_backoff
        self.confirm_timeout = confirm_timeout
        self.wanted: set[str] = set()
        self.reconnects = 0  # completed recoveries, for health reporting and tests
        self._links: dict[str, _Link] = {}
        self._ready = False
        self._pending: dict[str, Event] = {}
        # Channels the server has confirmed on the current connections, and SUBSCRIBEs
        # still unanswered per channel: a channel is confirmed only once its last one is.
        self._confirmed: set[str] = set()
        self._awaiting: Counter[str] = Counter()
        # Bumped whenever a connection is dropped (whatever was published then is gone)
        # and, in ``changes``, also on every unsubscribe: a caller comparing the two
        # before and after an operation knows no subscription lapsed in between.
        self.link_generation = 0
        self.changes = 0
        # SUNSUBSCRIBEs we sent and whose replies have not come back: a reply beyond
        # these is the server's own, meaning the slot moved (see _handle).
        self._leaving: Counter[str] = Counter()
        self._lock = RLock()  # guards wanted, links and writes to the connections
        self._loop: gevent.Greenlet | None = None
        self._stopping = False

    # --- commands from request greenlets -----------------------------------------------

    def subscribe(self, channel: str) -> None:
        """Subscribe, and wait (briefly) until the server confirms it.

        Waiting closes the race with a caller that reads the log right after: once
        confirmed, any append after that read rings this doorbell.
        """
        with self._lock:
            self.wanted.add(channel)
            confirmed = self._pending.setdefault(channel, Event())
            # Not ready: the (re)build in progress subscribes every wanted channel, and
            # its confirmation releases us just the same.
            if self._ready:
                if not self._send(channel, b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE"):
                    return
                self._awaiting[channel] += 1
        # Bounded: with Redis down, a new connection proceeds and is woken on recovery.
        confirmed.wait(self.confirm_timeout)

    def unsubscribe(self, channel: str) -> None:
        with self._lock:
            self.wanted.discard(channel)
            self._pending.pop(channel, None)
            self._confirmed.discard(channel)
            self.changes += 1
            if self._ready and self._send(
                    channel, b"SUNSUBSCRIBE" if self.sharded else b"UNSUBSCRIBE"):
                self._leaving[channel] += 1

    @property
    def ready(self) -> bool:
        """Connected, with every wanted channel's subscription sent."""
        return self._ready

    def confirmed(self, channel: str) -> bool:
        """Whether everything published on ``channel`` from now on reaches this process
        (until ``link_generation`` changes or the channel is unsubscribed)."""
        return self._ready and channel in self._confirmed

    def _send(self, channel: str, command: bytes) -> bool:
        link = self._links.get(self._route(channel))
        if link is None:
            return False
        try:
            link.connection.send_command(command, channel, check_health=False)
            return True
        except (RedisError, OSError) as exc:
            # The loop notices the broken connection and resubscribes everything.
            log.warning("pub/sub %s %s failed: %s", command.decode(), channel, exc)
            return False

    def _route(self, channel: str) -> str:
        if self.cluster and self.sharded:
            return self.client.get_node_from_key(channel).name  # type: ignore[union-attr]
        return "main"

    # --- the listener loop -------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None:
            self._loop.kill(block=True, timeout=2)
            self._loop = None
        self._close_links(release_waiters=True)

    def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        first = True
        while not self._stopping:
            try:
                recovered = self._build()
                if not first:
                    self.reconnects += 1
                    self._deliver_recovery(recovered)
                first = False
                backoff = _FIRST_BACKOFF
                self._serve()
            except _Reroute as exc:
                log.info("pub/sub rerouting after a cluster change: %s", exc)
                first = False
                self._refresh_topology()
            except (RedisError, OSError) as exc:
                first = False
                self._close_links(release_waiters=True)
                log.warning("pub/sub connection lost (%s); reconnecting in %.1fs", exc, backoff)
                gevent.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self._refresh_topology()

    def _build(self) -> list[str]:
        """Open every link and subscribe every wanted channel; returns those channels."""
        self._close_links()
        links = {}
        for name, connection in self._connections():
            connection.connect()
            links[name] = _Link(name, connection)
        with self._lock:
            self._links = links
            wanted = sorted(self.wanted)
            by_link: dict[str, list[str]] = {}
            for channel in wanted:
                by_link.setdefault(self._route(channel), []).append(channel)
            for name, channels in by_link.items():
                connection = links[name].connection
                commands = self._subscribe_commands(channels)
                connection.send_packed_command(connection.pack_commands(commands),
                                               check_health=False)
            self._awaiting.update(wanted)
            self._ready = True
        return wanted

    def _subscribe_commands(self, channels: list[str]) -> list[tuple[Any, ...]]:
        """Few commands for many channels: SSUBSCRIBE takes only channels of one slot."""
        if not self.sharded:
            return [(b"SUBSCRIBE", *channels[i:i + _SUBSCRIBE_BATCH])
                    for i in range(0, len(channels), _SUBSCRIBE_BATCH)]
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            slot = self.client.keyslot(channel) if self.cluster else 0  # type: ignore[union-attr]
            by_slot.setdefault(slot, []).append(channel)
        return [(b"SSUBSCRIBE", *group[i:i + _SUBSCRIBE_BATCH])
                for group in by_slot.values() for i in range(0, len(group), _SUBSCRIBE_BATCH)]

    def _connections(self) -> Iterable[tuple[str, Connection]]:
        if self.cluster:
            nodes = self.client.get_primaries()  # type: ignore[union-attr]
            if not self.sharded:
                nodes = nodes[:1]  # classic PUBLISH reaches every node of a cluster
            for node in nodes:
                pool = node.redis_connection.connection_pool
                name = node.name if self.sharded else "main"
                yield name, self._raw(pool.connection_kwargs)
        else:
            yield "main", self._raw(self.client.connection_pool.connection_kwargs)

    def links(self) -> list[str]:
        """The nodes this process holds a subscriber connection to."""
        return sorted(self._links)

    def _raw(self, kwargs: dict) -> Connection:
        # The pool's settings, minus what does not apply to a subscribed connection: its
        # PINGs come back as pub/sub messages, so this loop does its own health checks.
        options = {k: v for k, v in kwargs.items()
                   if k not in ("redis_connect_func", "connection_pool")}
        options["health_check_interval"] = 0
        if self.name:
            options["client_name"] = self.name
        return Connection(**options)

    def _serve(self) -> None:
        """Read messages until a connection fails (raises) or the cluster reroutes."""
        interval = self.health_check_interval
        while not self._stopping:
            links = list(self._links.values())
            by_fd = {link.fileno(): link for link in links}
            readable, _, _ = gevent.select.select(list(by_fd), [], [], interval)
            for fd in readable:
                self._drain(by_fd[fd])
            now = time.monotonic()
            for link in links:
                silent = now - link.last_read
                if silent > 3 * interval:
                    raise ConnectionError(f"no reply from {link.name} for {silent:.0f}s")
                if silent > interval:
                    with self._lock:
                        link.connection.send_command(b"PING", check_health=False)

    def _drain(self, link: _Link) -> None:
        connection = link.connection
        while connection.can_read(timeout=0):
            # push_request: under RESP3 (redis-py 8's default) pub/sub messages are push
            # frames, which read_response would otherwise swallow and keep reading past.
            reply = connection.read_response(disconnect_on_error=True, push_request=True)
            link.last_read = time.monotonic()
            self._handle(reply)

    def _handle(self, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        channel = reply[1] if isinstance(reply[1], str) else str(reply[1])
        if kind in ("message", "smessage") and len(reply) == 3:
            try:
                self.on_message(channel, reply[2])
            except Exception:
                log.exception("pub/sub message handler failed")
        elif kind in ("subscribe", "ssubscribe"):
            with self._lock:
                left = self._awaiting[channel] - 1
                if left > 0:
                    self._awaiting[channel] = left
                else:
                    self._awaiting.pop(channel, None)
                    if channel in self.wanted:
                        self._confirmed.add(channel)
            event = self._pending.pop(channel, None)
            if event is not None:
                event.set()
        elif kind == "sunsubscribe":
            if self._leaving[channel] > 0:
                self._leaving[channel] -= 1
                if not self._leaving[channel]:
                    del self._leaving[channel]
            elif channel in self.wanted:
                # Unasked for: the slot moved to another shard during a resharding.
                # Nothing confirmed holds from here until the links are rebuilt.
                self._confirmed.clear()
                self.link_generation += 1
                raise _Reroute(f"{channel} left this shard")

    def _deliver_recovery(self, channels: list[str]) -> None:
        try:
            self.on_recover(channels)
        except Exception:
            log.exception("pub/sub recovery handler failed")

    def _refresh_topology(self) -> None:
        if not self.cluster:
            return
        try:
            self.client.nodes_manager.initialize()  # type: ignore[union-attr]
        except (RedisError, OSError) as exc:
            log.warning("cluster topology refresh failed: %s", exc)

    def _close_links(self, release_waiters: bool = False) -> None:
        with self._lock:
            self._ready = False
            self.link_generation += 1
            self.changes += 1
            self._confirmed.clear()
            self._awaiting.clear()
            links, self._links = self._links, {}
            self._leaving.clear()  # replies on a closed connection never come
            if release_waiters:
                # Nobody waits on a connection that is gone; the recovery wakes them.
                for event in self._pending.values():
                    event.set()
                self._pending.clear()
        for link in links.values():
            try:
                link.connection.disconnect()
            except (RedisError, OSError):
                pass  # already broken: closing is best effort
