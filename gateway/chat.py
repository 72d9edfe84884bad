"""Sending, paging, read receipts and typing: the message flow, apart from transports.

Both the HTTP POST and the WebSocket ``send`` frame call :func:`send_message`, so the
two give the same result, including for retries.
"""

from __future__ import annotations

import json
import time

import gevent
from sqlalchemy.exc import IntegrityError

from gateway import metrics
from gateway.conversations import member_ids, require_member_fast
from gateway.errors import conflict, not_found, too_many
from gateway.services import Services, services
from storage.events import EventType, event
from storage.history import Message, Watermark
from storage.history_sql import SqlHistoryStore
from storage.state import SEND_CLAIM_HOLD, SEND_TURN_TIMEOUT, Sending
from storage.state_memory import LockTimeout


def send_message(sender_id: int, conversation_id: int, client_msg_id: str,
                 text: str) -> tuple[Message, bool]:
    """Store and fan out a message; a retry of the same client_msg_id returns the first.

    Returns (message, created). The message is acknowledged only after it is durable.
    """
    svc = services()
    members = require_member_fast(conversation_id, sender_id)
    # Concurrent retries of one client_msg_id wait here for the first to settle.
    deadline = time.monotonic() + SEND_CLAIM_HOLD
    wait = 0.005
    while True:
        outcome, remembered, message, created = _attempt(
            svc, sender_id, conversation_id, members, client_msg_id, text)
        if outcome == "claimed":
            break
        if outcome == "limited":
            raise too_many("sending too fast; retry with the same client_msg_id")
        if outcome == "sent":
            return _same_conversation(Message.from_json(json.loads(remembered or "")),
                                      conversation_id), False
        if time.monotonic() >= deadline:
            raise LockTimeout(f"send {client_msg_id}")
        gevent.sleep(wait)
        wait = min(wait * 2, 0.1)
    if not created:
        return _same_conversation(message, conversation_id), False
    metrics.message_sent()
    # Step 5 (push to members with no live connection): only queued, never sent here.
    svc.notifier.message_created(message, members)
    return message, True


def _attempt(svc: Services, sender_id: int, conversation_id: int, members: list[int],
             client_msg_id: str, text: str) -> tuple[str, str | None, Message | None, bool]:
    """One try: the claim's outcome ("claimed", "sent", "pending" or "limited"), the
    remembered message when "sent", and when "claimed" the message and whether this
    call made it. In one round trip where the engine can, else in the send's turn."""
    settings = svc.settings
    if svc.one_trip is not None:
        quick = svc.one_trip.send(sender_id, conversation_id, client_msg_id, text, members,
                                  rate=settings.send_rate_per_second,
                                  burst=settings.send_rate_burst,
                                  ttl=settings.client_msg_id_ttl)
        if quick is not None:
            if quick.outcome == "created":
                return "claimed", None, quick.message, True
            return quick.outcome, quick.value, None, False
    message, created = None, False
    with svc.state.sending(sender_id, client_msg_id, conversation_id,
                           floor=lambda: svc.history.last_seq(conversation_id),
                           rate=settings.send_rate_per_second,
                           burst=settings.send_rate_burst,
                           ttl=settings.client_msg_id_ttl,
                           timeout=SEND_TURN_TIMEOUT) as sending:
        outcome, remembered = sending.claim.outcome, sending.claim.value
        if outcome == "claimed":
            message, created = _create(svc, sending, sender_id, conversation_id, members,
                                       client_msg_id, text)
    return outcome, remembered, message, created


def _same_conversation(existing: Message, conversation_id: int) -> Message:
    if existing.conversation_id != conversation_id:
        raise conflict("client_msg_id was already used in another conversation",
                       "client_msg_id_reused")
    return existing


def _create(svc: Services, sending: Sending, sender_id: int, conversation_id: int,
            members: list[int], client_msg_id: str, text: str) -> tuple[Message, bool]:
    """The new message, stored and fanned out in this send's turn (one writer per
    conversation at a time, so log order matches seq order)."""
    turn = sending.turn
    assert turn is not None
    message = Message(id=svc.ids.next_id(turn.last_id), conversation_id=conversation_id,
                      seq=turn.seq, sender_id=sender_id, client_msg_id=client_msg_id,
                      text=text, created_at=int(time.time() * 1000))
    # The durability point: nothing is acknowledged before it. Persisting also moves
    # the sender's read mark to this message (writing means having read). A queue
    # that can leaves it to the send's close (with Redis on one server, the record,
    # the fan-out and the claim's settling are one atomic script; else the record is
    # made first as the turn ends).
    prepared = svc.jobs.prepare_persist(message, members)
    if prepared is not None:
        sending.persist = prepared
    else:
        try:
            svc.jobs.persist(message, members)
        except IntegrityError:
            # Only the embedded engine gets here: its idempotency records died with the
            # last process, and SQLite's unique (sender, client_msg_id) caught a retry
            # of a message sent before the restart. Answer with that message.
            if not isinstance(svc.history, SqlHistoryStore):
                raise
            original = svc.history.find_by_client_msg_id(sender_id, client_msg_id)
            if original is None:
                raise
            sending.message = json.dumps(original.to_json())
            return original, False
    # Once durable it is the answer to retries, even if the fan-out fails part-way; a
    # message that never became durable was not sent, so a retry may send it again.
    sending.message = json.dumps(message.to_json())
    turn.new_last_id = message.id
    # Appended as the turn ends (in its closing round trip where the engine can).
    sending.fan_out = (svc.broker, members, event(EventType.MESSAGE_CREATED, message.to_json()))
    return message, True


def history_page(user_id: int, conversation_id: int, *, before: int | None,
                 after: int | None, around: int | None, limit: int) -> list[Message]:
    require_member_fast(conversation_id, user_id)
    try:
        return services().history.page(conversation_id, before=before, after=after,
                                        around=around, limit=limit)
    except KeyError:
        raise not_found("anchor message") from None


def mark_read(user_id: int, conversation_id: int, message_id: int) -> Watermark:
    svc = services()
    require_member_fast(conversation_id, user_id)
    message = svc.history.get(conversation_id, message_id)
    if message is None:
        raise not_found("message")
    previous = svc.history.watermarks(conversation_id, [user_id]).get(user_id)
    mark = svc.history.set_watermark(Watermark(conversation_id, user_id, message.seq,
                                               message.id, int(time.time() * 1000)))
    if previous is None or mark.seq > previous.seq:
        svc.broker.append(member_ids(conversation_id), event(EventType.RECEIPT, {
            "conversation_id": conversation_id, "user_id": user_id, "seq": mark.seq,
            "message_id": str(mark.message_id), "at": mark.updated_at}))
    return mark


def typing(user_id: int, conversation_id: int) -> bool:
    """Tell the other members; False when rate-limited (typing is best-effort)."""
    svc = services()
    require_member_fast(conversation_id, user_id)
    interval = svc.settings.typing_interval
    if not svc.state.allow(f"rate:typing:{user_id}:{conversation_id}", 1 / interval, 1):
        return False
    others = [u for u in member_ids(conversation_id) if u != user_id]
    svc.broker.publish_ephemeral(others, event(EventType.TYPING, {
        "conversation_id": conversation_id, "user_id": user_id,
        "expires_in": interval * 2.5}))
    return True


