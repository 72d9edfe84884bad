"""SharedState: small pieces of state every worker must agree on.

Counters (per-conversation sequence), mutual exclusion, idempotency records, single-use
tokens and rate limits. The memory implementation serves one process; the Redis one
serves every worker of every node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager


class SharedState(abc.ABC):
    @abc.abstractmethod
    def next_seq(self, conversation_id: int, floor: Callable[[], int]) -> int:
        """The conversation's next sequence number, atomically.

        ``floor`` gives the highest seq already stored; it is consulted only when the
        counter does not exist yet (first use, or after the counter was lost).
        """

    @abc.abstractmethod
    def lock(self, name: str, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Mutual exclusion across every worker sharing this state."""

    @abc.abstractmethod
    def remember(self, key: str, value: str, ttl: float) -> None: ...

    @abc.abstractmethod
    def recall(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def forget(self, key: str) -> None:
        """Drop a remembered value (a cache entry whose source changed)."""

    @abc.abstractmethod
    def claim_once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is claimed within ``ttl``; False after."""

    @abc.abstractmethod
    def allow(self, key: str, rate: float, burst: int) -> bool:
        """Token bucket: ``rate`` per second, at most ``burst`` saved up."""

    @abc.abstractmethod
    def worker_id(self) -> int:
        """This process' id in 0..1023 for message ids, unique among live workers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release leases and connections."""
