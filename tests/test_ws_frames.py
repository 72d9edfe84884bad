"""A WebSocket frame that fails answers with an error frame, never ends the reader.

The reader greenlet handles each client frame; an exception escaping it would leave the
connection open but deaf (no acks, the client times out). Busy conversations get the
HTTP route's 503, anything unexpected its 500.
"""

from __future__ import annotations

import json

import pytest

from gateway.api import events
from storage.state_memory import LockTimeout


@pytest.fixture
def sender(app, client):  # type: ignore[no-untyped-def]
    me = client.post("/v1/users", json={"username": "wsf1", "password": "password123"})
    other = client.post("/v1/users", json={"username": "wsf2", "password": "password123"})
    headers = {"Authorization": f"Bearer {me.get_json()['token']}"}
    conversation = client.post("/v1/conversations", headers=headers, json={
        "kind": "direct", "user_id": other.get_json()["user"]["id"]}).get_json()["id"]
    return me.get_json()["user"]["id"], conversation


def frame(conversation: int) -> str:
    return json.dumps({"type": "send", "ref": "r1", "conversation_id": conversation,
                       "client_msg_id": "c1", "text": "hi"})


@pytest.mark.parametrize(("raised", "status", "code"), [
    (LockTimeout("conversation 1"), 503, "unavailable"),
    (RuntimeError("a bug"), 500, "internal"),
])
def test_a_failing_send_frame_is_answered_not_raised(app, sender, monkeypatch,
                                                     raised, status, code):
    user_id, conversation = sender

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise raised

    monkeypatch.setattr(events.chat, "send_message", fail)
    with app.app_context():
        reply = events._ws_handle(user_id, frame(conversation))
    assert reply is not None and reply["type"] == "error" and reply["ref"] == "r1"
    assert (reply["data"]["status"], reply["data"]["code"]) == (status, code)
    monkeypatch.undo()
    with app.app_context():  # and the next frame is handled as usual
        assert events._ws_handle(user_id, frame(conversation))["type"] == "ack"
