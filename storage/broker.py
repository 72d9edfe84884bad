"""Broker: per-user event logs with offsets, plus wake-ups to the processes serving them.

Contract (tests/contracts/test_broker_contract.py runs it on every implementation):

* ``append`` gives the event an offset in each user's log, strictly increasing per user
  and assigned atomically, then hands it, with its offset, to the listeners of those
  users in every process (``on_appended``), which may deliver it without a read. A
  listener may miss some (pub/sub is at-most-once): ``read`` stays the authority.
* ``read`` returns the events after a cursor, oldest first, at-least-once: a cursor
  inside the retained window replays everything after it. A cursor older than the
  window, or from another epoch, gets ``reset=True`` and the log's tip: never a gap.
* Ephemeral events have no offset, reach only listeners live at that moment, and may
  be dropped (at-most-once).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol


class LogRead(NamedTuple):
    events: list[dict[str, Any]]  # each {"id": cursor, "type": ..., "data": ...}
    cursor: str  # where the next read starts
    reset: bool  # the given cursor was too old or from another epoch


class Appended(NamedTuple):
    """An event just appended to one user's log: exactly what ``read`` returns at
    ``offset`` of ``epoch`` (as ``{"id": "<epoch>:<offset>", **payload}``)."""
    user_id: int
    epoch: str
    offset: int
    payload: dict[str, Any]
    # ``payload`` as JSON, when the broker has it at hand (see events.WireEvent)
    payload_json: str | None = None


class Listener(Protocol):
    """What a gateway process registers to hear about its users (the Hub)."""

    def on_appended(self, events: Iterable[Appended]) -> None: ...

    def on_wake(self, user_ids: Iterable[int]) -> None:
        """Anything may have been appended (e.g. after a pub/sub reconnect): read."""

    def on_ephemeral(self, user_ids: Iterable[int], payload: dict[str, Any]) -> None: ...


class Broker(abc.ABC):
    listener: Listener | None = None

    def attach(self, listener: Listener) -> None:
        """Deliver wake-ups and ephemeral events for this process to ``listener``.

        Workers never attach: they publish through a write-only broker.
        """
        self.listener = listener

    @abc.abstractmethod
    def append(self, user_ids: Iterable[int], payload: dict[str, Any]) -> dict[int, str]:
        """Add a durable event to each user's log; returns each user's new cursor."""

    @abc.abstractmethod
    def read(self, user_id: int, cursor: str | None, limit: int) -> LogRead:
        """Events after ``cursor``; with no cursor, none and the current tip.

        Raises ``storage.events.InvalidCursor`` for a cursor this log never issued.
        """

    @abc.abstractmethod
    def publish_ephemeral(self, user_ids: Iterable[int], payload: dict[str, Any]) -> None:
        """Best-effort delivery to the users' live connections, in every process."""

    def watch(self, user_id: int) -> None:  # noqa: B027 - optional hook
        """This process now serves a live connection of ``user_id``: route its wake-ups here.

        Called by the Hub for a user's first live connection in this process; the
        memory broker needs nothing, the Redis broker subscribes to the user's channel.
        """

    def unwatch(self, user_id: int) -> None:  # noqa: B027 - optional hook
        """The user's last live connection in this process closed."""

    def tip(self, user_id: int) -> str:
        return self.read(user_id, None, 0).cursor

    def at_tip(self, user_id: int, cursor: str) -> bool:
        """True only if nothing follows ``cursor`` in the log and this process is sure
        to hear of the next append (a caller watching the user skips its read). False
        whenever unsure: the caller then reads."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and release connections."""
