"""The page finds a transport that works when the network breaks the better ones.

Each test lets the other side (a Python client) send while the page is still finding
its way, then chats both ways: nothing is lost, nothing shows twice, and the page ends
on the transport the network allows. The fallback times are printed (``-s``).
"""

from __future__ import annotations

import time

import pytest
import requests

from switchboard_client import open_transport

pytestmark = pytest.mark.browser

NO_WEBSOCKET = "delete window.WebSocket;"
NO_PUSH = "delete window.WebSocket; delete window.EventSource;"


def _server_texts(api, conversation_id: int, count: int, timeout: float = 30) -> list[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        texts = [m["text"] for m in api.messages(conversation_id, limit=100)]
        if len(texts) >= count or time.monotonic() > deadline:
            return texts
        time.sleep(0.2)


def _chat_while_settling(base_url: str, user, open_page, query: str = "",  # type: ignore[no-untyped-def]
                         init_script: str | None = None):
    """Bob (Python) sends while Alice's page connects; then both ways. Returns the page."""
    alice_api, bob_api = user("alice"), user("bob")
    conversation_id = bob_api.direct(alice_api.user_id)["id"]
    bob_api.send(conversation_id, "sent before the page opened")
    bob_feed = open_transport("longpoll", bob_api, wait=5)
    try:
        page = open_page(base_url, alice_api, query, init_script)
        # While the page is still trying transports:
        for i in range(1, 4):
            bob_api.send(conversation_id, f"bob while connecting {i}")
        page.wait_connected()
        page.open_conversation(bob_api.user["username"])
        page.send("alice 1")
        bob_api.send(conversation_id, "bob after settling")
        page.send("alice 2")
        expected = _server_texts(bob_api, conversation_id, 7)
        assert len(expected) == 7
        page.wait_texts(expected)
        got = bob_feed.collect(2, 30, kind="message.created")
        got_texts = [e["data"]["text"] for e in got if e["data"]["sender_id"] == alice_api.user_id]
        assert got_texts == ["alice 1", "alice 2"]
        assert not page.errors
        return page
    finally:
        bob_feed.close()


def _settle_seconds(page) -> float:  # type: ignore[no-untyped-def]
    return page.client("(c.history[0].at - c.startedAt) / 1000")


def test_page_without_websocket_settles_on_sse(web_gateway, user, open_page):
    page = _chat_while_settling(web_gateway.url, user, open_page, init_script=NO_WEBSOCKET)
    assert page.transport() == "sse"
    assert page.client("c.available('ws')") is False
    assert page.client("c.fallbacks.length") == 0  # never tried what does not exist
    print(f"\nno WebSocket: settled on sse in {_settle_seconds(page):.2f} s")


def test_proxy_refusing_websocket_upgrade_settles_on_sse(user, open_page, nginx):
    proxy = nginx(buffering=False)
    page = _chat_while_settling(proxy.url, user, open_page)
    assert page.transport() == "sse"
    fallbacks = page.client("c.fallbacks")
    assert [(f["from"], f["to"]) for f in fallbacks] == [("ws", "sse")]
    assert "closed" in fallbacks[0]["reason"]  # refused, not timed out
    # The proxy really refused it: nginx forwarded a plain GET and the gateway said 400.
    log = (proxy.dir / "access.log").read_text()
    assert '"GET /v1/events/ws?' in log and '" 400 ' in log
    print(f"\nproxy refusing Upgrade: ws -> sse in {_settle_seconds(page):.2f} s")


def test_buffering_proxy_drops_sse_for_long_poll(user, open_page, nginx):
    proxy = nginx(buffering=True)
    page = _chat_while_settling(proxy.url, user, open_page)
    assert page.transport() == "longpoll"
    fallbacks = page.client("c.fallbacks")
    assert [(f["from"], f["to"]) for f in fallbacks] == [("ws", "sse"), ("sse", "longpoll")]
    assert "no ready event" in fallbacks[1]["reason"]
    # The proxy really holds the stream back: a browser-like request sees no byte.
    api = user("probe", base_url=proxy.url)
    # (nginx holds even the response headers: the read of the head times out.)
    with pytest.raises((requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)):
        with requests.get(proxy.url + "/v1/events/stream", stream=True, timeout=(5, 3),
                          headers={**api.headers(), "Accept-Encoding": "gzip"}) as response:
            next(response.iter_content(1))
    print(f"\nbuffering proxy: ws -> sse -> longpoll in {_settle_seconds(page):.2f} s")


def test_legacy_page_long_polls_over_xhr_both_ways(web_gateway, user, open_page):
    page = _chat_while_settling(web_gateway.url, user, open_page, "legacy=1",
                                init_script=NO_PUSH)
    assert page.page.evaluate("typeof WebSocket + ' ' + typeof EventSource") == (
        "undefined undefined")
    assert page.transport() == "longpoll"
    assert page.client("c.fallbacks.length") == 0
    assert page.client("c.pending().length") == 0
    print(f"\nlegacy page: long-poll in {_settle_seconds(page):.2f} s")
