"""JobQueue: where the gateway hands off work that must not block a send."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from storage.history import HistoryStore, Message


class JobQueue(abc.ABC):
    @abc.abstractmethod
    def persist(self, messages: Sequence[Message]) -> None:
        """Make messages durable in history; returns once that is guaranteed to happen."""


class InlineJobQueue(JobQueue):
    """Embedded mode: SQLite is the durability point, so persisting is synchronous.

    The send is acknowledged only after the history row is committed; there is no
    queue to lose.
    """

    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def persist(self, messages: Sequence[Message]) -> None:
        self.history.store(messages)
