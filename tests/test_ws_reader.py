"""The server's frame reader (gateway/ws_frames.py) against an independent client
implementation (wsproto) and against frames that break RFC 6455 in each way it names."""

from __future__ import annotations

import random
import socket
import threading

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, Ping, TextMessage

from gateway.websocket import ServerWebSocket, WebSocketClosed
from gateway.ws_frames import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameReader,
    parse_close,
)


def client() -> Connection:
    return Connection(ConnectionType.CLIENT)  # masks every frame, as browsers do


def masked(opcode: int, payload: bytes, *, final: bool = True, rsv: int = 0,
           key: bytes = b"\x01\x82\x7f\xff") -> bytes:
    size = len(payload)
    if size < 126:
        length = bytes((0x80 | size,))
    elif size < 1 << 16:
        length = bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        length = bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(((0x80 if final else 0) | rsv << 4 | opcode,)) + length + key + body


def read_all(reader: FrameReader) -> list[tuple[int, bytes]]:
    got = []
    while (item := reader.next()) is not None:
        got.append(item)
    return got


def test_messages_of_every_length_encoding_read_back_whatever_the_chunking():
    conn = client()
    texts = ["", "x", "é😀" * 20, "a" * 125, "b" * 126, "c" * 65_535, "d" * 65_536,
             "e" * 70_000]
    wire = b"".join(conn.send(TextMessage(data=t)) for t in texts)
    for seed in range(5):
        rng = random.Random(seed)
        reader = FrameReader(1 << 20)
        got: list[tuple[int, bytes]] = []
        at = 0
        while at < len(wire):
            step = rng.choice((1, 2, 3, 7, 100, 5000, 80_000))
            reader.feed(wire[at:at + step])
            at += step
            got += read_all(reader)
        assert [(op, data.decode()) for op, data in got] == [(OP_TEXT, t) for t in texts]


def test_fragments_are_joined_and_a_control_frame_between_them_comes_first():
    conn = client()
    wire = (conn.send(TextMessage(data="hel", message_finished=False))
            + conn.send(Ping(payload=b"p1"))
            + conn.send(TextMessage(data="lo ", message_finished=False))
            + conn.send(TextMessage(data="wörld", message_finished=True)))
    reader = FrameReader(1024)
    reader.feed(wire)
    assert read_all(reader) == [(OP_PING, b"p1"), (OP_TEXT, "hello wörld".encode())]


@pytest.mark.parametrize(("wire", "code"), [
    (masked(OP_TEXT, b"hi", rsv=4), 1002),  # a reserved bit, no extension agreed
    (masked(OP_TEXT, b"hi")[:1] + bytes((2,)) + b"hi", 1002),  # not masked
    (masked(0x3, b"hi"), 1002),  # reserved data opcode
    (masked(0xB, b""), 1002),  # reserved control opcode
    (masked(OP_PING, b"x" * 126), 1002),  # control frame over 125 bytes
    (masked(OP_PING, b"x", final=False), 1002),  # fragmented control frame
    (masked(0x0, b"orphan"), 1002),  # continuation with no message under way
    (masked(OP_TEXT, b"a", final=False) + masked(OP_TEXT, b"b"), 1002),  # interleaved
    (masked(OP_TEXT, b"y" * 600)[:8], 1009),  # refused from the header alone
    (masked(OP_TEXT, b"y" * 300, final=False) + masked(0x0, b"y" * 300)[:8], 1009),
])
def test_broken_frames_are_refused_with_the_rfcs_close_code(wire, code):
    reader = FrameReader(512)
    reader.feed(wire)
    with pytest.raises(FrameError) as raised:
        read_all(reader)
    assert raised.value.code == code


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", (1005, "")),
    ((1000).to_bytes(2, "big") + b"bye", (1000, "bye")),
    ((4001).to_bytes(2, "big"), (4001, "")),
    (b"\x03", 1002),  # one byte: half a code
    ((1005).to_bytes(2, "big"), 1002),  # reserved for "no code", never on the wire
    ((999).to_bytes(2, "big"), 1002),
    ((2999).to_bytes(2, "big"), 1002),
    ((1000).to_bytes(2, "big") + b"\xff", 1007),  # reason not UTF-8
])
def test_close_payloads(payload, expected):
    if isinstance(expected, tuple):
        assert parse_close(payload) == expected
    else:
        with pytest.raises(FrameError) as raised:
            parse_close(payload)
        assert raised.value.code == expected


def _server() -> tuple[ServerWebSocket, socket.socket, socket.socket]:
    server_end, client_end = socket.socketpair()
    ws = ServerWebSocket({"gunicorn.socket": server_end,
                          "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}, 4096)
    return ws, server_end, client_end


def _closes_from(client_end: socket.socket) -> list[tuple[int, str]]:
    received = b""
    while chunk := client_end.recv(1 << 16):
        received += chunk
    conn = client()
    conn.receive_data(received.partition(b"\r\n\r\n")[2])
    return [(e.code, e.reason) for e in conn.events() if isinstance(e, CloseConnection)]


@pytest.mark.parametrize(("wire", "code"), [
    (masked(OP_TEXT, b"\xc3\x28"), 1007),  # text that is not UTF-8
    (masked(OP_TEXT, b"hi", rsv=1), 1002),
    (masked(0x2, b"\x00\x01"), 1008),  # binary: this API speaks JSON text only
])
def test_the_server_closes_a_broken_client_with_the_code_and_reads_no_further(wire, code):
    ws, server_end, client_end = _server()
    try:
        client_end.sendall(wire + masked(OP_TEXT, b'{"type":"ping"}'))
        ws.read_available()
        with pytest.raises(WebSocketClosed):
            ws.next_message()
        assert ws.closed
        assert [c for c, _ in _closes_from(client_end)] == [code]
    finally:
        client_end.close()
        server_end.close()


def test_a_client_close_is_answered_with_its_code_and_pings_with_their_payload():
    ws, server_end, client_end = _server()
    try:
        client_end.sendall(masked(OP_PING, b"are you there")
                           + masked(OP_TEXT, "first ✓".encode())
                           + masked(OP_CLOSE, (4000).to_bytes(2, "big") + b"done"))
        ws.read_available()
        assert ws.next_message() == "first ✓"
        with pytest.raises(WebSocketClosed):
            ws.next_message()
        server_end.close()
        received = b""
        while chunk := client_end.recv(1 << 16):
            received += chunk
        conn = client()
        conn.receive_data(received.partition(b"\r\n\r\n")[2])
        events = list(conn.events())
        assert [type(e).__name__ for e in events] == ["Pong", "CloseConnection"]
        assert events[0].payload == b"are you there"
        assert (events[1].code, events[1].reason) == (4000, "")
    finally:
        client_end.close()


def test_a_write_larger_than_the_send_buffer_arrives_whole_and_in_order():
    # A frame the kernel takes in pieces: the first send() is short, the rest follows.
    ws, server_end, client_end = _server()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server_end.settimeout(10)  # with a timeout, send() returns short counts as gevent's does
    texts = [f"{i}:" + "x" * 300_000 for i in range(4)]
    received = bytearray()

    def read_slowly() -> None:
        while chunk := client_end.recv(7919):
            received.extend(chunk)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        ws.send_json_many(texts)
        server_end.shutdown(socket.SHUT_WR)
        reader.join(10)
        conn = client()
        conn.receive_data(bytes(received).partition(b"\r\n\r\n")[2])
        got = [e.data for e in conn.events() if isinstance(e, TextMessage)]
        assert got == [f'"{t}"' for t in texts]
    finally:
        client_end.close()
        server_end.close()
