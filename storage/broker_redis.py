"""Redis Broker: per-user event logs in Streams, pub/sub as the doorbell.

Serves every worker of every node, standalone or Cluster. Each user's log, offset
counter and epoch share one hash tag (see storage/redis_keys.py), so the Lua scripts
below are single-shard; a fan-out runs one script per member, pipelined, never one
script across users.

* Offsets come from INCR inside the append script (never a clock); the stream entry id
  is ``<offset>-0`` so reads are XRANGE by offset.
* The log is trimmed to ``size`` entries (approximately, which is cheap) and the read
  script treats anything older than the last ``size`` offsets as gone, so the window is
  exact for clients. The keys expire ``ttl`` seconds after the last append.
* The epoch is a random token created with the log. When the log and its counter
  expire, the next append or read starts a new epoch, and every older cursor gets a
  reset instead of being matched against reused offsets.
* The appended event itself is published inside the append script, after the entry is
  written, with its epoch and offset: a process serving that user hands it straight to
  its connections, which read the log only when what arrives does not follow their
  cursor (a gap, a new epoch) - a read per receiver saved on every message, as
  Centrifugo does with its publications. Each message names its origin process, which
  skips its own echoes: it has already told its local listener directly
  (python-socketio's host_id trick).
* The same messages tell a process each watched user's tip. While the user's channel
  is confirmed and the connection has not dropped since, every later append will be
  heard, so a connection opening at exactly that tip (a long-poll coming back with the
  cursor of its last answer) skips its read (``at_tip``).
* A tip is trusted for ``_TIP_TRUST`` seconds. Before it lapses, a loop checks the tips
  of every watched user in one pipeline (two GETs each), so a parked connection whose
  wait runs out finds its cursor vouched for instead of reading its log: at 10,000
  parked connections those reads were a third of Redis's work and a sizeable share of
  the process's. A tip found further on than the one heard means a lost wake-up: its
  connections are woken at once.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import gevent
from redis.exceptions import RedisError

from storage.broker import Appended, Broker, Listener, LogRead
from storage.events import Cursor, InvalidCursor, encode, logged_event
from storage.redis_conn import (
    LOST_LINK,
    RedisClient,
    Script,
    lost_link_attempts,
    run_scripts,
    server_major_version,
)
from storage.redis_keys import KeySpace
from storage.redis_pubsub import Subscriber

log = logging.getLogger(__name__)

# Seconds a learnt tip is trusted without being heard of again: a bound on anything
# unforeseen, far below the log's lifetime. Every append heard renews it.
_TIP_TRUST = 30.0
# Tips older than this are checked again (all in one pipeline), every _TIP_CHECK_EVERY.
_TIP_CHECK_AGE = 22.0
_TIP_CHECK_EVERY = 2.0
_TIP_CHECK_BATCH = 1000
_HEARD = -1  # a tip's source: a message on the user's channel (in order, always current)

# Channel messages: an appended event is "a<origin>|<epoch>|<offset>|<json>", an
# ephemeral one "e<origin>|<json>".
_APPENDED = "a"
_EPHEMERAL = "e"

# A read's start: the user's epoch, starting a new life of the log when the epoch or
# the counter is missing (first use, or both expired). KEYS: log, offset, epoch.
# ARGV[1]: a fresh random epoch, ARGV[2]: ttl in seconds.
_ENSURE_EPOCH = """
local epoch = redis.call('GET', KEYS[3])
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[3], epoch, 'EX', ARGV[2])
  redis.call('SET', KEYS[2], 0, 'EX', ARGV[2])
