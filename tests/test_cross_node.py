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


def test_a_long_poll_is_not_woken_by_its_own_clients_send_through_the_other_node(nodes):
    """The send goes through node A, the client's long-poll is parked on node B: the
    poll names the client's client_msg_id prefix, so its own message does not answer
    it; the next message from someone else does, with both in order."""
    alice = nodes.user(nodes.a)
    bob = nodes.user(nodes.b)
    conversation = bob.direct(alice.user_id)["id"]
    on_b = nodes.on(nodes.b, alice)
    answers: list[dict] = []

    def park(own_prefix: str | None) -> threading.Thread:
        cursor = on_b.poll()["cursor"]
        poll = threading.Thread(target=lambda: answers.append(
            on_b.poll(cursor, wait=15, own_prefix=own_prefix)))
        poll.start()
        time.sleep(0.5)  # parked on node B
        return poll

    poll = park(alice.send_prefix)
    alice.send(conversation, "mine")  # through node A, its id made with the prefix
    poll.join(2.0)
    assert poll.is_alive()  # not woken by its own message
    bob.send(conversation, "theirs")
    poll.join(10.0)
    assert not poll.is_alive()
    assert [m["text"] for m in messages(answers.pop()["events"])] == ["mine", "theirs"]

    poll = park(None)  # a poll naming no prefix is answered by its own message
    started = time.monotonic()
    alice.send(conversation, "mine again")
    poll.join(10.0)
    assert not poll.is_alive() and time.monotonic() - started < 5.0
    assert [m["text"] for m in messages(answers.pop()["events"])] == ["mine again"]
