"""SharedState in Redis: what every worker of every node must agree on.

Each operation touches one key (one Cluster slot). Waiting (for a lock, between lease
renewals) sleeps with gevent, so a waiting greenlet never blocks its neighbours.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
from redis.exceptions import RedisError, ResponseError

from storage.broker_redis import APPEND_SOURCE, PreparedAppend, RedisBroker
from storage.ids import MAX_WORKER, IdGenerator
from storage.near_cache import NearCache
from storage.persist_buffer import RECORD_SOURCE, PreparedRecord
from storage.redis_conn import (
    LOST_LINK,
    RedisClient,
    Script,
    client_is_cluster,
    lost_link_attempts,
    run_scripts,
    server_major_version,
)
from storage.redis_keys import KeySpace
from storage.state import (
    FORGOTTEN,
    LAST_ID_TTL,
    SEND_CLAIM_HOLD,
    SEND_TURN_TIMEOUT,
    SendClaim,
    Sending,
    SharedState,
    Turn,
)
from storage.state_memory import LockTimeout

log = logging.getLogger(__name__)

# A crashed holder's lock frees itself after this long; so does the lock of a holder
# that lost Redis mid-send (its release failed), which is what bounds how long a
# conversation stays blocked after a Redis restart. Holders run one send's few Redis
# round trips, far shorter; a holder outliving it loses exclusion but never deletes a
# successor's lock (release compares tokens).
_LOCK_TTL_MS = 5_000
_LOCK_FIRST_WAIT = 0.002  # seconds between attempts, doubling up to _LOCK_MAX_WAIT
_LOCK_MAX_WAIT = 0.05
# KEYS: turn lock, seq counter, last id. ARGV: token, lock ttl (ms). Returns {0} when
# the turn is taken; else {1, seq, last id}, or {2, 0, last id} when the counter is
# missing and the caller must start it from history (the turn is held either way).
_TURN_BEGIN = Script("""
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local last = redis.call('GET', KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 0 then return {2, 0, last} end
return {1, redis.call('INCR', KEYS[2]), last}
""")
# ARGV[1]: the floor from history, used only if no other worker initialised it first.
_INIT_AND_INCR = Script("""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
""")
# KEYS: turn lock, last id. ARGV: token, new last id ('' for none), its ttl (s). A turn
# that outlived its lock records nothing: a later turn may have recorded a later id.
_TURN_END = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end
return redis.call('DEL', KEYS[1])
""")
# KEYS: turn lock, seq counter. ARGV: token, 1 if the turn incremented the counter.
# A turn handed back unused (its send turned out a retry): its seq is given back too,
# which is safe while the lock is still ours - nobody else can have counted since.
_TURN_UNDO = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('DECR', KEYS[2]) end
return redis.call('DEL', KEYS[1])
""")
_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")
# A token bucket, the string "<tokens> <at>" at key ``bucket``, which the script has
# read into ``saved`` (false when absent: a full bucket); ARGV[1]: rate per second,
# ARGV[2]: burst. Sets ``granted``. Server time, so every worker uses one clock. One
# string, not a hash, so a send reads it with its other keys and writes it with its
# lifetime in one SET.
BUCKET_SOURCE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, at = burst, now
if saved then
  local was, when = string.match(saved, '^(%S+) (%S+)$')
  tokens, at = tonumber(was) or burst, tonumber(when) or now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = 0
if tokens >= 1 then tokens = tokens - 1; granted = 1 end
redis.call('SET', bucket, tostring(tokens) .. ' ' .. tostring(now),
           'PX', math.ceil(burst / rate * 1000) + 1000)
"""
_TOKEN_BUCKET = Script("local bucket = KEYS[1]\nlocal saved = redis.call('GET', bucket)"
                       + BUCKET_SOURCE + "return granted")
