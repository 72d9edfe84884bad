"""NodeRegistry in Redis: a sorted set of expiry times beside a hash of entries.

Redis 7.0 has no per-field TTL, so the ``ttl`` is the member's score in
``{nodes}:expiry`` (milliseconds of the *server's* clock, so every node agrees), and each
script first prunes members whose time has passed. Both keys share the ``{nodes}`` hash
tag: on a Cluster each script stays on one shard, and listing every live worker is one
round trip rather than a SCAN over every node of the cluster.
"""

from __future__ import annotations

import json

from storage.nodes import NodeRegistry, WorkerEntry
from storage.redis_conn import RedisClient, Script
from storage.redis_keys import KeySpace

# KEYS: expiry zset, info hash. Sets `now` (server ms) and removes entries past it.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #dead > 0 then
  redis.call('HDEL', KEYS[2], unpack(dead))
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
"""
# ARGV: member, ttl ms, entry JSON. The keys outlive every entry by a margin only, so
# a deployment that is gone leaves nothing behind.
_REGISTER = Script(_PRUNE + """
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return 1
""")
_LIVE = Script(_PRUNE + """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #members == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(members))
""")
_REMOVE = Script("""
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
""")


class RedisNodeRegistry(NodeRegistry):
    def __init__(self, client: RedisClient, *, prefix: str = "sb") -> None:
        self.client = client
        self.keys = KeySpace(prefix).nodes()

    def register(self, entry: WorkerEntry, ttl: float) -> None:
        body = json.dumps({"member": entry.member, "url": entry.url,
                           "connections": entry.connections})
        _REGISTER(self.client, self.keys, [entry.member, max(1, int(ttl * 1000)), body])

    def remove(self, member: str) -> None:
        _REMOVE(self.client, self.keys, [member])

    def live(self) -> list[WorkerEntry]:
        out = []
        for raw in _LIVE(self.client, self.keys, []) or []:
            if raw is None:  # a member without its entry (edited by hand): skip it
                continue
            data = json.loads(raw)
            out.append(WorkerEntry(str(data["member"]), str(data["url"]),
                                   int(data["connections"])))
        return out
