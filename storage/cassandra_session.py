"""A cassandra-driver session that is safe to hold across gunicorn's fork.

Nothing connects in the constructor: gunicorn builds the app before it forks workers,
and a driver session (threads, sockets, an event loop) does not survive a fork. The
session is created on first use in each process, under a lock, and created again if the
process id changed. Per-session setup (preparing statements) runs once per session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cassandra import ConsistencyLevel, ProtocolVersion
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

T = TypeVar("T")


def connection_class() -> type | None:
    """GeventConnection when gevent patched sockets (the gunicorn worker), else the default.

    The driver's default reactor (libev, else asyncore) runs its own IO thread, which
    under gevent would block the hub; the gevent reactor cooperates with it instead.
    """
    try:
        from gevent import monkey
    except ImportError:
        return None
    if monkey.is_module_patched("socket"):
        from cassandra.io.geventreactor import GeventConnection

        return GeventConnection
    from cassandra.cluster import DefaultConnection

    return DefaultConnection


def parse_hosts(hosts: str | Sequence[str], default_port: int) -> tuple[list[str], int]:
    """"a,b:9142" -> (["a", "b"], 9142). The driver takes one port for all contact points."""
    entries = [h.strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts)]
    names: list[str] = []
    ports = set()
    for entry in filter(None, entries):
        name, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        names.append(name)
        if port:
            ports.add(int(port))
    if not names:
        raise ValueError("no Cassandra hosts given")
    if len(ports) > 1:
        raise ValueError(f"Cassandra hosts use different ports: {sorted(ports)}")
    return names, ports.pop() if ports else default_port


@dataclass
class _Live(Generic[T]):
    pid: int
    cluster: Cluster
    session: Session
    prepared: T | None = None


class LazySession(Generic[T]):
    """One driver session per process, plus ``setup(session)``'s result, made on demand."""

    def __init__(self, hosts: str | Sequence[str], setup: Callable[[Session], T], *,
                 port: int = 9042, consistency: str = "LOCAL_QUORUM", local_dc: str = "",
                 request_timeout: float = 10.0) -> None:
        self.contact_points, self.port = parse_hosts(hosts, port)
        self.consistency = ConsistencyLevel.name_to_value[consistency.upper()]
        self.local_dc = local_dc
        self.request_timeout = request_timeout
        self._setup = setup
        self._live: _Live[T] | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def session(self) -> Session:
        """This process's session, connected but without setup (schema commands use it)."""
        return self._connected().session

    def prepared(self) -> tuple[Session, T]:
        """This process's session and what ``setup`` made for it (run once per session)."""
        live = self._connected()
        if live.prepared is None:
            with self._lock:
                if live.prepared is None:
                    live.prepared = self._setup(live.session)
        return live.session, live.prepared

    def close(self) -> None:
        live, self._live = self._live, None
        if live is not None and live.pid == os.getpid():
            live.cluster.shutdown()

    def _connected(self) -> _Live[T]:
        live = self._live
        if live is not None and live.pid == os.getpid():
            return live
        if self._lock_pid != os.getpid():
            # A lock inherited through fork may be held by a thread that does not exist
            # here; this process gets its own.
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        with self._lock:
            if self._live is None or self._live.pid != os.getpid():
                # An inherited cluster is dropped, not shut down: its threads stayed in
                # the parent, and shutting it down here would close sockets it still uses.
                self._live = self._connect()
            return self._live

    def _connect(self) -> _Live[T]:
        profile = ExecutionProfile(
            # Token-aware routing sends each statement to a replica of its partition;
            # DC-aware keeps traffic (and LOCAL_* quorums) in the local data centre.
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            consistency_level=self.consistency,
            # Lightweight transactions (read marks) agree within the local DC only.
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=self.request_timeout)
        cluster = Cluster(
            contact_points=self.contact_points, port=self.port,
            connection_class=connection_class(),
            # v4, not v5: the driver frames v5 in pure Python (segments, CRC24 per
            # frame), which cost a fifth of persistence throughput in
            # bench/persist_drain.py (2,846 vs 3,538 msg/s). v4 is served by Cassandra
            # 2.2 to 5.0; naming it skips the driver's version negotiation.
            protocol_version=ProtocolVersion.V4,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        return _Live(os.getpid(), cluster, cluster.connect())


def run_concurrently(session: Session, work: list[tuple[Any, Any]],
                     concurrency: int = 512) -> None:
    """Execute (statement, parameters) pairs, up to ``concurrency`` in flight; once all
    have finished, raise the first error.

    Every request is issued from the calling thread and then awaited. The driver's
    execute_concurrent instead issues each next request from the IO thread's completion
    callback, which serialises the work on that one thread: 4,110 against 3,538
    writes-heavy messages/s in bench/persist_drain.py (every request here is an
    idempotent write or a read, so the ones after a failure may run to completion).
    """
    for start in range(0, len(work), concurrency):
        futures = [session.execute_async(statement, params)
                   for statement, params in work[start:start + concurrency]]
        error: Exception | None = None
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest
                error = error or exc
        if error is not None:
            raise error
