"""The page starts on the transport it remembered, upgrades later, and resyncs on reset."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.browser

REMEMBER_LONGPOLL = ("localStorage.setItem('switchboard.transport', JSON.stringify("
                     "{transport: 'longpoll', at: Date.now()}));")


def _wait_server(api, conversation_id: int, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while True:
        texts = [m["text"] for m in api.messages(conversation_id, limit=100)]
        if len(texts) >= count or time.monotonic() > deadline:
            return texts
        time.sleep(0.2)


def test_starts_on_remembered_transport_and_upgrades_without_loss(web_gateway, user,
                                                                  open_page):
    alice_api, bob_api = user("alice"), user("bob")
    conversation_id = bob_api.direct(alice_api.user_id)["id"]
    page = open_page(web_gateway.url, alice_api, "upgrade_after=3000",
                     init_script=REMEMBER_LONGPOLL)
    page.wait_connected("longpoll")  # no time spent on WebSocket first
    page.open_conversation(bob_api.user["username"])
    sent = []
    # Bob keeps talking across the upgrade.
    deadline = time.monotonic() + 30
    while page.transport() != "ws" and time.monotonic() < deadline:
        text = f"bob {len(sent) + 1}"
        bob_api.send(conversation_id, text)
        sent.append(text)
        time.sleep(0.5)
    for _ in range(3):
        text = f"bob {len(sent) + 1}"
        bob_api.send(conversation_id, text)
        sent.append(text)
    page.send("alice after the upgrade")
    expected = _wait_server(bob_api, conversation_id, len(sent) + 1)
    page.wait_texts(expected)
    history = page.transport_history()
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [
        (None, "longpoll", "connect"), ("longpoll", "ws", "upgrade")]
    upgraded_after = (history[1]["at"] - history[0]["at"]) / 1000
    assert 2.5 <= upgraded_after <= 30
    # The winner is remembered for the next visit.
    assert '"ws"' in page.page.evaluate("localStorage.getItem('switchboard.transport')")
    print(f"\nlongpoll -> ws upgrade after {upgraded_after:.1f} s, "
          f"{len(sent)} messages across it, none lost or doubled")


def test_reset_after_the_log_window_resynchronises(make_gateway, open_page):
    """Away longer than the event log's window: the server says reset, the page resyncs."""
    from switchboard_client import Api

    gateway = make_gateway(event_log_size=5, presence_timeout=30)
    alice_api, bob_api = Api(gateway.url), Api(gateway.url)
    alice_api.sign_up("alice_reset", PASSWORD)
    bob_api.sign_up("bob_reset", PASSWORD)
    conversation_id = bob_api.direct(alice_api.user_id)["id"]
    bob_api.send(conversation_id, "first")
    page = open_page(gateway.url, alice_api, "transport=sse")
    page.wait_connected("sse")
    page.open_conversation("bob_reset")
    page.wait_texts(["first"])
    page.context.set_offline(True)
    page.page.wait_for_selector("#transport[data-state=offline]", timeout=10_000)
    for i in range(1, 13):  # more events than the 5 the log keeps
        bob_api.send(conversation_id, f"while away {i}")
    page.context.set_offline(False)
    expected = ["first", *[f"while away {i}" for i in range(1, 13)]]
    page.wait_texts(expected)
    assert any("reset" in line for line in page.log()), page.log()[-10:]
