"""Transport contract, written once and run over poll, long-poll, SSE and WebSocket.

Every test talks to the app served by gunicorn's gevent worker over real sockets, on
each engine: the embedded memory engine, and Redis standalone or Cluster (a node of
two workers with PostgreSQL and an RQ worker, see tests/cluster.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from switchboard_client import open_transport
from tests.cluster import Deployment
from tests.servers import GatewayServer
from tests.services import require_service

TRANSPORTS = ["poll", "longpoll", "sse", "ws"]
HEARTBEAT = 1.0  # SWITCHBOARD_SSE_HEARTBEAT and _WS_PING_INTERVAL in tests/servers.py
ENGINES = ["memory", pytest.param("redis", marks=pytest.mark.redis),
           pytest.param("redis-cluster", marks=pytest.mark.redis)]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):  # type: ignore[no-untyped-def]
    """One parameter for both gateways below, so they never multiply each other."""
    if request.param != "memory":
        require_service(request.param)
    return request.param


def _deployment(engine: str, base, **settings: str) -> Deployment:  # type: ignore[no-untyped-def]
    deployment = Deployment(base, require_service(engine), **settings)
    try:
        deployment.node()
    except BaseException:
        deployment.stop()
        raise
    return deployment


@pytest.fixture(scope="module")
def gateway(engine, gateway, tmp_path_factory):  # type: ignore[no-untyped-def]
    """conftest's memory-engine gateway, or a node on Redis (the name overrides it)."""
    if engine == "memory":
        yield gateway
        return
    deployment = _deployment(engine, tmp_path_factory.mktemp(f"contract-{engine}"))
    yield deployment.a
    deployment.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request):  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def chat(new_user):  # type: ignore[no-untyped-def]
    sender, receiver = new_user(), new_user()
    conversation = sender.direct(receiver.user_id)
    return sender, receiver, conversation["id"]


def texts(events: list[dict]) -> list[str]:
    return [e["data"]["text"] for e in events if e["type"] == "message.created"]


def test_events_arrive_in_order(transport, chat):
    sender, receiver, conv = chat
    with open_transport(transport, receiver) as feed:
        sent = [f"m{i}" for i in range(25)]
        for text in sent:
            sender.send(conv, text)
        got = feed.collect(25, 20, kind="message.created")
    assert texts(got) == sent
    seqs = [e["data"]["seq"] for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 25


def test_resume_from_cursor_after_disconnect_loses_nothing(transport, chat):
    sender, receiver, conv = chat
    feed = open_transport(transport, receiver)
    for i in range(5):
        sender.send(conv, f"before{i}")
    assert texts(feed.collect(5, 10, kind="message.created")) == [f"before{i}" for i in range(5)]
    cursor = feed.cursor
    feed.close()
    for i in range(5):
        sender.send(conv, f"during{i}")
    with open_transport(transport, receiver, cursor=cursor) as resumed:
        sender.send(conv, "after")
        got = resumed.collect(6, 10, kind="message.created")
    assert texts(got) == [f"during{i}" for i in range(5)] + ["after"]


@pytest.mark.parametrize("second", TRANSPORTS)
def test_switching_transport_mid_conversation_loses_nothing(transport, second, chat):
    if second == transport:
        pytest.skip("same transport: covered by the resume test")
    sender, receiver, conv = chat
    first = open_transport(transport, receiver)
    for i in range(4):
        sender.send(conv, f"a{i}")
    got = first.collect(2, 10, kind="message.created")  # read part, then switch
    for i in range(4):
        sender.send(conv, f"b{i}")
    cursor = first.cursor
    first.close()
    with open_transport(second, receiver, cursor=cursor) as other:
        got += other.collect(8 - len(got), 10, kind="message.created")
    unique = list(dict.fromkeys(e["data"]["id"] for e in got))  # de-duplicate by id
    by_id = {e["data"]["id"]: e["data"]["text"] for e in got}
    assert [by_id[i] for i in unique] == [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]


@pytest.fixture(scope="module")
def small_log_gateway(engine, tmp_path_factory):  # type: ignore[no-untyped-def]
    if engine == "memory":
        server = GatewayServer(tmp_path_factory.mktemp("smalllog"),
                               {"SWITCHBOARD_EVENT_LOG_SIZE": "5"}).start()
        yield server
        server.stop()
        return
    deployment = _deployment(engine, tmp_path_factory.mktemp(f"smalllog-{engine}"),
                             event_log_size="5")
    yield deployment.a
    deployment.stop()


def test_cursor_older_than_window_gets_explicit_reset(transport, new_user, small_log_gateway):
    sender, receiver = new_user(small_log_gateway), new_user(small_log_gateway)
    conv = sender.direct(receiver.user_id)["id"]
    old_cursor = receiver.poll()["cursor"]
    for i in range(10):
        sender.send(conv, f"m{i}")
    with open_transport(transport, receiver, cursor=old_cursor) as feed:
        first = feed.collect(1, 10)
        assert first and first[0]["type"] == "reset"
        assert feed.cursor == first[0]["data"]["cursor"] != old_cursor
        # After the reset the client resyncs from history, then follows the new cursor.
        assert [m["text"] for m in receiver.messages(conv, limit=10)] == [
            f"m{i}" for i in range(10)]
        sender.send(conv, "after reset")
        assert texts(feed.collect(1, 10, kind="message.created")) == ["after reset"]


def test_heartbeats_arrive_within_their_interval(transport, new_user):
    user = new_user()
    if transport == "poll":
        # Plain polling has no heartbeat: an empty poll must answer at once.
        start = time.monotonic()
        body = user.poll(user.poll()["cursor"], wait=0)
        assert body["events"] == [] and time.monotonic() - start < 2
        return
    options = {"wait": HEARTBEAT} if transport == "longpoll" else {}
    with open_transport(transport, user, **options) as feed:
        start = time.monotonic()
        while time.monotonic() - start < 4.5:
            assert feed.next_batch(0.5) == []
    beats = [start, *feed.heartbeats]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(feed.heartbeats) >= 3, feed.heartbeats
    assert max(gaps) < HEARTBEAT * 2 + 0.5, gaps


def test_delivery_is_prompt_while_waiting(transport, chat):
    sender, receiver, conv = chat
    options = {"wait": 20} if transport == "longpoll" else {}
    with open_transport(transport, receiver, **options) as feed:
        sent_at: list[float] = []

        def send_later() -> None:
            time.sleep(0.5)  # the long-poll is parked by now
            sent_at.append(time.monotonic())
            sender.send(conv, "ping")

        threading.Thread(target=send_later).start()
        got = feed.collect(1, 15, kind="message.created")
        received_at = time.monotonic()
    assert texts(got) == ["ping"]
    # Far below the 20 s wait: the waiting request was woken, not timed out.
    assert received_at - sent_at[0] < 2.0
