"""Two people chat in real Chromium, each page on a different transport.

Every message shows once, in the server's order, on both sides; unread counts, read
receipts and presence reach the other side.
"""

from __future__ import annotations

import time

import pytest

from switchboard_client import open_transport

pytestmark = pytest.mark.browser


def _befriend(a, b) -> None:  # type: ignore[no-untyped-def]
    a.befriend(b.user_id)
    b.befriend(a.user_id)  # accepts: presence changes now reach each other


@pytest.mark.parametrize("alice_transport,bob_transport", [
    ("ws", "sse"), ("longpoll", "poll"), ("sse", "ws")])
def test_direct_chat_across_transports(web_gateway, user, open_page,
                                       alice_transport, bob_transport):
    alice_api, bob_api = user("alice"), user("bob")
    _befriend(alice_api, bob_api)
    alice = open_page(web_gateway.url, alice_api, f"transport={alice_transport}")
    bob = open_page(web_gateway.url, bob_api, f"transport={bob_transport}&poll_interval=1000")
    assert alice.wait_connected(alice_transport) == alice_transport
    assert bob.wait_connected(bob_transport) == bob_transport
    polls: list[str] = []
    alice.page.on("request", lambda r: polls.append(r.url) if "/v1/events?" in r.url else None)

    alice.start_direct(bob_api.user["username"])
    alice.send("Hi Bob, are you there?")
    alice.wait_texts(["Hi Bob, are you there?"])
    alice_title = alice_api.user["username"]
    # Bob has not opened it yet: the conversation arrives as an event, one unread.
    bob.page.wait_for_selector(f'.conv[data-title="{alice_title}"] .unread', timeout=30_000)
    assert bob.unread(alice_title) == 1
    bob.open_conversation(alice_title)
    bob.wait_texts(["Hi Bob, are you there?"])
    assert bob.unread(alice_title) == 0
    assert alice.wait_receipt("read") == "Read"  # Bob's page marked it read

    # Both type at once: the pages must agree with the server's order.
    for i in range(1, 5):
        alice.send(f"alice {i}")
        bob.send(f"bob {i}")
    conversation_id = alice_api.conversations()[0]["id"]

    def server_order() -> list[str]:
        return [m["text"] for m in alice_api.messages(conversation_id, limit=50)]

    deadline = time.monotonic() + 30
    while len(server_order()) < 9 and time.monotonic() < deadline:
        time.sleep(0.2)
    expected = server_order()
    assert len(expected) == 9 and expected[0] == "Hi Bob, are you there?"
    shown_a = alice.wait_texts(expected)
    shown_b = bob.wait_texts(expected)
    assert [m["id"] for m in shown_a] == [m["id"] for m in shown_b]
    assert [m["own"] for m in shown_a] == [not m["own"] for m in shown_b]

    # Receipts both ways, presence both ways.
    alice.wait_receipt("read")
    bob.wait_receipt("read")
    alice.wait_peer_online()
    bob.wait_peer_online()
    assert alice.transport() == alice_transport and bob.transport() == bob_transport
    assert not alice.errors and not bob.errors
    if alice_transport == "longpoll":
        # The SDK's ids start with its prefix, and its long-polls name that prefix, so
        # its own sends do not answer its parked poll (docs/protocol.md).
        prefix = alice.client("c._sendPrefix") + "-"
        mine = [m for m in alice_api.messages(conversation_id, limit=50)
                if m["sender_id"] == alice_api.user_id]
        assert len(mine) == 5 and all(m["client_msg_id"].startswith(prefix) for m in mine)
        waits = [u for u in polls if "wait=25" in u]
        assert waits and all(f"own_prefix={prefix}" in u for u in waits)


def test_group_chat_three_transports(web_gateway, user, open_page):
    """A group: two pages (SSE and long-poll) and a bot on the Python WebSocket client."""
    alice_api, bob_api, carol_api = user("alice"), user("bob"), user("carol")
    alice = open_page(web_gateway.url, alice_api, "transport=sse")
    bob = open_page(web_gateway.url, bob_api, "transport=longpoll")
    alice.wait_connected("sse")
    bob.wait_connected("longpoll")
    carol_feed = open_transport("ws", carol_api)
    try:
        alice.start_group("Weekend plans", [bob_api.user["username"],
                                            carol_api.user["username"]])
        alice.send("Hiking on Saturday?")
        bob.open_conversation("Weekend plans")
        bob.wait_texts(["Hiking on Saturday?"])
        created = carol_feed.wait_for(lambda e: e["type"] == "message.created", 30)
        assert created and created["data"]["text"] == "Hiking on Saturday?"
        conversation_id = created["data"]["conversation_id"]

        bob.send("I'm in")
        ack = carol_feed.send_message(conversation_id, "Me too, I'll bring snacks")
        assert ack["type"] == "ack"
        alice.send("Great, 9am at the station")
        bob.send("👍")

        expected = ["Hiking on Saturday?"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            expected = [m["text"] for m in carol_api.messages(conversation_id)]
            if len(expected) == 5:
                break
            time.sleep(0.2)
        assert sorted(expected) == sorted(["Hiking on Saturday?", "I'm in",
                                           "Me too, I'll bring snacks",
                                           "Great, 9am at the station", "👍"])
        shown_a = alice.wait_texts(expected)
        shown_b = bob.wait_texts(expected)
        assert [m["id"] for m in shown_a] == [m["id"] for m in shown_b]

        # Carol reads everything; Bob's open page has read everything: "Read by everyone".
        carol_api.mark_read(conversation_id, shown_a[-1]["id"])
        text = alice.wait_receipt("read")
        alice.page.wait_for_function(
            "() => document.querySelector('.receipt-line[data-receipt=read]')"
            ".textContent === 'Read by everyone'", timeout=30_000)
        assert text.startswith("Read by")
        assert not alice.errors and not bob.errors
    finally:
        carol_feed.close()
