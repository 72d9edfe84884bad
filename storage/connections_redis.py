"""ConnectionRegistry in Redis: one answer for every gateway process of every node.

Each user has one sorted set, member ``<process token>:<connection serial>``, score the
entry's expiry in unix ms. ``live`` is one ZCOUNT of unexpired entries per user,
pipelined. The key shares the user's hash tag ``{u:<id>}`` with their event log, so a
Cluster keeps a user's keys on one shard. Expired members are trimmed when a connection
opens or closes, and the key itself expires, so nothing outlives its users.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from storage.connections import ConnectionRegistry
from storage.redis_conn import RedisClient, Script

# Beside the broker's per-user keys (storage/redis_keys.py) with the same hash tag.
USER_CONNECTIONS = "{prefix}:{{u:{user_id}}}:conns"

# KEYS: the user's set. ARGV: member, expiry ms, now ms, key ttl ms, '1' to only update
# a member that still counts (not one that lapsed and was not trimmed yet).
_SET = Script("""
if ARGV[5] == '1' then
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not expiry or tonumber(expiry) <= tonumber(ARGV[3]) then return 0 end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
""")


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisConnections(ConnectionRegistry):
    def __init__(self, client: RedisClient, *, prefix: str = "sb", ttl: float = 30.0,
                 linger: float = 10.0) -> None:
        super().__init__(ttl, linger)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"invalid Redis key prefix {prefix!r}")
        self.client = client
        self.prefix = prefix
        self._key_ttl_ms = int(max(ttl, linger) * 1000) + 1000

    def key(self, user_id: int) -> str:
        return USER_CONNECTIONS.format(prefix=self.prefix, user_id=user_id)

    def _args(self, member: str, lifetime: float, only_existing: bool) -> list:
        now = _now_ms()
        return [member, now + int(lifetime * 1000), now, self._key_ttl_ms,
                "1" if only_existing else "0"]

    def open(self, user_id: int, connection_id: str) -> None:
        _SET(self.client, [self.key(user_id)], self._args(connection_id, self.ttl, False))

    def renew(self, connections: Iterable[tuple[int, str]]) -> None:
        # Every live connection of the process, each heartbeat: two plain commands a
        # connection instead of a script (a third of Redis's time for parked ones). Trims
        # are left to open and close; the key's TTL outlasts every entry written with it.
        expiry = _now_ms() + int(self.ttl * 1000)
        pipe = self.client.pipeline(transaction=False)
        for user_id, connection_id in connections:
            key = self.key(user_id)
            pipe.zadd(key, {connection_id: expiry})
            pipe.pexpire(key, self._key_ttl_ms)
        if len(pipe):
            pipe.execute()

    def close(self, user_id: int, connection_id: str) -> None:
        # XX: a close racing a node's expiry must not resurrect a trimmed entry for ttl.
        _SET(self.client, [self.key(user_id)], self._args(connection_id, self.linger, True))

    def close_many(self, connections: Iterable[tuple[int, str]]) -> None:
        calls = [([self.key(u)], self._args(c, self.linger, True)) for u, c in connections]
        if calls:
            _SET.many(self.client, calls)

    def live(self, user_ids: Iterable[int]) -> set[int]:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return set()
        now = _now_ms()
        pipe = self.client.pipeline(transaction=False)
        for user_id in users:
            pipe.zcount(self.key(user_id), f"({now}", "+inf")
        return {u for u, n in zip(users, pipe.execute(), strict=True) if int(n) > 0}
