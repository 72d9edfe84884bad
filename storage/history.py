"""HistoryStore: the durable record of every message and every read watermark.

Contract (every implementation passes tests/contracts/test_history_contract.py):

* ``store`` is idempotent: the message id is the primary key, so writing the same
  message twice (a retried persist job) leaves one copy, unchanged.
* Pages are returned oldest first, ordered by the per-conversation ``seq``; ``before``
  and ``after`` exclude the anchor, ``around`` includes it and centres on it.
* Watermarks only move forward: setting an older one is a no-op.
* The inbox lists, per user, the messages delivered to them, ordered by message id
  (time order across conversations); appending is idempotent. It serves catch-up for a
  client whose cursor is older than the delivery log's hot window. Implementations may
  expire old entries (Cassandra keeps them 30 days); past that a client resyncs.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    seq: int
    sender_id: int
    client_msg_id: str
    text: str
    created_at: int  # unix milliseconds

    def to_json(self) -> dict:
        # Ids are 63-bit: sent as strings so JavaScript clients do not round them.
        return {"id": str(self.id), "conversation_id": self.conversation_id,
                "seq": self.seq, "sender_id": self.sender_id,
                "client_msg_id": self.client_msg_id, "text": self.text,
                "created_at": self.created_at}

    @classmethod
    def from_json(cls, data: dict) -> Message:
        return cls(id=int(data["id"]), conversation_id=int(data["conversation_id"]),
                   seq=int(data["seq"]), sender_id=int(data["sender_id"]),
                   client_msg_id=str(data["client_msg_id"]), text=str(data["text"]),
                   created_at=int(data["created_at"]))


@dataclasses.dataclass(frozen=True)
class Watermark:
    conversation_id: int
    user_id: int
    seq: int
    message_id: int
    updated_at: int


@dataclasses.dataclass(frozen=True)
class InboxEntry:
    """A message delivered to a user: enough to order it and to fetch it with ``get``."""

    message_id: int
    conversation_id: int
    seq: int


class HistoryStore(abc.ABC):
    """Messages by conversation, paged by message, plus per-user read watermarks."""

    @abc.abstractmethod
    def store(self, messages: Sequence[Message]) -> None:
        """Write messages; rewriting an already stored id changes nothing."""

    @abc.abstractmethod
    def get(self, conversation_id: int, message_id: int) -> Message | None: ...

    @abc.abstractmethod
    def page(self, conversation_id: int, *, before: int | None = None,
             after: int | None = None, around: int | None = None,
             limit: int = 50) -> list[Message]:
        """At most ``limit`` messages, oldest first.

        With no anchor: the latest messages. Anchors are message ids of this
        conversation; an unknown anchor raises ``KeyError``.
        """

    @abc.abstractmethod
    def last_seq(self, conversation_id: int) -> int:
        """The highest stored seq, 0 for an empty conversation."""

    @abc.abstractmethod
    def set_watermark(self, mark: Watermark) -> Watermark:
        """Move the user's read mark forward; returns the mark now in force."""

    @abc.abstractmethod
    def watermarks(self, conversation_id: int,
                   user_ids: Iterable[int] | None = None) -> dict[int, Watermark]: ...

    @abc.abstractmethod
    def inbox_append(self, user_ids: Iterable[int], message: Message) -> None:
        """Add ``message`` to each user's inbox; appending it again changes nothing."""

    @abc.abstractmethod
    def inbox_page(self, user_id: int, after_message_id: int | None = None,
                   limit: int = 100) -> list[InboxEntry]:
        """At most ``limit`` entries with a message id above ``after_message_id`` (all
        when None), oldest first. The anchor need not be in the inbox."""

    def set_watermarks(self, marks: Sequence[Watermark]) -> None:
        """Move several marks forward (batch form of set_watermark, nothing returned)."""
        for mark in marks:
            self.set_watermark(mark)

    def inbox_append_many(self, entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        """inbox_append for several (user_ids, message) pairs."""
        for user_ids, message in entries:
            self.inbox_append(user_ids, message)

    def store_drained(self, batch: Sequence[Message], marks: Sequence[Watermark],
                      entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        """A persist drain's batch: its messages, their senders' marks, the members'
        inboxes. Every part is idempotent, so a drain that fails half-way is simply run
        again; implementations may write it in one transaction or round trip."""
        self.store(batch)
        self.set_watermarks(marks)
        self.inbox_append_many(entries)

    def store_sent(self, messages: Sequence[Message], member_ids: Sequence[int]) -> None:
        """Store messages, move each sender's read mark to them, fill members' inboxes.

        Implementations may do it in one round trip; this default makes three calls.
        """
        self.store(messages)
        for message in messages:
            self.set_watermark(Watermark(message.conversation_id, message.sender_id,
                                         message.seq, message.id, message.created_at))
        if member_ids:
            for message in messages:
                self.inbox_append(member_ids, message)

    def latest(self, conversation_id: int) -> Message | None:
        page = self.page(conversation_id, limit=1)
        return page[-1] if page else None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
