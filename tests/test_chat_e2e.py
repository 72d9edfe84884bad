"""Users on different transports chat 1:1 and in a group over the real server.

Everyone must receive every message once (after de-duplication by id) and in the same
order, whatever transport they use and whichever way the sender sent it.
"""

from __future__ import annotations

import threading
import time

import pytest

from switchboard_client import WebSocketTransport, open_transport

PAIRS = [("ws", "sse"), ("sse", "longpoll"), ("longpoll", "poll"), ("poll", "ws")]


def received(feed, conversation_id: int, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    got = feed.collect(count, 30, kind="message.created")
    unique: dict[str, dict] = {}
    for event in got:
        if event["data"]["conversation_id"] == conversation_id:
            unique.setdefault(event["data"]["id"], event["data"])
    return list(unique.values())


def send(feed, api, conversation_id: int, text: str) -> dict:  # type: ignore[no-untyped-def]
    """Send over the WebSocket when the sender is on one, else by HTTP POST."""
    if isinstance(feed, WebSocketTransport):
        reply = feed.send_message(conversation_id, text)
        assert reply["type"] == "ack", reply
        return reply["data"]["message"]
    return api.send(conversation_id, text)


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_one_to_one_across_transports(first, second, new_user):
    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    a_feed, b_feed = open_transport(first, alice), open_transport(second, bob)
    try:
        for i in range(6):
            send(a_feed, alice, conv, f"alice {i}")
            send(b_feed, bob, conv, f"bob {i}")
        a_got = received(a_feed, conv, 12)
        b_got = received(b_feed, conv, 12)
    finally:
        a_feed.close()
        b_feed.close()
    assert [m["id"] for m in a_got] == [m["id"] for m in b_got]
    assert [m["seq"] for m in a_got] == sorted(m["seq"] for m in a_got)
    assert sorted(m["text"] for m in a_got) == sorted(
        [f"alice {i}" for i in range(6)] + [f"bob {i}" for i in range(6)])
    assert [m["id"] for m in alice.messages(conv, limit=100)] == [m["id"] for m in a_got]


def test_group_with_every_member_on_a_different_transport(new_user):
    members = [new_user() for _ in range(4)]
    transports = ["ws", "sse", "longpoll", "poll"]
    owner = members[0]
    group = owner.group("launch", [m.user_id for m in members[1:]])
    conv = group["id"]
    assert len(group["members"]) == 4
    feeds = [open_transport(t, m) for t, m in zip(transports, members, strict=True)]
    per_member = 8
    try:
        # Everyone sends at once, so the server orders concurrent senders.
        def talk(index: int) -> None:
            for i in range(per_member):
                send(feeds[index], members[index], conv, f"{transports[index]} says {i}")

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        total = per_member * 4
        seen = [received(feed, conv, total) for feed in feeds]
    finally:
        for feed in feeds:
            feed.close()
    orders = [[m["id"] for m in got] for got in seen]
    assert all(len(order) == total for order in orders), [len(o) for o in orders]
    assert all(order == orders[0] for order in orders), "members saw different orders"
    seqs = [m["seq"] for m in seen[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == total
    history = owner.messages(conv, limit=100)
    assert [m["id"] for m in history] == orders[0]
    # Each sender's own messages keep the order they were sent in.
    for name in transports:
        own = [m["text"] for m in seen[0] if m["text"].startswith(name)]
        assert own == [f"{name} says {i}" for i in range(per_member)]


def test_receipts_typing_and_unread_counts_flow_between_members(new_user):
    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    with open_transport("sse", alice) as a_feed, open_transport("ws", bob) as b_feed:
        last = None
        for i in range(3):
            last = alice.send(conv, f"m{i}")
        assert [c["unread_count"] for c in bob.conversations() if c["id"] == conv] == [3]
        bob.mark_read(conv, last["id"])
        receipts = a_feed.collect(1, 10, kind="receipt")
        assert receipts[0]["data"] == {**receipts[0]["data"], "user_id": bob.user_id,
                                       "seq": last["seq"], "message_id": last["id"]}
        assert [c["unread_count"] for c in bob.conversations() if c["id"] == conv] == [0]
        assert bob.typing(conv)["delivered"] is True
        typing = a_feed.collect(1, 10, kind="typing")
        assert typing[0]["data"]["user_id"] == bob.user_id and "id" not in typing[0]
        b_feed.collect(3, 10, kind="message.created")


def _presence_of(feed, user_id: int, online: bool) -> dict:  # type: ignore[no-untyped-def]
    found = feed.wait_for(lambda e: e["type"] == "presence" and e["data"]["user_id"] == user_id
                          and e["data"]["online"] is online, 15)
    assert found, f"no presence online={online} for {user_id}"
    return found


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_silent_stream_keeps_its_user_online(new_user, transport):
    """The stream is the heartbeat: no request for twice the 2 s presence timeout."""
    alice, bob = new_user(), new_user()
    with open_transport(transport, bob):
        time.sleep(4.5)
        assert [p["online"] for p in alice.presence([bob.user_id])] == [True]


def test_presence_transitions_reach_friends(new_user):
    alice, bob = new_user(), new_user()
    alice.befriend(bob.user_id)
    assert bob.befriend(alice.user_id)["status"] == "accepted"
    with open_transport("sse", alice) as watcher:
        # Bob's requests above made him online; silent, he drops offline after the 2 s
        # test timeout. Then connecting brings him back, and closing drops him again.
        first_offline = _presence_of(watcher, bob.user_id, False)
        assert first_offline["data"]["last_seen"] is not None and "id" not in first_offline
        bob_feed = open_transport("ws", bob)
        _presence_of(watcher, bob.user_id, True)
        assert [p["online"] for p in alice.presence([bob.user_id])] == [True]
        bob_feed.close()
        offline = _presence_of(watcher, bob.user_id, False)
    status = alice.presence([bob.user_id])[0]
    assert status["online"] is False and status["last_seen"] == offline["data"]["last_seen"]
