"""The one-round-trip send (storage/send_redis.py) on a real standalone Redis.

It must store exactly what the general send stores - the record in the persist tail and
stream, each member's event, the idempotency record, the conversation's seq and last
id - and decline, changing nothing, wherever the general send has work to do first.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

import storage.send_redis as send_redis
from storage.broker_redis import RedisBroker
from storage.history import Message
from storage.ids import IdGenerator, id_time_ms
from storage.persist_buffer import PersistBuffer
from storage.send_redis import OneTripSends
from storage.state_redis import RedisState
from tests.contracts.redis_engines import client_for
from tests.services import require_service
from tests.test_redis_engine import CountingListener, LosingTheLink

pytestmark = pytest.mark.redis

OPTIONS = {"rate": 100.0, "burst": 10, "ttl": 60.0}


class Engine:
    """The one-trip sender and the general path's state over one server and prefix."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.client, prefix = client_for(require_service("redis"), request)
        self.state = RedisState(self.client, prefix=prefix)
        self.broker = RedisBroker(self.client, prefix=prefix)
        self.buffer = PersistBuffer(self.client, prefix, shards=2)
        self.scheduled: list[int] = []
        self.sends = OneTripSends(self.client, self.state.keys, IdGenerator(3), self.broker,
                                  self.buffer, self.scheduled.append)

    def send(self, sender: int, conversation: int, key: str, text: str = "hi",
             members: tuple[int, ...] = (1, 2), **options: Any) -> send_redis.Outcome | None:
        return self.sends.send(sender, conversation, key, text, list(members),
                               **{**OPTIONS, **options})

    def events(self, user: int, since: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.broker.read(user, since, 100).events]

    def seq(self, conversation: int) -> int | None:
        value = self.client.get(self.state.keys.conversation(conversation)[1])
        return None if value is None else int(value)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Engine:
    return Engine(request)


def test_a_send_stores_and_fans_out_the_message_with_the_seq_it_counted(engine):
    engine.state.start_conversation(10)
    tips = {u: engine.broker.tip(u) for u in (1, 2)}
    # Text that looks like the field the script fills in is left alone.
    text = 'say "seq":0, and \u00e9\U0001f600 \\ "quotes"'
    first = engine.send(1, 10, "a", text)
    second = engine.send(2, 10, "b")
    assert first is not None and first.outcome == "created" and first.message is not None
    assert second is not None and second.message is not None
    assert (first.message.seq, second.message.seq) == (1, 2)
    assert second.message.id > first.message.id
    assert engine.seq(10) == 2
    stored = engine.buffer.tail(10)
    assert stored == [first.message, second.message]
    assert stored[0].text == text
    assert engine.client.xlen(engine.buffer.stream_key(engine.buffer.shard_of(10))) == 2
    assert engine.scheduled == [0, 0]
    for user in (1, 2):
        assert engine.events(user, tips[user]) == [first.message.to_json(),
                                                   second.message.to_json()]
    last_id = engine.client.get(engine.state.keys.conversation(10)[2])
    assert last_id == str(second.message.id)
    again = engine.send(1, 10, "a", text)  # a retry: the first message, nothing new
    assert again is not None and again.outcome == "sent"
    assert Message.from_json(json.loads(again.value or "")) == first.message
    assert engine.seq(10) == 2 and len(engine.buffer.tail(10)) == 2


