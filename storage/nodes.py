"""NodeRegistry: which gateway workers are alive, where clients reach them, how loaded.

Contract: each gateway *worker* keeps one entry (``member`` names the worker, ``url`` its
node) alive by calling ``register`` more often than ``ttl``; an entry not refreshed for
``ttl`` seconds is gone from ``live()`` (a crashed or killed worker drops out by itself),
and ``remove`` takes it out at once (a draining worker). Several workers share a node
URL: readers sum them per node (see :func:`by_node`).
"""

from __future__ import annotations

import abc
import time
from typing import NamedTuple


class WorkerEntry(NamedTuple):
    member: str  # "<url>#<host>:<pid>": unique per worker process
    url: str  # the node's public base URL
    connections: int  # live connections on this worker (the Hub's subscriptions)


class NodeLoad(NamedTuple):
    url: str
    connections: int  # summed over the node's live workers
    workers: int

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "connections": self.connections, "workers": self.workers}


class NodeRegistry(abc.ABC):
    @abc.abstractmethod
    def register(self, entry: WorkerEntry, ttl: float) -> None:
        """Create or refresh this worker's entry for another ``ttl`` seconds."""

    @abc.abstractmethod
    def remove(self, member: str) -> None:
        """Drop this worker's entry now (drain)."""

    @abc.abstractmethod
    def live(self) -> list[WorkerEntry]:
        """Every entry refreshed within its ttl."""


class MemoryNodeRegistry(NodeRegistry):
    """One process: the only node it can know is itself (the embedded engine's limit)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[WorkerEntry, float]] = {}

    def register(self, entry: WorkerEntry, ttl: float) -> None:
        self._entries[entry.member] = (entry, time.monotonic() + ttl)

    def remove(self, member: str) -> None:
        self._entries.pop(member, None)

    def live(self) -> list[WorkerEntry]:
        now = time.monotonic()
        return [entry for entry, until in self._entries.values() if until > now]


def by_node(entries: list[WorkerEntry]) -> list[NodeLoad]:
    """Workers summed per node URL, least loaded first (per worker, then by URL)."""
    totals: dict[str, list[int]] = {}
    for entry in entries:
        total = totals.setdefault(entry.url, [0, 0])
        total[0] += entry.connections
        total[1] += 1
    nodes = [NodeLoad(url, connections, workers)
             for url, (connections, workers) in totals.items()]
    # Per worker: a node running more workers takes proportionally more clients.
    return sorted(nodes, key=lambda n: (n.connections / n.workers, n.url))