# KEYS: send record, the sender's bucket. ARGV: rate, burst, pending value, hold (ms).
_CLAIM_SEND = Script("""
local found = redis.call('MGET', KEYS[1], KEYS[2])
local value = found[1]
if value then
  if string.sub(value, 1, string.len(ARGV[5])) == ARGV[5] then return {'pending'} end
  return {'sent', value}
end
local bucket, saved = KEYS[2], found[2]""" + BUCKET_SOURCE + """
if granted == 0 then return {'limited'} end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return {'claimed'}
""")
# KEYS: send record. ARGV: this claim's pending value, message ('' to release), ttl (ms).
_SETTLE_SEND = Script("""
local value = redis.call('GET', KEYS[1])
if value and value ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
""")
# A send's whole close on one server, atomically: the message's record (when the send
# left it to the close), the members' appends, the turn's end and the claim's settling.
# Atomic, so a reply lost with its connection leaves nothing half-done: the script
# either ran or not, and running it again is safe - the record and the appends run only
# while the claim is still this send's (not yet settled), or on the first try.
# KEYS: send record, turn lock, last id, [the record's 2 keys], then each member's K
# append keys. ARGV: pending value, message, record ttl (ms), turn token, new last id
# ('' none), its ttl (s), K, A, retry ('1'/'0'), [the record's 3 arguments], then each
# member's A append arguments. Returns {1 if the claim was this send's, each append's
# result or {'~error', message}}.
def _closing_source(with_record: bool) -> str:
    kbase, abase = (5, 12) if with_record else (3, 9)
    return """
local function append(KEYS, ARGV)
""" + APPEND_SOURCE + """
end
local function record(KEYS, ARGV)
""" + RECORD_SOURCE + """
end
local value = redis.call('GET', KEYS[1])
local ours = (not value) or value == ARGV[1]
local results = {}
if ours or ARGV[9] == '0' then
""" + ("  record({KEYS[4], KEYS[5]}, {ARGV[10], ARGV[11], ARGV[12]})\n" if with_record
       else "") + f"""
  local k, a = tonumber(ARGV[7]), tonumber(ARGV[8])
  for i = 0, (#KEYS - {kbase}) / k - 1 do
    local keys, args = {{}}, {{}}
    for j = 1, k do keys[j] = KEYS[{kbase} + i * k + j] end
    for j = 1, a do args[j] = ARGV[{abase} + i * a + j] end
    local ok, got = pcall(append, keys, args)
    if not ok then
      got = {{'~error', type(got) == 'table' and got.err or tostring(got)}}
    end
    results[i + 1] = got
  end
end
if redis.call('GET', KEYS[2]) == ARGV[4] then
  if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) end
  redis.call('DEL', KEYS[2])
end
if ours then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
end
return {{ours and 1 or 0, results}}
"""


_CLOSING = Script(_closing_source(with_record=False))
_CLOSING_DURABLE = Script(_closing_source(with_record=True))
PENDING = "~pending:"  # a claimed, unsettled send; messages are JSON, never start so
# 1: renewed; 2: it had expired and nobody took it, so it is ours again; 0: lost.
_RENEW = Script("""
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
""")


class LeaseLost(RuntimeError):
    """This process can no longer prove it owns its worker id: it must stop issuing ids."""


