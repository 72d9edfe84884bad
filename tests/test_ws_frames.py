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


def test_the_servers_text_frames_decode_as_sent_at_every_length_encoding():
    """The server frames its text itself: 7-bit, 16-bit and 64-bit lengths must read
    back exactly, several in one write, and nothing goes out once a close is sent."""
    import socket

    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import TextMessage

    from gateway.websocket import ServerWebSocket, WebSocketClosed

    server_end, client_end = socket.socketpair()
    try:
        ws = ServerWebSocket({"gunicorn.socket": server_end,
                              "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}, 1 << 20)
        # Encoded, {"t":"…"} is 8 bytes longer than its text: frames of exactly these
        # sizes, on both sides of each length encoding's limit.
        sizes = (8, 125, 126, 65_535, 65_536, 70_000)
        payloads = [{"t": "x" * (n - 8)} for n in sizes] + [{"t": "é😀"}]
        ws.send_json_many(payloads)
        ws.close()
        with pytest.raises(WebSocketClosed):
            ws.send_json({"late": True})
        received = b""
        while chunk := client_end.recv(1 << 20):
            received += chunk
        head, _, frames = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        reader = Connection(ConnectionType.CLIENT)
        reader.receive_data(frames)
        texts = [e.data for e in reader.events() if isinstance(e, TextMessage)]
        assert [json.loads(t) for t in texts] == payloads
    finally:
        client_end.close()
        server_end.close()


def test_a_close_with_client_bytes_unread_ends_cleanly_not_with_a_reset():
    """Unread bytes make the kernel answer close() with a reset, which may discard what
    was not yet transmitted, the close frame among them (a draining node's clients then
    saw "connection reset" instead of its reason). The server drops them first."""
    import socket
    import time

    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import CloseConnection

    from gateway.websocket import CLOSE_SERVICE_RESTART, ServerWebSocket

    listener = socket.create_server(("127.0.0.1", 0))
    client_end = socket.create_connection(listener.getsockname())
    server_end, _ = listener.accept()
    try:
        ws = ServerWebSocket({"gunicorn.socket": server_end,
                              "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}, 1 << 20)
        client_end.sendall(b"\x8a\x80" + b"\0" * 4 + b"x" * 70_000)  # a pong and more
        deadline = time.monotonic() + 5
        while not ws.data_waiting() and time.monotonic() < deadline:
            time.sleep(0.01)
        ws.close(CLOSE_SERVICE_RESTART, "draining")
        received = b""
        while chunk := client_end.recv(1 << 20):  # a reset raises ConnectionResetError
            received += chunk
        reader = Connection(ConnectionType.CLIENT)
        reader.receive_data(received.partition(b"\r\n\r\n")[2])
        closes = [e for e in reader.events() if isinstance(e, CloseConnection)]
        assert [(c.code, c.reason) for c in closes] == [(CLOSE_SERVICE_RESTART, "draining")]
    finally:
        client_end.close()
        server_end.close()
        listener.close()


def test_a_readers_app_context_is_pushed_once_and_torn_down_with_the_connection(app, sender):
    """Bursts of client frames share one app context for the connection's life (one
    per burst was ~2.5 % of a saturated worker); closing tears it down, with the
    database session its frames used."""
    import select
    import socket
    import types

    import gevent
    from flask import appcontext_pushed, appcontext_tearing_down
    from gevent.event import Event

    from gateway.api.events import _WebSocketBody
    from gateway.websocket import ServerWebSocket
    from storage.db import db
    from tests.test_ws_reader import masked

    user_id, conversation = sender
    pushed: list[object] = []
    torn: list[object] = []

    def on_push(sender: object, **extra: object) -> None:
        pushed.append(sender)

    def on_teardown(sender: object, **extra: object) -> None:
        torn.append(sender)

    appcontext_pushed.connect(on_push, app, weak=False)
    appcontext_tearing_down.connect(on_teardown, app, weak=False)
    server_end, client_end = socket.socketpair()
    feed = types.SimpleNamespace(user_id=user_id, close=lambda: None,
                                 sub=types.SimpleNamespace(closed=None, wake=Event()))
    body = _WebSocketBody(app, ServerWebSocket(
        {"gunicorn.socket": server_end, "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="},
        1 << 20), feed)  # type: ignore[arg-type]

    def reply_to(frame: dict) -> dict:
        client_end.sendall(masked(0x1, json.dumps(frame).encode()))
        while not select.select([client_end], [], [], 0)[0]:
            gevent.sleep(0.01)  # the event loop runs the burst
        data = client_end.recv(65536)
        return json.loads(data[data.index(b"{"):])

    try:
        client_end.recv(4096)  # the handshake's answer
        body._readable()  # as the event loop does when the first frame arrives
        for n in range(2):
            ack = reply_to({"type": "send", "ref": n, "conversation_id": conversation,
                            "client_msg_id": f"ctx{n}", "text": "hi"})
            assert (ack["type"], ack["ref"]) == ("ack", n)
        ack = reply_to({"type": "read", "ref": "r", "conversation_id": conversation,
                        "message_id": ack["data"]["message"]["id"]})  # a database write
        assert (ack["type"], ack["data"]["seq"]) == ("ack", 2)
        assert len(pushed) == 1 and torn == []
        # A frame whose handling made a database session (scoped by app context):
        assert body._reader is not None
        body._reader.run(db.session.registry)
        assert len(db.session.registry.registry) == 1
        body.close()
        assert len(torn) == 1
        assert db.session.registry.registry == {}  # removed at the teardown
    finally:
        appcontext_pushed.disconnect(on_push, app)
        appcontext_tearing_down.disconnect(on_teardown, app)
        client_end.close()
        server_end.close()
