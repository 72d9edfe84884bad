"""Two gateway nodes on one Redis and one PostgreSQL: no sticky sessions.

Each node is a gunicorn process with two gevent workers (config/gunicorn.conf.py runs
two when Redis is configured), so these tests cross workers as well as nodes. Users
listen on one node and send through the other; every receiver must see every message
once (after de-duplication by id) and in the conversation's order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from switchboard_client import Api, open_transport
from tests.cluster import Deployment
from tests.services import require_service

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TRANSPORTS = ["poll", "longpoll", "sse", "ws"]


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def nodes(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    deployment = Deployment(tmp_path_factory.mktemp("cross-node"), require_service(request.param))
    try:
        deployment.node()
        deployment.node()
        yield deployment
    finally:
        deployment.stop()


def messages(events: list[dict]) -> list[dict]:
    """message.created payloads, de-duplicated by message id, in arrival order."""
    seen: dict[str, dict] = {}
    for e in events:
        if e["type"] == "message.created":
            seen.setdefault(e["data"]["id"], e["data"])
    return list(seen.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_direct_chat_across_nodes_loses_and_reorders_nothing(nodes, transport):
    receiver = nodes.user(nodes.a)
    sender = nodes.user(nodes.b)
    conversation = sender.direct(receiver.user_id)["id"]
    with open_transport(transport, receiver) as feed:
        sent = [f"{transport}-{i}" for i in range(20)]
        for text in sent:
            sender.send(conversation, text)
        got = messages(feed.collect(20, 30, kind="message.created"))
    assert [m["text"] for m in got] == sent
    assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_silent_stream_keeps_its_user_online_on_every_node(nodes, transport):
    """No request for twice the 2 s presence timeout: the stream on node A renews the
    user's presence, and node B sees it."""
    user = nodes.user(nodes.a)
    watcher = nodes.user(nodes.b)
    with open_transport(transport, user):
        time.sleep(4.5)
        assert [p["online"] for p in watcher.presence([user.user_id])] == [True]


def test_group_chat_with_everyone_on_a_different_node_and_transport(nodes):
    listeners = [(nodes.a, "ws"), (nodes.b, "sse"), (nodes.a, "longpoll"), (nodes.b, "poll")]
    members = [nodes.user(node) for node, _ in listeners]
    conversation = members[0].group("cross", [m.user_id for m in members[1:]])["id"]
    feeds = [open_transport(kind, nodes.on(node, member))
             for member, (node, kind) in zip(members, listeners, strict=True)]
    per_sender = 8
    errors: list[BaseException] = []

    def send_all(index: int, member: Api) -> None:
        # Each member sends through the node it does not listen on.
        node = nodes.b if listeners[index][0] is nodes.a else nodes.a
        api = nodes.on(node, member)
        try:
            for n in range(per_sender):
                api.send(conversation, f"m{index}-{n}", client_msg_id=f"c{index}-{n}")
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=send_all, args=(i, m)) for i, m in enumerate(members)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        total = per_sender * len(members)
        for feed in feeds:
            got = messages(feed.collect(total, 30, kind="message.created"))
            assert len(got) == total
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == total
            for index in range(len(members)):  # each sender's own order is kept too
                mine = [m["text"] for m in got if m["text"].startswith(f"m{index}-")]
                assert mine == [f"m{index}-{n}" for n in range(per_sender)]
    finally:
        for feed in feeds:
            feed.close()


def test_a_client_moving_between_nodes_resumes_from_its_cursor(nodes):
    receiver = nodes.user(nodes.a)
    sender = nodes.user(nodes.b)
    conversation = sender.direct(receiver.user_id)["id"]
    first = open_transport("sse", receiver)
    for i in range(5):
        sender.send(conversation, f"before{i}")
    got = first.collect(5, 20, kind="message.created")
    cursor = first.cursor
    first.close()
    for i in range(5):
        sender.send(conversation, f"between{i}")
    with open_transport("ws", nodes.on(nodes.b, receiver), cursor=cursor) as second:
        sender.send(conversation, "after")
        got += second.collect(6, 20, kind="message.created")
    assert [m["text"] for m in messages(got)] == (
        [f"before{i}" for i in range(5)] + [f"between{i}" for i in range(5)] + ["after"])


@pytest.mark.parametrize("transport", ["longpoll", "sse", "ws"])
def test_a_connection_is_not_handed_its_own_clients_send_until_something_else_comes(
        nodes, transport):
    """The send goes through node A, the client's connection is on node B and names the
    client's client_msg_id prefix: its own message does not answer the parked poll nor
    go down the stream; the next message from someone else brings both, in order."""
    alice = nodes.user(nodes.a)
    bob = nodes.user(nodes.b)
    conversation = bob.direct(alice.user_id)["id"]
    # A third node whose streams' heartbeats (which also hand over what is held) are
    # slower than the 1 s of the test defaults, so "held" is told from "late".
    third = nodes.node(sse_heartbeat="10", ws_ping_interval="10")
    try:
        check_own_messages_held(nodes.on(third, alice), alice, bob, conversation, transport)
    finally:
        nodes.nodes.remove(third)
        third.stop()


def check_own_messages_held(on_b: Api, alice: Api, bob: Api, conversation: int,
                            transport: str) -> None:
    with open_transport(transport, on_b, own_prefix=alice.send_prefix) as feed:
        time.sleep(0.5)  # parked / subscribed on the other node
        alice.send(conversation, "mine")  # through node A, its id made with the prefix
        started = time.monotonic()
        # One 3 s poll, or up to 3 s of stream: the own message alone does not end it
        # (a poll hands it over as its wait ends; a stream with its next batch).
        got = feed.next_batch(3.0)
        others = [e for e in got if e["type"] != "message.created"
                  or e["data"]["sender_id"] != alice.user_id]
        assert others or time.monotonic() - started >= 2.5, got
        bob.send(conversation, "theirs")
        got += feed.collect(2 - len(messages(got)), 10.0, kind="message.created")
    assert [m["text"] for m in messages(got)] == ["mine", "theirs"]
    # Naming no prefix, the client's own message comes at once.
    with open_transport(transport, on_b) as feed:
        time.sleep(0.5)
        alice.send(conversation, "mine again")
        got = feed.collect(1, 5.0, kind="message.created")
    assert [m["text"] for m in messages(got)] == ["mine again"]