class WorkerLease:
    """Worker id ``n`` is the key ``worker:<n>`` holding this process' random token.

    Claimed with SET NX PX, renewed every third of the TTL by a greenlet. The id counts
    as ours only until ``valid_until`` (a margin short of the TTL, measured from before
    each successful request), so a process cut off from Redis stops issuing ids before
    anyone else could claim its key.
    """

    def __init__(self, client: RedisClient, keys: KeySpace, ttl: float = 30.0) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self.token = secrets.token_hex(16)
        self.worker_id: int | None = None
        self.valid_until = 0.0
        self.lost = False
        self._renewer: gevent.Greenlet | None = None

    def _margin(self) -> float:
        return min(1.0, self.ttl / 10)

    def acquire(self) -> int:
        ttl_ms = int(self.ttl * 1000)
        start = random.randrange(MAX_WORKER + 1)  # spread concurrent starters apart
        for step in range(MAX_WORKER + 1):
            candidate = (start + step) % (MAX_WORKER + 1)
            sent = time.monotonic()
            if self.client.set(self.keys.worker_lease(candidate), self.token, nx=True,
                               px=ttl_ms):
                self.worker_id = candidate
                self.valid_until = sent + self.ttl - self._margin()
                self._renewer = gevent.spawn(self._renew_forever)
                return candidate
        raise RuntimeError(f"all {MAX_WORKER + 1} worker ids are leased")

    def check(self) -> int:
        if self.worker_id is None:
            raise LeaseLost("no worker id leased")
        if self.lost:
            raise LeaseLost(f"worker id {self.worker_id} was taken by another process")
        if time.monotonic() > self.valid_until:
            raise LeaseLost(f"worker id {self.worker_id} lease not renewed in time")
        return self.worker_id

    def renew(self) -> bool:
        """One renewal; False when the id now belongs to someone else."""
        assert self.worker_id is not None
        sent = time.monotonic()
        result = _RENEW(self.client, [self.keys.worker_lease(self.worker_id)],
                        [self.token, int(self.ttl * 1000)])
        if int(result) == 0:
            self.lost = True
            log.error("worker id %d is owned by another process: no more ids from here",
                      self.worker_id)
            return False
        self.valid_until = sent + self.ttl - self._margin()
        return True

    def _renew_forever(self) -> None:
        while not self.lost:
            gevent.sleep(self.ttl / 3)
            try:
                self.renew()
            except RedisError as exc:
                # The lease may still be valid; check() stops ids if it lapses.
                log.warning("worker id lease renewal failed: %s", exc)

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.kill(block=False)
            self._renewer = None
        if self.worker_id is not None and not self.lost:
            try:
                _RELEASE(self.client, [self.keys.worker_lease(self.worker_id)], [self.token])
            except RedisError as exc:
                log.warning("worker id release failed (it expires anyway): %s", exc)
        self.worker_id = None


class LeasedIdGenerator(IdGenerator):
    """Message ids that stop (LeaseLost) as soon as the worker id is not provably ours."""

    def __init__(self, lease: WorkerLease) -> None:
        super().__init__(lease.check())
        self.lease = lease

    def next_id(self, after: int | None = None) -> int:
        self.lease.check()
        return super().next_id(after)


