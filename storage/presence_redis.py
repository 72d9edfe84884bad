"""PresenceTracker in Redis: one answer for every worker of every node.

Users are spread over ``shards`` sorted sets (member: user id, score: last heartbeat
in ms), each with its own hash tag so a Cluster spreads them over its shards. A user's
``last_seen`` key shares its shard's tag, so one script updates both atomically. Both
transitions happen inside a script, which is what makes them exactly-once across
processes: ``touch`` reports online only if its ZADD created the member, and ``expire``
reports offline only for the members its own ZREM removed.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.presence import PresenceTracker, Status
from storage.redis_conn import RedisClient, Script
from storage.redis_keys import KeySpace

# Kept this long after the last heartbeat, so "last seen 3 weeks ago" still works.
_LAST_SEEN_TTL = 90 * 24 * 3600
# Users taken offline per shard per script call: bounds how long one call blocks Redis.
_EXPIRE_BATCH = 1000

# KEYS: online set, last_seen. ARGV: user id, now ms, last_seen ttl. 1: came online.
_TOUCH = Script("""
local seen = tonumber(ARGV[2])
local before = tonumber(redis.call('GET', KEYS[2]))
if before and before > seen then seen = before end
redis.call('SET', KEYS[2], string.format('%d', seen), 'EX', ARGV[3])
local was_online = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], string.format('%d', seen), ARGV[1])
if was_online then return 0 end
return 1
""")

# KEYS: online set. ARGV: now ms, timeout ms, batch. Returns {user, last_seen, ...}.
_EXPIRE = Script("""
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', cutoff),
                        'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #gone, 2 do redis.call('ZREM', KEYS[1], gone[i]) end
return gone
""")


class RedisPresence(PresenceTracker):
    def __init__(self, client: RedisClient, *, prefix: str = "sb", timeout: float = 30.0,
                 shards: int = 16) -> None:
        self.client = client
        self.keys = KeySpace(prefix)
        self.timeout_ms = int(timeout * 1000)
        self.shards = shards

    def _shard(self, user_id: int) -> int:
        return user_id % self.shards

    def touch(self, user_id: int, now_ms: int) -> bool:
        shard = self._shard(user_id)
        came_online = _TOUCH(self.client, [self.keys.presence_online(shard),
                                           self.keys.presence_seen(shard, user_id)],
                             [user_id, int(now_ms), _LAST_SEEN_TTL])
        return bool(came_online)

    def touch_many(self, user_ids: Iterable[int], now_ms: int) -> list[int]:
        users = list(user_ids)
        results = _TOUCH.many(self.client, [
            ([self.keys.presence_online(self._shard(u)),
              self.keys.presence_seen(self._shard(u), u)], [u, int(now_ms), _LAST_SEEN_TTL])
            for u in users])
        return [u for u, came_online in zip(users, results, strict=True) if came_online]

    def expire(self, now_ms: int) -> list[tuple[int, int]]:
        gone: list[tuple[int, int]] = []
        shards = list(range(self.shards))
        while shards:
            results = _EXPIRE.many(self.client, [
                ([self.keys.presence_online(s)], [int(now_ms), self.timeout_ms, _EXPIRE_BATCH])
                for s in shards])
            full = []
            for shard, flat in zip(shards, results, strict=True):
                pairs = [(int(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
                gone.extend(pairs)
                if len(pairs) >= _EXPIRE_BATCH:
                    full.append(shard)  # more may be waiting in this shard
            shards = full
        return sorted(gone)

    def status(self, user_ids: Iterable[int]) -> dict[int, Status]:
        users = list(dict.fromkeys(user_ids))
        pipe = self.client.pipeline(transaction=False)
        for user_id in users:
            shard = self._shard(user_id)
            pipe.zscore(self.keys.presence_online(shard), user_id)
            pipe.get(self.keys.presence_seen(shard, user_id))
        replies = pipe.execute()
        return {u: Status(replies[2 * i] is not None,
                          None if replies[2 * i + 1] is None else int(replies[2 * i + 1]))
                for i, u in enumerate(users)}
