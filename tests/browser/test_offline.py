"""A page loses the network for 10 s while the other side keeps talking.

When it comes back it resumes from its cursor: every message arrives once, in order,
and what it wrote while offline is sent once (same client_msg_id on every retry).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

OFFLINE_SECONDS = 10


@pytest.mark.parametrize("transport,other", [("ws", "sse"), ("sse", "longpoll"),
                                             ("longpoll", "ws")])
def test_offline_for_ten_seconds_then_everything_once_in_order(
        web_gateway, user, open_page, transport, other):
    alice_api, bob_api = user("alice"), user("bob")
    conversation_id = bob_api.direct(alice_api.user_id)["id"]
    bob_api.send(conversation_id, "hello before the tunnel")
    alice = open_page(web_gateway.url, alice_api, f"transport={transport}")
    bob = open_page(web_gateway.url, bob_api, f"transport={other}")
    alice.wait_connected(transport)
    bob.wait_connected(other)
    alice.open_conversation(bob_api.user["username"])
    bob.open_conversation(alice_api.user["username"])
    alice.wait_texts(["hello before the tunnel"])

    alice.context.set_offline(True)
    went = time.monotonic()
    alice.page.wait_for_selector("#transport[data-state=offline]", timeout=10_000)
    alice.send("written in the tunnel")  # queued: the page is offline
    sent = []
    for i in range(1, 6):
        text = f"bob while alice is offline {i}"
        bob.send(text)
        sent.append(text)
        time.sleep(1.2)
    assert alice.client("c.pending().length") == 1
    time.sleep(max(0.0, OFFLINE_SECONDS - (time.monotonic() - went)))
    # Nothing reached the page while it was away.
    assert alice.texts() == ["hello before the tunnel"]
    alice.context.set_offline(False)
    back = time.monotonic()

    deadline = time.monotonic() + 30
    while True:
        expected = [m["text"] for m in bob_api.messages(conversation_id, limit=100)]
        if len(expected) == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # The page's own message could only be stored after it came back; once, though
    # retried (same client_msg_id).
    assert expected == ["hello before the tunnel", *sent, "written in the tunnel"]
    alice.wait_texts(expected)
    caught_up = time.monotonic() - back
    bob.wait_texts(expected)
    alice.wait_connected(transport)
    assert alice.client("c.pending().length") == 0
    assert not alice.errors and not bob.errors
    print(f"\n{transport}: back online -> all {len(expected)} messages in {caught_up:.2f} s")
