"""What the lean per-connection plumbing must still do (gateway/api/events.py, websocket.py).

A WebSocket's frames are read by a greenlet spawned when its socket turns readable, not
one parked per connection; SSE and long-poll answer from the response body, after Flask
popped the request context. These tests drive the edges of that over real sockets on
gunicorn's gevent worker: frames pipelined or split across writes, control frames,
closes, the long-poll answer's headers, and every transport handing back its connection
slot when the client leaves.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from switchboard_client import Api
from tests.servers import GatewayServer


class RawWebSocket:
    """A WebSocket client over a plain socket: full control of what goes on the wire."""

    def __init__(self, url: str, token: str) -> None:
        address = urlparse(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(
            host=address.netloc, target="/v1/events/ws",
            extra_headers=[(b"authorization", f"Bearer {token}".encode())])))
        self.events: list[Event] = []
        accepted = self.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        ready = self.next_json()
        assert ready["type"] == "ready", ready

    def frame(self, payload: dict) -> bytes:
        return self.ws.send(TextMessage(data=json.dumps(payload)))

    def next_event(self, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while not self.events:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise ConnectionError("server closed the connection")
        return self.events.pop(0)

    def next_json(self, skip_pings: bool = True) -> dict:
        while True:
            event = self.next_event()
            if isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
                continue
            assert isinstance(event, TextMessage), event
            payload = json.loads(event.data)
            if skip_pings and payload.get("type") == "ping":
                continue
            return payload

    def close_code(self) -> int:
        while True:
            event = self.next_event()
            if isinstance(event, CloseConnection):
                return event.code

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def user(new_user: Callable[..., Api]) -> Api:
    return new_user()


@contextmanager
def raw_ws(gateway: GatewayServer, api: Api) -> Iterator[RawWebSocket]:
    client = RawWebSocket(gateway.url, api.token or "")
    try:
        yield client
    finally:
        client.close()


def test_frames_pipelined_in_one_write_are_all_answered_in_order(gateway, user):
    with raw_ws(gateway, user) as client:
        client.sock.sendall(b"".join(client.frame({"type": "ping", "ref": i})
                                     for i in range(20)))
        refs = [client.next_json()["ref"] for _ in range(20)]
    assert refs == list(range(20))


def test_a_frame_split_across_writes_is_read_once_complete(gateway, user):
    with raw_ws(gateway, user) as client:
        wire = client.frame({"type": "ping", "ref": "split"})
        client.sock.sendall(wire[:3])
        time.sleep(0.3)  # the reading greenlet ends with half a frame; the rest wakes it
        client.sock.sendall(wire[3:])
        assert client.next_json() == {"type": "pong", "ref": "split"}


def test_reading_resumes_after_control_frames_and_idle_time(gateway, user):
    with raw_ws(gateway, user) as client:
        client.sock.sendall(client.ws.send(Ping(payload=b"hi")))
        while not isinstance(event := client.next_event(), Pong):
            assert isinstance(event, (TextMessage, Ping)), event
        assert event.payload == b"hi"
        client.sock.sendall(client.ws.send(Pong(payload=b"sb")))  # unsolicited: ignored
        time.sleep(1.5)  # past a server ping (1 s in tests): nothing parked in between
        client.sock.sendall(client.frame({"type": "ping", "ref": 7}))
        assert client.next_json() == {"type": "pong", "ref": 7}


def test_binary_frame_closes_with_policy_violation(gateway, user):
    with raw_ws(gateway, user) as client:
        client.sock.sendall(client.ws.send(BytesMessage(data=b"\x00\x01")))
        assert client.close_code() == 1008


def test_message_over_the_limit_closes_with_too_big(make_gateway, new_user):
    server = make_gateway(max_body_bytes=2048)
    api = new_user(server)
    with raw_ws(server, api) as client:
        client.sock.sendall(client.frame({"type": "ping", "ref": "x" * 4096}))
        assert client.close_code() == 1009


def test_client_close_is_answered(gateway, user):
    with raw_ws(gateway, user) as client:
        client.sock.sendall(client.ws.send(CloseConnection(code=1000)))
        assert client.close_code() == 1000


def test_invalid_frames_get_errors_and_the_connection_keeps_reading(gateway, user):
    with raw_ws(gateway, user) as client:
        client.sock.sendall(client.ws.send(TextMessage(data="{not json")))
        assert client.next_json()["data"]["code"] == "invalid_json"
        client.sock.sendall(client.frame({"type": "ping", "ref": 1}))
        assert client.next_json() == {"type": "pong", "ref": 1}


def _wait_for_slot(open_one: Callable[[], object], timeout: float = 10.0) -> object:
    """Open a connection once the server has let go of an earlier one (429 until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_one()
        except (AssertionError, ConnectionError) as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"connection slot never freed: {err}") from err
            time.sleep(0.2)