class RedisState(SharedState):
    """``near_cache_ttl`` > 0 (gateway processes): remembered values are also kept in
    this process for that long, and every change is announced to every process (see
    storage/near_cache.py) - a recall then costs no round trip."""

    def __init__(self, client: RedisClient, *, prefix: str = "sb",
                 worker_lease_ttl: float = 30.0, near_cache_ttl: float = 0.0) -> None:
        self.client = client
        self.keys = KeySpace(prefix)
        self.cluster = client_is_cluster(client)
        self.lease = WorkerLease(client, self.keys, worker_lease_ttl)
        self.near: NearCache | None = None
        if near_cache_ttl > 0:
            self.near = NearCache(client, self.keys.invalidations(),
                                  sharded=server_major_version(client) >= 7,
                                  ttl=near_cache_ttl)

    @contextmanager
    def conversation_turn(self, conversation_id: int, floor: Callable[[], int],
                          timeout: float = 10.0) -> Iterator[Turn]:
        lock, seq_key, last_key = self.keys.conversation(conversation_id)
        token = secrets.token_hex(16)
        got = _TURN_BEGIN(self.client, [lock, seq_key, last_key], [token, _LOCK_TTL_MS])
        if not int(got[0]):
            got = self._wait_turn(conversation_id, [lock, seq_key, last_key], token, timeout)
        recorded = ""
        try:
            turn = self._turn(got, seq_key, floor)
            yield turn
            if turn.new_last_id is not None:
                recorded = str(turn.new_last_id)
        finally:
            _TURN_END(self.client, [lock, last_key], [token, recorded, LAST_ID_TTL])

    @contextmanager
    def sending(self, sender_id: int, client_msg_id: str, conversation_id: int, *,
                floor: Callable[[], int], rate: float, burst: int, ttl: float,
                hold: float = SEND_CLAIM_HOLD,
                timeout: float = SEND_TURN_TIMEOUT) -> Iterator[Sending]:
        # Two round trips for a send in the usual case instead of four: the claim and
        # the turn are asked for together (a turn taken for a claim that turns out
        # "sent", "pending" or "limited" is handed back at once, a rare path), and the
        # turn's end and the claim's settling go together (on one server, with the
        # members' appends, in one atomic script). They live on different shards of a
        # cluster (sender's and conversation's tags): one pipeline each way. (On one
        # server most sends take a single round trip instead: storage/send_redis.py.)
        record = self.keys.sends(sender_id, client_msg_id)
        lock, seq_key, last_key = self.keys.conversation(conversation_id)
        claim_token = secrets.token_hex(8)
        turn_token = secrets.token_hex(16)
        got_claim, got = run_scripts(self.client, [
            (_CLAIM_SEND, record, [rate, burst, PENDING + claim_token,
                                   max(1, int(hold * 1000)), PENDING]),
            (_TURN_BEGIN, [lock, seq_key, last_key], [turn_token, _LOCK_TTL_MS])],
            raise_on_error=False, batch=True)
        if isinstance(got_claim, Exception) or isinstance(got, Exception):
            # Hand back whichever half was granted (best effort: both lapse anyway).
            undo = []
            if not isinstance(got, Exception) and int(got[0]):
                undo.append((_TURN_UNDO, [lock, seq_key], [turn_token, int(int(got[0]) == 1)]))
            if not isinstance(got_claim, Exception) and str(got_claim[0]) == "claimed":
                undo.append((_SETTLE_SEND, record[:1], [PENDING + claim_token, "", 1]))
            run_scripts(self.client, undo, raise_on_error=False)
            raise got_claim if isinstance(got_claim, Exception) else got
        outcome = str(got_claim[0])
        if outcome != "claimed":
            if int(got[0]):
                _TURN_UNDO(self.client, [lock, seq_key], [turn_token, int(int(got[0]) == 1)])
            yield Sending(SendClaim(outcome, str(got_claim[1]) if outcome == "sent" else None))
            return
        sending = Sending(SendClaim("claimed", token=claim_token))
        ttl_ms = max(1, int(ttl * 1000))
        recorded = ""
        persisted = False
        try:
            if not int(got[0]):
                got = self._wait_turn(conversation_id, [lock, seq_key, last_key], turn_token,
                                      timeout)
            sending.turn = self._turn(got, seq_key, floor)
            yield sending
            if sending.turn.new_last_id is not None:
                recorded = str(sending.turn.new_last_id)
            fused = self._fusable(sending.fan_out)
            # The message's record goes in the close's script where the close is one
            # script on this very server; else it is made now, before the fan-out.
            durable = sending.persist if (
                fused is not None and isinstance(sending.persist, PreparedRecord)
                and sending.persist.client is self.client) else None
            if sending.persist is not None and durable is None:
                sending.persist.run()
                persisted = True
            if sending.fan_out is not None and fused is None:
                broker, users, payload = sending.fan_out
                if isinstance(broker, RedisBroker):
                    broker.append(users, payload, batch=True)  # as the send's scripts
                else:
                    broker.append(users, payload)
        except BaseException:
            self._end_send(client_msg_id, [
                (_TURN_END, [lock, last_key], [turn_token, "", LAST_ID_TTL]),
                (_SETTLE_SEND, record[:1], [PENDING + claim_token,
                                            sending.remembered(persisted) or "", ttl_ms])])
            raise
        if fused is not None:
            # Failing past its retries, the close leaves the claim pending: if the close
            # did run, the claim holds the message; if not, nothing was stored, and once
            # the claim lapses a retry sends it.
            self._close(fused, [record[0], lock, last_key],
                        [PENDING + claim_token, sending.message or "", ttl_ms, turn_token,
                         recorded, LAST_ID_TTL], durable)
            if durable is not None:
                durable.done()
            return
        closing = [
            (_TURN_END, [lock, last_key], [turn_token, recorded, LAST_ID_TTL]),
            (_SETTLE_SEND, record[:1], [PENDING + claim_token, sending.message or "",
                                        ttl_ms])]
        try:
            run_scripts(self.client, closing, batch=True)
        except RedisError:
            # The message may be durable already: a claim left pending would lapse, and
            # a retry after that would store it again. Settle it before failing (the
            # fan-out, done before this on a cluster, is not the question here).
            self._end_send(client_msg_id, closing)
            raise

    def _close(self, fused: PreparedAppend, keys: list[str], args: list[Any],
               durable: PreparedRecord | None = None) -> None:
        """Run _CLOSING (_CLOSING_DURABLE with the message's record); if its reply is
        lost with the connection, run it again (it is all or nothing, and guarded) for
        up to LOST_LINK_PAUSES before failing."""
        append_keys = [key for _, call_keys, _ in fused.calls for key in call_keys]
        append_args = [arg for _, _, call_args in fused.calls for arg in call_args]
        shape = [len(fused.calls[0][1]), len(fused.calls[0][2])]
        script, record_keys, record_args = _CLOSING, [], []
        if durable is not None:
            script, record_keys, record_args = _CLOSING_DURABLE, durable.keys, durable.args
        error: RedisError | None = None
        for attempt in lost_link_attempts():
            try:
                ours, results = script(self.client, [*keys, *record_keys, *append_keys],
                                       [*args, *shape, int(attempt > 0), *record_args,
                                        *append_args], batch=True)
            except LOST_LINK as exc:
                error = error or exc
                continue
            if attempt > 0 and not int(ours):
                fused.unknown()  # the lost attempt ran: its appends' offsets are unknown
                return
            fused.finish([ResponseError(str(got[1])) if got and got[0] == "~error" else got
                          for got in results])
            return
        assert error is not None
        fused.unknown()  # it may have run: this process' connections read their logs
        raise error

    def _end_send(self, client_msg_id: str, closing: list[tuple[Script, list[str], list]]
                  ) -> None:
        """End a failed send's turn and settle its claim, retrying a connection that
        dropped for well under the claim's hold. Both scripts are safe to repeat (each
        checks its token). Past the last attempt both lapse by themselves."""
        failed: list[Exception] = []
        for _ in lost_link_attempts():
            try:
                results = run_scripts(self.client, closing, raise_on_error=False)
            except RedisError as exc:
                results = [exc]
            failed = [r for r in results if isinstance(r, Exception)]
            if not failed:
                return
        log.warning("could not end send %s: %s", client_msg_id, failed[0])

    def _fusable(self, fan_out: tuple[Any, list[int], dict[str, Any]] | None
                 ) -> PreparedAppend | None:
        """The fan-out prepared to go in the send's closing script (_CLOSING), or None.
        Only on a standalone server: a script may touch keys of any slot there. On a
        cluster the members' logs live on other shards than the turn, so the appends are
        made (in the turn) before the close instead."""
        if fan_out is None or self.cluster:
            return None
        broker, users, payload = fan_out
        if not isinstance(broker, RedisBroker) or broker.client is not self.client:
            return None
        return broker.prepare_append(users, payload)

    def _turn(self, got: list, seq_key: str, floor: Callable[[], int]) -> Turn:
        """The Turn a granted _TURN_BEGIN reply describes. No TTL on the counter: it
        lives as long as the conversation; if Redis loses it, the floor from history
        starts it again above every stored seq."""
        seq = int(got[1]) if int(got[0]) == 1 else int(
            _INIT_AND_INCR(self.client, [seq_key], [int(floor())]))
        return Turn(seq, int(got[2]) if got[2] is not None else None)

    def _wait_turn(self, conversation_id: int, keys: list[str], token: str,
                   timeout: float) -> list:
        """Retry a turn someone else holds, backing off, until ``timeout``."""
        deadline = time.monotonic() + timeout
        wait = _LOCK_FIRST_WAIT
        while True:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"conversation {conversation_id}")
            gevent.sleep(wait * random.uniform(0.5, 1.0))  # jitter: no lockstep retries
            wait = min(wait * 2, _LOCK_MAX_WAIT)
            got = _TURN_BEGIN(self.client, keys, [token, _LOCK_TTL_MS])
            if int(got[0]):
                return got

    def start_conversation(self, conversation_id: int) -> None:
        self.client.set(self.keys.conversation(conversation_id)[1], 0, nx=True)

    def claim_send(self, sender_id: int, client_msg_id: str, *, rate: float, burst: int,
                   hold: float = SEND_CLAIM_HOLD) -> SendClaim:
        token = secrets.token_hex(8)
        got = _CLAIM_SEND(self.client, self.keys.sends(sender_id, client_msg_id),
                          [rate, burst, PENDING + token, max(1, int(hold * 1000)),
                           PENDING])
        outcome = str(got[0])
        if outcome == "sent":
            return SendClaim("sent", str(got[1]))
        return SendClaim(outcome, token=token if outcome == "claimed" else None)

    def settle_send(self, sender_id: int, client_msg_id: str, token: str,
                    message: str | None, ttl: float) -> None:
        _SETTLE_SEND(self.client, self.keys.sends(sender_id, client_msg_id)[:1],
                     [PENDING + token, message or "", max(1, int(ttl * 1000))])

    @contextmanager
    def lock(self, name: str, timeout: float = 10.0) -> Iterator[None]:
        key = self.keys.lock(name)
        token = secrets.token_hex(16)
        deadline = time.monotonic() + timeout
        wait = _LOCK_FIRST_WAIT
        while not self.client.set(key, token, nx=True, px=_LOCK_TTL_MS):
            if self.client.get(key) == token:
                break  # a cluster client sent the SET again after its reply was lost
            if time.monotonic() >= deadline:
                raise LockTimeout(name)
            gevent.sleep(wait * random.uniform(0.5, 1.0))  # jitter: no lockstep retries
            wait = min(wait * 2, _LOCK_MAX_WAIT)
        try:
            yield
        finally:
            _RELEASE(self.client, [key], [token])

    def remember(self, key: str, value: str, ttl: float) -> None:
        if self.near is None:
            self.client.set(self.keys.value(key), value, px=max(1, int(ttl * 1000)))
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.value(key), value, px=max(1, int(ttl * 1000)))
        self.near.invalidate(pipe, key)
        pipe.execute()
        self.near.put(key, value, self.near.generation)

    def fill(self, key: str, value: str, ttl: float) -> None:
        # NX: a value, or the marker a forget left, wins over what this read found.
        generation = self.near.generation if self.near is not None else 0
        stored = self.client.set(self.keys.value(key), value, px=max(1, int(ttl * 1000)),
                                 nx=True)
        if stored and self.near is not None:
            self.near.put(key, value, generation)

    def recall(self, key: str) -> str | None:
        near = self.near
        if near is None:
            value = self.client.get(self.keys.value(key))
            return None if value is None or value == FORGOTTEN else str(value)
        if near.live:
            copy = near.get(key)
            if copy is not None:
                return copy
        else:
            near.start()  # first use in this process (or retry after a failure)
        generation = near.generation
        value = self.client.get(self.keys.value(key))
        if value is None or value == FORGOTTEN:
            return None
        near.put(key, str(value), generation)
        return str(value)

    def forget(self, key: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.value(key), FORGOTTEN, px=max(1, int(self.forgotten_for * 1000)))
        if self.near is not None:
            self.near.invalidate(pipe, key)
        pipe.execute()

    def claim_once(self, key: str, ttl: float) -> bool:
        return bool(self.client.set(self.keys.claim(key), "1", nx=True,
                                    px=max(1, int(ttl * 1000))))

    def allow(self, key: str, rate: float, burst: int) -> bool:
        return bool(_TOKEN_BUCKET(self.client, [self.keys.bucket(key)], [rate, burst]))

    def worker_id(self) -> int:
        if self.lease.worker_id is None:
            return self.lease.acquire()
        return self.lease.check()

    def close(self) -> None:
        self.lease.release()
        if self.near is not None:
            self.near.stop()
