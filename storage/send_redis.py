"""A send in one round trip, on a standalone Redis server.

The general send (``RedisState.sending``) takes two round trips: the first claims the
client_msg_id and the conversation's turn, which hands out the seq; the second records
the message, appends it to the members' logs, ends the turn and settles the claim. On
one server a single script can do all of that, atomically, so nobody comes between the
seq and the appends and no turn lock is needed. The one thing a script cannot do is
build the message, whose JSON carries the seq: it is built here with seq 0 (never a
real one), split at that field, and the script joins the halves around the seq it
counts.

The script declines, and the send takes the general path, where that path has work to
do first: another sender holds the conversation's turn (a general send is under way),
or the seq counter is missing (it restarts from history, which a script cannot read).
It refuses a message id not above the conversation's last one (another worker's clock
is ahead): a later id is made and the script asked again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from redis.exceptions import ResponseError

from storage.broker_redis import APPEND_SOURCE, RedisBroker
from storage.events import EventType, encode, event
from storage.history import Message
from storage.ids import IdGenerator
from storage.persist_buffer import RECORD_SOURCE, PersistBuffer
from storage.redis_conn import LOST_LINK, RedisClient, Script, lost_link_attempts
from storage.redis_keys import KeySpace
from storage.state import LAST_ID_TTL
from storage.state_redis import BUCKET_SOURCE, PENDING

# KEYS: send record, the sender's bucket, turn lock, seq counter, last id, tail, persist
# stream, then each member's 3 log keys. ARGV: rate, burst, the pending prefix, message
# id, record ttl (ms), last id ttl (s), the message JSON before and after its seq, the
# event JSON before and after the message, member ids ("1,2,3"), then each member's 7
# append arguments (the event among them left empty: it is made here). Returns {'sent',
# message}, {'pending'}, {'limited'}, {'busy'}, {'floor'}, {'stale', last id}, or
# {'done', seq, each append's result or {'~error', message}}.
_SEND = Script("""
local function append(KEYS, ARGV)
""" + APPEND_SOURCE + """
end
local function record(KEYS, ARGV)
""" + RECORD_SOURCE + """
end
-- One read for the send record, the sender's bucket, the turn lock, the seq counter
-- and the last id, rather than a call each (all are strings; false if absent).
local found = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local value = found[1]
if value then
  if string.sub(value, 1, string.len(ARGV[3])) == ARGV[3] then return {'pending'} end
  return {'sent', value}
