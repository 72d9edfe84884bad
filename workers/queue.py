"""JobQueue: where the gateway hands off work that must not block a send."""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any

from storage.history import HistoryStore, Message
from storage.persist_buffer import PreparedRecord


def persist_now(history: HistoryStore, messages: Sequence[Message],
                member_ids: Sequence[int]) -> None:
    """Write messages, move each sender's read mark to them, fill the members' inboxes."""
    history.store_sent(messages, member_ids)


class JobQueue(abc.ABC):
    @abc.abstractmethod
    def persist(self, message: Message, member_ids: Sequence[int]) -> None:
        """Make a message durable; returns once it is guaranteed to reach history."""

    def prepare_persist(self, message: Message,
                        member_ids: Sequence[int]) -> PreparedRecord | None:
        """``persist`` in a form a send can fold into its close (a PreparedRecord), or
        None when this queue persists only by ``persist``."""
        return None

    def depths(self) -> dict[str, int]:
        """Jobs or entries waiting, by queue (for metrics)."""
        return {}


class InlineJobQueue(JobQueue):
    """Embedded mode: SQLite is the durability point, so persisting is synchronous.

    The send is acknowledged only after the history row is committed; there is no
    queue to lose.
    """

    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def persist(self, message: Message, member_ids: Sequence[int]) -> None:
        persist_now(self.history, [message], member_ids)


class RqJobQueue(JobQueue):
    """Redis mode: durable in Redis (AOF) at once, written to history by RQ workers.

    The message goes into the PersistBuffer (tail + persist stream) in one transaction;
    then a drain job for its shard is queued unless one was queued moments ago (a
    worker drains everything pending, so one job per shard per interval suffices, and
    each worker also checks for backlog on its own every second).
    """

    def __init__(self, buffer: Any, queue: Any, state: Any,
                 schedule_interval: float = 0.5) -> None:
        self.buffer = buffer
        self.queue = queue
        self.state = state
        self.schedule_interval = schedule_interval
        self._asked: dict[int, float] = {}  # shard -> when this process last asked

    def persist(self, message: Message, member_ids: Sequence[int]) -> None:
        self.schedule(self.buffer.record(message, member_ids))

    def prepare_persist(self, message: Message, member_ids: Sequence[int]) -> PreparedRecord:
        keys, args = self.buffer.record_call(message, member_ids)
        shard = self.buffer.shard_of(message.conversation_id)
        def run() -> None:  # the same call, not built (and its JSON encoded) again
            self.buffer.run_record(keys, args, batch=True)  # a send's: see run_scripts
            self.schedule(shard)
        return PreparedRecord(self.buffer.client, keys, args, run=run,
                              done=lambda: self.schedule(shard))

    def schedule(self, shard: int) -> None:
        # Each process asks Redis at most once per shard and interval (a round trip per
        # message saved under load). A message that finds no drain coming waits for the
        # next one or for a worker's own backlog check, every second: late, never lost.
        now = time.monotonic()
        if now - self._asked.get(shard, -self.schedule_interval) < self.schedule_interval:
            return
        self._asked[shard] = now
        if self.state.claim_once(f"persist-scheduled:{shard}", self.schedule_interval):
            from workers.jobs import enqueue_drain

            enqueue_drain(self.queue, shard)

    def depths(self) -> dict[str, int]:
        backlog = self.buffer.backlog()
        return {"persist_backlog": sum(backlog.values()), "rq_persist": len(self.queue)}
