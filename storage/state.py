"""SharedState: small pieces of state every worker must agree on.

Counters (per-conversation sequence), mutual exclusion, idempotency records, single-use
tokens and rate limits. The memory implementation serves one process; the Redis one
serves every worker of every node.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from storage.broker import Broker
    from storage.persist_buffer import PreparedRecord

log = logging.getLogger(__name__)

# How long a send's claim on its client_msg_id holds before a retry may take it over:
# past the longest a send can take (it waits at most SEND_TURN_TIMEOUT for its
# conversation's turn), and short, because a claim stranded by a Redis restart blocks
# that one client_msg_id this long.
SEND_CLAIM_HOLD = 5.0
SEND_TURN_TIMEOUT = 3.0
# How long a conversation's last message id is kept for the next turn: ids only need to
# follow it while clocks could disagree; after a week of silence any clock is past it.
LAST_ID_TTL = 7 * 24 * 3600
# How long a forgotten cache key refuses fills: longer than any database read that could
# have started before the change that made it forgotten.
FORGOTTEN_FOR = 10.0
# What a forgotten key holds meanwhile; never a cached value (those are ids and JSON).
FORGOTTEN = "\x00forgotten"


class Turn:
    """One sender's exclusive turn in a conversation (SharedState.conversation_turn)."""

    __slots__ = ("seq", "last_id", "new_last_id")

    def __init__(self, seq: int, last_id: int | None) -> None:
        self.seq = seq  # this turn's message seq: the conversation's next, atomically
        self.last_id = last_id  # the message id an earlier turn recorded, if any
        self.new_last_id: int | None = None  # set it to record this turn's message id


class SendClaim(NamedTuple):
    """What SharedState.claim_send found.

    ``outcome`` is "sent" (``value``: the message remembered under this key), "pending"
    (another request holds the claim right now), "limited" (the sender is over the rate
    limit) or "claimed" (``token``: the key is this request's to send and then settle).
    """

    outcome: str
    value: str | None = None
    token: str | None = None


class Sending:
    """One send's claim and, when the claim is this request's, its conversation turn
    (SharedState.sending). Set ``message`` once the message is durable: leaving then
    remembers it for retries; left None, the claim is released. Or set ``message`` with
    ``persist`` (a PreparedRecord, storage/persist_buffer.py): leaving makes the message
    durable first - in the close's own atomic script where the engine can - and only
    then remembers it. Set ``fan_out`` to (broker, user ids, event): leaving appends it
    to those logs while the turn is still held (so log order is seq order), before
    ending it."""

    __slots__ = ("claim", "turn", "message", "fan_out", "persist")

    def __init__(self, claim: SendClaim, turn: Turn | None = None) -> None:
        self.claim = claim
        self.turn = turn
        self.message: str | None = None
        self.fan_out: tuple[Broker, list[int], dict[str, Any]] | None = None
        self.persist: PreparedRecord | None = None

    def remembered(self, persisted: bool) -> str | None:
        """What a send that failed part-way settles its claim with: the message if it is
        durable, else nothing (the claim is released and a retry may send it)."""
        return self.message if self.persist is None or persisted else None


class SharedState(abc.ABC):
    @contextmanager
    def sending(self, sender_id: int, client_msg_id: str, conversation_id: int, *,
                floor: Callable[[], int], rate: float, burst: int, ttl: float,
                hold: float = SEND_CLAIM_HOLD,
                timeout: float = SEND_TURN_TIMEOUT) -> Iterator[Sending]:
        """``claim_send``; when claimed, the conversation's turn too. Leaving appends
        ``fan_out`` (unless the block raised), ends the turn (recording
        ``turn.new_last_id`` unless the block raised) and settles the claim with
        ``message``. The result is that of those calls in order; implementations may
        merge their round trips (Redis does)."""
        claim = self.claim_send(sender_id, client_msg_id, rate=rate, burst=burst, hold=hold)
        sending = Sending(claim)
        if claim.outcome != "claimed":
            yield sending
            return
        assert claim.token is not None
        persisted = False
        try:
            with self.conversation_turn(conversation_id, floor, timeout) as turn:
                sending.turn = turn
                yield sending
                if sending.persist is not None:
                    sending.persist.run()
                    persisted = True
                if sending.fan_out is not None:
                    broker, users, payload = sending.fan_out
                    broker.append(users, payload)
        except BaseException:
            self._settle_quietly(sender_id, client_msg_id, claim.token,
                                 sending.remembered(persisted), ttl)
            raise
        self.settle_send(sender_id, client_msg_id, claim.token, sending.message, ttl)

    def _settle_quietly(self, sender_id: int, client_msg_id: str, token: str,
                        message: str | None, ttl: float) -> None:
        """Settle while another error propagates: a claim not settled lapses after its
        hold anyway, and the original error is the one to report."""
        try:
            self.settle_send(sender_id, client_msg_id, token, message, ttl)
        except Exception as exc:  # noqa: BLE001 - any backend's outage
            log.warning("could not settle send %s: %s", client_msg_id, exc)

    @abc.abstractmethod
    def conversation_turn(self, conversation_id: int, floor: Callable[[], int],
                          timeout: float = 10.0) -> AbstractContextManager[Turn]:
        """Exclusive right to add a conversation's next message, across every worker.

        Yields the turn's seq (``floor`` gives the highest seq already stored; it is
        consulted only when the counter does not exist yet: first use, or after it was
        lost) and the last message id recorded by an earlier turn. Leaving records
        ``new_last_id`` (kept a week) unless the block raised. Raises LockTimeout when
        no turn came within ``timeout``.
        """

    @abc.abstractmethod
    def start_conversation(self, conversation_id: int) -> None:
        """A conversation just created has no messages: its seq counter starts at 0
        without asking history. A counter that exists already is left alone."""

    @abc.abstractmethod
    def claim_send(self, sender_id: int, client_msg_id: str, *, rate: float, burst: int,
                   hold: float = SEND_CLAIM_HOLD) -> SendClaim:
        """Atomically: the message sent under (sender, client_msg_id) if any; else, if
        the sender's token bucket (``rate``/s, ``burst``) allows, a claim on the key for
        ``hold`` seconds. A retry of a remembered send takes no token."""

    @abc.abstractmethod
    def settle_send(self, sender_id: int, client_msg_id: str, token: str,
                    message: str | None, ttl: float) -> None:
        """End a claim: remember ``message`` under the key for ``ttl`` seconds, or with
        None release it so a retry may send. A claim no longer held is left alone."""

    @abc.abstractmethod
    def lock(self, name: str, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Mutual exclusion across every worker sharing this state."""

    # Seconds after ``forget`` during which ``fill`` stores nothing.
    forgotten_for: float = FORGOTTEN_FOR

    @abc.abstractmethod
    def remember(self, key: str, value: str, ttl: float) -> None: ...

    @abc.abstractmethod
    def fill(self, key: str, value: str, ttl: float) -> None:
        """Cache ``value`` just read from the source of truth, unless the key holds a
        value, or was forgotten within ``forgotten_for`` seconds: a read that started
        before a change must not re-cache what the change replaced."""

    @abc.abstractmethod
    def recall(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def forget(self, key: str) -> None:
        """Drop a remembered value (a cache entry whose source changed); for
        ``forgotten_for`` seconds, ``fill`` will not store it again."""

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