def test_it_stores_what_the_general_send_stores(engine):
    """Same message through both paths (two conversations): the same record, event and
    remembered value, apart from the conversation itself."""
    from storage.events import EventType, event
    from workers.queue import RqJobQueue

    jobs = RqJobQueue(engine.buffer, queue=None, state=engine.state)
    jobs.schedule = lambda shard: None  # type: ignore[method-assign] # no RQ queue here
    for conversation in (20, 21):
        engine.state.start_conversation(conversation)
    tips = {u: engine.broker.tip(u) for u in (1, 2)}
    quick = engine.send(1, 20, "q", "same")
    assert quick is not None and quick.message is not None
    general = Message(id=quick.message.id + 1, conversation_id=21, seq=1, sender_id=1,
                      client_msg_id="g", text="same", created_at=quick.message.created_at)
    with engine.state.sending(1, "g", 21, floor=lambda: 0, **OPTIONS) as sending:
        sending.persist = jobs.prepare_persist(general, [1, 2])
        sending.message = json.dumps(general.to_json())
        sending.turn.new_last_id = general.id  # type: ignore[union-attr]
        sending.fan_out = (engine.broker, [1, 2], event(EventType.MESSAGE_CREATED,
                                                        general.to_json()))

    def raw(conversation: int) -> dict[str, Any]:
        tail = engine.client.zrange(engine.buffer.tail_key(conversation), 0, -1)
        stream = engine.client.xrange(engine.buffer.stream_key(conversation % 2))
        remembered = engine.client.get(engine.state.keys.sends(
            1, "q" if conversation == 20 else "g")[0])
        fields = stream[-1][1]
        return {"tail": json.loads(tail[0]), "stream": json.loads(fields["m"]),
                "members": fields["u"], "remembered": json.loads(remembered)}

    def same_but_conversation(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in ("id", "conversation_id",
                                                           "client_msg_id")}

    quick_raw, general_raw = raw(20), raw(21)
    assert quick_raw["members"] == general_raw["members"] == "1,2"
    for part in ("tail", "stream", "remembered"):
        assert same_but_conversation(quick_raw[part]) == same_but_conversation(
            general_raw[part])
    for user in (1, 2):
        got = engine.events(user, tips[user])
        assert [same_but_conversation(e) for e in got] == [
            same_but_conversation(quick.message.to_json())] * 2


def test_it_declines_changing_nothing_where_the_general_send_has_work_first(engine):
    # No counter yet: it starts from history, which only the general path reads.
    assert engine.send(1, 30, "a") is None
    assert engine.seq(30) is None
    with engine.state.sending(1, "a", 30, floor=lambda: 41, **OPTIONS) as sending:
        assert sending.turn is not None and sending.turn.seq == 42
        # A general send holds the turn: the one-trip send waits behind it there.
        assert engine.send(2, 30, "b") is None
        assert engine.send(1, 30, "a").outcome == "pending"  # type: ignore[union-attr]
        sending.message = '{"id": "1"}'
    assert engine.seq(30) == 42
    assert engine.buffer.tail(30) == []
    got = engine.send(2, 30, "b")  # the turn ended: it goes through, after 42
    assert got is not None and got.message is not None and got.message.seq == 43


def test_over_the_rate_limit_it_stores_nothing(engine):
    engine.state.start_conversation(40)
    assert engine.send(1, 40, "a", rate=0.001, burst=1).outcome == "created"  # type: ignore[union-attr]
    limited = engine.send(1, 40, "b", rate=0.001, burst=1)
    assert limited is not None and limited.outcome == "limited"
    assert engine.seq(40) == 1 and len(engine.buffer.tail(40)) == 1
    assert engine.client.get(engine.state.keys.sends(1, "b")[0]) is None


def test_an_id_not_above_the_conversations_last_is_made_again_after_it(engine):
    """Another worker's clock ahead of this one's: its last id is the floor."""
    engine.state.start_conversation(50)
    ahead = IdGenerator(9)
    ahead_id = ahead.next_id(engine.sends.ids.next_id() + (5000 << 22))
    engine.client.set(engine.state.keys.conversation(50)[2], ahead_id)
    got = engine.send(1, 50, "a")
    assert got is not None and got.message is not None
    assert got.message.id > ahead_id and id_time_ms(got.message.id) > id_time_ms(ahead_id)
    assert engine.seq(50) == 1


