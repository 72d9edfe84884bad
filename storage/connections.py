"""ConnectionRegistry: which users have a live connection on any gateway process.

The Hub knows only its own process; push notifications need the answer for every node.
Each gateway process registers its connections here (``open``), renews them while they
last (``renew``, every third of ``ttl``) and releases them when they close (``close``).

Contract: ``live`` is true for a user from ``open`` until ``linger`` seconds after the
last of their connections closed, or ``ttl`` seconds after the last renewal when the
process holding it died without saying so. False negatives cost one extra push; false
positives cost a missed one, bounded by ``ttl``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable


class ConnectionRegistry(abc.ABC):
    def __init__(self, ttl: float = 30.0, linger: float = 10.0) -> None:
        self.ttl = ttl
        self.linger = linger

    @abc.abstractmethod
    def open(self, user_id: int, connection_id: str) -> None:
        """Register a live connection for ``ttl`` seconds."""

    @abc.abstractmethod
    def renew(self, connections: Iterable[tuple[int, str]]) -> None:
        """Extend these (user, connection) entries by another ``ttl``."""

    @abc.abstractmethod
    def close(self, user_id: int, connection_id: str) -> None:
        """The connection ended: it keeps counting for ``linger`` seconds."""

    def close_many(self, connections: Iterable[tuple[int, str]]) -> None:
        """``close`` for several (user, connection) entries."""
        for user_id, connection_id in connections:
            self.close(user_id, connection_id)

    @abc.abstractmethod
    def live(self, user_ids: Iterable[int]) -> set[int]:
        """The users among ``user_ids`` that count as connected now."""