end
if found[3] then return {'busy'} end
if not found[4] then return {'floor'} end
-- Ids are 63-bit, past a Lua number's precision: compared as decimal strings.
local last = found[5]
if last and (#ARGV[4] < #last or (#ARGV[4] == #last and ARGV[4] <= last)) then
  return {'stale', last}
end
local bucket, saved = KEYS[2], found[2]""" + BUCKET_SOURCE + """
if granted == 0 then return {'limited'} end
local seq = redis.call('INCR', KEYS[4])
local message = ARGV[7] .. seq .. ARGV[8]
record({KEYS[6], KEYS[7]}, {seq, message, ARGV[11]})
redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[6])
local payload = ARGV[9] .. message .. ARGV[10]
local results = {}
for i = 0, (#KEYS - 7) / 3 - 1 do
  local keys, args = {KEYS[8 + 3 * i], KEYS[9 + 3 * i], KEYS[10 + 3 * i]}, {}
  for j = 1, 7 do args[j] = ARGV[11 + 7 * i + j] end
  args[4] = payload
  local ok, got = pcall(append, keys, args)
  if not ok then got = {'~error', type(got) == 'table' and got.err or tostring(got)} end
  results[i + 1] = got
end
redis.call('SET', KEYS[1], message, 'PX', ARGV[5])
return {'done', seq, results}
""")
_SEQ_FIELD = '"seq":0,'  # where a draft's seq is: "seq" precedes every field users write
_STALE_TRIES = 3  # ids refused as too low before the general path takes over
# The event's JSON around the message's, the same for every send: made once, here.
_EVENT_HEAD, _, _EVENT_TAIL = encode(event(EventType.MESSAGE_CREATED, {})).partition("{}")


class Outcome(NamedTuple):
    """What a one-trip send did: "created" (``message``, stored and fanned out by this
    call), "sent" (``value``: the message remembered under this client_msg_id),
    "pending" (another request is sending it) or "limited" (over the rate limit)."""

    outcome: str
    message: Message | None = None
    value: str | None = None


class OneTripSends:
    """Sends on a standalone server whose broker, state and persist buffer share
    ``client`` (services.py builds one only then)."""

    def __init__(self, client: RedisClient, keys: KeySpace, ids: IdGenerator,
                 broker: RedisBroker, buffer: PersistBuffer,
                 schedule: Callable[[int], None]) -> None:
        self.client = client
        self.keys = keys
        self.ids = ids
        self.broker = broker
        self.buffer = buffer
        self.schedule = schedule  # asks for the persist shard to be drained

    def send(self, sender_id: int, conversation_id: int, client_msg_id: str, text: str,
             members: Sequence[int], *, rate: float, burst: int,
             ttl: float) -> Outcome | None:
        """Store and fan out a message as the general send would, or None when that
        path must take it (nothing was done then)."""
        after = None
        for _ in range(_STALE_TRIES):
            draft = Message(id=self.ids.next_id(after), conversation_id=conversation_id,
                            seq=0, sender_id=sender_id, client_msg_id=client_msg_id,
                            text=text, created_at=int(time.time() * 1000))
            got = self._send(draft, members, rate, burst, ttl)
            if not isinstance(got, int):
                return got
            after = got
        return None

    def _send(self, draft: Message, members: Sequence[int], rate: float, burst: int,
              ttl: float) -> Outcome | int | None:
        """One send of ``draft``; an int is the conversation's last id when the draft's
        was not above it."""
        data = draft.to_json()
        body = encode(data)
        head, found, tail = body.partition(_SEQ_FIELD)
        assert found, "the draft's seq is not where the script puts it"
        payload = event(EventType.MESSAGE_CREATED, data)
        fan_out = self.broker.prepare_append(members, payload, body="")
        conversation_id = draft.conversation_id
        shard = self.buffer.shard_of(conversation_id)
        keys = [*self.keys.sends(draft.sender_id, draft.client_msg_id),
                *self.keys.conversation(conversation_id),
                self.buffer.tail_key(conversation_id), self.buffer.stream_key(shard)]
        args = [rate, burst, PENDING, str(draft.id), max(1, int(ttl * 1000)), LAST_ID_TTL,
                head + '"seq":', "," + tail, _EVENT_HEAD, _EVENT_TAIL,
                ",".join(map(str, members))]
        for _, call_keys, call_args in fan_out.calls:
            keys.extend(call_keys)
            args.extend(call_args)
        lost: Exception | None = None  # the first reply lost with its connection
        for _ in lost_link_attempts():
            try:
                got = _SEND(self.client, keys, args, batch=True)
                break
            except LOST_LINK as exc:
                lost = lost or exc
        else:
            # Unknown whether it ran: the client's retry finds the message, or sends it.
            # This process' connections of the members read their logs meanwhile (its
            # own appends' wake-ups never come back to it).
            assert lost is not None
            fan_out.unknown()
            raise lost
        outcome = str(got[0])
        if outcome == "sent":
            value = str(got[1])
            if lost is not None and _message_id(value) == str(draft.id):
                # A lost reply's attempt ran: the message is ours, where its appends
                # went is not known.
                self.schedule(shard)
                fan_out.unknown()
                return Outcome("created", Message.from_json(json.loads(value)))
            return Outcome("sent", value=value)
        if outcome in ("pending", "limited"):
            return Outcome(outcome)
        if outcome == "stale":
            return int(got[1])
        if outcome != "done":
            return None  # "busy" or "floor": the general path's work
        seq = int(got[1])
        payload["data"]["seq"] = seq  # what this process' own listeners are handed
        self.schedule(shard)
        fan_out.finish([ResponseError(str(result[1]))
                        if result and result[0] == "~error" else result
                        for result in got[2]],
                       f"{_EVENT_HEAD}{args[6]}{seq}{args[7]}{_EVENT_TAIL}")  # as the script did
        return Outcome("created", dataclasses.replace(draft, seq=seq))


def _message_id(value: str) -> str:
    return str(json.loads(value).get("id"))