@pytest.mark.parametrize("ran", [True, False], ids=["reply-lost", "request-lost"])
def test_a_lost_connection_neither_doubles_nor_drops_the_message(engine, monkeypatch, ran):
    """The script is all or nothing: tried again, it finds its own message (the lost
    attempt ran) or sends it (it did not). Listeners of this process hear of it
    either way."""
    engine.state.start_conversation(60)
    listener = CountingListener()
    engine.broker.listener = listener  # the local delivery only: no subscriber needed
    script = LosingTheLink(send_redis._SEND, 1, ran=ran)
    monkeypatch.setattr(send_redis, "_SEND", script)
    got = engine.send(1, 60, "a")
    assert got is not None and got.outcome == "created" and got.message is not None
    assert engine.buffer.tail(60) == [got.message]
    assert engine.seq(60) == 1
    assert listener.wakes[1] == listener.wakes[2] == 1
    assert engine.scheduled == [0] and script.left == 0


def test_a_connection_lost_on_every_attempt_fails_the_send_and_wakes_its_members(
        engine, monkeypatch):
    engine.state.start_conversation(70)

    def down(*args: Any, **options: Any) -> Any:
        raise redis.ConnectionError("connection lost (test)")

    monkeypatch.setattr(send_redis, "_SEND", down)
    listener = CountingListener()
    engine.broker.listener = listener
    with pytest.raises(redis.ConnectionError):
        engine.send(1, 70, "a")
    assert engine.buffer.tail(70) == [] and engine.seq(70) == 0
    # Unsure, this process' connections of the members read their logs.
    assert listener.wakes[1] == listener.wakes[2] == 1
    assert engine.client.get(engine.state.keys.sends(1, "a")[0]) is None


@pytest.mark.parametrize("service, enabled, expected", [
    ("redis", True, True), ("redis", False, False), ("redis-cluster", True, False)],
    ids=["standalone", "turned-off", "cluster"])
def test_a_gateway_sends_in_one_trip_only_on_a_standalone_server(tmp_path, service,
                                                                    enabled, expected):
    from config import Settings
    from gateway.services import build_services

    settings = Settings.from_env({}, data_dir=str(tmp_path), redis_url=require_service(
        service), rq_redis_url=require_service("redis"), one_trip_sends=enabled,
        redis_prefix=f"sbtest-wiring-{tmp_path.name[-12:]}")
    svc = build_services(settings)
    try:
        assert (svc.one_trip is not None) is expected
    finally:
        svc.close()


def test_this_process_connections_are_handed_the_events_json_as_stored(engine):
    """Both send paths hand this process' Hub the payload's JSON with the event, which a
    delivery writes as it is (no json.dumps): it must say exactly what the log holds,
    seq included, however awkward the text."""
    from storage.events import EventType, event, event_json, logged_event

    engine.state.start_conversation(30)
    engine.state.start_conversation(31)
    listener = CountingListener()
    engine.broker.listener = listener
    tips = {u: engine.broker.tip(u) for u in (1, 2)}
    text = 'a "seq":0, {"id":"x"} \\ \u00e9\U0001f600\n\u2028 "'
    quick = engine.send(1, 30, "q1", text)
    assert quick is not None and quick.message is not None
    general = Message(id=quick.message.id + 1, conversation_id=31, seq=1, sender_id=1,
                      client_msg_id="g1", text=text, created_at=quick.message.created_at)
    with engine.state.sending(1, "g1", 31, floor=lambda: 0, **OPTIONS) as sending:
        sending.message = json.dumps(general.to_json())
        sending.turn.new_last_id = general.id  # type: ignore[union-attr]
        sending.fan_out = (engine.broker, [1, 2], event(EventType.MESSAGE_CREATED,
                                                        general.to_json()))
    assert len(listener.appended) == 4  # two sends, two members each
    for user in (1, 2):
        logged = engine.broker.read(user, tips[user], 10).events
        handed = [a for a in listener.appended if a.user_id == user]
        made = [logged_event(f"{a.epoch}:{a.offset}", a.payload, a.payload_json)
                for a in handed]
        assert [json.loads(event_json(e)) for e in made] == made == logged
        assert [json.loads(event_json(e)) for e in logged] == logged
        assert [e["data"]["seq"] for e in made] == [1, 1]
        assert all(e["data"]["text"] == text for e in made)
