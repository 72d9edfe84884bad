"""PersistBuffer: messages between their acknowledgement and the history store.

With Redis, a send is durable once the message is in Redis (AOF on): it goes into its
conversation's *tail* (served to history reads until persisted, so a sender always
reads its own write) and onto a *persist stream*, from which RQ workers write batches
to the history store. Streams with a consumer group, not one RQ job per message:

* batching: a job drains hundreds of messages per round trip to Cassandra;
* a worker killed mid-batch leaves its entries pending in the group; the next drain
  claims them (XAUTOCLAIM) once idle, so nothing acknowledged is lost; the store's
  primary key (message id) makes the rewrite harmless;
* a history store that is down just leaves entries pending until it returns.

The stream is split into ``shards`` hash-tagged keys (by conversation) so a Redis Cluster
spreads them and several workers drain in parallel.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from redis.exceptions import ResponseError

from storage.history import HistoryStore, Message, Watermark
from storage.redis_conn import RedisClient, Script

# A conversation's tail shares its persist shard's hash tag, so recording a message in
# both is one script on one slot, atomic in a Redis Cluster too.
TAIL = "{prefix}:{{persist:{shard}}}:tail:{conversation_id}"  # zset: seq -> message JSON
STREAM = "{prefix}:{{persist:{shard}}}:stream"  # entries: m=<message JSON>, u=<member ids>
GROUP = "persisters"

# Tail and stream together, atomically: one command (a MULTI/EXEC pipeline was four).
# KEYS: tail, stream. ARGV: seq, message JSON, member ids ("1,2,3"). Also run inside a
# send's close on a single server (storage/state_redis.py), so its durability, its
# fan-out and its claim's settling are one atomic step.
RECORD_SOURCE = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'm', ARGV[2], 'u', ARGV[3])
"""
_RECORD = Script(RECORD_SOURCE)


class PreparedRecord(NamedTuple):
    """A message's record, to be made by whoever can fold it into a round trip of its
    own (``keys``/``args`` for RECORD_SOURCE on ``client``), then ``done()``; or alone
    by ``run()``, which does both."""
    client: RedisClient
    keys: list[str]
    args: list[Any]
    run: Callable[[], None]
    done: Callable[[], None]


class PersistBuffer:
    def __init__(self, client: RedisClient, prefix: str, shards: int = 4) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = shards
        self._groups_ready: set[int] = set()

    def tail_key(self, conversation_id: int) -> str:
        return TAIL.format(prefix=self.prefix, shard=self.shard_of(conversation_id),
                           conversation_id=conversation_id)

    def stream_key(self, shard: int) -> str:
        return STREAM.format(prefix=self.prefix, shard=shard)

    def shard_of(self, conversation_id: int) -> int:
        return conversation_id % self.shards

    # --- gateway side ----------------------------------------------------------------
    def record(self, message: Message, member_ids: Sequence[int]) -> int:
        """Make ``message`` durable in Redis; returns the shard to drain."""
        self.run_record(*self.record_call(message, member_ids))
        return self.shard_of(message.conversation_id)

    def run_record(self, keys: list[str], args: list[Any], *, batch: bool = False) -> None:
        """Make a record from ``record_call``'s keys and arguments, alone (``batch``: in a
        round trip shared with other sends, see run_scripts)."""
        _RECORD(self.client, keys, args, batch=batch)

    def record_call(self, message: Message, member_ids: Sequence[int]
                    ) -> tuple[list[str], list[Any]]:
        """RECORD_SOURCE's keys and arguments for ``message``."""
        body = json.dumps(message.to_json(), separators=(",", ":"), ensure_ascii=False)
        shard = self.shard_of(message.conversation_id)
        return ([self.tail_key(message.conversation_id), self.stream_key(shard)],
                [message.seq, body, ",".join(map(str, member_ids))])

    def tail(self, conversation_id: int) -> list[Message]:
        raw = self.client.zrange(self.tail_key(conversation_id), 0, -1)
        return [Message.from_json(json.loads(item)) for item in raw]

    def backlog(self) -> dict[int, int]:
        """Entries not yet persisted, per shard (the persist lag, for metrics)."""
        counts = {}
        for shard in range(self.shards):
            counts[shard] = int(self.client.xlen(self.stream_key(shard)))
        return counts

    # --- worker side -----------------------------------------------------------------
    def _ensure_group(self, shard: int) -> None:
        if shard in self._groups_ready:
            return
        try:
            self.client.xgroup_create(self.stream_key(shard), GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._groups_ready.add(shard)

    def drain(self, history: HistoryStore, shard: int, consumer: str, *, batch: int = 500,
              claim_idle_ms: int = 10_000, max_batches: int | None = None) -> int:
        """Persist this shard's entries until none are left; returns how many.

        Entries another consumer took but did not acknowledge for ``claim_idle_ms``
        (it died) are claimed first. Raises if the history store fails: the entries
        stay pending and a later drain retries them.
        """
        self._ensure_group(shard)
        stream = self.stream_key(shard)
        done = 0
        rounds = 0
        while max_batches is None or rounds < max_batches:
            rounds += 1
            _, claimed, _ = self.client.xautoclaim(stream, GROUP, consumer, claim_idle_ms,
                                                   start_id="0-0", count=batch)
            entries = list(claimed)
            if len(entries) < batch:
                fresh = self.client.xreadgroup(GROUP, consumer, {stream: ">"},
                                               count=batch - len(entries))
                for _, items in fresh or []:
                    entries.extend(items)
            entries = [(entry_id, fields) for entry_id, fields in entries if fields]
            if not entries:
                return done
            self._persist(history, entries)
            ids = [entry_id for entry_id, _ in entries]
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.execute()
            done += len(entries)
        return done

    def _persist(self, history: HistoryStore, entries: list) -> None:
        messages = [Message.from_json(json.loads(fields["m"])) for _, fields in entries]
        # Writing a message means having read up to it; the sender's mark moves here,
        # off the send path, so a history outage never fails a send.
        marks: dict[tuple[int, int], Message] = {}
        for message in messages:
            key = (message.conversation_id, message.sender_id)
            if key not in marks or marks[key].seq < message.seq:
                marks[key] = message
        inbox = []
        for (_, fields), message in zip(entries, messages, strict=True):
            members = [int(u) for u in fields.get("u", "").split(",") if u]
            if members:
                inbox.append((members, message))
        history.store_drained(
            messages, [Watermark(conversation_id, sender_id, m.seq, m.id, m.created_at)
                       for (conversation_id, sender_id), m in marks.items()], inbox)
        by_conversation: dict[int, list[str]] = defaultdict(list)
        for (_, fields), message in zip(entries, messages, strict=True):
            by_conversation[message.conversation_id].append(fields["m"])
        pipe = self.client.pipeline(transaction=False)
        for conversation_id, bodies in by_conversation.items():
            pipe.zrem(self.tail_key(conversation_id), *bodies)
        pipe.execute()