end
"""

# An append's start: the same, with the epoch's life renewed as it is read and the
# counter's as it is written (an append extends the log's, the counter's and the
# epoch's). 6 calls per append with the body below, where GET, EXISTS, INCR and three
# EXPIREs made 8: a group's fan-out pays them per member.
_APPEND_HEAD = """
local epoch = redis.call('GETEX', KEYS[3], 'EX', ARGV[2])
local last = redis.call('GET', KEYS[2])
if not epoch or not last then
  epoch, last = ARGV[1], 0
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[3], epoch, 'EX', ARGV[2])
end
"""

# ARGV[3]: window size, ARGV[4]: event JSON, ARGV[5]: channel, ARGV[6]: message prefix
# ("a<origin>|"), ARGV[7]: publish command (SPUBLISH on a sharded server, else PUBLISH).
_APPEND_BODY = """
local offset = tonumber(last) + 1
redis.call('SET', KEYS[2], offset, 'EX', ARGV[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'e', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call(ARGV[7], ARGV[5], ARGV[6] .. epoch .. '|' .. offset .. '|' .. ARGV[4])
return {epoch, offset}
"""
APPEND_SOURCE = _APPEND_HEAD + _APPEND_BODY
_APPEND = Script(APPEND_SOURCE)
# The append again after its reply was lost: if the lost attempt ran, its event is
# among the log's newest entries (events carry their own ids or times: an identical
# entry is this event), and that entry is the answer; else it appends. Only this rare
# path pays for the scan.
_RECENT_SCANNED = 256
_APPEND_AGAIN = Script(_APPEND_HEAD + f"""
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', {_RECENT_SCANNED})) do
  if entry[2][2] == ARGV[4] then
    return {{epoch, tonumber(string.match(entry[1], '^(%d+)'))}}
  end
end
""" + _APPEND_BODY)

# ARGV[3]: window size, ARGV[4]: cursor epoch ('' for none), ARGV[5]: cursor offset,
# ARGV[6]: limit. Returns {epoch, last offset, status, entries}; status is 'ok',
# 'reset' (cursor too old or from another epoch) or 'ahead' (never issued).
_READ = Script(_ENSURE_EPOCH + """
local last = tonumber(redis.call('GET', KEYS[2]))
if ARGV[4] == '' then return {epoch, last, 'ok', {}} end
if ARGV[4] ~= epoch then return {epoch, last, 'reset', {}} end
local offset = tonumber(ARGV[5])
if offset > last then return {epoch, last, 'ahead', {}} end
if offset == last then return {epoch, last, 'ok', {}} end
local first = last + 1
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if head[1] then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local window = last - tonumber(ARGV[3]) + 1
if window > first then first = window end
if offset < first - 1 then return {epoch, last, 'reset', {}} end
local limit = tonumber(ARGV[6])
if limit <= 0 then return {epoch, last, 'ok', {}} end
local upto = math.min(last, offset + limit)
return {epoch, last, 'ok',
        redis.call('XRANGE', KEYS[1], (offset + 1) .. '-0', upto .. '-0')}
""")


class PreparedAppend(NamedTuple):
    calls: list[tuple[Script, Sequence[str], Sequence[Any]]]  # for run_scripts
    # finish(results, made=None); ``made``: the payload's JSON, for a caller whose
    # script made it (the calls were prepared with ``body=""``)
    finish: Callable[..., dict[int, str]]
    # The appends ran but their results were lost (a dropped reply): this process'
    # connections of those users read their logs instead, and their tips are relearnt.
    unknown: Callable[[], None]


class RedisBroker(Broker):
    """``write_only=True`` for workers: they append and publish, and never listen."""

    def __init__(self, client: RedisClient, *, prefix: str = "sb", size: int = 1000,
                 ttl: int = 24 * 3600, write_only: bool = False,
                 health_check_interval: float = 10.0, max_backoff: float = 5.0) -> None:
        self.client = client
        self.keys = KeySpace(prefix)
        self.size = size
        self.ttl = int(ttl)
        self.write_only = write_only
        self.origin = secrets.token_hex(8)  # this process, to skip its own echoes
        self.sharded = server_major_version(client) >= 7
        self._publish = "SPUBLISH" if self.sharded else "PUBLISH"
        self._health_check_interval = health_check_interval
        self._max_backoff = max_backoff
        self._watched: dict[str, int] = {}  # channel -> user id
        # user id -> (epoch, offset, the subscriber's link generation, when learnt)
        self._tips: dict[int, tuple[str, int, int, float]] = {}
        self.subscriber: Subscriber | None = None
        self._checker: gevent.Greenlet | None = None

    # --- listening ---------------------------------------------------------------------

    def attach(self, listener: Listener) -> None:
        if self.write_only:
            raise RuntimeError("a write-only broker has no listener")
        super().attach(listener)
        if self.subscriber is None:
            self.subscriber = Subscriber(
                self.client, sharded=self.sharded, on_message=self._on_message,
                on_recover=self._on_recover,
                health_check_interval=self._health_check_interval,
                max_backoff=self._max_backoff,
                name=f"{self.keys.prefix}:subscriber:{self.origin}")
            self.subscriber.start()
            self._checker = gevent.spawn(self._check_tips_forever)

    def watch(self, user_id: int) -> None:
        if self.subscriber is None:
            return
        channel = self.keys.channel(user_id)
        self._watched[channel] = user_id
        self.subscriber.subscribe(channel)

    def unwatch(self, user_id: int) -> None:
        if self.subscriber is None:
            return
        channel = self.keys.channel(user_id)
        self._watched.pop(channel, None)
        self.subscriber.unsubscribe(channel)
        self._tips.pop(user_id, None)

    def _on_message(self, channel: str, data: str) -> None:
        user_id = self._watched.get(channel)
        listener = self.listener
        if user_id is None or listener is None:
            return
        kind, body = data[:1], data[1:]
        origin, _, payload = body.partition("|")
        if origin == self.origin:
            return  # delivered locally when it was sent
        if kind == _APPENDED:
            epoch, _, rest = payload.partition("|")
            offset, _, body = rest.partition("|")
            if self.subscriber is not None and self.subscriber.confirmed(channel):
                self._learn(user_id, epoch, int(offset))
            listener.on_appended([Appended(user_id, epoch, int(offset), json.loads(body),
                                           body)])
        elif kind == _EPHEMERAL:
            listener.on_ephemeral([user_id], json.loads(payload))

    def _on_recover(self, channels: list[str]) -> None:
        """After a reconnect, anything may have been missed: wake every watched user."""
        users = [self._watched[c] for c in channels if c in self._watched]
        log.info("pub/sub recovered; waking %d watched users", len(users))
        if users and self.listener is not None:
            self.listener.on_wake(users)

    # --- tips ----------------------------------------------------------------------------

    def at_tip(self, user_id: int, cursor: str) -> bool:
        known = self._tips.get(user_id)
        subscriber = self.subscriber
        if known is None or subscriber is None:
            return False
        epoch, offset, generation, learnt = known
        return (generation == subscriber.link_generation and subscriber.ready
                and time.monotonic() - learnt < _TIP_TRUST and cursor == f"{epoch}:{offset}")

    def _mark(self, user_id: int) -> int | None:
        """Before a read or append: a token if the user's channel is confirmed now (what
        the command finds is then the tip, unless a subscription lapsed meanwhile)."""
        subscriber = self.subscriber
        if subscriber is None:
            return None
        channel = self.keys.channel(user_id)
        if self._watched.get(channel) != user_id or not subscriber.confirmed(channel):
            return None
        return subscriber.changes

    def _learn(self, user_id: int, epoch: str, offset: int, mark: int | None = _HEARD) -> None:
        """Note a tip heard on the channel (``_HEARD``) or found by a command that
        started at ``mark``. Offsets only move forward; epochs cannot be ordered, so a
        different one forgets the tip until the next append is heard."""
        subscriber = self.subscriber
        if subscriber is None or mark is None or mark not in (_HEARD, subscriber.changes):
            return
        generation = subscriber.link_generation
        known = self._tips.get(user_id)
        if known is not None and known[2] == generation:
            if known[0] != epoch:
                del self._tips[user_id]
                return
            offset = max(offset, known[1])
        self._tips[user_id] = (epoch, offset, generation, time.monotonic())

    def check_tips(self, older_than: float = _TIP_CHECK_AGE) -> int:
        """Confirm the tips learnt more than ``older_than`` seconds ago, as each
        connection's own read would, a thousand users a round trip. A tip that moved on
        unheard wakes its user's connections. Returns how many were checked."""
        subscriber = self.subscriber
        if subscriber is None or not subscriber.ready:
            return 0
        now = time.monotonic()
        generation = subscriber.link_generation
        due = [user_id for user_id, known in self._tips.items()
               if now - known[3] > older_than and known[2] == generation]
        for start in range(0, len(due), _TIP_CHECK_BATCH):
            self._check(due[start:start + _TIP_CHECK_BATCH])
        return len(due)

    def _check(self, users: list[int]) -> None:
        marks = [self._mark(user_id) for user_id in users]
        pipe = self.client.pipeline(transaction=False)
        for user_id in users:
            _, offset_key, epoch_key = self.keys.user(user_id)
            pipe.get(epoch_key)
            pipe.get(offset_key)
        replies = pipe.execute()
        moved = []
        for user_id, mark, epoch, offset in zip(users, marks, replies[::2], replies[1::2],
                                                strict=True):
            current = self._tips.get(user_id)  # as it is now: a tip heard meanwhile is no news
            if current is None:
                continue  # dropped meanwhile: its connections read for themselves
            if epoch is None or offset is None:  # the log lapsed: a read starts it anew
                self._tips.pop(user_id, None)
                continue
            if str(epoch) != current[0] or int(offset) > current[1]:
                moved.append(user_id)
            self._learn(user_id, str(epoch), int(offset), mark)
        if moved and self.listener is not None:
            self.listener.on_wake(moved)

    def _check_tips_forever(self) -> None:
        while True:
            gevent.sleep(_TIP_CHECK_EVERY)
            try:
                self.check_tips()
            except RedisError as exc:  # the tips lapse; connections read for themselves
                log.warning("tip check skipped: %s", exc)
            except Exception:  # never let the loop die: the next round tries again
                log.exception("tip check failed")

    # --- the log -----------------------------------------------------------------------

    def append(self, user_ids: Iterable[int], payload: dict[str, Any], *,
               batch: bool = False) -> dict[int, str]:
        """Appends whose connection dropped are made again, for up to LOST_LINK_PAUSES,
        by a script that first looks for the event in the log (the lost attempt may
        have run). A member is never left without the event because a link blinked.

        ``batch``: the send path's fan-out, in round trips shared with other sends (see
        run_scripts)."""
        prepared = self.prepare_append(user_ids, payload)
        results: list[Any] = [None] * len(prepared.calls)
        todo = list(range(len(prepared.calls)))
        for attempt in lost_link_attempts():
            calls = [(_APPEND_AGAIN if attempt else script, keys, args)
                     for script, keys, args in (prepared.calls[i] for i in todo)]
            try:
                got = run_scripts(self.client, calls, raise_on_error=False, batch=batch)
            except LOST_LINK as exc:  # one link carried them all (standalone)
                got = [exc] * len(calls)
            for index, result in zip(todo, got, strict=True):
                results[index] = result
            todo = [i for i in todo if isinstance(results[i], LOST_LINK)]
            if not todo:
                break
        return prepared.finish(results)

    def prepare_append(self, user_ids: Iterable[int], payload: dict[str, Any], *,
                       body: str | None = None) -> PreparedAppend:
        """``append`` in two halves, so a caller can send its script calls in a pipeline
        of its own (RedisState ends a send's turn in the same round trip); ``finish``
        takes their results, in order, exceptions included. ``body``: the calls'
        encoding of ``payload``, for a caller whose own script makes it (a one-trip
        send's, storage/send_redis.py)."""
        users = list(dict.fromkeys(user_ids))
        if body is None:
            body = encode(payload)
        prefix = f"{_APPENDED}{self.origin}|"
        # The epoch a log gets if this append starts it. One per call will do: an epoch
        # only has to differ from the user's earlier ones, and a cursor names its user.
        epoch = secrets.token_hex(6)
        calls = [(_APPEND, self.keys.user(u), (epoch, self.ttl, self.size, body,
                                               self.keys.channel(u), prefix, self._publish))
                 for u in users]
        marks = [self._mark(u) for u in users] if self.subscriber is not None else None

        def finish(results: list[Any], made: str | None = None) -> dict[int, str]:
            text = made if made is not None else body or None
            appended = [Appended(u, str(got[0]), int(got[1]), payload, text)
                        for u, got in zip(users, results, strict=True)
                        if not isinstance(got, Exception)]
            if marks is not None:
                for user_id, mark, got in zip(users, marks, results, strict=True):
                    if not isinstance(got, Exception):
                        self._learn(user_id, str(got[0]), int(got[1]), mark)
            # What was appended reaches this process' connections even if a call failed.
            if self.listener is not None and appended:
                self.listener.on_appended(appended)
            for got in results:
                if isinstance(got, Exception):
                    raise got
            return {a.user_id: str(Cursor(a.epoch, a.offset)) for a in appended}

        def unknown() -> None:
            for user_id in users:
                self._tips.pop(user_id, None)
            if self.listener is not None:
                self.listener.on_wake(users)

        return PreparedAppend(calls, finish, unknown)

    def read(self, user_id: int, cursor: str | None, limit: int) -> LogRead:
        position = Cursor.parse(cursor) if cursor is not None else None
        mark = self._mark(user_id)
        epoch, last, status, entries = _READ(
            self.client, self.keys.user(user_id),
            (secrets.token_hex(6), self.ttl, self.size,
             position.epoch if position else "", position.offset if position else 0,
             max(0, limit)))
        tip = str(Cursor(str(epoch), int(last)))
        if status != "ahead":
            self._learn(user_id, str(epoch), int(last), mark)
        if status == "ahead":
            raise InvalidCursor(f"cursor {cursor!r} is ahead of this log")
        if status == "reset":
            return LogRead([], tip, True)
        if position is None:
            return LogRead([], tip, False)
        events = []
        for entry_id, fields in entries:
            offset = int(str(entry_id).partition("-")[0])
            data = dict(zip(fields[::2], fields[1::2], strict=True))
            events.append(logged_event(str(Cursor(str(epoch), offset)), json.loads(data["e"]),
                                       data["e"]))
        return LogRead(events, events[-1]["id"] if events else str(cursor), False)

    # --- ephemeral ---------------------------------------------------------------------

    def publish_ephemeral(self, user_ids: Iterable[int], payload: dict[str, Any]) -> None:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return
        message = f"{_EPHEMERAL}{self.origin}|{encode(payload)}"
        pipe = self.client.pipeline(transaction=False)
        for user_id in users:
            pipe.execute_command(self._publish, self.keys.channel(user_id), message)
        pipe.execute()
        if self.listener is not None:
            self.listener.on_ephemeral(users, payload)

    def close(self) -> None:
        """Stop listening; the client belongs to whoever passed it in."""
        if self._checker is not None:
            self._checker.kill(block=False)
            self._checker = None
        if self.subscriber is not None:
            self.subscriber.stop()
            self.subscriber = None
