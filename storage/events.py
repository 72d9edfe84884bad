"""Event kinds and cursors: pure data, no IO (encoding lives apart from transports)."""

from __future__ import annotations

import enum
import json
from typing import Any, NamedTuple


class EventType(str, enum.Enum):
    # Durable: stored in the user's log with an offset, replayed on resume.
    MESSAGE_CREATED = "message.created"
    CONVERSATION_CREATED = "conversation.created"
    MEMBER_ADDED = "conversation.member_added"
    MEMBER_REMOVED = "conversation.member_removed"
    RECEIPT = "receipt"
    FRIEND_REQUEST = "friend.request"
    FRIEND_ADDED = "friend.added"
    FRIEND_REMOVED = "friend.removed"
    # Ephemeral: no offset, may be dropped.
    TYPING = "typing"
    PRESENCE = "presence"
    SESSION_REVOKED = "session.revoked"
    # Control: tells the client to resynchronise (its cursor is older than the log).
    RESET = "reset"


def event(kind: EventType, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind.value, "data": data}


class WireEvent(dict):  # type: ignore[type-arg]
    """A logged event that carries its JSON text (``text``), made from the payload's
    JSON the broker already held (the pub/sub message, the log entry, the send script's
    arguments): a delivery then costs no ``json.dumps``, which was ~4 % of a saturated
    gateway worker. Never changed once made, or the text would no longer match."""

    __slots__ = ("text",)


def logged_event(event_id: str, payload: dict[str, Any],
                 payload_json: str | None) -> dict[str, Any]:
    """``{"id": event_id, **payload}``; with ``payload_json`` (exactly ``payload``
    encoded) it also knows its text."""
    made = WireEvent(id=event_id)
    made.update(payload)
    # The id is a cursor ("<epoch>:<offset>", nothing to escape) and goes first, as in
    # the dict: the text is the payload's with the id put in front.
    made.text = (f'{{"id":"{event_id}",{payload_json[1:]}'
                 if payload_json and payload_json.startswith('{"') else None)
    return made


def event_json(payload: dict[str, Any]) -> str:
    """An event's JSON text: the one it carries, if it is a WireEvent that has it."""
    if type(payload) is WireEvent and payload.text is not None:
        return payload.text
    return encode(payload)


def encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class InvalidCursor(ValueError):
    """A cursor that this server could not have issued."""


class Cursor(NamedTuple):
    """Position in one user's log: the log's epoch and the last offset seen.

    The epoch changes whenever a log loses its history (a memory engine restart, an
    expired Redis stream), so an old cursor is answered with a reset instead of being
    silently matched against new offsets.
    """
    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        epoch, sep, offset = raw.partition(":")
        if not sep or not epoch or len(raw) > 80 or not (offset.isascii() and offset.isdigit()):
            raise InvalidCursor(f"invalid cursor {raw!r}")
        if not (epoch.isascii() and epoch.replace("-", "").isalnum()):
            raise InvalidCursor(f"invalid cursor {raw!r}")
        return cls(epoch, int(offset))
