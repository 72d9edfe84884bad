"""PresenceTracker in Redis: one answer for every worker of every node.

Users are spread over ``shards`` sorted sets (member: user id, score: last heartbeat
in ms), each with its own hash tag so a Cluster spreads them over its shards. Both
transitions happen inside a script, which is what makes them exactly-once across
processes: ``touch`` reports online only if its ZADD created the member, and ``expire``
reports offline only for the members its own ZREM removed.

A heartbeat is one ``ZADD GT`` in its shard's set, and a round of renewals is one script
per shard, however many users it carries: parked connections renew their users every
heartbeat, and at 10,000 a process a script per user was most of Redis's work with no
traffic at all. ``last_seen`` of an online user is its score; going offline writes it to
a key of its own (sharing the shard's tag), kept for months.
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

# KEYS: online set. ARGV: now ms, user ids. Returns the users who came online. GT keeps
# the newest heartbeat when nodes' clocks disagree.
_TOUCH = Script("""
local came = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[i]) == 1 then came[#came + 1] = ARGV[i] end
end
return came
""")

# KEYS: online set, then each candidate's last_seen key. ARGV: cutoff ms, last_seen ttl,
# then the candidates' ids. Takes offline those still silent since before the cutoff
# (a heartbeat may have come since they were listed). Returns {user, last_seen, ...}.
_EXPIRE = Script("""
local gone = {}
for i = 2, #KEYS do
  local user = ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], user)
    redis.call('SET', KEYS[i], string.format('%d', tonumber(score)), 'EX', ARGV[2])
    gone[#gone + 1] = user
    gone[#gone + 1] = score
  end
end
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
        return bool(self.touch_many([user_id], now_ms))

    def touch_many(self, user_ids: Iterable[int], now_ms: int) -> list[int]:
        by_shard: dict[int, list[int]] = {}
        for user_id in dict.fromkeys(user_ids):
            by_shard.setdefault(self._shard(user_id), []).append(user_id)
        if not by_shard:
            return []
        replies = _TOUCH.many(self.client, [
            ([self.keys.presence_online(s)], [int(now_ms), *users])
            for s, users in by_shard.items()])
        return [int(u) for came in replies for u in came]

    def expire(self, now_ms: int) -> list[tuple[int, int]]:
        cutoff = int(now_ms) - self.timeout_ms
        gone: list[tuple[int, int]] = []
        shards = list(range(self.shards))
        while shards:
            # List who looks silent (a plain read), then one script per shard with
            # candidates takes them offline, exactly once across processes.
            pipe = self.client.pipeline(transaction=False)
            for shard in shards:
                pipe.zrangebyscore(self.keys.presence_online(shard), "-inf", f"({cutoff}",
                                   start=0, num=_EXPIRE_BATCH)
            listed = {s: users for s, users in zip(shards, pipe.execute(), strict=True)
                      if users}
            if not listed:
                break
            results = _EXPIRE.many(self.client, [
                ([self.keys.presence_online(s),
                  *(self.keys.presence_seen(s, int(u)) for u in users)],
                 [cutoff, _LAST_SEEN_TTL, *users]) for s, users in listed.items()])
            for flat in results:
                gone.extend((int(flat[i]), int(float(flat[i + 1])))
                            for i in range(0, len(flat), 2))
            # A full batch: more may be waiting in that shard.
            shards = [s for s, users in listed.items() if len(users) >= _EXPIRE_BATCH]
        return sorted(gone)

    def status(self, user_ids: Iterable[int]) -> dict[int, Status]:
        users = list(dict.fromkeys(user_ids))
        pipe = self.client.pipeline(transaction=False)
        for user_id in users:
            shard = self._shard(user_id)
            pipe.zscore(self.keys.presence_online(shard), user_id)
            pipe.get(self.keys.presence_seen(shard, user_id))
        replies = pipe.execute()
        # Online: the score is the last heartbeat. Offline: what going offline wrote.
        return {u: Status(True, int(float(replies[2 * i]))) if replies[2 * i] is not None
                else Status(False, None if replies[2 * i + 1] is None
                            else int(replies[2 * i + 1]))
                for i, u in enumerate(users)}
