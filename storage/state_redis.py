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

import gevent
from redis.exceptions import RedisError

from storage.ids import MAX_WORKER, IdGenerator
from storage.redis_conn import RedisClient, Script
from storage.redis_keys import KeySpace
from storage.state import SharedState
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

_INCR_IF_EXISTS = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return false
""")
# ARGV[1]: the floor from history, used only if no other worker initialised it first.
_INIT_AND_INCR = Script("""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
""")
_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")
# ARGV: rate per second, burst. Server time, so every worker uses one clock.
_TOKEN_BUCKET = Script("""
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or burst
local at = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = 0
if tokens >= 1 then tokens = tokens - 1; granted = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return granted
""")
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
    def __init__(self, client: RedisClient, *, prefix: str = "sb",
                 worker_lease_ttl: float = 30.0) -> None:
        self.client = client
        self.keys = KeySpace(prefix)
        self.lease = WorkerLease(client, self.keys, worker_lease_ttl)

    def next_seq(self, conversation_id: int, floor: Callable[[], int]) -> int:
        # No TTL: the counter lives as long as the conversation. If Redis loses it, the
        # floor from history starts it again above every stored seq.
        key = [self.keys.conversation_seq(conversation_id)]
        value = _INCR_IF_EXISTS(self.client, key, [])
        if value is None:
            value = _INIT_AND_INCR(self.client, key, [int(floor())])
        return int(value)

    @contextmanager
    def lock(self, name: str, timeout: float = 10.0) -> Iterator[None]:
        key = self.keys.lock(name)
        token = secrets.token_hex(16)
        deadline = time.monotonic() + timeout
        wait = _LOCK_FIRST_WAIT
        while not self.client.set(key, token, nx=True, px=_LOCK_TTL_MS):
            if time.monotonic() >= deadline:
                raise LockTimeout(name)
            gevent.sleep(wait * random.uniform(0.5, 1.0))  # jitter: no lockstep retries
            wait = min(wait * 2, _LOCK_MAX_WAIT)
        try:
            yield
        finally:
            _RELEASE(self.client, [key], [token])

    def remember(self, key: str, value: str, ttl: float) -> None:
        self.client.set(self.keys.value(key), value, px=max(1, int(ttl * 1000)))

    def recall(self, key: str) -> str | None:
        value = self.client.get(self.keys.value(key))
        return None if value is None else str(value)

    def forget(self, key: str) -> None:
        self.client.delete(self.keys.value(key))

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
