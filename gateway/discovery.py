"""Discovery: each worker announces its node's public URL and load; clients ask for a node.

Every gateway worker keeps its own entry in the node registry (Redis for the scaled
engine), refreshed by a greenlet every third of ``discovery_ttl`` with its live
connection count, so a node's load is the sum over its workers and a killed node drops
out within the TTL. A draining worker withdraws its entry at once. ``GET /v1/discover``
recommends the least-loaded live node (see gateway/api/discover.py).

The embedded (memory) engine serves one process, so it only ever knows this node.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time

import gevent
from flask import Flask
from redis.exceptions import RedisError

from config import Settings
from gateway.hub import Hub
from storage.nodes import MemoryNodeRegistry, NodeLoad, NodeRegistry, WorkerEntry, by_node

log = logging.getLogger(__name__)

EXTENSION = "switchboard.discovery"
# Seconds a worker reuses its last registry read. After a node dies every one of its
# clients asks at once; this keeps that storm from becoming one on the registry's slot,
# and is far below the TTL, so it hardly delays a dead node's dropping out.
_READ_CACHE = 1.0


def public_url_for_bind(bind: str) -> str:
    """http://host:port from a gunicorn bind address; a wildcard host becomes our name."""
    if bind.startswith("unix:"):
        raise ValueError(f"cannot derive a public URL from {bind!r}: set SWITCHBOARD_PUBLIC_URL")
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Discovery:
    def __init__(self, registry: NodeRegistry, hub: Hub, settings: Settings) -> None:
        self.registry = registry
        self.hub = hub
        self.ttl = settings.discovery_ttl
        self.public_url = settings.public_url.rstrip("/") or None
        self.member: str | None = None
        self.withdrawn = False
        self._refresher: gevent.Greenlet | None = None
        self._cache: tuple[float, list[NodeLoad]] = (0.0, [])

    @property
    def local(self) -> bool:
        return isinstance(self.registry, MemoryNodeRegistry)

    def load(self) -> int:
        return sum(self.hub.counts_by_transport().values())

    def announce(self, default_url: str) -> None:
        """Register this worker (``default_url`` unless public_url is set) and keep it so.

        The first registration happens before the worker serves, so a node is listed as
        soon as it accepts connections.
        """
        self.public_url = self.public_url or default_url.rstrip("/")
        self.member = f"{self.public_url}#{socket.gethostname()}:{os.getpid()}"
        self.withdrawn = False
        self._register()
        self._refresher = gevent.spawn(self._refresh_forever)

    def _register(self) -> None:
        assert self.member is not None and self.public_url is not None
        self.registry.register(WorkerEntry(self.member, self.public_url, self.load()),
                               self.ttl)

    def _refresh_forever(self) -> None:
        while not self.withdrawn:
            gevent.sleep(self.ttl / 3)
            if self.withdrawn:
                return
            try:
                self._register()
            except RedisError as exc:
                # Two more tries before the entry lapses; a long outage drops the node,
                # and the next refresh after it lists the node again.
                log.warning("discovery refresh failed: %s", exc)

    def withdraw(self) -> None:
        """Leave discovery now (drain, exit): no client is sent here any more."""
        self.withdrawn = True
        if self._refresher is not None:
            self._refresher.kill(block=False)
            self._refresher = None
        if self.member is not None:
            try:
                self.registry.remove(self.member)
            except RedisError as exc:
                log.warning("discovery withdraw failed (the entry lapses anyway): %s", exc)

    def nodes(self, fallback_url: str) -> list[NodeLoad]:
        """Live nodes, least loaded first. ``fallback_url``: this node, if unannounced."""
        if self.local:
            if self.withdrawn:
                return []
            return [NodeLoad(self.public_url or fallback_url.rstrip("/"), self.load(), 1)]
        at, cached = self._cache
        if time.monotonic() - at < _READ_CACHE:
            return cached
        nodes = by_node(self.registry.live())
        if not nodes and self.member is None and not self.withdrawn:
            # Served outside gunicorn (no announcement): this node is alive, it answered.
            nodes = [NodeLoad(self.public_url or fallback_url.rstrip("/"), self.load(), 1)]
        self._cache = (time.monotonic(), nodes)
        return nodes

    @staticmethod
    def recommend(nodes: list[NodeLoad]) -> NodeLoad | None:
        """The least loaded per worker; ties broken at random so clients spread out."""
        if not nodes:
            return None
        least = min(n.connections / n.workers for n in nodes)
        return random.choice([n for n in nodes if n.connections / n.workers == least])


def init_app(app: Flask) -> None:
    from gateway.services import EXTENSION as SERVICES

    svc = app.extensions[SERVICES]
    registry: NodeRegistry
    if svc.engine == "redis":
        from storage.nodes_redis import RedisNodeRegistry

        registry = RedisNodeRegistry(svc.state.client, prefix=svc.settings.redis_prefix)
    else:
        registry = MemoryNodeRegistry()
    app.extensions[EXTENSION] = Discovery(registry, svc.hub, svc.settings)


def discovery(app: Flask) -> Discovery:
    return app.extensions[EXTENSION]