def _open_sse(server: GatewayServer, api: Api) -> socket.socket:
    address = urlparse(server.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    sock.sendall(f"GET /v1/events/stream HTTP/1.1\r\nHost: {address.netloc}\r\n"
                 f"Authorization: Bearer {api.token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed")
        head += data
    if not head.startswith(b"HTTP/1.1 200"):
        sock.close()
        raise AssertionError(head[:200])
    return sock


def _open_ws(server: GatewayServer, api: Api) -> RawWebSocket:
    try:
        return RawWebSocket(server.url, api.token or "")
    except AssertionError:
        raise
    except OSError as err:
        raise ConnectionError(str(err)) from err


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_closed_stream_gives_its_connection_slot_back(make_gateway, new_user, transport):
    server = make_gateway(max_connections_per_user=2)
    api = new_user(server)

    def open_one() -> object:
        return _open_sse(server, api) if transport == "sse" else _open_ws(server, api)

    first = [open_one(), open_one()]
    with pytest.raises((AssertionError, ConnectionError)):
        open_one()  # over the limit: 429
    for conn in first:
        conn.close()
    again = [_wait_for_slot(open_one), _wait_for_slot(open_one)]
    for conn in again:
        conn.close()


def _get(server: GatewayServer, api: Api, path: str) -> tuple[str, dict[str, str], bytes]:
    address = urlparse(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=15) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                     f"Authorization: Bearer {api.token}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def test_long_poll_answers_with_the_same_json_headers_as_a_poll(gateway, new_user):
    sender, receiver = new_user(), new_user()
    conversation = sender.direct(receiver.user_id)
    status, headers, body = _get(gateway, receiver, "/v1/events?wait=0")
    cursor = json.loads(body)["cursor"]
    for wait, expect_events in ((0.5, False), (5, True)):
        if expect_events:
            sender.send(conversation["id"], "hello")
        status_lp, headers_lp, body_lp = _get(
            gateway, receiver, f"/v1/events?cursor={cursor}&wait={wait}")
        assert status_lp == status == "HTTP/1.1 200 OK"
        assert headers_lp["content-type"] == headers["content-type"] == "application/json"
        assert int(headers_lp["content-length"]) == len(body_lp)
        assert "transfer-encoding" not in headers_lp
        assert body_lp.endswith(b"\n") and body.endswith(b"\n")
        answer = json.loads(body_lp)
        kinds = [e["type"] for e in answer["events"]]
        assert ("message.created" in kinds) == expect_events
        cursor = answer["cursor"]


def test_a_parked_long_poll_is_answered_by_a_drain(make_gateway, new_user):
    import signal
    import threading

    server = make_gateway()
    api = new_user(server)
    answers: list[tuple[str, dict[str, str], bytes]] = []
    poll = threading.Thread(target=lambda: answers.append(
        _get(server, api, "/v1/events?wait=20")))
    poll.start()
    time.sleep(0.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    poll.join(10)
    assert answers, "the long-poll was not answered"
    status, headers, body = answers[0]
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body)["closed"] == "draining"
    assert int(headers["content-length"]) == len(body)
